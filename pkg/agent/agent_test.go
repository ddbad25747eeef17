package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/scheduler"
	"github.com/shoal-project/shoal/pkg/swarm"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
)

func sha(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

func do(t *testing.T, method, url string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	return doWith(t, http.DefaultClient, method, url, hdr, body)
}

// doWith is do with a client of the caller's (an origin's CA, say).
func doWith(t *testing.T, hc *http.Client, method, url string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, b
}

// image pushes a config and layers to the origin and tags a manifest.
func image(t *testing.T, base string, layers ...[]byte) (manifest []byte, mt string) {
	t.Helper()
	return imageIn(t, http.DefaultClient, base, "team/app", "", layers...)
}

// imageWith is image with a client of the caller's.
func imageWith(t *testing.T, hc *http.Client, base string, layers ...[]byte) (manifest []byte, mt string) {
	t.Helper()
	return imageIn(t, hc, base, "team/app", "", layers...)
}

// imageAs is image into repo, pushed with the Authorization header authz
// ("" for none).
func imageAs(t *testing.T, base, repo, authz string, layers ...[]byte) (manifest []byte, mt string) {
	t.Helper()
	return imageIn(t, http.DefaultClient, base, repo, authz, layers...)
}

func imageIn(t *testing.T, hc *http.Client, base, repo, authz string, layers ...[]byte) (manifest []byte, mt string) {
	t.Helper()
	hdr := func(kv ...string) map[string]string {
		m := map[string]string{}
		if authz != "" {
			m["Authorization"] = authz
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	push := func(b []byte) string {
		resp, body := doWith(t, hc, "POST", base+"/v2/"+repo+"/blobs/uploads/?digest="+sha(b), hdr("Content-Type", "application/octet-stream"), b)
		if resp.StatusCode != 201 {
			t.Fatalf("push: %d %s", resp.StatusCode, body)
		}
		return sha(b)
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	m := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{"application/vnd.oci.image.config.v1+json", push(cfg), len(cfg)}}
	var ls []desc
	for _, l := range layers {
		ls = append(ls, desc{"application/vnd.oci.image.layer.v1.tar+gzip", push(l), len(l)})
	}
	m["layers"] = ls
	manifest, _ = json.Marshal(m)
	mt = "application/vnd.oci.image.manifest.v1+json"
	resp, body := doWith(t, hc, "PUT", base+"/v2/"+repo+"/manifests/v1", hdr("Content-Type", mt), manifest)
	if resp.StatusCode != 201 {
		t.Fatalf("manifest: %d %s", resp.StatusCode, body)
	}
	return manifest, mt
}

type testAgent struct {
	*agent.Agent
	url     string
	reg     *prometheus.Registry
	dataDir string
	// stop shuts the agent down before the test ends (a restart).
	stop func()
}

// startAgent runs an agent in cfg.DataDir (default: a fresh directory).
func startAgent(t *testing.T, trackerAddr, originURL string, cfg agent.Config) testAgent {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Tracker = trackerAddr
	if cfg.Registries == nil {
		cfg.Registries = map[string]agent.Upstream{"": {Origins: []string{originURL}}, "registry.example.com": {Origins: []string{originURL}}}
	}
	cfg.P2P = p2p.HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SHOAL_TEST_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	a, err := agent.New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return testAgent{a, "http://" + ln.Addr().String(), reg, cfg.DataDir, stop}
}

func (a testAgent) counter(t *testing.T, name string) float64 {
	t.Helper()
	fams, _ := a.reg.Gather()
	for _, f := range fams {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return sum
		}
	}
	return 0
}

func random(n int) []byte { b := make([]byte, n); rand.Read(b); return b }

// TestPullThroughAgents: the first agent of a rollout reads the origin; the
// second gets the layer from the first over libp2p and nothing from the
// origin; manifests resolve through both; Range, HEAD and bad requests
// answer like a registry.
func TestPullThroughAgents(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}}))})
	layer := random(5<<20 + 17)
	manifest, mt := image(t, o.URL, layer, random(1000))

	first := startAgent(t, tr.Addr, o.URL, agent.Config{})
	resp, body := do(t, "GET", first.url+"/v2/team/app/manifests/v1?ns=registry.example.com", map[string]string{"Accept": mt}, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, manifest) || resp.Header.Get("Docker-Content-Digest") != sha(manifest) ||
		resp.Header.Get("Content-Type") != mt {
		t.Fatalf("manifest by tag: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = do(t, "GET", first.url+"/v2/team/app/blobs/"+sha(layer)+"?ns=registry.example.com", nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("layer from the first agent: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := first.counter(t, "shoal_agent_origin_bytes_total"); got != float64(len(layer)) {
		t.Fatalf("first agent read %v bytes from the origin, want %d", got, len(layer))
	}

	second := startAgent(t, tr.Addr, o.URL, agent.Config{})
	resp, body = do(t, "GET", second.url+"/v2/team/app/blobs/"+sha(layer), nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("layer from the second agent: %d, %d bytes", resp.StatusCode, len(body))
	}
	if fromOrigin, fromPeers := second.counter(t, "shoal_agent_origin_bytes_total"), second.counter(t, "shoal_agent_peer_bytes_total"); fromOrigin != 0 || fromPeers < float64(len(layer)) {
		t.Fatalf("second agent: %v bytes from the origin, %v from peers", fromOrigin, fromPeers)
	}
	if up := first.counter(t, "shoal_agent_uploaded_bytes_total"); up < float64(len(layer)) {
		t.Fatalf("first agent seeded %v bytes", up)
	}

	tests := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		status int
		check  func([]byte, *http.Response) bool
	}{
		{"cached range", "GET", "/v2/team/app/blobs/" + sha(layer), map[string]string{"Range": "bytes=100-199"}, 206,
			func(b []byte, _ *http.Response) bool { return bytes.Equal(b, layer[100:200]) }},
		{"head", "HEAD", "/v2/team/app/blobs/" + sha(layer), nil, 200,
			func(_ []byte, r *http.Response) bool { return r.ContentLength == int64(len(layer)) }},
		{"manifest by digest", "GET", "/v2/team/app/manifests/" + sha(manifest), nil, 200,
			func(b []byte, _ *http.Response) bool { return bytes.Equal(b, manifest) }},
		{"base", "GET", "/v2/", nil, 200, nil},
		{"unknown registry", "GET", "/v2/team/app/manifests/v1?ns=elsewhere.io", nil, 404,
			func(b []byte, _ *http.Response) bool { return strings.Contains(string(b), "NAME_UNKNOWN") }},
		{"unknown manifest", "GET", "/v2/team/app/manifests/v9", nil, 404,
			func(b []byte, _ *http.Response) bool { return strings.Contains(string(b), "MANIFEST_UNKNOWN") }},
		{"unknown blob", "GET", "/v2/team/app/blobs/" + sha([]byte("nope")), nil, 404,
			func(b []byte, _ *http.Response) bool { return strings.Contains(string(b), "BLOB_UNKNOWN") }},
		{"bad digest", "GET", "/v2/team/app/blobs/sha256:xyz", nil, 400, nil},
		{"bad name", "GET", "/v2/Team/app/manifests/v1", nil, 400, nil},
		{"push refused", "PUT", "/v2/team/app/manifests/v2", nil, 405, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, second.url+tt.path, tt.hdr, nil)
			if resp.StatusCode != tt.status || (tt.check != nil && !tt.check(body, resp)) {
				t.Fatalf("%s %s: %d %.200s", tt.method, tt.path, resp.StatusCode, body)
			}
		})
	}
}

