package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ring"
)

// agentLogConfig makes an agent log everything, one JSON object a line, so
// a test can read when it finished each blob and why piece streams ended
// (the seeder logs a stream's error at debug level).
const agentLogConfig = "log_level: debug\nlog_format: json\n"

// TestConcurrentContainerdPulls: four nodes, each a real containerd with
// its agent as the hosts.toml mirror, pull the same three-layer image at
// the same moment, as kubelets do in a rollout. Every pull must succeed and
// unpack, and once some agent holds the whole of a blob, the others must
// get the rest of it from the agents: no byte of it from the origins, over
// the piece protocol or /v2.
//
// Where the bytes come from is measured, per blob:
//   - The origins are a cluster of three, each blob on one owner
//     (--replicas 1). The layers' random content is drawn until each layer
//     has an owner of its own (the ring is a pure function of member IDs
//     and digest), each blob is pushed straight to its owner (an origin
//     that takes a push keeps a copy), and the test checks the disks. The
//     tracker (replicas: 1) hands out only a blob's owner, so an origin's
//     shoal_origin_seeded_bytes_total counts the pieces of its own blobs:
//     one layer, and maybe the config. The test polls every origin's
//     /metrics every 50 ms during the pull (and the agents', for the
//     report).
//   - Each agent reaches the origins' /v2 through its own recording proxy,
//     and each containerd's hosts.toml server (its fallback) is another;
//     they note each read's path, range, start and bytes.
//   - The moment a blob was first held whole is the earliest timestamp of
//     the agents' "blob downloaded" log lines for its digest. An agent logs
//     it after the last piece verified and the file was synced and moved
//     into the cache: the latest point at which it can be said to hold the
//     whole blob, so the cut-off is, if anything, generous to the origins.
//
// Then: no /v2 read of a blob may start after its moment; no origin may
// seed a piece later than pieceSettle after the moment of the last blob it
// owns; and in all the origins may send one copy of the image plus a piece
// per blob. No agent may log a warning, an error or a piece stream that
// broke because the blob could not be read.
func TestConcurrentContainerdPulls(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	const nodes, nOrigins = 4, 3
	dir := t.TempDir()
	tcfg := filepath.Join(dir, "tracker.yaml")
	if err := os.WriteFile(tcfg, []byte("replicas: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := startTracker(t, dir, "--config", tcfg)
	var origins []string
	var members []ring.Member
	for i := range nOrigins {
		id := fmt.Sprintf("o%d", i)
		origins = append(origins, startOriginAs(t, id, filepath.Join(dir, id), tr.etcd, true))
		members = append(members, ring.Member{ID: id})
	}
	for _, o := range origins {
		waitMetric(t, o, "shoal_origin_cluster_members", nOrigins, 10*time.Second)
	}
	rg := ring.New(members)
	owner := func(d string) int {
		i, _ := strconv.Atoi(rg.Owners(d, 1)[0].ID[1:])
		return i
	}
	taken := map[int]bool{}
	// 18, 14 and 10 MiB of random bytes: twice as many pieces of 512 KiB.
	im := pushImageOf(t, "http://"+origins[0], "team/app", "v1", placement{
		accept: func(d string) bool {
			if taken[owner(d)] {
				return false
			}
			taken[owner(d)] = true
			return true
		},
		// Straight to the owner: an origin that takes a push keeps a copy.
		origin: func(d string) string { return "http://" + origins[owner(d)] },
	}, 18<<20, 14<<20, 10<<20)
	owned := make([][]blobDesc, nOrigins)
	for _, b := range im.blobs() {
		o := owner(b.Digest)
		owned[o] = append(owned[o], b)
		for i := range nOrigins {
			if got := holdsBlob(t, filepath.Join(dir, fmt.Sprintf("o%d", i)), b.Digest); got != (i == o) {
				t.Fatalf("%s is on o%d: %v; the test placed it on o%d only", b.Digest, i, got, o)
			}
		}
	}

	type node struct {
		a             agentProc
		v2, direct    *originProxy
		sock, certs   string
		out           []byte
		err           error
		began, finish time.Time
	}
	ns := make([]*node, nodes)
	var agentAddrs []string
	for i := range ns {
		n := &node{}
		name := fmt.Sprintf("agent%d", i)
		n.v2 = newOriginProxy(t, origins[0])
		n.direct = newOriginProxy(t, origins[0])
		n.a = startAgent(t, dir, name, tr.grpc, n.v2.addr, agentLogConfig)
		n.sock, n.certs = mirroredContainerd(t, n.a, n.direct.addr)
		ns[i] = n
		agentAddrs = append(agentAddrs, n.a.addr)
	}

	samples := startSampler(origins, agentAddrs, 50*time.Millisecond)
	startAll := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Go(func() {
			<-startAll
			n.began = time.Now()
			n.out, n.err = exec.Command("ctr", "-a", n.sock, "-n", "e2e", "images", "pull", "--plain-http",
				"--hosts-dir", n.certs, registry+"/team/app:v1").CombinedOutput()
			n.finish = time.Now()
		})
	}
	time.Sleep(100 * time.Millisecond) // a first sample before the pulls
	start := time.Now()
	close(startAll)
	wg.Wait()
	// Each agent logs a blob a moment after containerd has its last byte.
	for i, n := range ns {
		deadline := time.Now().Add(5 * time.Second)
		for len(downloaded(n.a.Logs())) < len(im.blobs()) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := len(downloaded(n.a.Logs())); got != len(im.blobs()) {
			t.Errorf("agent %d logged \"blob downloaded\" for %d blobs; the image has %d", i, got, len(im.blobs()))
		}
	}
	time.Sleep(pieceSettle + 200*time.Millisecond) // samples after any straggling piece
	timeline, scrapeErrs := samples.finish()
	if len(scrapeErrs) > 0 {
		t.Errorf("reading /metrics during the pull: %d errors, first: %v", len(scrapeErrs), scrapeErrs[0])
	}
	first, last := timeline[0], timeline[len(timeline)-1]

	// Every pull succeeded, through its agent, and unpacked.
	for i, n := range ns {
		if n.err != nil {
			t.Errorf("node %d: ctr pull: %v\n%s\nagent log:\n%s", i, n.err, n.out, n.a.Logs())
			continue
		}
		snaps, err := exec.Command("ctr", "-a", n.sock, "-n", "e2e", "snapshots", "ls").CombinedOutput()
		if err != nil || strings.Count(string(snaps), "\n") < 1+len(im.layers) {
			t.Errorf("node %d: image not unpacked: %v\n%s", i, err, snaps)
		}
		if direct := n.direct.reads(); len(direct) > 0 {
			t.Errorf("node %d: containerd went around its agent to the origin %d times, first %s %s", i, len(direct), direct[0].method, direct[0].path)
		}
	}

	// When each blob was first held whole, from the agents' logs.
	held := map[string]time.Time{} // digest → earliest "blob downloaded"
	holder := map[string]int{}
	for i, n := range ns {
		evs, junk := parseAgentLog(n.a.Logs())
		for _, l := range junk {
			t.Errorf("agent %d: log line not JSON: %q", i, l)
		}
		for d, at := range downloaded(n.a.Logs()) {
			if was, ok := held[d]; !ok || at.Before(was) {
				held[d], holder[d] = at, i
			}
		}
		checkAgentLog(t, fmt.Sprintf("agent %d", i), evs)
	}
	for _, b := range im.blobs() {
		at, ok := held[b.Digest]
		if !ok {
			t.Fatalf("no agent logged \"blob downloaded\" for %s (%d bytes)", b.Digest, b.Size)
		}
		t.Logf("blob %s (%4.1f MiB, %d pieces, on o%d): first held whole by agent %d at +%s", b.Digest[7:19],
			float64(b.Size)/(1<<20), metainfo.NumPieces(int64(b.Size), metainfo.PieceLength(int64(b.Size))),
			owner(b.Digest), holder[b.Digest], at.Sub(start).Round(time.Millisecond))
	}

	// /v2: nothing of a blob read after a peer held all of it.
	inImage := map[string]bool{}
	for _, b := range im.blobs() {
		inImage[b.Digest] = true
	}
	var v2Bytes int64
	for i, n := range ns {
		for _, r := range n.v2.reads() {
			if r.digest == "" || !r.ok() {
				continue // manifests; refusals and errors carry no blob bytes
			}
			if !inImage[r.digest] {
				t.Errorf("agent %d read a blob not in the image: %s %s", i, r.method, r.path)
				continue
			}
			v2Bytes += r.bytes
			if r.bytes > 0 && r.start.After(held[r.digest]) {
				t.Errorf("agent %d read %d bytes (%s) of %s from the origin's /v2 at +%s, %s after agent %d held the whole blob",
					i, r.bytes, r.rng, r.digest[7:19], r.start.Sub(start).Round(time.Millisecond),
					r.start.Sub(held[r.digest]).Round(time.Millisecond), holder[r.digest])
			}
		}
	}

	// Piece protocol: each origin seeds nothing once its blobs have
	// complete holders.
	var seeded float64
	for o := range origins {
		seeded += last.originSeeded[o] - first.originSeeded[o]
		var done time.Time // when every blob o owns had been held whole
		var names []string
		for _, b := range owned[o] {
			names = append(names, b.Digest[7:19])
			if held[b.Digest].After(done) {
				done = held[b.Digest]
			}
		}
		cut := done.Add(pieceSettle) // an origin that owns nothing: from the first sample
		var atCut *sample
		for k := range timeline {
			if !timeline[k].at.Before(cut) {
				atCut = &timeline[k]
				break
			}
		}
		if atCut == nil {
			t.Errorf("no /metrics sample after +%s to judge o%d by", cut.Sub(start).Round(time.Millisecond), o)
			continue
		}
		if last.originSeeded[o] > atCut.originSeeded[o] {
			t.Errorf("o%d seeded %.1f MiB of %v after +%s, %s after agents held the whole of it; from then on:\n%s",
				o, (last.originSeeded[o]-atCut.originSeeded[o])/(1<<20), names, cut.Sub(start).Round(time.Millisecond),
				pieceSettle, seededSteps(timeline, o, atCut.at, start))
		}
	}

	// In all: one copy of the image and a piece per blob, both paths.
	slack := int64(0)
	for _, b := range im.blobs() {
		slack += min(int64(b.Size), metainfo.PieceLength(int64(b.Size)))
	}
	t.Logf("origins seeded %.1f MiB + %.1f MiB over /v2 for %d pulls of a %.1f MiB image: %.2f copies",
		seeded/(1<<20), float64(v2Bytes)/(1<<20), nodes, float64(im.bytes())/(1<<20), (seeded+float64(v2Bytes))/float64(im.bytes()))
	if total := seeded + float64(v2Bytes); total > float64(im.bytes()+slack) {
		t.Errorf("origin egress %.1f MiB (%.1f seeded, %.1f /v2) > one copy of the image (%.1f MiB) plus a piece per blob (%.1f MiB)",
			total/(1<<20), seeded/(1<<20), float64(v2Bytes)/(1<<20), float64(im.bytes())/(1<<20), float64(slack)/(1<<20))
	}
	for i, n := range ns {
		t.Logf("node %d: pull %s; agent: %.1f MiB from peers, %.1f MiB from the origin's /v2, %.1f MiB uploaded", i,
			n.finish.Sub(n.began).Round(time.Millisecond), metric(t, n.a.addr, "shoal_agent_peer_bytes_total")/(1<<20),
			metric(t, n.a.addr, "shoal_agent_origin_bytes_total")/(1<<20), metric(t, n.a.addr, "shoal_agent_uploaded_bytes_total")/(1<<20))
	}
}

// holdsBlob reports whether an origin's data directory stores blob d (a
// file named by its hex under a "blobs" directory).
func holdsBlob(t *testing.T, dataDir, d string) bool {
	t.Helper()
	hex := d[strings.IndexByte(d, ':')+1:]
	found := false
	err := filepath.WalkDir(dataDir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() == hex && strings.Contains(path, string(filepath.Separator)+"blobs"+string(filepath.Separator)) {
			found = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// pieceSettle is how long after some agent held the whole of a blob a
// piece of it already asked of the origin may still arrive: the news
// reaches the other downloaders in a seeder's have round (100 ms), and a
// piece under way takes some tens of milliseconds on loopback.
const pieceSettle = 300 * time.Millisecond

// TestRestartedAgentSeedsAtOnce: an agent holding a whole image in its
// cache is restarted with seed_interval 10m. Within 2 s of being ready it
// must report its cache (shoal_agent_cache_bytes, shoal_agent_seeding_blobs)
// and be known to the tracker, and a fresh node pulling the image then
// must get it from this agent.
//
// It cannot pass by accident: the origin has no libp2p host (no
// --p2p-listen), so it seeds nothing and is never handed out; the agent
// filled its cache in a first life without a tracker, so the tracker has
// never heard of it (as after an absence longer than the tracker's expiry,
// or a tracker restart), and the test checks that the tracker holds no
// peer at all before the restart; the fresh agent has never met it. The
// restarted agent's only way into the swarm is announcing its cache when
// it starts; without that the fresh node reads the image from the origin's
// /v2 and the restarted agent uploads nothing.
func TestRestartedAgentSeedsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	dir := t.TempDir()
	tr := startTracker(t, dir)
	oAddr := startOriginSeeding(t, dir, tr.etcd, false)
	im := pushLayers(t, "http://"+oAddr, "team/app", "v1", 10<<20, 6<<20, 2<<20)
	blobs := im.blobs()

	// The first life: no tracker; the whole image from the origin into
	// the cache.
	seed := startAgent(t, dir, "seed", "", oAddr, agentLogConfig)
	for _, b := range blobs {
		body, err := seed.get(b.Digest)
		if err != nil || sha(body) != b.Digest {
			t.Fatalf("seed agent: GET %s: %v (%d bytes)", b.Digest, err, len(body))
		}
	}
	waitMetric(t, seed.addr, "shoal_agent_seeding_blobs", float64(len(blobs)), 10*time.Second)
	if err := seed.Stop(10 * time.Second); err != nil {
		t.Fatalf("seed agent exit: %v\n%s", err, seed.Logs())
	}

	// The fresh node, ready before the restart so its start-up does not
	// eat into the 2 s.
	fresh := startAgent(t, dir, "fresh", tr.grpc, oAddr, agentLogConfig)
	sock, certs := mirroredContainerd(t, fresh, oAddr)

	// The second life: the tracker, and seed_interval 10m.
	cfg, err := os.ReadFile(seed.config)
	if err != nil {
		t.Fatal(err)
	}
	second := strings.Replace(string(cfg), "seed_interval: 1s\n", "seed_interval: 10m\n", 1)
	second = strings.Replace(second, "tracker: \"\"\n", fmt.Sprintf("tracker: %q\n", tr.grpc), 1)
	if !strings.Contains(second, "seed_interval: 10m\n") || !strings.Contains(second, tr.grpc) {
		t.Fatalf("cannot set seed_interval and tracker in\n%s", cfg)
	}
	if err := os.WriteFile(seed.config, []byte(second), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a tracker sweep, for its gauge
	if n := metric(t, tr.http, "shoal_tracker_peers"); n != 0 {
		t.Fatalf("the tracker holds %.0f peers before the restart; want none", n)
	}
	seed.restart(t)
	ready := time.Now()

	// (a) Within 2 s: the gauges say what the cache holds, and the
	// tracker has its entries.
	var cached, cacheBytes, trackerPeers float64
	for {
		cached = metric(t, seed.addr, "shoal_agent_seeding_blobs")
		cacheBytes = metric(t, seed.addr, "shoal_agent_cache_bytes")
		trackerPeers = metric(t, tr.http, "shoal_tracker_peers")
		if (cached == float64(len(blobs)) && cacheBytes >= float64(im.bytes()) && trackerPeers >= float64(len(blobs))) ||
			time.Since(ready) > 2*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s after ready: shoal_agent_seeding_blobs %.0f, shoal_agent_cache_bytes %.0f, tracker peers %.0f",
		time.Since(ready).Round(time.Millisecond), cached, cacheBytes, trackerPeers)
	if cached != float64(len(blobs)) || cacheBytes < float64(im.bytes()) {
		t.Errorf("2 s after the restarted agent was ready: shoal_agent_seeding_blobs %.0f (want %d), shoal_agent_cache_bytes %.0f (want ≥ %d)",
			cached, len(blobs), cacheBytes, im.bytes())
	}
	if trackerPeers < float64(len(blobs)) {
		t.Errorf("2 s after the restarted agent was ready the tracker holds %.0f peer entries; want its %d cached blobs announced", trackerPeers, len(blobs))
	}

	// (b) The fresh node pulls, within the same 2 s, and gets the layers
	// from the restarted agent.
	began := time.Now()
	out, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "images", "pull", "--plain-http",
		"--hosts-dir", certs, registry+"/team/app:v1").CombinedOutput()
	if err != nil {
		t.Fatalf("fresh node: ctr pull: %v\n%s\nagent log:\n%s", err, out, fresh.Logs())
	}
	took := time.Since(began)
	up := metric(t, seed.addr, "shoal_agent_uploaded_bytes_total")
	peers := metric(t, fresh.addr, "shoal_agent_peer_bytes_total")
	fromOrigin := metric(t, fresh.addr, "shoal_agent_origin_bytes_total")
	served := metric(t, fresh.addr, "shoal_agent_served_bytes_total")
	t.Logf("fresh node pulled in %s (started %s after the restart): %.1f MiB from peers, %.1f MiB from the origin's /v2; the restarted agent uploaded %.1f MiB",
		took.Round(time.Millisecond), began.Sub(ready).Round(time.Millisecond), peers/(1<<20), fromOrigin/(1<<20), up/(1<<20))
	if served < float64(im.bytes()) {
		t.Errorf("containerd took %.0f of %d bytes through the fresh agent: it went around it", served, im.bytes())
	}
	if up < float64(im.bytes()) || fromOrigin > 0 {
		t.Errorf("the restarted agent uploaded %.0f bytes and the fresh one read %.0f from the origin's /v2; want the whole image (%d bytes) from the restarted agent, none from the origin",
			up, fromOrigin, im.bytes())
	}
	for name, a := range map[string]agentProc{"restarted agent": seed, "fresh agent": fresh} {
		evs, _ := parseAgentLog(a.Logs())
		checkAgentLog(t, name, evs)
	}
}

// mirroredContainerd starts a containerd whose hosts.toml sends registry
// pulls to agent a first, then to server (host:port), and returns its
// socket and the hosts directory.
func mirroredContainerd(t *testing.T, a agentProc, server string) (sock, certs string) {
	t.Helper()
	certs = filepath.Join(a.dir, "certs.d")
	hosts := filepath.Join(certs, registry)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+server, "http://"+a.addr)
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return containerd(t, filepath.Join(a.dir, "containerd")), certs
}

// originProxy is a recording reverse proxy in front of an origin's HTTP
// API: what one client read from it, when.
type originProxy struct {
	addr string // host:port
	mu   sync.Mutex
	log  []*proxiedRead
}

type proxiedRead struct {
	method, path, rng string
	digest            string // for /blobs/ paths
	start             time.Time
	status            int
	bytes             int64 // response body bytes sent so far
}

// ok is a successful read: its bytes are the blob's (not an error body).
func (r proxiedRead) ok() bool { return r.status/100 == 2 }

func newOriginProxy(t *testing.T, origin string) *originProxy {
	t.Helper()
	target, err := url.Parse("http://" + origin)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = nil
	p := &originProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &proxiedRead{method: r.Method, path: r.URL.Path, rng: r.Header.Get("Range"), start: time.Now()}
		if i := strings.Index(r.URL.Path, "/blobs/"); i >= 0 {
			rec.digest = r.URL.Path[i+len("/blobs/"):]
		}
		p.mu.Lock()
		p.log = append(p.log, rec)
		p.mu.Unlock()
		rp.ServeHTTP(&countingWriter{ResponseWriter: w, p: p, rec: rec}, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

// reads returns a copy of what was read so far.
func (p *originProxy) reads() []proxiedRead {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]proxiedRead, len(p.log))
	for i, r := range p.log {
		out[i] = *r
	}
	return out
}

type countingWriter struct {
	http.ResponseWriter
	p   *originProxy
	rec *proxiedRead
}

func (w *countingWriter) WriteHeader(code int) {
	w.p.mu.Lock()
	w.rec.status = code
	w.p.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	if w.rec.status == 0 {
		w.rec.status = http.StatusOK
	}
	w.p.mu.Unlock()
	n, err := w.ResponseWriter.Write(b)
	w.p.mu.Lock()
	w.rec.bytes += int64(n)
	w.p.mu.Unlock()
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sample is one poll of the origins' and the agents' counters.
type sample struct {
	at                      time.Time
	originSeeded            []float64
	agentPeers, agentOrigin []float64
}

type sampler struct {
	stop chan struct{}
	done chan struct{}
	out  []sample
	errs []error
}

// startSampler polls the origins' and the agents' /metrics every period
// until finish.
func startSampler(origins, agents []string, period time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(addr string) map[string]float64 {
		m, err := scrape(client, addr)
		if err != nil {
			s.errs = append(s.errs, err)
		}
		return m
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			sm := sample{at: time.Now()}
			for _, o := range origins {
				sm.originSeeded = append(sm.originSeeded, get(o)["shoal_origin_seeded_bytes_total"])
			}
			for _, a := range agents {
				m := get(a)
				sm.agentPeers = append(sm.agentPeers, m["shoal_agent_peer_bytes_total"])
				sm.agentOrigin = append(sm.agentOrigin, m["shoal_agent_origin_bytes_total"])
			}
			s.out = append(s.out, sm)
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// finish stops polling after one last sample and returns the samples.
func (s *sampler) finish() ([]sample, []error) {
	close(s.stop)
	<-s.done
	return s.out, s.errs
}

// scrape reads a component's /metrics: each metric's sum over its series.
func scrape(client *http.Client, addr string) (map[string]float64, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", addr, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			m[name] += v
		}
	}
	return m, nil
}

// seededSteps shows each growth of origin o's seeded counter after from.
func seededSteps(timeline []sample, o int, from, start time.Time) string {
	var b strings.Builder
	for k := 1; k < len(timeline); k++ {
		prev, s := timeline[k-1], timeline[k]
		if !s.at.After(from) || s.originSeeded[o] == prev.originSeeded[o] {
			continue
		}
		fmt.Fprintf(&b, "  +%s: +%.1f MiB seeded; agents' bytes from peers %s, from /v2 %s\n", s.at.Sub(start).Round(time.Millisecond),
			(s.originSeeded[o]-prev.originSeeded[o])/(1<<20), mib(s.agentPeers), mib(s.agentOrigin))
	}
	return b.String()
}

func mib(vs []float64) string {
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("%.1f", v/(1<<20)))
	}
	return "[" + strings.Join(parts, " ") + "] MiB"
}

// logEvent is one line of an agent's JSON log.
type logEvent struct {
	Time   time.Time `json:"time"`
	Level  string    `json:"level"`
	Msg    string    `json:"msg"`
	Digest string    `json:"digest"`
	Err    string    `json:"err"`
	raw    string
}

// downloaded is when an agent finished each blob, from its "blob
// downloaded" log lines.
func downloaded(logs string) map[string]time.Time {
	evs, _ := parseAgentLog(logs)
	out := map[string]time.Time{}
	for _, e := range evs {
		if e.Msg == "blob downloaded" {
			out[e.Digest] = e.Time
		}
	}
	return out
}

// parseAgentLog splits an agent's output into its JSON log lines and
// anything else it wrote.
func parseAgentLog(logs string) (events []logEvent, other []string) {
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var e logEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Msg == "" {
			if strings.TrimSpace(line) != "" {
				other = append(other, line)
			}
			continue
		}
		e.raw = line
		events = append(events, e)
	}
	return events, other
}

// checkAgentLog fails the test for any warning or error an agent logged,
// and for any piece stream that ended because the blob could not be read
// ("unavailable", "file already closed": an upload broken under a peer).
func checkAgentLog(t *testing.T, name string, evs []logEvent) {
	t.Helper()
	var bad []string
	for _, e := range evs {
		if e.Level == "WARN" || e.Level == "ERROR" ||
			strings.Contains(e.raw, "file already closed") || strings.Contains(e.raw, "unavailable") {
			bad = append(bad, e.raw)
		}
	}
	if len(bad) > 0 {
		n := len(bad)
		if len(bad) > 20 {
			bad = append(bad[:20:20], "…")
		}
		t.Errorf("%s logged %d unexpected lines:\n  %s", name, n, strings.Join(bad, "\n  "))
	}
}
