package origin_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/upstream"
	"github.com/shoal-project/shoal/pkg/upstream/registrytest"
)

// TestPullThroughStreamsWhileArriving: a fresh blob that a slow upstream
// (the real docker-registry behind a throttling proxy) sends over seconds
// reaches the origin's client piece by piece, its first byte long before
// the upstream has sent its last; and when the upstream's bytes turn out
// not to be the blob, the client's body is cut, never ended cleanly, and
// nothing is stored or left behind.
func TestPullThroughStreamsWhileArriving(t *testing.T) {
	reg := registrytest.Start(t)
	good := reg.Push("library/good", "1", 8<<20)
	bad := reg.Push("library/bad", "1", 8<<20)
	c := newClient(t, origin.Config{Upstreams: []upstream.Config{upstreamConfig(reg, time.Hour)}})
	for _, repo := range []string{"library/good", "library/bad"} {
		c.do("GET", "/v2/"+upNS+"/"+repo+"/manifests/1", header{"Accept": upstream.AcceptManifests}, nil).expect(t, 200, "")
	}
	const bps = 2 << 20 // about 4 s for a layer of eight 1 MiB pieces
	reg.SetThrottle(bps)
	blobsBefore, _ := c.storeFiles()

	// get reads a blob, timing its first byte.
	get := func(repo, d string) (start time.Time, ttfb time.Duration, body []byte, err error) {
		start = time.Now()
		resp, err := c.hc.Get(c.o.URL + "/v2/" + upNS + "/" + repo + "/blobs/" + d)
		if err != nil {
			return start, 0, nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return start, 0, nil, errors.New(resp.Status)
		}
		first := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			return start, 0, nil, err
		}
		ttfb = time.Since(start)
		rest, err := io.ReadAll(resp.Body)
		return start, ttfb, append(first, rest...), err
	}

	t.Run("right bytes", func(t *testing.T) {
		layer := good.Layers[0]
		start, ttfb, body, err := get("library/good", layer)
		if err != nil || !bytes.Equal(body, good.Blobs[layer]) {
			t.Fatalf("GET: %v, %d bytes, want the layer's %d", err, len(body), len(good.Blobs[layer]))
		}
		upstreamDone := reg.BlobSent(layer).Sub(start)
		// A piece goes out once whole: the first byte waits for one of
		// eight, not for all of them.
		if upstreamDone < 2*time.Second || ttfb > upstreamDone/3 {
			t.Fatalf("first byte after %v, the upstream's last after %v: want the first within a third of the upstream's time",
				ttfb, upstreamDone)
		}
		t.Logf("%d bytes at %d KiB/s from the upstream: first byte to the client after %v, upstream done after %v",
			len(body), bps>>10, ttfb.Round(time.Millisecond), upstreamDone.Round(time.Millisecond))
		c.do("GET", origin.MetaInfoPath+layer, nil, nil).expect(t, 200, "")
		// Stored once, read from the store from now on.
		if _, _, again, err := get("library/good", layer); err != nil || !bytes.Equal(again, good.Blobs[layer]) {
			t.Fatalf("second GET: %v", err)
		}
		if n := reg.BlobGETs(layer); n != 1 {
			t.Fatalf("upstream served the layer %d times, want 1", n)
		}
	})

	t.Run("wrong bytes", func(t *testing.T) {
		layer := bad.Layers[0]
		wrong := bytes.Clone(bad.Blobs[layer])
		wrong[len(wrong)/2] ^= 1
		reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != "GET" || r.URL.Path != "/v2/library/bad/blobs/"+layer {
				return false
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(wrong)))
			registrytest.Slow(w, bps).Write(wrong)
			return true
		})
		defer reg.SetFault(nil)
		_, ttfb, body, err := get("library/bad", layer)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("GET of a blob the upstream got wrong: %v after %d bytes, want the body cut", err, len(body))
		}
		if len(body) == 0 || len(body) >= len(wrong) {
			t.Fatalf("%d of %d bytes before the cut: want a streamed prefix", len(body), len(wrong))
		}
		t.Logf("wrong upstream bytes: first byte after %v, body cut after %d of %d bytes", ttfb.Round(time.Millisecond), len(body), len(wrong))
		c.do("GET", origin.MetaInfoPath+layer, nil, nil).expect(t, http.StatusNotFound, "")
		// Only the good layer joined the store; no spool is left.
		blobs, tmp := c.storeFiles()
		if len(tmp) != 0 || len(blobs) != len(blobsBefore)+1 {
			t.Fatalf("store: %d blobs (%d before the good layer), temp files %v", len(blobs), len(blobsBefore), tmp)
		}
		if left, _ := os.ReadDir(filepath.Join(c.o.DataDir, "arriving")); len(left) != 0 {
			t.Fatalf("spool files left: %v", left)
		}
		reg.SetFault(nil)
		reg.SetThrottle(0)
		if _, _, body, err := get("library/bad", layer); err != nil || !bytes.Equal(body, bad.Blobs[layer]) {
			t.Fatalf("GET once the upstream is right again: %v", err)
		}
	})
}