// Many clients asking a fresh agent for one blob at once share one
// download and all get the right bytes.
func TestConcurrentClientsShareOneDownload(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}}))})
	layer := random(3 << 20)
	image(t, o.URL, layer)
	a := startAgent(t, tr.Addr, o.URL, agent.Config{})
	urls := make([]string, 8)
	for i := range urls {
		urls[i] = a.url
	}
	getAll(t, urls, layer)
	if got := a.counter(t, "shoal_agent_origin_bytes_total"); got != float64(len(layer)) {
		t.Fatalf("8 clients cost the origin %v bytes, want one copy (%d)", got, len(layer))
	}
}

// seedingOrigin starts an origin that also seeds over libp2p, and a
// tracker that knows it as a seeder. upload counts what the origin seeds.
func seedingOrigin(t *testing.T) (o *origintest.Origin, trackerAddr string, upload *atomic.Int64) {
	t.Helper()
	return seedingOriginWith(t, origin.Config{})
}

// seedingOriginWith is seedingOrigin with the origin's config.
func seedingOriginWith(t *testing.T, cfg origin.Config) (o *origintest.Origin, trackerAddr string, upload *atomic.Int64) {
	t.Helper()
	o = origintest.Start(t, cfg)
	h := p2ptest.NewHost(t, p2p.HostConfig{})
	s := p2p.NewSeeder(h, o.Server.Seedable(), nil, nil)
	s.EnableSuperSeeding()
	upload = &atomic.Int64{}
	s.Uploaded = func(n int) { upload.Add(int64(n)) }
	addrs := p2p.Addrs(h)
	tr := trackertest.Start(t, nil, tracker.Config{Interval: time.Second}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host, PeerID: h.ID().String(), P2PAddrs: addrs}}))})
	return o, tr.Addr, upload
}

