package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-project/shoal/pkg/capability"
)

// options say what fleet to run.
type options struct {
	Agents   int
	Image    int64 // total layer bytes
	Layers   int
	LinkBps  int64 // per-process uplink and downlink, bytes/s; 0: uncapped
	Baseline bool  // also run the same fleet pulling straight from the origin
	Bin      string
	Out      string // where the report goes
	Timeout  time.Duration
	Progress io.Writer // live progress; nil: none
	// Origins is how many origins run (blobs on min(2, Origins) of them).
	Origins int
	// Stagger spreads the agents' starts evenly over this window.
	Stagger time.Duration
	// Churn is the fraction of agents killed mid-pull and restarted on the
	// same data; KillOrigin kills one origin mid-pull (needs Origins ≥ 2).
	Churn      float64
	KillOrigin bool
	// Netns runs every process in a network namespace of its own, links
	// capped by tc instead of the processes' token buckets (root only).
	Netns bool
	// LogLevel of the fleet's processes (default warn); their logs are
	// kept beside the report.
	LogLevel string
	// Capabilities gives the origins a capability key and the agents its
	// public half, so every piece request carries a capability the origin
	// issued (repository isolation on P2P), to measure what it costs.
	Capabilities bool
	// Preheat: a phase whose rollout follows a preheat of this many agents.
	Preheat int
	// CacheBytes sets the agents' cache_bytes (0: their default) and has
	// the pull watch their data directories against it.
	CacheBytes int64
	// Upstream puts the image only in a real upstream registry that the
	// origins pull through, and has the agents pull it with ?ns=;
	// UpstreamBps caps what that registry sends (0: uncapped).
	Upstream    bool
	UpstreamBps int64
}

// phase is one fleet's pull, measured.
type phase struct {
	Mode         string        `json:"mode"` // "p2p" or "direct"
	Agents       []agentResult `json:"agents"`
	OriginEgress int64         `json:"origin_egress_bytes"`
	PeerBytes    int64         `json:"peer_bytes"`
	Wall         float64       `json:"wall_seconds"`
	// Setup is the time to start the fleet (namespaces, processes, the
	// push), before the pull.
	Setup float64 `json:"setup_seconds"`
	// The origins' counters over the pull: egress split by path, and
	// refusals because their uplink was full.
	originCounters
	// AgentOriginBytes is what the agents counted from origins.
	AgentOriginBytes int64 `json:"agent_origin_bytes"`
	// The agents' counters, summed.
	agentCounters
	// CPU is how busy the machine was during the pull.
	CPU cpuUse `json:"cpu"`
	// Preheat is what the preheat before the rollout did ("preheat" mode).
	Preheat *preheatResult `json:"preheat,omitempty"`
	// Disk is what the agents' data directories held during the pull,
	// against their cache_bytes (with --cache).
	Disk *diskUse `json:"disk,omitempty"`
	// Upstream is what the upstream registry sent over the pull (with
	// --upstream).
	Upstream *upstreamUse `json:"upstream,omitempty"`
}

// upstreamUse is the upstream registry's side of a pull: its egress as the
// relay in front of it counted it (TLS, headers and all), and the blob
// bytes the origins counted reading from it, which the egress must cover.
type upstreamUse struct {
	EgressBytes       int64 `json:"egress_bytes"`
	OriginsBlobsBytes int64 `json:"origins_blob_bytes"`
	// LastByte is when the registry sent its last byte, since the pull
	// began: the agents' first bytes before it are the pieces handed out
	// while the image still arrived.
	LastByte float64 `json:"last_byte_seconds"`
}

// preheatResult is a preheat before a rollout: how long it took to K
// complete copies, and what the origin sent for it (not counted in the
// rollout's egress).
type preheatResult struct {
	Copies       int     `json:"copies"`
	Seconds      float64 `json:"seconds"`
	OriginEgress int64   `json:"origin_egress_bytes"`
}

type agentResult struct {
	Name        string  `json:"name"`
	Start       float64 `json:"start_seconds"` // since the phase began
	FirstByte   float64 `json:"first_byte_seconds"`
	Done        float64 `json:"done_seconds"`
	FromPeers   int64   `json:"from_peers_bytes"`
	FromOrigin  int64   `json:"from_origin_bytes"`
	Uploaded    int64   `json:"uploaded_bytes"`
	Error       string  `json:"error,omitempty"`
	ReceivedAll int64   `json:"received_bytes"`
	agentCounters
}

