package agent_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
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

// TestArrivingBlobStreamsThroughAgent: the first rollout of a fresh blob
// that a slow upstream (the real docker-registry behind a throttling
// proxy) sends over seconds reaches three agents' clients piece by piece:
// their pull checks answer once the origin has the first piece, their
// downloads follow the origin's growing metainfo and take the pieces from
// the origin's seeder and each other as they land, and every client's
// first byte comes long before the upstream's last; every byte checks at
// the end, and the origin sends about one copy. When the upstream's bytes
// are wrong, the client gets a cut body, and neither the agent nor the
// origin keeps anything of the blob.
func TestArrivingBlobStreamsThroughAgent(t *testing.T) {
	reg := registrytest.Start(t)
	good := reg.Push("library/good", "1", 8<<20)
	bad := reg.Push("library/bad", "1", 8<<20)
	o, trAddr, upload := seedingOriginWith(t, origin.Config{Upstreams: []upstream.Config{{
		Namespace: "registry.test", URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile},
	}}})
	var agents []testAgent
	for range 3 {
		a := startAgent(t, trAddr, o.URL, agent.Config{
			Registries: map[string]agent.Upstream{"registry.example.com": {Origins: []string{o.URL}}},
		})
		deadline := time.Now().Add(10 * time.Second)
		for a.counter(t, "shoal_agent_upstream_namespaces") != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the agent did not learn the upstream namespace")
			}
			time.Sleep(20 * time.Millisecond)
		}
		agents = append(agents, a)
	}
	a := agents[0]
	for _, repo := range []string{"library/good", "library/bad"} {
		resp, body := do(t, "GET", a.url+"/v2/"+repo+"/manifests/1?ns=registry.test", map[string]string{"Accept": upstream.AcceptManifests}, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("manifest of %s: %d %s", repo, resp.StatusCode, body)
		}
	}
	const bps = 2 << 20 // about 4 s for a layer of eight 1 MiB pieces
	reg.SetThrottle(bps)
	originBlobs := files(t, filepath.Join(o.DataDir, "blobstore", "blobs"))

	// get pulls a blob through agent a as containerd would, timing its
	// first byte.
	get := func(a testAgent, repo, d string) (start time.Time, ttfb time.Duration, body []byte, err error) {
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
		type result struct {
			start time.Time
			ttfb  time.Duration
			done  time.Duration
			err   error
		}
		results := make([]result, len(agents))
		var wg sync.WaitGroup
		for i, a := range agents {
			wg.Go(func() {
				start, ttfb, body, err := get(a, "library/good", layer)
				if err == nil && !bytes.Equal(body, good.Blobs[layer]) {
					err = errors.New("wrong bytes")
				}
				results[i] = result{start, ttfb, time.Since(start), err}
			})
		}
		wg.Wait()
		upstreamDone := reg.BlobSent(layer)
		for i, r := range results {
			if r.err != nil {
				t.Fatalf("agent %d: pull: %v", i, r.err)
			}
			up := upstreamDone.Sub(r.start)
			if up < 2*time.Second || r.ttfb > up/3 {
				t.Fatalf("agent %d: first byte after %v, the upstream's last after %v: want the first within a third of the upstream's time",
					i, r.ttfb, up)
			}
			t.Logf("agent %d: %d bytes at %d KiB/s from the upstream: first byte after %v, upstream done after %v, pull done after %v",
				i, len(good.Blobs[layer]), bps>>10, r.ttfb.Round(time.Millisecond), up.Round(time.Millisecond), r.done.Round(time.Millisecond))
		}
		if n := reg.BlobGETs(layer); n != 1 {
			t.Fatalf("upstream served the layer %d times, want 1", n)
		}
		copies := float64(originEgress(t, o, upload)) / float64(len(good.Blobs[layer]))
		if copies > 1.5 {
			t.Fatalf("origin sent %.2f copies to 3 agents, want at most 1.5", copies)
		}
		t.Logf("origin sent %.2f copies to 3 agents", copies)
		// Cached whole: the next pull is local.
		resp, again := do(t, "GET", a.url+"/v2/library/good/blobs/"+layer+"?ns=registry.test", nil, nil)
		if resp.StatusCode != 200 || !bytes.Equal(again, good.Blobs[layer]) {
			t.Fatalf("second pull: %d", resp.StatusCode)
		}
	})

	t.Run("wrong bytes", func(t *testing.T) {
		layer := bad.Layers[0]
		wrong := reg.ServeWrongBlob(t, "library/bad", layer, bad.Blobs[layer], bps)
		defer reg.SetFault(nil)
		_, ttfb, body, err := get(a, "library/bad", layer)
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
