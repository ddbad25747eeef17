package agent_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	"github.com/shoal-project/shoal/pkg/upstream"
	"github.com/shoal-project/shoal/pkg/upstream/registrytest"
)

// TestUpstreamNamespaceThroughAgents: an image that lives only in a real
// docker-registry (TLS, htpasswd) is pulled by two agents with ?ns= of
// that registry, which no agent configures: they learn it from the
// origin's advertised list. The upstream sends each blob once in all, the
// second agent takes the big layer from the first over libp2p, and a
// namespace nobody pulls through stays a fast 404.
func TestUpstreamNamespaceThroughAgents(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 6<<20, 64<<10)
	o := origintest.Start(t, origin.Config{Upstreams: []upstream.Config{{
		Namespace: "registry.test", URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile},
	}}})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}}))})
	cfg := func() agent.Config {
		return agent.Config{Registries: map[string]agent.Upstream{"registry.example.com": {Origins: []string{o.URL}}}}
	}
	agents := []testAgent{startAgent(t, tr.Addr, o.URL, cfg()), startAgent(t, tr.Addr, o.URL, cfg())}
	for _, a := range agents {
		deadline := time.Now().Add(10 * time.Second)
		for a.counter(t, "shoal_agent_upstream_namespaces") != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the agent did not learn the origin's upstream namespace")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	big := img.Layers[0]
	for i, a := range agents {
		resp, body := do(t, "GET", a.url+"/v2/library/app/manifests/1?ns=registry.test", map[string]string{"Accept": upstream.AcceptManifests}, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != img.Manifest {
			t.Fatalf("agent %d: manifest by tag: %d %s", i, resp.StatusCode, body)
		}
		for d, want := range img.Blobs {
			resp, body := do(t, "GET", a.url+"/v2/library/app/blobs/"+d+"?ns=registry.test", nil, nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, want) {
				t.Fatalf("agent %d: blob %s: %d, %d bytes", i, d, resp.StatusCode, len(body))
			}
		}
		resp, body = do(t, "GET", a.url+"/v2/library/app/blobs/"+big+"?ns=registry.test", map[string]string{"Range": "bytes=10-19"}, nil)
		if resp.StatusCode != 206 || !bytes.Equal(body, img.Blobs[big][10:20]) {
			t.Fatalf("agent %d: range: %d %q", i, resp.StatusCode, body)
		}
	}
	for d := range img.Blobs {
		if n := reg.BlobGETs(d); n != 1 {
			t.Errorf("upstream served blob %s %d times to two agents, want 1", d, n)
		}
	}
	if got := agents[1].counter(t, "shoal_agent_peer_bytes_total"); got < float64(len(img.Blobs[big])) {
		t.Errorf("second agent took %v bytes from peers, want at least the %d-byte layer", got, len(img.Blobs[big]))
	}
	// The upstream rate limits a tag nobody has seen: the client hears
	// 429 with the upstream's Retry-After through origin and agent.
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "17")
		http.Error(w, "slow down", http.StatusTooManyRequests)
		return true
	})
	resp, body := do(t, "GET", agents[0].url+"/v2/library/app/manifests/2?ns=registry.test", nil, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "17" {
		t.Errorf("throttled upstream: %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	reg.SetFault(nil)
	start := time.Now()
	resp, _ = do(t, "GET", agents[0].url+"/v2/library/app/manifests/1?ns=unconfigured.io", nil, nil)
	if resp.StatusCode != 404 || time.Since(start) > time.Second {
		t.Errorf("unconfigured namespace: %d after %s, want a fast 404", resp.StatusCode, time.Since(start))
	}
	t.Logf("2 agents, %d blobs: upstream blob GETs %d in all; second agent from peers %.0f bytes",
		len(img.Blobs), reg.Requests("GET", "")-reg.Requests("GET", "/manifests/1")-reg.Requests("GET", "/manifests/"+img.Manifest)-reg.Requests("GET", "/v2/"),
		agents[1].counter(t, "shoal_agent_peer_bytes_total"))
}

// TestSlowUpstreamFirstPull: the first pull of a fresh blob waits while
// the origin fetches it from a slow upstream, longer than the agent's
// origin timeout and its write timeout, and still gets every byte from
// Shoal instead of being sent to the upstream.
func TestSlowUpstreamFirstPull(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 256<<10)
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			time.Sleep(2500 * time.Millisecond)
		}
		return false
	})
	o := origintest.Start(t, origin.Config{Upstreams: []upstream.Config{{
		Namespace: "registry.test", URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile},
	}}})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}}))})
	a := startAgent(t, tr.Addr, o.URL, agent.Config{
		Registries:    map[string]agent.Upstream{"registry.example.com": {Origins: []string{o.URL}}},
		OriginTimeout: time.Second, HTTPTimeouts: httpserver.Timeouts{Write: time.Second},
	})
	deadline := time.Now().Add(10 * time.Second)
	for a.counter(t, "shoal_agent_upstream_namespaces") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not learn the upstream namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := img.Layers[0]
	start := time.Now()
	resp, body := do(t, "GET", a.url+"/v2/library/app/blobs/"+d+"?ns=registry.test", nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, img.Blobs[d]) {
		t.Fatalf("first pull of a slow upstream blob: %d, %d bytes: %.200s", resp.StatusCode, len(body), body)
	}
	t.Logf("first pull took %s (upstream answers after 2.5 s; agent origin timeout 1 s, write timeout 1 s)", time.Since(start).Round(time.Millisecond))
}