// originEgress is every byte the origin sent: pieces seeded plus blob
// bodies over HTTP.
func originEgress(t *testing.T, o *origintest.Origin, upload *atomic.Int64) int64 {
	fams, _ := o.Registry.Gather()
	var httpOut float64
	for _, f := range fams {
		if f.GetName() == "shoal_origin_bytes_sent_total" {
			httpOut = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return upload.Load() + int64(httpOut)
}

// TestSwarmRollout: ten agents ask for one 16 MiB layer at the same
// moment. Every one gets it right, and the origin sends less than two
// copies: the agents serve each other the rest. Timeouts are generous so
// the race detector's slowdown does not turn into origin fallbacks.
func TestSwarmRollout(t *testing.T) {
	o, trAddr, upload := seedingOrigin(t)
	layer := random(16 << 20)
	image(t, o.URL, layer)
	const agents = 10
	nodes := make([]testAgent, agents)
	patient := agent.Config{Swarm: swarm.Config{StallTimeout: time.Minute,
		Scheduler: scheduler.Config{BaseTimeout: 30 * time.Second}}}
	for i := range nodes {
		nodes[i] = startAgent(t, trAddr, o.URL, patient)
	}
	before := originEgress(t, o, upload)
	start := time.Now()
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	getAll(t, urls, layer)
	egress := originEgress(t, o, upload) - before
	var peers, fallback float64
	for _, n := range nodes {
		peers += n.counter(t, "shoal_agent_peer_bytes_total")
		fallback += n.counter(t, "shoal_agent_origin_bytes_total")
	}
	t.Logf("%d agents × %d MiB in %s: origin sent %.2f copies (%.2f over HTTP fallback), agents received %.2f copies from peers",
		agents, len(layer)>>20, time.Since(start).Round(time.Millisecond), float64(egress)/float64(len(layer)),
		fallback/float64(len(layer)), peers/float64(len(layer)))
	if egress >= 2*int64(len(layer)) {
		t.Fatalf("origin sent %.2f copies of the blob", float64(egress)/float64(len(layer)))
	}
}

// A hostile origin whose metainfo matches the bytes it sends but not the
// digest asked for: every piece verifies, the blob does not. The client's
// connection is cut before the body ends, and nothing is cached.
func TestWrongBlobNeverEndsCleanly(t *testing.T) {
	wanted := random(9 << 20)
	served := random(9 << 20)
	mi, err := metainfo.Compute(digest.FromBytes(served), bytes.NewReader(served), int64(len(served)))
	if err != nil {
		t.Fatal(err)
	}
	mi.Digest = digest.Digest(sha(wanted))
	mux := http.NewServeMux()
	mux.HandleFunc(metainfo.HTTPPath, func(w http.ResponseWriter, r *http.Request) {
		b, _ := mi.Marshal()
		w.Write(b)
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(served))
	})
	hostile := httptest.NewServer(mux)
	defer hostile.Close()

	a := startAgent(t, "", hostile.URL, agent.Config{})
	for range 2 {
		resp, err := http.Get(a.url + "/v2/team/app/blobs/" + sha(wanted))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			t.Fatalf("a wrong body of %d bytes ended cleanly", len(body))
		}
		if int64(len(body)) >= int64(len(served)) {
			t.Fatalf("the whole wrong body (%d bytes) went out", len(body))
		}
	}
	if kept, _ := filepath.Glob(filepath.Join(a.dataDir, "cache", "blobs", "*", "*", "*")); len(kept) != 0 {
		t.Fatalf("cached: %v", kept)
	}
	if n := a.counter(t, "shoal_agent_pieces_total"); n != 0 {
		t.Fatalf("%v pieces counted from peers; all came from the origin", n)
	}
}