// agentCounters are what an agent counted of the mechanism, over all its
// incarnations; a counter an agent does not export reads 0.
type agentCounters struct {
	// DuplicateBytes are piece bytes received for pieces already held.
	DuplicateBytes int64 `json:"duplicate_bytes"`
	// Expired are piece requests withdrawn because the peer went quiet.
	Expired int64 `json:"requests_expired"`
	// BusyReceived are requests a seeder refused because its uplink was
	// full (chokes); BusySent are the refusals this agent's seeder sent.
	BusyReceived int64 `json:"busy_received"`
	BusySent     int64 `json:"busy_sent"`
	// Stalls are downloads whose swarm went quiet, so pieces came from
	// the origin one at a time.
	Stalls int64 `json:"stalls"`
	// Origin* are the fallback range GETs to an origin's /v2, by result.
	OriginOK    int64 `json:"origin_requests_ok"`
	OriginBusy  int64 `json:"origin_requests_busy"`
	OriginError int64 `json:"origin_requests_error"`
	// Capabilities fetched from the origins, and piece streams this
	// agent's seeder refused for want of a valid one (--capabilities).
	CapabilitiesFetched int64 `json:"capabilities_fetched"`
	CapabilitiesRefused int64 `json:"capabilities_refused"`
}

func agentCountersOf(m map[string]float64) agentCounters {
	const req, capab = "shoal_agent_origin_requests_total", "shoal_agent_capabilities_total"
	return agentCounters{
		CapabilitiesFetched: int64(labelled(m, capab, "result", "fetched")),
		CapabilitiesRefused: int64(labelled(m, capab, "result", "refused")),
		DuplicateBytes:      int64(m["shoal_agent_duplicate_bytes_total"]),
		Expired:             int64(m["shoal_agent_requests_expired_total"]),
		BusyReceived:        int64(m["shoal_agent_busy_received_total"]),
		BusySent:            int64(m["shoal_agent_busy_sent_total"]),
		Stalls:              int64(m["shoal_agent_stalls_total"]),
		OriginOK:            int64(labelled(m, req, "result", "ok")),
		OriginBusy:          int64(labelled(m, req, "result", "busy")),
		OriginError:         int64(labelled(m, req, "result", "error")),
	}
}

func (c *agentCounters) add(d agentCounters) {
	c.DuplicateBytes += d.DuplicateBytes
	c.Expired += d.Expired
	c.BusyReceived += d.BusyReceived
	c.BusySent += d.BusySent
	c.Stalls += d.Stalls
	c.OriginOK += d.OriginOK
	c.CapabilitiesFetched += d.CapabilitiesFetched
	c.CapabilitiesRefused += d.CapabilitiesRefused
	c.OriginBusy += d.OriginBusy
	c.OriginError += d.OriginError
}

// originCounters are what the origins counted over the pull.
type originCounters struct {
	// OriginP2P is piece bytes seeded over the piece protocol; OriginV2 is
	// /v2 bodies (blob reads, fallback ranges, manifests).
	OriginP2P int64 `json:"origin_p2p_bytes"`
	OriginV2  int64 `json:"origin_v2_bytes"`
	// OriginRefused are /v2 blob GETs answered 429 because the uplink was
	// full; OriginBusySent are piece requests refused for the same reason.
	OriginRefused  int64 `json:"origin_readers_refused"`
	OriginBusySent int64 `json:"origin_busy_sent"`
}

func originCountersOf(m map[string]float64) originCounters {
	return originCounters{
		OriginP2P:      int64(m["shoal_origin_seeded_bytes_total"]),
		OriginV2:       int64(m["shoal_origin_bytes_sent_total"]),
		OriginRefused:  int64(m["shoal_origin_blob_readers_refused_total"]),
		OriginBusySent: int64(m["shoal_origin_busy_sent_total"]),
	}
}

