// Package agent is the node-local half of Shoal: a read-only registry
// mirror for containerd that fetches blobs from the swarm, streams them to
// the client as verified pieces arrive, caches them and seeds them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/peerproof"
	"github.com/shoal-project/shoal/pkg/piecefile"
	"github.com/shoal-project/shoal/pkg/swarm"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Upstream is the origin cluster behind one registry name.
type Upstream struct {
	// Origins are base URLs (http://host:port), tried in order.
	Origins []string `yaml:"origins"`
	// OriginAuth is this node's user on those origins, for clusters
	// without anonymous pull; empty pulls anonymously.
	OriginAuth auth.ClientConfig `yaml:"origin_auth"`
	// TLS is for https:// origins: ca_file, the CA their certificates
	// chain to (default: the system roots), and a client certificate
	// when the origins ask for one.
	TLS tlsconfig.Files `yaml:"tls"`

	client *http.Client // presents OriginAuth; made by New
	// bare reaches the same origins without OriginAuth, to ask them on a
	// client's behalf (pull checks); made by New.
	bare *http.Client
	// bareSlow is bare for questions answered only once an origin has
	// pulled from an upstream registry (UpstreamTimeout); made by New.
	bareSlow *http.Client
}

// Config configures an agent. Zero values take defaults.
type Config struct {
	// Addr serves /v2 to containerd, /metrics and health (default
	// 127.0.0.1:5080: the node's own containerd only).
	Addr string `yaml:"addr"`
	// DataDir holds the cache, downloads in progress and the peer key.
	DataDir string `yaml:"data_dir"`
	// CacheBytes bounds the blobs the agent holds on disk, downloads in
	// progress included (default 20 GiB); see cache for what eviction spares.
	CacheBytes int64 `yaml:"cache_bytes"`
	// Registries maps the registry containerd asks for (its ?ns=) to an
	// origin cluster; "" is used when no ns is given.
	Registries map[string]Upstream `yaml:"registries"`
	// UpstreamRefresh is how often the origins are asked which upstream
	// namespaces they pull through (default 1m); each such namespace is
	// then served through the origin cluster that advertised it.
	UpstreamRefresh time.Duration `yaml:"upstream_refresh"`
	// UpstreamTimeout bounds the wait for an origin to pull a blob of an
	// upstream namespace it has not fetched yet (default 10m): its answer
	// comes once the whole blob is in, and a client waiting this long is
	// better off than one sent to the upstream itself.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// Tracker is the tracker's gRPC host:port; TrackerTLS its client
	// certificate and the cluster CA when trackers use mutual TLS.
	Tracker    string          `yaml:"tracker"`
	TrackerTLS tlsconfig.Files `yaml:"tracker_tls"`
	// TagTTL is how long a resolved tag is trusted (default 5s).
	TagTTL time.Duration `yaml:"tag_ttl"`
	// Zone, Rack and Node place this node for the hand-out policy.
	Zone string `yaml:"zone"`
	Rack string `yaml:"rack"`
	Node string `yaml:"node"`
	// P2P is the libp2p host; its key defaults to DataDir/peer.key.
	P2P p2p.HostConfig `yaml:"p2p"`
	// CapabilityPublicKeyFile is the origin cluster's capability public key
	// (PKIX PEM; the origins hold the private key, capability_key_file).
	// With it this node seeds pieces only to peers presenting a
	// capability the cluster signed for them and that blob; without it,
	// to any peer. Downloads present one whenever the origins issue it.
	CapabilityPublicKeyFile string `yaml:"capability_public_key_file"`
	// UploadRate bounds seeding and DownloadRate fetching, in bytes per
	// second over all blobs (0: unlimited).
	UploadRate   int64 `yaml:"upload_rate"`
	DownloadRate int64 `yaml:"download_rate"`
	// SeedInterval is how often complete blobs are announced (default 30s).
	SeedInterval time.Duration `yaml:"seed_interval"`
	// PreheatPollInterval is how often the agent asks the tracker for
	// preheat orders, until the tracker says otherwise (default 2s).
	PreheatPollInterval time.Duration `yaml:"preheat_poll_interval"`
	// Containerd, when its address is set, is the node's containerd:
	// preheats that ask for it pull the image there too.
	Containerd ContainerdConfig `yaml:"containerd"`
	// Swarm tunes downloads.
	Swarm swarm.Config `yaml:"swarm"`
	// OriginTimeout bounds a metadata call to an origin (default 10s).
	OriginTimeout time.Duration `yaml:"origin_timeout"`
	// PullCheckTTL is how long the origin's yes to "may this client pull
	// this object of this repository" is trusted (default 30s): a
	// credential revoked or a tag deleted at the origin can still be
	// served by an agent for this long.
	PullCheckTTL time.Duration `yaml:"pull_check_ttl"`
	// HTTPTimeouts bound what the /v2 server waits on its clients
	// (defaults: headers 10s, request 30s, write 30s, idle 2m). A blob body
	// is bounded per MiB written, not as a whole: it streams for as long
	// as the swarm takes.
	HTTPTimeouts httpserver.Timeouts `yaml:"http_timeouts"`
}