// getAll fetches blob from every agent URL at once and checks each body.
func getAll(t *testing.T, agents []string, blob []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(agents))
	for _, u := range agents {
		wg.Go(func() {
			resp, err := http.Get(u + "/v2/team/app/blobs/" + sha(blob))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(b, blob) {
				errs <- fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, len(b), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestCorruptCacheNeverServed: one byte flips in a blob an agent cached,
// and the agent restarts. Neither a client nor a peer ever gets the piece
// holding it: the client gets the right bytes (fetched again, before or
// after the status line went out), a peer asking first gets an error, and
// the blob is counted, evicted and fetched again.
func TestCorruptCacheNeverServed(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}}))})
	const size = 5<<20 + 17 // eleven 512 KiB pieces
	leech := p2ptest.NewHost(t, p2p.HostConfig{})
	tests := []struct {
		name      string
		flip      int64
		peerFirst bool
	}{
		{"first piece, client first", 100, false},
		{"middle piece, client first", 3<<20 + 5, false},
		{"last byte, client first", size - 1, false},
		{"first piece, peer first", 100, true},
		{"middle piece, peer first", 3<<20 + 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A blob of its own: the agents of earlier cases are gone,
			// and a swarm with only dead seeders waits out its stall
			// timeout before it turns to the origin.
			layer := random(size)
			image(t, o.URL, layer)
			mi, err := metainfo.Compute(digest.FromBytes(layer), bytes.NewReader(layer), size)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			a := startAgent(t, tr.Addr, o.URL, agent.Config{DataDir: dir})
			getAll(t, []string{a.url}, layer)
			a.stop()
			agent.FlipByte(t, filepath.Join(dir, "cache", "blobs", "sha256", mi.Digest.Hex()[:2], mi.Digest.Hex()), tt.flip)
			a = startAgent(t, tr.Addr, o.URL, agent.Config{DataDir: dir})
			bad := int(tt.flip / mi.PieceLength)
			if tt.peerFirst {
				if got := askPiece(t, leech, a, mi, bad); got {
					t.Fatalf("the only copy of piece %d is corrupt, and a peer got a piece that verifies", bad)
				}
			}
			resp, err := http.Get(a.url + "/v2/team/app/blobs/" + mi.Digest.String())
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && sha(body) != mi.Digest.String() {
				t.Fatalf("200 with %d bytes hashing to %s, not the digest", len(body), sha(body))
			}
			t.Logf("first read after the restart: %d, %d bytes, %v", resp.StatusCode, len(body), err)
			// Fetched again: the next read is whole and right, and peers
			// get good pieces.
			getAll(t, []string{a.url}, layer)
			if !tt.peerFirst && !askPiece(t, leech, a, mi, bad) {
				t.Fatalf("piece %d not served after the blob was fetched again", bad)
			}
			if n := a.counter(t, "shoal_agent_cache_corrupt_total"); n != 1 {
				t.Fatalf("counted %v corrupt blobs, want 1", n)
			}
		})
	}
}

// askPiece asks a's seeder for piece i of mi over a fresh stream from h:
// true if it came and verified, false if the seeder refused. A piece that
// arrives and does not verify fails the test.
func askPiece(t *testing.T, h host.Host, a testAgent, mi *metainfo.MetaInfo, i int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p2p.Dial(ctx, h, agentInfo(t, a), mi, p2ptest.Empty{MI: mi})
	if err != nil {
		t.Logf("dial: %v", err)
		return false
	}
	defer c.Close()
	if err := c.Request(i); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, mi.PieceLength)
	for {
		ev, err := c.Next(buf)
		if err != nil {
			t.Logf("piece %d: %v", i, err)
			return false
		}
		switch {
		case ev.Busy:
			time.Sleep(ev.RetryAfter)
			c.Request(i)
		case ev.Have:
		case ev.Piece != i:
			t.Fatalf("asked for piece %d, got %d", i, ev.Piece)
		case !mi.VerifyPiece(i, ev.Data):
			t.Fatalf("piece %d arrived corrupt", i)
		default:
			return true
		}
	}
}