type layerDesc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// runPhase starts tracker, origin and agents, pushes the image, has every
// agent pull it at once, and measures.
func runPhase(ctx context.Context, o options, mode string) (*phase, error) {
	setupStart := time.Now()
	dir, err := os.MkdirTemp("", "shoal-loadtest-"+mode+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The processes' logs go with the report, for when a number looks odd.
	defer keepLogs(dir, filepath.Join(o.Out, mode+"-logs"))
	var topo topology = loopback{}
	if o.Netns {
		if topo, err = newNamespaces(ctx, o.LinkBps, o.Agents+o.Origins+1); err != nil {
			return nil, err
		}
	}
	defer topo.close() // after the fleet has stopped: defers run last first
	f := &fleet{bin: o.Bin, dir: dir}
	defer f.stopAll()
	var up *upstreamRegistry
	if o.Upstream {
		if up, err = startUpstream(ctx, f, o.UpstreamBps); err != nil {
			return nil, err
		}
		defer up.close()
	}

	trPlace, err := topo.place("tracker")
	if err != nil {
		return nil, err
	}
	ports := map[string]int{}
	for k, fixed := range map[string]int{"grpc": 7000, "http": 7001, "etcd": 2379, "etcd-peer": 2380} {
		if ports[k], err = trPlace.port(fixed); err != nil {
			return nil, err
		}
	}
	trackerAddr, etcdURL := trPlace.addr(ports["grpc"]), "http://"+trPlace.addr(ports["etcd"])
	// The tracker bounds announces and entries per caller IP. In
	// namespaces every agent has its own, as on real nodes, and the
	// shipped limits apply; on loopback the whole fleet shares one, which
	// gets the fleet's share.
	trCfg := filepath.Join(dir, "tracker.yaml")
	var limits string
	if !o.Netns {
		limits = fmt.Sprintf("ip_announce_rate: %d\nip_announce_burst: %d\nmax_entries_per_ip: %d\n", 400*o.Agents, 10000*o.Agents, 20000*o.Agents)
	}
	trArgs := []string{}
	if mode == "preheat" {
		limits += "preheat:\n  poll_interval: 1s\n"
		tok := filepath.Join(dir, "preheat-token")
		if err := os.WriteFile(tok, []byte(loadtestPreheatToken), 0o600); err != nil {
			return nil, err
		}
		trArgs = append(trArgs, "--preheat-token-file", tok)
	}
	if err := os.WriteFile(trCfg, []byte(limits), 0o644); err != nil {
		return nil, err
	}
	trArgs = append([]string{"--config", trCfg, "--id", "t0", "--grpc-addr", trackerAddr, "--http-addr", trPlace.addr(ports["http"]),
		"--advertise", trackerAddr, "--data-dir", filepath.Join(dir, "tracker"), "--interval", "1s",
		"--embedded-etcd-client-url", etcdURL, "--embedded-etcd-peer-url", "http://" + trPlace.addr(ports["etcd-peer"]),
		// With --netns the etcd listens on the fleet's private bridge.
		"--embedded-etcd-plaintext", "--log-level", o.logLevel()}, trArgs...)
	tr, err := f.start(trPlace, "tracker", "tracker", trArgs...)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, tr, "http://"+trPlace.addr(ports["http"])+"/readyz"); err != nil {
		return nil, err
	}
	if o.Origins < 1 {
		o.Origins = 1
	}
	var origins []*originProc
	for i := range o.Origins {
		org, err := startOrigin(ctx, f, topo, i, o, etcdURL, up)
		if err != nil {
			return nil, err
		}
		origins = append(origins, org)
	}
	var originURLs []string
	for _, org := range origins {
		originURLs = append(originURLs, org.url)
	}
	target := registryTarget{client: origins[0].pl.client, base: originURLs[0]}
	if up != nil {
		// The image lives upstream only: the origins learn of it from
		// the agents' first pull.
		target = up.pushTarget()
	}
	layers, err := pushImage(ctx, target, "loadtest/app", o.Image, o.Layers)
	if err != nil {
		return nil, fmt.Errorf("push image: %w", err)
	}

	// Agents start a few at a time: a fleet of 50 is ready in seconds,
	// not in 50 one-by-one process starts.
	agents := make([]*agentProc, o.Agents)
	if err := fewAtATime(o.Agents, func(i int) (err error) {
		agents[i], err = startAgent(ctx, f, topo, i, o, mode, trackerAddr, originURLs)
		return err
	}); err != nil {
		return nil, err
	}
	for _, org := range origins {
		if org.base, err = scrape(org.pl.client, org.url+"/metrics"); err != nil {
			return nil, err
		}
	}

	var pre *preheatResult
	if mode == "preheat" {
		if pre, err = runPreheat(ctx, o, trPlace, trackerAddr, origins, agents); err != nil {
			return nil, fmt.Errorf("preheat: %w", err)
		}
	}
	ph := &phase{Mode: mode, Agents: make([]agentResult, o.Agents), Setup: time.Since(setupStart).Seconds(), Preheat: pre}
	var upBase int64
	if up != nil {
		upBase = up.egress()
	}
	var received atomic.Int64
	var doneCount atomic.Int32
	stopProgress := progress(o.Progress, mode, o.Agents, int64(o.Agents)*o.Image, &doneCount, &received)
	cpu := startCPU()
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	// Faults land about halfway through the ideal rollout.
	faultAt := time.Second
	if o.LinkBps > 0 {
		faultAt = max(faultAt, time.Duration(float64(o.Image)/float64(o.LinkBps)/2*float64(time.Second)))
	}
	var wg sync.WaitGroup
	var disk *diskWatch
	if o.CacheBytes > 0 {
		dirs := make([]diskSource, len(agents))
		for i, a := range agents {
			dirs[i] = diskSource{dir: filepath.Join(a.f.dir, a.name), pid: a.pid}
		}
		disk = watchDisk(dirs, o.CacheBytes)
	}
	churned := int(o.Churn * float64(o.Agents))
	for i, a := range agents {
		offset := time.Duration(0)
		if o.Agents > 1 {
			offset = o.Stagger * time.Duration(i) / time.Duration(o.Agents-1)
		}
		wg.Go(func() {
			ph.Agents[i] = a.pullWithRestarts(pctx, offset, layers, start, &received)
			ph.Agents[i].Name = a.name
			doneCount.Add(1)
		})
		if i < churned {
			wg.Go(func() { a.churn(pctx, offset+faultAt) })
		}
	}
	if o.KillOrigin && len(origins) > 1 {
		wg.Go(func() {
			select {
			case <-time.After(faultAt):
				origins[0].kill()
			case <-pctx.Done():
			}
		})
	}
	wg.Wait()
	ph.Wall = time.Since(start).Seconds()
	ph.CPU = cpu.stop()
	if disk != nil {
		ph.Disk = disk.stop()
	}
	stopProgress()

	for _, org := range origins {
		m, err := org.counters()
		if err != nil {
			return nil, err
		}
		c := originCountersOf(m)
		ph.OriginP2P += c.OriginP2P
		ph.OriginV2 += c.OriginV2
		ph.OriginRefused += c.OriginRefused
		ph.OriginBusySent += c.OriginBusySent
	}
	ph.OriginEgress = ph.OriginP2P + ph.OriginV2
	if up != nil {
		ph.Upstream = &upstreamUse{EgressBytes: up.egress() - upBase, LastByte: up.lastByte().Sub(start).Seconds()}
		for _, org := range origins {
			m, err := org.counters()
			if err != nil {
				return nil, err
			}
			ph.Upstream.OriginsBlobsBytes += int64(m["shoal_upstream_blob_bytes_total"])
		}
	}
	// Fifty scrapes through namespaces add up, too.
	scraped := make([]map[string]float64, len(agents))
	if err := fewAtATime(len(agents), func(i int) (err error) {
		scraped[i], err = agents[i].counters()
		return err
	}); err != nil {
		return nil, err
	}
	for i, m := range scraped {
		ph.Agents[i].FromPeers = int64(m["shoal_agent_peer_bytes_total"])
		ph.Agents[i].FromOrigin = int64(m["shoal_agent_origin_bytes_total"])
		ph.Agents[i].Uploaded = int64(m["shoal_agent_uploaded_bytes_total"])
		ph.Agents[i].agentCounters = agentCountersOf(m)
		ph.PeerBytes += ph.Agents[i].FromPeers
		ph.AgentOriginBytes += ph.Agents[i].FromOrigin
		ph.agentCounters.add(ph.Agents[i].agentCounters)
	}
	return ph, nil
}