// defaultHTTPTimeouts: containerd sends small bodiless requests and keeps
// connections for 90 s between pulls.
var defaultHTTPTimeouts = httpserver.Timeouts{
	ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute,
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:5080"
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 20 << 30
	}
	if c.TagTTL <= 0 {
		c.TagTTL = 5 * time.Second
	}
	if c.SeedInterval <= 0 {
		c.SeedInterval = 30 * time.Second
	}
	if c.Containerd.Namespace == "" {
		c.Containerd.Namespace = "k8s.io"
	}
	if c.Containerd.Timeout <= 0 {
		c.Containerd.Timeout = 10 * time.Minute
	}
	if c.PreheatPollInterval <= 0 {
		c.PreheatPollInterval = 2 * time.Second
	}
	if c.OriginTimeout <= 0 {
		c.OriginTimeout = 10 * time.Second
	}
	if c.UpstreamRefresh <= 0 {
		c.UpstreamRefresh = time.Minute
	}
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 10 * time.Minute
	}
	if c.PullCheckTTL <= 0 {
		c.PullCheckTTL = 30 * time.Second
	}
	c.HTTPTimeouts = c.HTTPTimeouts.WithDefaults(defaultHTTPTimeouts)
	if c.P2P.KeyFile == "" && c.DataDir != "" {
		c.P2P.KeyFile = filepath.Join(c.DataDir, "peer.key")
	}
	return c
}

// Agent is one node's mirror and seeder.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	host    host.Host
	tracker shoalpb.TrackerClient
	poller  *peerproof.Client // the tracker, for signed preheat polls
	conn    *grpc.ClientConn
	cache   *cache
	dl      *swarm.Downloader
	metrics *metrics
	gather  prometheus.Gatherer
	tags    *tagCache
	checks  *pullChecks
	adverts adverts

	// ctx bounds downloads: they outlive the request that started them
	// (other clients may be waiting) but not the agent.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	inflight map[digest.Digest]*inflight
	served   string // the /v2 listener's address, once Run has it
}

