package origin_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
)

// The origin admits BlobReaders bodies at once; the next reader gets 429
// TOOMANYREQUESTS with a Retry-After at once (not a slow body), and a
// place frees when a reader finishes.
func TestBlobReadersBeyondTheUplinkAreTurnedAway(t *testing.T) {
	c := newClient(t, origin.Config{BlobReaders: 2})
	blob := randomBytes(t, 32<<20) // more than socket buffers: unread bodies hold their place
	d := c.pushBlob("app", blob)
	path := c.o.URL + "/v2/app/blobs/" + d
	var held []*http.Response
	for range 2 {
		resp, err := c.hc.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("reader %d: %s", len(held), resp.Status)
		}
		held = append(held, resp) // headers in, body not read
	}
	r := c.do(http.MethodGet, path, nil, nil).expect(t, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s < 1 || s > 10 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// HEAD sends no body: never refused.
	c.do(http.MethodHead, path, nil, nil).expect(t, http.StatusOK, "")
	held[0].Body.Close()
	held[1].Body.Close()
	for try := 0; ; try++ {
		resp, err := c.hc.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if try > 100 {
			t.Fatalf("still %s after the readers left", resp.Status)
		}
		time.Sleep(20 * time.Millisecond) // the handlers see their clients gone on their next write
	}
}
