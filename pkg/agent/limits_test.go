package agent_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/httpserver/httpservertest"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
)

// A client that connects and says nothing, or stays after its request,
// is let go after the configured timeouts.
func TestIdleClientsAreLetGo(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	a := startAgent(t, "", o.URL, agent.Config{HTTPTimeouts: httpserver.Timeouts{
		ReadHeader: 300 * time.Millisecond, Idle: 300 * time.Millisecond}})
	httpservertest.AssertClosesIdle(t, strings.TrimPrefix(a.url, "http://"), "/healthz", 250*time.Millisecond, 3*time.Second)
}

// Many tiny ranges in one request (issue #13: a 938 KB request drew a
// 12 MB answer): the agent answers like the origin, with the whole blob
// and 200, never a multipart body larger than the blob. Both while the
// blob downloads and once it is cached.
func TestMultiRangeGetsTheWholeBlob(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	blob := random(256 << 10)
	image(t, o.URL, blob)
	a := startAgent(t, "", o.URL, agent.Config{})
	var ranges []string
	for off := 0; len(ranges) < 4000; off += 50 {
		ranges = append(ranges, fmt.Sprintf("%d-%d", off, off))
	}
	multi := map[string]string{"Range": "bytes=" + strings.Join(ranges, ",")}
	url := a.url + "/v2/team/app/blobs/" + sha(blob)

	tests := []struct {
		name   string
		before func(t *testing.T)
	}{
		{"while downloading", func(*testing.T) {}},
		{"from the cache", func(t *testing.T) {
			deadline := time.Now().Add(10 * time.Second)
			for a.counter(t, "shoal_agent_downloads_in_progress") > 0 {
				if time.Now().After(deadline) {
					t.Fatal("the download did not finish")
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The cached path, for sure: one range still gets 206.
			resp, body := do(t, "GET", url, map[string]string{"Range": "bytes=10-19"}, nil)
			if resp.StatusCode != 206 || !bytes.Equal(body, blob[10:20]) {
				t.Fatalf("one range from the cache: %d, %d bytes", resp.StatusCode, len(body))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.before(t)
			resp, body := do(t, "GET", url, multi, nil)
			if len(body) > len(blob) {
				t.Fatalf("%d ranges drew %d bytes (%s) for a %d-byte blob", len(ranges), len(body), resp.Header.Get("Content-Type"), len(blob))
			}
			if resp.StatusCode != 200 || !bytes.Equal(body, blob) {
				t.Fatalf("multi-range: status %d, %d bytes; want the whole blob with 200", resp.StatusCode, len(body))
			}
		})
	}
}