// New starts an agent's host and cache; serve it with Run.
func New(cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Agent, error) {
	cfg = cfg.withDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("agent: data_dir is required")
	}
	if len(cfg.Registries) == 0 {
		return nil, errors.New("agent: no registries configured")
	}
	// One connection pool for every origin; each registry's client adds
	// its own credentials. A copy of the map: the caller's is not ours to
	// fill in.
	originTransport := &http.Transport{MaxIdleConnsPerHost: 16, ResponseHeaderTimeout: cfg.OriginTimeout}
	regs := make(map[string]Upstream, len(cfg.Registries))
	for name, up := range cfg.Registries {
		creds, err := up.OriginAuth.Load()
		if err != nil {
			return nil, fmt.Errorf("agent: registry %q: origin_auth: %w", name, err)
		}
		tr := originTransport
		if up.TLS.Enabled() {
			// Its own pool: connections of one trust setting are never
			// reused for another registry's origins.
			tc, err := up.TLS.Client()
			if err != nil {
				return nil, fmt.Errorf("agent: registry %q: tls: %w", name, err)
			}
			tr = originTransport.Clone()
			tr.TLSClientConfig = tc
		}
		up.client = &http.Client{Transport: creds.Transport(tr)}
		up.bare = bareClient(tr)
		// Pull checks of upstream namespaces wait for the origin to
		// fetch the object: a pool of their own without the short
		// header timeout (their context bounds them).
		slow := tr.Clone()
		slow.ResponseHeaderTimeout = 0
		up.bareSlow = bareClient(slow)
		regs[name] = up
	}
	cfg.Registries = regs
	if log == nil {
		log = slog.Default()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	store, err := blobstore.NewLocal(filepath.Join(cfg.DataDir, "cache"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := newCache(ctx, store, cfg.CacheBytes, filepath.Join(cfg.DataDir, "pins.json"), log)
	if err != nil {
		cancel()
		return nil, err
	}
	h, err := p2p.NewHost(cfg.P2P, reg)
	if err != nil {
		cancel()
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, host: h, cache: c, ctx: ctx, cancel: cancel,
		metrics:  newMetrics(reg),
		gather:   reg,
		tags:     newTagCache(cfg.TagTTL),
		checks:   newPullChecks(cfg.PullCheckTTL),
		inflight: map[digest.Digest]*inflight{},
	}
	c.onCorrupt = a.metrics.cacheCorrupt.Inc
	c.onEvict = a.metrics.cacheEvicted.Inc
	if cfg.Tracker != "" {
		conn, err := dialTracker(cfg.Tracker, cfg.TrackerTLS)
		if err != nil {
			h.Close()
			cancel()
			return nil, err
		}
		// Announces are signed with the node's libp2p key: the tracker
		// takes them only from the peer they name.
		pc := peerproof.NewClient(shoalpb.NewTrackerClient(conn), h.Peerstore().PrivKey(h.ID()))
		a.conn, a.tracker, a.poller = conn, pc, pc
	}
	seeder := p2p.NewSeeder(h, a, pace.NewLimiter(cfg.UploadRate), log)
	if cfg.CapabilityPublicKeyFile != "" {
		pub, err := capability.LoadPublicKey(cfg.CapabilityPublicKeyFile)
		if err != nil {
			h.Close()
			cancel()
			return nil, fmt.Errorf("agent: capability_public_key_file: %w", err)
		}
		seeder.Capabilities = capability.NewVerifier(pub)
		seeder.Forbidden = func() { a.metrics.capabilities.WithLabelValues("refused").Inc() }
	}
	seeder.Uploaded = func(n int) { a.metrics.uploaded.Add(float64(n)) }
	seeder.OnPeer = a.peerSeen
	seeder.Busy = a.metrics.busySent.Inc
	a.dl = &swarm.Downloader{
		Limit: pace.NewLimiter(cfg.DownloadRate),
		Count: a.metrics.count,
		Host:  h, Tracker: a.tracker, Cfg: cfg.Swarm, Log: log,
		Self: &shoalpb.Peer{Addrs: p2p.Addrs(h), Labels: &shoalpb.Labels{Zone: cfg.Zone, Rack: cfg.Rack, Node: cfg.Node}},
		Verified: func(ok bool) {
			if ok {
				a.metrics.pieces.WithLabelValues("verified").Inc()
			} else {
				a.metrics.pieces.WithLabelValues("failed").Inc()
			}
		},
		Progress: func(fromOrigin bool, n int) {
			if fromOrigin {
				a.metrics.fromOrigin.Add(float64(n))
			} else {
				a.metrics.fromPeers.Add(float64(n))
			}
		},
	}
	return a, nil
}

// peerSeen passes a peer that asked us for d to d's download, if any: the
// connection it opened works both ways.
func (a *Agent) peerSeen(d digest.Digest, p peer.ID) {
	a.mu.Lock()
	f := a.inflight[d]
	a.mu.Unlock()
	if f == nil {
		return
	}
	select {
	case f.peers <- peer.AddrInfo{ID: p}:
	default: // the download is busy; the tracker will hand the peer out anyway
	}
}

// PeerID is this agent's libp2p identity.
func (a *Agent) PeerID() string { return a.host.ID().String() }

// Addrs are this agent's libp2p listen addresses, as it announces them.
func (a *Agent) Addrs() []string { return p2p.Addrs(a.host) }

// Run serves on ln (or cfg.Addr) until ctx ends, then stops downloads and
// the host.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", a.cfg.Addr); err != nil {
			return fmt.Errorf("agent: listen: %w", err)
		}
	}
	a.mu.Lock()
	a.served = ln.Addr().String()
	a.mu.Unlock()
	srv := a.cfg.HTTPTimeouts.Server(a.Handler(), a.log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.wg.Go(func() { a.seedLoop(a.ctx) })
	a.wg.Go(func() { a.advertLoop(a.ctx) })
	if a.poller != nil {
		a.wg.Go(func() { a.preheatLoop(a.ctx) })
	}
	a.log.Info("agent serving", "addr", ln.Addr().String(), "peer", a.host.ID(), "p2p", p2p.Addrs(a.host),
		"tracker", a.cfg.Tracker, "cache_bytes", a.cfg.CacheBytes)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	a.cancel()
	a.wg.Wait()
	a.cache.flushPins()
	if a.conn != nil {
		a.conn.Close()
	}
	a.host.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Handler serves /v2 (read-only), /metrics, /healthz and /readyz.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.gather, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/v2/", a.serveV2)
	return mux
}