// fewAtATime runs do(0)…do(n-1), four at once, and joins their errors.
func fewAtATime(n int, do func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	slots := make(chan struct{}, 4)
	for i := range n {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			errs[i] = do(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// originProc is one origin; a killed one keeps the counts it had.
type originProc struct {
	*proc
	url    string
	base   map[string]float64 // counters before the pull
	killed map[string]float64 // counters when it was killed
}

func startOrigin(ctx context.Context, f *fleet, topo topology, i int, o options, etcd string, up *upstreamRegistry) (*originProc, error) {
	id := fmt.Sprintf("o%d", i)
	pl, err := topo.place("origin-" + id)
	if err != nil {
		return nil, err
	}
	port, err := pl.port(5000)
	if err != nil {
		return nil, err
	}
	p2pPort, err := pl.port(4001)
	if err != nil {
		return nil, err
	}
	addr := pl.addr(port)
	// The fleet's origins share one cluster secret, as a real cluster's
	// do; the first origin writes it.
	secret := filepath.Join(f.dir, "cluster-secret")
	if _, err := os.Stat(secret); err != nil {
		var b [32]byte
		rand.Read(b[:])
		if err := os.WriteFile(secret, []byte(hex.EncodeToString(b[:])), 0o600); err != nil {
			return nil, fmt.Errorf("cluster secret: %w", err)
		}
	}
	cfgFile := filepath.Join(f.dir, "origin-"+id+".yaml")
	var cfg string
	if o.Capabilities {
		priv, _, err := f.capabilityKeys()
		if err != nil {
			return nil, err
		}
		cfg = fmt.Sprintf("capability_key_file: %q\n", priv)
	}
	if up != nil {
		cfg += up.originConfig()
	}
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	args := []string{"--config", cfgFile, "--id", id, "--addr", addr, "--advertise", addr, "--cluster-secret-file", secret,
		"--data-dir", filepath.Join(f.dir, "origin-"+id), "--etcd-endpoints", etcd, "--replicas", strconv.Itoa(min(2, o.Origins)),
		"--p2p-listen", fmt.Sprintf("/ip4/%s/tcp/%d", pl.ip, p2pPort), "--log-level", o.logLevel()}
	if o.LinkBps > 0 && !o.Netns {
		args = append(args, "--upload-rate", strconv.FormatInt(o.LinkBps, 10))
	}
	if o.LinkBps > 0 && o.Netns {
		// tc paces the link; the origin still needs to know its size to
		// admit only the /v2 readers it can serve (as --upload-rate
		// would derive it).
		args = append(args, "--blob-readers", strconv.FormatInt(max(2, o.LinkBps/(4<<20)), 10))
	}
	p, err := f.start(pl, "origin-"+id, "origin", args...)
	if err != nil {
		return nil, err
	}
	org := &originProc{proc: p, url: "http://" + addr}
	return org, waitReady(ctx, p, org.url+"/readyz")
}

// kill crashes the origin, remembering what it had counted.
func (o *originProc) kill() {
	if m, err := scrape(o.pl.client, o.url+"/metrics"); err == nil {
		o.killed = m
	}
	o.proc.kill()
}

// counters are the origin's counters since the pull began.
func (o *originProc) counters() (map[string]float64, error) {
	m := o.killed
	if m == nil {
		var err error
		if m, err = scrape(o.pl.client, o.url+"/metrics"); err != nil {
			return nil, err
		}
	}
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v - o.base[k]
	}
	return out, nil
}

// agentProc is one agent; restarts keep its config and data, and its
// counters add up over incarnations.
type agentProc struct {
	f       *fleet
	pl      *place
	name    string
	addr    string
	config  string
	mu      sync.Mutex
	proc    *proc
	query   string             // on every /v2 request: ?ns= with --upstream
	earlier map[string]float64 // counters of killed incarnations
	back    chan struct{}      // closed when a restarted agent is ready
	// restartErr is why the agent did not come back, if it did not.
	restartErr error
}

// pid is the agent's current process (0 if it has none).
func (a *agentProc) pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil || a.proc.cmd.Process == nil {
		return 0
	}
	return a.proc.cmd.Process.Pid
}

func (a *agentProc) counters() (map[string]float64, error) {
	m, err := scrape(a.pl.client, "http://"+a.addr+"/metrics")
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.earlier {
		m[k] += v
	}
	return m, nil
}

// churn kills the agent at the given time and starts it again.
func (a *agentProc) churn(ctx context.Context, at time.Duration) {
	select {
	case <-time.After(at):
	case <-ctx.Done():
		return
	}
	m, _ := scrape(a.pl.client, "http://"+a.addr+"/metrics")
	a.mu.Lock()
	for k, v := range m {
		a.earlier[k] += v
	}
	a.back = make(chan struct{})
	back := a.back
	old := a.proc
	a.mu.Unlock()
	old.kill()
	p, err := a.f.start(a.pl, a.name, "agent", "--config", a.config)
	if err == nil {
		err = waitReady(ctx, p, "http://"+a.addr+"/readyz")
	}
	a.mu.Lock()
	a.proc, a.restartErr = p, err
	a.mu.Unlock()
	close(back)
}

// pullWithRestarts starts after offset and pulls until it succeeds, retrying
// when the agent was killed under it.
func (a *agentProc) pullWithRestarts(ctx context.Context, offset time.Duration, layers []layerDesc, start time.Time, received *atomic.Int64) agentResult {
	select {
	case <-time.After(offset):
	case <-ctx.Done():
	}
	first := time.Since(start).Seconds()
	for attempt := 0; ; attempt++ {
		r := pull(ctx, a.pl.client, "http://"+a.addr, a.query, layers, start, received)
		r.Start = first
		if r.Error == "" || ctx.Err() != nil || attempt == 3 {
			return r
		}
		a.mu.Lock()
		back := a.back
		a.mu.Unlock()
		if back == nil {
			return r // failed without a restart: a real failure
		}
		select {
		case <-back:
		case <-ctx.Done():
			return r
		}
		a.mu.Lock()
		err := a.restartErr
		a.mu.Unlock()
		if err != nil {
			r.Error = "restart: " + err.Error()
			return r
		}
	}
}

func startAgent(ctx context.Context, f *fleet, topo topology, i int, o options, mode, tracker string, origins []string) (*agentProc, error) {
	name := fmt.Sprintf("agent%02d", i)
	pl, err := topo.place(name)
	if err != nil {
		return nil, err
	}
	port, err := pl.port(5080)
	if err != nil {
		return nil, err
	}
	p2pPort := 0
	if o.Netns {
		p2pPort = 4001
	}
	// containerd reaches its agent on the node's loopback.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	quoted := make([]string, len(origins))
	for i, u := range origins {
		quoted[i] = strconv.Quote(u)
	}
	cfg := fmt.Sprintf("addr: %q\ndata_dir: %q\nseed_interval: 2s\nlog_level: %s\nregistries:\n  \"\":\n    origins: [%s]\np2p:\n  listen_addrs: [/ip4/%s/tcp/%d]\n",
		addr, filepath.Join(f.dir, name), o.logLevel(), strings.Join(quoted, ", "), pl.ip, p2pPort)
	if mode != "direct" {
		cfg += fmt.Sprintf("tracker: %q\n", tracker)
	}
	if o.Capabilities {
		_, pub, err := f.capabilityKeys()
		if err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("capability_public_key_file: %q\n", pub)
	}
	if o.CacheBytes > 0 {
		cfg += fmt.Sprintf("cache_bytes: %d\n", o.CacheBytes)
	}
	if o.LinkBps > 0 && !o.Netns {
		cfg += fmt.Sprintf("upload_rate: %d\ndownload_rate: %d\n", o.LinkBps, o.LinkBps)
	}
	if o.Upstream {
		// The agent learns the namespace from the origins
		// (/upstreams/v1); soon after a start, not a minute later.
		cfg += "upstream_refresh: 1s\n"
	}
	a := &agentProc{f: f, pl: pl, name: name, addr: addr, config: filepath.Join(f.dir, name+".yaml"), earlier: map[string]float64{}}
	if o.Upstream {
		a.query = "?ns=" + url.QueryEscape(upstreamNS)
	}
	if err := os.WriteFile(a.config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if a.proc, err = f.start(pl, name, "agent", "--config", a.config); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, a.proc, "http://"+addr+"/readyz"); err != nil {
		return a, err
	}
	if o.Upstream {
		return a, a.waitAdvert(ctx)
	}
	return a, nil
}

// waitAdvert waits until the agent serves the upstream namespace, which it
// learns from the origins.
func (a *agentProc) waitAdvert(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		m, err := scrape(a.pl.client, "http://"+a.addr+"/metrics")
		if err == nil && m["shoal_agent_upstream_namespaces"] >= 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not learn the upstream namespace from the origins: %w", a.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// registryTarget is a registry pushImage writes to: an origin, or the
// upstream registry of --upstream (Basic auth).
type registryTarget struct {
	client         *http.Client
	base           string // scheme://host:port
	user, password string
}

func (t registryTarget) do(ctx context.Context, method, url, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if t.user != "" {
		req.SetBasicAuth(t.user, t.password)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// putBlob uploads b in a POST and a PUT, which every registry takes (a
// monolithic POST is optional in the distribution spec).
func (t registryTarget) putBlob(ctx context.Context, repo string, b []byte) (string, error) {
	s := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(s[:])
	resp, err := t.do(ctx, http.MethodPost, t.base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("start upload of %s: %s", d, resp.Status)
	}
	base, _ := url.Parse(t.base)
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil {
		return "", fmt.Errorf("upload location: %w", err)
	}
	q := loc.Query()
	q.Set("digest", d)
	loc.RawQuery = q.Encode()
	if resp, err = t.do(ctx, http.MethodPut, loc.String(), "application/octet-stream", b); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("push %s: %s", d, resp.Status)
	}
	return d, nil
}

// pushImage pushes layers of random bytes and a manifest tagged v1 to
// repo, as CI would, and returns the layers.
func pushImage(ctx context.Context, t registryTarget, repo string, total int64, n int) ([]layerDesc, error) {
	var seed [32]byte
	rand.Read(seed[:])
	gen := mrand.NewChaCha8(seed)
	var layers []layerDesc
	for i := range n {
		size := total / int64(n)
		if i == n-1 {
			size = total - size*int64(n-1)
		}
		b := make([]byte, size)
		gen.Read(b)
		d, err := t.putBlob(ctx, repo, b)
		if err != nil {
			return nil, err
		}
		layers = append(layers, layerDesc{"application/vnd.oci.image.layer.v1.tar+gzip", d, size})
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd, err := t.putBlob(ctx, repo, cfg)
	if err != nil {
		return nil, err
	}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": layerDesc{"application/vnd.oci.image.config.v1+json", cd, int64(len(cfg))}, "layers": layers})
	resp, err := t.do(ctx, http.MethodPut, t.base+"/v2/"+repo+"/manifests/v1", "application/vnd.oci.image.manifest.v1+json", m)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("push manifest: %s", resp.Status)
	}
	return layers, nil
}

// pull does what containerd does: the manifest by tag, then every layer,
// three at a time, each checked against its digest.
func pull(ctx context.Context, c *http.Client, agent, query string, layers []layerDesc, phaseStart time.Time, received *atomic.Int64) agentResult {
	var r agentResult
	since := func() float64 { return time.Since(phaseStart).Seconds() }
	r.Start = since()
	fail := func(err error) agentResult { r.Error = err.Error(); r.Done = since(); return r }
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, agent+"/v2/loadtest/app/manifests/v1"+query, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := c.Do(req)
	if err != nil {
		return fail(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("manifest: %s", resp.Status))
	}
	var (
		mu        sync.Mutex
		firstByte float64
		errs      []error
		wg        sync.WaitGroup
	)
	sem := make(chan struct{}, 3)
	for _, l := range layers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, agent+"/v2/loadtest/app/blobs/"+l.Digest+query, nil)
			resp, err := c.Do(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				err = fmt.Errorf("layer %s: %s", l.Digest, resp.Status)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			buf := make([]byte, 1<<20)
			var got int64
			for {
				n, err := resp.Body.Read(buf)
				if n > 0 {
					if got == 0 {
						mu.Lock()
						if firstByte == 0 {
							firstByte = since()
						}
						mu.Unlock()
					}
					h.Write(buf[:n])
					got += int64(n)
					received.Add(int64(n))
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("layer %s: %w", l.Digest, err))
					mu.Unlock()
					return
				}
			}
			if "sha256:"+hex.EncodeToString(h.Sum(nil)) != l.Digest {
				mu.Lock()
				errs = append(errs, fmt.Errorf("layer %s: wrong bytes", l.Digest))
				mu.Unlock()
			}
			mu.Lock()
			r.ReceivedAll += got
			mu.Unlock()
		})
	}
	wg.Wait()
	r.FirstByte, r.Done = firstByte, since()
	if err := errors.Join(errs...); err != nil {
		r.Error = err.Error()
	}
	return r
}

