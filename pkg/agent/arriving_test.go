package agent_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	"github.com/shoal-project/shoal/pkg/upstream"
	"github.com/shoal-project/shoal/pkg/upstream/registrytest"
)

// files lists the regular files under dir (none if it does not exist).
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestArrivingBlobStreamsThroughAgent: the first pull of a fresh blob that
// a slow upstream (the real docker-registry behind a throttling proxy)
// sends over seconds reaches containerd through the agent piece by piece:
// the agent's pull check answers once the origin has the first piece, its
// download follows the origin's growing metainfo, and its client's first
// byte comes long before the upstream's last; every byte checks at the
// end. When the upstream's bytes are wrong, the agent's client gets a cut
// body, and neither the agent nor the origin keeps anything of the blob.
func TestArrivingBlobStreamsThroughAgent(t *testing.T) {
	reg := registrytest.Start(t)
	good := reg.Push("library/good", "1", 8<<20)
	bad := reg.Push("library/bad", "1", 8<<20)
	o := origintest.Start(t, origin.Config{Upstreams: []upstream.Config{{
		Namespace: "registry.test", URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile},
	}}})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}}))})
	a := startAgent(t, tr.Addr, o.URL, agent.Config{
		Registries: map[string]agent.Upstream{"registry.example.com": {Origins: []string{o.URL}}},
	})
	deadline := time.Now().Add(10 * time.Second)
	for a.counter(t, "shoal_agent_upstream_namespaces") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not learn the upstream namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, repo := range []string{"library/good", "library/bad"} {
		resp, body := do(t, "GET", a.url+"/v2/"+repo+"/manifests/1?ns=registry.test", map[string]string{"Accept": upstream.AcceptManifests}, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("manifest of %s: %d %s", repo, resp.StatusCode, body)
		}
	}
	const bps = 2 << 20 // about 4 s for a layer of eight 1 MiB pieces
	reg.SetThrottle(bps)
	originBlobs := files(t, filepath.Join(o.DataDir, "blobstore", "blobs"))

	// get pulls a blob through the agent as containerd would, timing its
	// first byte.
	get := func(repo, d string) (start time.Time, ttfb time.Duration, body []byte, err error) {
		start = time.Now()
		resp, err := http.Get(a.url + "/v2/" + repo + "/blobs/" + d + "?ns=registry.test")
		if err != nil {
			return start, 0, nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return start, 0, nil, errors.New(resp.Status + ": " + string(b))
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
			t.Fatalf("pull: %v, %d bytes, want the layer's %d", err, len(body), len(good.Blobs[layer]))
		}
		upstreamDone := reg.BlobSent(layer).Sub(start)
		if upstreamDone < 2*time.Second || ttfb > upstreamDone/3 {
			t.Fatalf("first byte through the agent after %v, the upstream's last after %v: want the first within a third of the upstream's time",
				ttfb, upstreamDone)
		}
		t.Logf("%d bytes at %d KiB/s from the upstream: first byte through the agent after %v, upstream done after %v, agent done after %v",
			len(body), bps>>10, ttfb.Round(time.Millisecond), upstreamDone.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if n := reg.BlobGETs(layer); n != 1 {
			t.Fatalf("upstream served the layer %d times, want 1", n)
		}
		// Cached whole: the next pull is local.
		resp, again := do(t, "GET", a.url+"/v2/library/good/blobs/"+layer+"?ns=registry.test", nil, nil)
		if resp.StatusCode != 200 || !bytes.Equal(again, good.Blobs[layer]) {
			t.Fatalf("second pull: %d", resp.StatusCode)
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
		if err == nil || bytes.Equal(body, bad.Blobs[layer]) || bytes.Equal(body, wrong) {
			t.Fatalf("pull of a blob the upstream got wrong: %v after %d bytes, want the body cut", err, len(body))
		}
		t.Logf("wrong upstream bytes: first byte through the agent after %v, body cut after %d of %d bytes: %v",
			ttfb.Round(time.Millisecond), len(body), len(wrong), err)
		// Nothing of it on the agent (cache or downloads) or the origin.
		deadline := time.Now().Add(5 * time.Second)
		for {
			var left []string
			for _, f := range files(t, a.dataDir) {
				if filepath.Base(f) != "peer.key" && (bytes.Contains([]byte(f), []byte(bad.Layers[0][7:])) || filepath.Dir(filepath.Dir(f)) == filepath.Join(a.dataDir, "downloads")) {
					left = append(left, f)
				}
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent kept %v", left)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got := files(t, filepath.Join(o.DataDir, "blobstore", "blobs")); len(got) != len(originBlobs)+1 {
			t.Fatalf("origin store: %d blobs, want %d (before) + the good layer", len(got), len(originBlobs))
		}
		if left := files(t, filepath.Join(o.DataDir, "arriving")); len(left) != 0 {
			t.Fatalf("origin spool left: %v", left)
		}
	})
}