// seedLoop announces every cached blob as complete, so the tracker keeps
// handing this node out.
// The first round runs at once: a restarted node holding a whole image
// is a seeder from its first second, not after one interval.
func (a *Agent) seedLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.SeedInterval)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-a.cache.evicted():
				a.withdraw(ctx)
				continue
			case <-t.C:
			}
		}
		a.metrics.cacheBytes.Set(float64(a.cache.bytes()))
		a.metrics.pinned.Set(float64(a.cache.pinnedCount()))
		ds := a.cache.digests()
		a.metrics.cached.Set(float64(len(ds)))
		if a.tracker == nil {
			continue
		}
		for len(ds) > 0 {
			n := min(len(ds), 500)
			batch := &shoalpb.AnnounceBatchRequest{}
			for _, d := range ds[:n] {
				batch.Announces = append(batch.Announces, &shoalpb.AnnounceRequest{
					Digest: d.String(), Peer: a.self(), Have: &shoalpb.AnnounceRequest_Complete{Complete: true}})
			}
			ds = ds[n:]
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := a.tracker.AnnounceBatch(actx, batch)
			cancel()
			if err != nil {
				a.log.Debug("seed announce", "err", err)
				break
			}
		}
	}
}

// withdraw tells the tracker of the blobs the cache has let go, at once
// rather than by their entries expiring: until then peers would be handed
// this node for them, only to be told "unavailable", and it would count
// as a seeder the swarm does not have.
func (a *Agent) withdraw(ctx context.Context) {
	// Blobs downloading again are withdrawn too: their downloads announce
	// what they hold within an interval, while a download that has just
	// finished (an adopt evicts at once when there is no room) announced
	// complete for the last time.
	ds := a.cache.takeGone()
	if a.tracker == nil {
		return
	}
	for len(ds) > 0 {
		n := min(len(ds), 500)
		batch := &shoalpb.AnnounceBatchRequest{}
		for _, d := range ds[:n] {
			batch.Announces = append(batch.Announces, &shoalpb.AnnounceRequest{Digest: d.String(), Peer: a.self(), Stopped: true})
		}
		ds = ds[n:]
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := a.tracker.AnnounceBatch(actx, batch)
		cancel()
		if err != nil {
			// The entries expire in a few intervals anyway.
			a.log.Debug("withdraw announce", "err", err)
			return
		}
	}
}

