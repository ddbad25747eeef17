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

	"github.com/shoal-project/shoal/pkg/metainfo"
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

	// get reads a blob, timing its first byte, and calls mid (if set)
	// right after it.
	get := func(repo, d string, mid func()) (start time.Time, ttfb time.Duration, body []byte, err error) {
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
		if mid != nil {
			mid()
		}
		rest, err := io.ReadAll(resp.Body)
		return start, ttfb, append(first, rest...), err
	}

	t.Run("right bytes", func(t *testing.T) {
		layer := good.Layers[0]
		blob := good.Blobs[layer]
		// metaInfo reads the layer's metainfo, partial or not.
		metaInfo := func(query string) (*metainfo.MetaInfo, string) {
			r := c.do("GET", origin.MetaInfoPath+layer+query, nil, nil)
			if r.StatusCode != 200 {
				return nil, strconv.Itoa(r.StatusCode)
			}
			mi, err := metainfo.UnmarshalPrefix(r.body)
			if err != nil {
				t.Fatal(err)
			}
			return mi, r.Header.Get(metainfo.CompleteHeader)
		}
		var midway *metainfo.MetaInfo
		start, ttfb, body, err := get("library/good", layer, func() {
			// While it arrives: no metainfo for those who want it whole,
			// a growing prefix for those who ask for one, and every
			// piece it covers checks against the blob's real bytes.
			if _, status := metaInfo(""); status != "404" {
				t.Errorf("whole metainfo of an arriving blob: %s, want 404", status)
			}
			var complete string
			midway, complete = metaInfo("?partial=1")
			if midway == nil || complete != "false" || len(midway.Chain) == 0 || midway.Complete() {
				t.Fatalf("partial metainfo midway: %+v, complete %q", midway, complete)
			}
			for i := range len(midway.Chain) {
				off, n := midway.PieceSpan(i)
				if !midway.VerifyPiece(i, blob[off:off+n]) {
					t.Fatalf("piece %d does not check against the partial metainfo", i)
				}
			}
		})
		if err != nil || !bytes.Equal(body, blob) {
			t.Fatalf("GET: %v, %d bytes, want the layer's %d", err, len(body), len(blob))
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
		whole, _ := metaInfo("")
		last, complete := metaInfo("?partial=1")
		if whole == nil || !whole.Complete() || last == nil || complete != "true" || !last.Equal(whole) {
			t.Fatalf("metainfo once stored: %+v; partial=1: %+v, complete %q", whole, last, complete)
		}
		t.Logf("partial metainfo at the first byte: %d of %d states", len(midway.Chain), len(whole.Chain))
		// Stored once, read from the store from now on.
		if _, _, again, err := get("library/good", layer, nil); err != nil || !bytes.Equal(again, blob) {
			t.Fatalf("second GET: %v", err)
		}
		if n := reg.BlobGETs(layer); n != 1 {
			t.Fatalf("upstream served the layer %d times, want 1", n)
		}
	})

	t.Run("wrong bytes", func(t *testing.T) {
		layer := bad.Layers[0]
		wrong := reg.ServeWrongBlob(t, "library/bad", layer, bad.Blobs[layer], bps)
		defer reg.SetFault(nil)
		_, ttfb, body, err := get("library/bad", layer, nil)
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
		if _, _, body, err := get("library/bad", layer, nil); err != nil || !bytes.Equal(body, bad.Blobs[layer]) {
			t.Fatalf("GET once the upstream is right again: %v", err)
		}
	})
}