// scrape reads a process's Prometheus text page (see parseMetrics).
func scrape(c *http.Client, url string) (map[string]float64, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return parseMetrics(string(b)), nil
}

// parseMetrics reads a Prometheus text page into two kinds of keys: every
// metric name with its series summed ("m"), and every labelled series on
// its own under its name and sorted labels ("m{a=\"x\",b=\"y\"}"), so
// both totals and one label's share are at hand (see labelled). Sums are
// right for counters; a missing metric reads 0.
func parseMetrics(page string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(page) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ \t")
		if end <= 0 {
			continue
		}
		name, rest := line[:end], line[end:]
		var labels []string
		if rest[0] == '{' {
			var ok bool
			if labels, rest, ok = parseLabels(rest[1:]); !ok {
				continue
			}
		}
		fields := strings.Fields(rest) // value, then maybe a timestamp
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
		if len(labels) > 0 {
			slices.Sort(labels)
			out[name+"{"+strings.Join(labels, ",")+"}"] += v
		}
	}
	return out
}

// parseLabels reads `a="x",b="y"}` (values may hold escaped quotes,
// commas, braces and spaces) and returns the pairs as written and what
// follows the closing brace.
func parseLabels(s string) (labels []string, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return nil, "", false
		}
		if s[0] == '}' {
			return labels, s[1:], true
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return nil, "", false
		}
		key := strings.TrimSpace(s[:eq])
		i := eq + 2
		for i < len(s) && s[i] != '"' {
			if s[i] == '\\' {
				i++
			}
			i++
		}
		if i >= len(s) {
			return nil, "", false
		}
		labels = append(labels, key+"="+s[eq+1:i+1])
		s = s[i+1:]
	}
}