func (a *Agent) self() *shoalpb.Peer {
	return &shoalpb.Peer{Id: a.host.ID().String(), Addrs: p2p.Addrs(a.host),
		Labels: &shoalpb.Labels{Zone: a.cfg.Zone, Rack: a.cfg.Rack, Node: a.cfg.Node}}
}

// Lookup implements p2p.Blobs: cached blobs, and downloads in progress for
// the pieces they hold.
func (a *Agent) Lookup(d digest.Digest) (p2p.Blob, bool) {
	if b, ok := a.cached(d); ok {
		return b, true
	}
	a.mu.Lock()
	f := a.inflight[d]
	a.mu.Unlock()
	if f == nil {
		return nil, false
	}
	select {
	case <-f.ready:
	default:
		return nil, false
	}
	if f.prepErr != nil {
		return nil, false
	}
	if f.pf.Complete() {
		// It completed between the two looks: it is in the cache now,
		// or on its way there.
		if b, ok := a.cached(d); ok {
			return b, true
		}
	} else if f.pf.Err() != nil {
		return nil, false // closed: the download failed
	}
	return &growingBlob{Partial: swarm.Partial{File: f.pf}, cache: a.cache, ctx: a.ctx}, true
}

// cached is d in the cache as an upload stream serves it: a lease per
// piece (p2p.Leased), through which the seeder checks each piece before
// it first leaves (p2p.Checked). A corrupt blob found this way is evicted
// but not fetched again at once: a seeder does not know which repository
// to ask the origin under, and the next local pull fetches it.
func (a *Agent) cached(d digest.Digest) (p2p.Blob, bool) {
	b, ok := a.cache.lease(a.ctx, d)
	if !ok {
		return nil, false
	}
	mi := b.mi
	b.Close()
	return &seedBlob{c: a.cache, ctx: a.ctx, mi: mi}, true
}

// growingBlob is a download in progress as an upload stream serves it:
// the pieces held so far, read with a hold on the download's file for
// each piece and, once the download has moved into the cache, with a
// cache lease. So the stream goes on when the download completes (its
// peers are the swarm's next seeders' customers), and it does not keep
// the file — by then the cached blob's inode — from eviction afterwards.
type growingBlob struct {
	swarm.Partial
	cache *cache
	ctx   context.Context
}

// Lease implements p2p.Leased.
func (b *growingBlob) Lease() (p2p.Lease, error) {
	if release, ok := b.File.Retain(); ok {
		return partLease{f: b.File, release: release}, nil
	}
	// The download has ended: completed into the cache, or failed.
	return (&seedBlob{c: b.cache, ctx: b.ctx, mi: b.MetaInfo()}).Lease()
}

// partLease is a hold on a download's file for one piece.
type partLease struct {
	f       *piecefile.File
	release func()
}

func (l partLease) ReadAt(p []byte, off int64) (int, error) { return l.f.ReadAt(p, off) }

func (l partLease) Close() error {
	l.release()
	return nil
}

// inflight is one blob being downloaded; every client asking for it
// shares it.
type inflight struct {
	peers  chan peer.AddrInfo // peers that asked us for this blob
	stream chan int           // the next piece a streaming client waits for
	ready  chan struct{}      // mi and pf are set, or prepErr
	done   chan struct{}      // the download ended; err says how
	mi     *metainfo.MetaInfo
	pf     *piecefile.File
	// prepErr is read after ready, err after done.
	prepErr error
	err     error
}

// fetch returns the download of d, starting it if needed.
func (a *Agent) fetch(d digest.Digest, repo string, up Upstream) *inflight {
	a.mu.Lock()
	if f := a.inflight[d]; f != nil {
		a.mu.Unlock()
		return f
	}
	f := &inflight{ready: make(chan struct{}), done: make(chan struct{}), peers: make(chan peer.AddrInfo, 32), stream: make(chan int, 1)}
	a.inflight[d] = f
	a.mu.Unlock()
	a.metrics.downloads.Inc()
	a.wg.Go(func() {
		defer func() {
			a.mu.Lock()
			delete(a.inflight, d)
			a.mu.Unlock()
			a.metrics.downloads.Dec()
			close(f.done)
		}()
		f.err = a.download(f, d, repo, up)
		if f.err != nil {
			a.log.Warn("download failed", "digest", d, "err", f.err)
		}
	})
	return f
}

func (a *Agent) download(f *inflight, d digest.Digest, repo string, up Upstream) error {
	mi, err := a.metaInfo(a.ctx, d, up)
	var room *reservation
	if err == nil {
		f.mi = mi
		// Before the .part file takes its size on disk (see cache).
		room = a.cache.reserve(a.ctx, mi.Size)
		defer room.release()
		f.pf, err = piecefile.Open(filepath.Join(a.cfg.DataDir, "downloads"), mi)
	}
	if err != nil {
		f.prepErr = err
		close(f.ready)
		return err
	}
	close(f.ready)
	org := &originReader{a: a, up: up, repo: repo, d: d}
	caps := &capHolder{ctx: a.ctx, timeout: a.cfg.OriginTimeout, log: a.log.With("digest", d),
		count: func(result string) { a.metrics.capabilities.WithLabelValues(result).Inc() },
		fetch: func(ctx context.Context) (*shoalpb.Capability, error) { return a.fetchCapability(ctx, up, repo, d) }}
	hints := swarm.Hints{Peers: f.peers, Stream: f.stream, Capability: caps.get}
	ctx, stop := context.WithCancelCause(a.ctx)
	defer stop(nil)
	if !mi.Complete() {
		// Still arriving at the origin from its upstream: follow its
		// chain as it grows, and give up if the origin drops it.
		grow := make(chan *metainfo.MetaInfo)
		hints.Grow = grow
		go a.growMetaInfo(ctx, d, up, mi, grow, stop)
	}
	start := time.Now()
	st, err := a.dl.Fetch(ctx, mi, f.pf, org, hints)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, errArrivalFailed) {
		f.pf.Remove()
		return cause
	}
	if err != nil {
		if errors.Is(err, piecefile.ErrBadPiece) {
			// The origin itself sent bytes its metainfo rejects: the
			// metainfo or the pieces held under it are not to be
			// trusted for a resume.
			f.pf.Remove()
		} else {
			f.pf.Close() // keep verified pieces for the next attempt
		}
		return err
	}
	room.commit() // a download waiting for room waits for this one's sync
	if err := f.pf.Sync(); err != nil {
		f.pf.Close()
		return err
	}
	// The piecefile's metainfo is whole by now, even if the download
	// began on a prefix.
	if err := a.cache.adopt(a.ctx, f.pf.Path(), f.pf.MetaInfo(), room); err != nil {
		f.pf.Close()
		return err
	}
	f.pf.Remove() // the data moved into the cache; this drops the state file
	a.log.Info("blob downloaded", "digest", d, "bytes", mi.Size, "from_peers", st.FromPeers,
		"from_origin", st.FromOrigin, "duplicates", st.Duplicates, "peers", st.Peers, "expired", st.Expired,
		"busy", st.Busy, "end_game", st.EndGame, "stalls", st.Stalls, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