// labelled sums the series of metric name whose label key is value.
func labelled(m map[string]float64, name, key, value string) float64 {
	want := key + "=" + strconv.Quote(value)
	var sum float64
	for k, v := range m {
		labels, ok := strings.CutPrefix(k, name+"{")
		if !ok {
			continue
		}
		if strings.Contains(","+strings.TrimSuffix(labels, "}")+",", ","+want+",") {
			sum += v
		}
	}
	return sum
}

// cpuUse is how busy the whole machine was over a pull: the fleet's times
// are the links' only if the CPU was not the limit.
type cpuUse struct {
	// Busy is 1 − (idle + iowait) ÷ total, over all cores, from the
	// pull's start to its end; Max is the busiest second.
	Busy  float64 `json:"busy_share"`
	Max   float64 `json:"busy_share_max_1s"`
	Cores int     `json:"cores"`
}

// limited says the CPU, not the links, may have set the pace.
func (c cpuUse) limited() bool { return c.Busy >= 0.85 || c.Max >= 0.98 }

// cpuTimes is the first line of /proc/stat: busy and total jiffies.
type cpuTimes struct{ busy, total uint64 }

func readCPU() (cpuTimes, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimes{}, false
	}
	// user nice system idle iowait irq softirq steal; guest time is
	// already counted in user.
	var t cpuTimes
	var idle uint64
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, false
		}
		t.total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	t.busy = t.total - idle
	return t, true
}

// busyShare of the interval from a to b.
func busyShare(a, b cpuTimes) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

type cpuMeter struct {
	first cpuTimes
	ok    bool
	max   float64
	done  chan struct{}
	wg    sync.WaitGroup
}

// startCPU samples /proc/stat now and every second until stop.
func startCPU() *cpuMeter {
	m := &cpuMeter{done: make(chan struct{})}
	m.first, m.ok = readCPU()
	if !m.ok {
		return m
	}
	m.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := m.first
		for {
			select {
			case <-m.done:
				return
			case <-t.C:
			}
			if now, ok := readCPU(); ok {
				m.max = max(m.max, busyShare(last, now))
				last = now
			}
		}
	})
	return m
}

func (m *cpuMeter) stop() cpuUse {
	close(m.done)
	m.wg.Wait()
	if !m.ok {
		return cpuUse{}
	}
	end, _ := readCPU()
	u := cpuUse{Busy: busyShare(m.first, end), Max: m.max, Cores: runtime.NumCPU()}
	u.Max = max(u.Max, u.Busy) // a pull shorter than a second
	return u
}

// progress prints agents done and bytes moved twice a second until
// stopped.
func progress(w io.Writer, mode string, agents int, total int64, done *atomic.Int32, moved *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	// On a terminal the bar redraws in place; in a log, a line every 2s.
	lead, every := "\r", 500*time.Millisecond
	if f, ok := w.(*os.File); !ok || !isTerminal(f) {
		lead, every = "\n", 2*time.Second
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			// Churned agents fetch again what they lost: the bytes moved
			// may pass the total.
			n := int(min(1, float64(moved.Load())/float64(max(total, 1))) * 30)
			bar := strings.Repeat("#", n) + strings.Repeat(".", 30-n)
			fmt.Fprintf(w, "%s%-6s [%s] agents %d/%d  %s/%s", lead, mode, bar, done.Load(), agents, mib(moved.Load()), mib(total))
			select {
			case <-stop:
				fmt.Fprintln(w)
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-finished }
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func keepLogs(from, to string) {
	logs, _ := filepath.Glob(filepath.Join(from, "*.log"))
	if len(logs) == 0 || os.MkdirAll(to, 0o755) != nil {
		return
	}
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			os.WriteFile(filepath.Join(to, filepath.Base(l)), b, 0o644)
		}
	}
}

func (o options) logLevel() string {
	if o.LogLevel == "" {
		return "warn"
	}
	return o.LogLevel
}

// capabilityKeys writes the fleet's capability key pair, once, as an
// operator would with openssl genpkey -algorithm ed25519: the private key
// for the origins (PKCS #8), the public one for the agents (PKIX).
func (f *fleet) capabilityKeys() (priv, pub string, err error) {
	priv, pub = filepath.Join(f.dir, "capability.key"), filepath.Join(f.dir, "capability.pub")
	if _, err := os.Stat(pub); err == nil {
		return priv, pub, nil
	}
	if _, err := capability.WriteKeyPair(priv, pub); err != nil {
		return "", "", err
	}
	return priv, pub, nil
}
