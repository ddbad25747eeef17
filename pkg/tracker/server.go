// Package tracker coordinates swarms over gRPC: agents announce what they
// hold of a blob and get back peers to fetch from, and ask for a blob's
// metainfo. Each digest is owned by one tracker on a rendezvous ring over
// the live trackers; an announce that lands elsewhere is forwarded once.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/peerproof"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Config configures a tracker. Zero values take defaults.
type Config struct {
	// ID names this tracker on the tracker ring.
	ID string `yaml:"id"`
	// Interval is how often downloading peers announce (default 3s);
	// SeederInterval how often complete ones do (default 30s). A peer
	// that misses three announces is dropped.
	Interval       time.Duration `yaml:"interval"`
	SeederInterval time.Duration `yaml:"seeder_interval"`
	// DefaultPeers and MaxPeers bound a peer list (defaults 30 and 100).
	DefaultPeers int `yaml:"default_peers"`
	MaxPeers     int `yaml:"max_peers"`
	// OriginFanout is how many agents may fetch from the origins at once
	// while seeders are scarce (default 4); SeederTarget is the number of
	// complete agents at which origins stop being handed out (default 2).
	OriginFanout int `yaml:"origin_fanout"`
	SeederTarget int `yaml:"seeder_target"`
	// Replicas is the origin replication factor used to find a blob's
	// owning origins (default 3).
	Replicas int `yaml:"replicas"`
	// AnnounceRate bounds announces per second this tracker accepts
	// (0: unlimited); the excess gets RESOURCE_EXHAUSTED and retries.
	AnnounceRate float64 `yaml:"announce_rate"`
	// PeerAnnounceRate and PeerAnnounceBurst bound the announces one peer
	// ID makes, each blob of a batch counting as one (defaults 200/s,
	// burst 5000: an agent announces its whole cache at once every seed
	// interval). IPAnnounceRate and IPAnnounceBurst bound them per caller
	// IP, over all the IDs it uses (defaults 400/s, burst 10000), since a
	// new ID costs only a new key.
	PeerAnnounceRate  float64 `yaml:"peer_announce_rate"`
	PeerAnnounceBurst int     `yaml:"peer_announce_burst"`
	IPAnnounceRate    float64 `yaml:"ip_announce_rate"`
	IPAnnounceBurst   int     `yaml:"ip_announce_burst"`
	// MaxPeerEntries bounds the peer entries held over all swarms
	// (default 2M, about 1 GiB): past it new peers are refused until
	// entries expire. MaxEntriesPerIP bounds the entries of peers on one
	// IP (default 20000), so that no one host can fill the table and lock
	// the others out.
	MaxPeerEntries  int `yaml:"max_peer_entries"`
	MaxEntriesPerIP int `yaml:"max_entries_per_ip"`
	// MetaInfoCacheBytes bounds the metainfo cache (default 64 MiB).
	MetaInfoCacheBytes int64 `yaml:"metainfo_cache_bytes"`
	// MetaInfoNegativeTTL is how long a digest that no origin has is
	// answered NotFound without asking the origins again (default 30s).
	MetaInfoNegativeTTL time.Duration `yaml:"metainfo_negative_ttl"`
	// MetaInfoFetchRate and MetaInfoFetchBurst bound the metainfo misses
	// sent to the origins, per second over the whole tracker (defaults 20,
	// burst 50); MetaInfoClientFetchRate and MetaInfoClientFetchBurst per
	// client address (defaults 2, burst 8). A refused miss gets
	// RESOURCE_EXHAUSTED, and an agent then asks an origin itself.
	MetaInfoFetchRate        float64 `yaml:"metainfo_fetch_rate"`
	MetaInfoFetchBurst       int     `yaml:"metainfo_fetch_burst"`
	MetaInfoClientFetchRate  float64 `yaml:"metainfo_client_fetch_rate"`
	MetaInfoClientFetchBurst int     `yaml:"metainfo_client_fetch_burst"`
	// ForwardTimeout bounds a forwarded announce (default 2s).
	ForwardTimeout time.Duration `yaml:"forward_timeout"`
	// Preheat configures preheats (see preheat.go).
	Preheat PreheatConfig `yaml:"preheat"`
	// HTTPTimeouts bound what the metrics and health server waits on its
	// clients (defaults: headers 10s, request 30s, write 30s, idle 2m).
	HTTPTimeouts httpserver.Timeouts `yaml:"http_timeouts"`
}

// defaultHTTPTimeouts: scrapes and probes are short requests.
var defaultHTTPTimeouts = httpserver.Timeouts{
	ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute,
}

// debugWriteTimeout bounds a response of the debug server: a CPU profile
// runs for its ?seconds= (30 by default) and pprof refuses one that would
// outlast the write timeout. The debug server has no whole-request read
// timeout: when it passes, net/http cancels the request's context, and
// with it the profile.
const debugWriteTimeout = 2 * time.Minute

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Interval <= 0 {
		c.Interval = 3 * time.Second
	}
	if c.SeederInterval <= 0 {
		c.SeederInterval = 30 * time.Second
	}
	def(&c.DefaultPeers, 30)
	def(&c.PeerAnnounceBurst, 5000)
	def(&c.IPAnnounceBurst, 10000)
	def(&c.MaxPeerEntries, 2_000_000)
	def(&c.MaxEntriesPerIP, 20000)
	if c.PeerAnnounceRate <= 0 {
		c.PeerAnnounceRate = 200
	}
	if c.IPAnnounceRate <= 0 {
		c.IPAnnounceRate = 400
	}
	def(&c.MaxPeers, 100)
	def(&c.OriginFanout, 4)
	def(&c.SeederTarget, 2)
	def(&c.Replicas, 3)
	if c.MetaInfoCacheBytes <= 0 {
		c.MetaInfoCacheBytes = 64 << 20
	}
	if c.MetaInfoNegativeTTL <= 0 {
		c.MetaInfoNegativeTTL = 30 * time.Second
	}
	if c.MetaInfoFetchRate <= 0 {
		c.MetaInfoFetchRate = 20
	}
	def(&c.MetaInfoFetchBurst, 50)
	if c.MetaInfoClientFetchRate <= 0 {
		c.MetaInfoClientFetchRate = 2
	}
	def(&c.MetaInfoClientFetchBurst, 8)
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = 2 * time.Second
	}
	c.HTTPTimeouts = c.HTTPTimeouts.WithDefaults(defaultHTTPTimeouts)
	c.Preheat = c.Preheat.withDefaults()
	return c
}

// policy is the hand-out policy of a config with defaults applied.
func (c Config) policy() policy {
	return policy{
		interval: c.Interval, seederInterval: c.SeederInterval,
		defaultPeers: c.DefaultPeers, maxPeers: c.MaxPeers, sampleSize: 64,
		originFanout: c.OriginFanout, seederTarget: c.SeederTarget,
	}
}

// RingSource gives the current member set: a membership.Group, or a fixed
// *ring.Ring.
type RingSource interface {
	Ring() *ring.Ring
}

// Server is a tracker.
type Server struct {
	shoalpb.UnimplementedTrackerServer

	cfg      Config
	policy   policy
	log      *slog.Logger
	trackers RingSource
	origins  RingSource
	swarms   *swarms
	limiter  *rate.Limiter
	perPeer  *peerLimiter
	perIP    *peerLimiter
	proofs   *peerproof.Verifier
	// trackerIPs: callers allowed to forward.
	trackerIPs trackerIPs
	meta       *metaInfoCache
	metrics    *metrics
	gather     prometheus.Gatherer
	creds      credentials.TransportCredentials
	preheat    *preheater
	tagEvents  <-chan repostore.TagEvent

	debugLn net.Listener // nil: no profiles served

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn // forwarding connections by address
}

// Option customises New.
type Option func(*Server)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithRegistry registers metrics on reg instead of a private registry.
func WithRegistry(reg *prometheus.Registry) Option {
	return func(s *Server) { s.metrics = newMetrics(reg); s.gather = reg }
}

// WithTrackers sets the tracker ring used to find each digest's owner.
// Without it this tracker owns every digest.
func WithTrackers(r RingSource) Option { return func(s *Server) { s.trackers = r } }

// WithOrigins sets the origin ring, for metainfo and origin seeders.
func WithOrigins(r RingSource) Option { return func(s *Server) { s.origins = r } }

// WithTransportCredentials makes forwarding to other trackers use TLS.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(s *Server) { s.creds = c }
}

// WithDebugListener serves /debug/pprof on ln. Profiles show what the
// process holds and cost it CPU, so they are never on the operator port
// with /metrics, only on a listener of their own (loopback, normally).
func WithDebugListener(ln net.Listener) Option { return func(s *Server) { s.debugLn = ln } }

// WithHTTPClient sets the client used to fetch metainfo from origins.
func WithHTTPClient(c *http.Client) Option { return func(s *Server) { s.meta.http = c } }

// WithOriginHTTPS makes metainfo requests to origins use https (their ring
// addresses are host:port); the client of WithHTTPClient carries the CA.
func WithOriginHTTPS() Option { return func(s *Server) { s.meta.scheme = "https" } }

// New returns a tracker.
func New(cfg Config, opts ...Option) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:     cfg,
		policy:  cfg.policy(),
		log:     slog.Default(),
		swarms:  newSwarms(cfg.MaxPeerEntries, cfg.MaxEntriesPerIP),
		perPeer: newPeerLimiter(cfg.PeerAnnounceRate, cfg.PeerAnnounceBurst),
		perIP:   newPeerLimiter(cfg.IPAnnounceRate, cfg.IPAnnounceBurst),
		proofs:  peerproof.NewVerifier(verifiedProofs),
		conns:   map[string]*grpc.ClientConn{},
		preheat: newPreheater(),
	}
	s.meta = newMetaInfoCache(cfg, http.DefaultClient)
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		reg := prometheus.NewRegistry()
		s.metrics, s.gather = newMetrics(reg), reg
	}
	s.meta.onFetch = s.metrics.fetches.Inc
	if s.origins == nil {
		s.origins = ring.New(nil)
	}
	if cfg.AnnounceRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.AnnounceRate), int(max(1, cfg.AnnounceRate/10)))
	}
	return s
}

// Limits on what an announce may carry: generous for real agents, small
// enough that a hostile one cannot make the tracker hold much.
const (
	maxIDLen       = 128
	maxAddrs       = 16
	maxAddrLen     = 256
	maxLabelLen    = 64
	maxBitfieldLen = 1 << 10 // metainfo caps blobs at 2048 pieces: 256 bytes
	maxBatch       = 1000
	// maxMessage bounds one gRPC request: a full batch of the largest
	// announces is about 800 KiB.
	maxMessage = 1 << 20
)

func validateAnnounce(req *shoalpb.AnnounceRequest) (digest.Digest, error) {
	d, err := digest.Parse(req.GetDigest())
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "digest: %v", err)
	}
	p := req.GetPeer()
	switch {
	case p.GetId() == "" || len(p.GetId()) > maxIDLen:
		return "", status.Errorf(codes.InvalidArgument, "peer id must be 1..%d bytes", maxIDLen)
	case len(p.GetAddrs()) > maxAddrs:
		return "", status.Errorf(codes.InvalidArgument, "at most %d addrs", maxAddrs)
	case len(req.GetBitfield()) > maxBitfieldLen:
		return "", status.Errorf(codes.InvalidArgument, "bitfield longer than %d bytes", maxBitfieldLen)
	case req.GetMaxPeers() < 0:
		return "", status.Error(codes.InvalidArgument, "max_peers is negative")
	}
	for _, a := range p.GetAddrs() {
		if a == "" || len(a) > maxAddrLen {
			return "", status.Errorf(codes.InvalidArgument, "addr must be 1..%d bytes", maxAddrLen)
		}
	}
	l := p.GetLabels()
	if len(l.GetZone()) > maxLabelLen || len(l.GetRack()) > maxLabelLen || len(l.GetNode()) > maxLabelLen {
		return "", status.Errorf(codes.InvalidArgument, "labels longer than %d bytes", maxLabelLen)
	}
	return d, nil
}

// admit applies the tracker-wide, per-peer and per-IP limits to an RPC
// carrying n announces from peer id, each announce costing a token. The
// owner of a forwarded announce charges the peer again but not the
// forwarding tracker's IP: that tracker charged the peer's.
func (s *Server) admit(c caller, id string, n int) error {
	now := time.Now()
	if s.limiter != nil && !s.limiter.AllowN(now, n) {
		return status.Error(codes.ResourceExhausted, "tracker announce rate limit; retry after the interval")
	}
	if !c.forwarded && !s.perIP.allowN(c.ip.String(), n, now) {
		s.metrics.refused.WithLabelValues("ip_rate").Add(float64(n))
		return status.Errorf(codes.ResourceExhausted, "%s announces too often; keep to the interval", c.ip)
	}
	if !s.perPeer.allowN(id, n, now) {
		s.metrics.refused.WithLabelValues("peer_rate").Add(float64(n))
		return status.Errorf(codes.ResourceExhausted, "peer %.64q announces too often; keep to the interval", id)
	}
	return nil
}

// Announce records the peer and returns peers to fetch from.
func (s *Server) Announce(ctx context.Context, req *shoalpb.AnnounceRequest) (*shoalpb.AnnounceResponse, error) {
	d, err := validateAnnounce(req)
	if err != nil {
		s.metrics.announces.WithLabelValues("invalid").Inc()
		return nil, err
	}
	c, err := s.authenticate(ctx, nil, []*shoalpb.AnnounceRequest{req})
	if err != nil {
		s.metrics.announces.WithLabelValues(resultLabel(err)).Inc()
		return nil, err
	}
	if err := s.admit(c, req.GetPeer().GetId(), 1); err != nil {
		s.metrics.announces.WithLabelValues("rate_limited").Inc()
		return nil, err
	}
	resp, err := s.announce(ctx, c, d, req)
	s.metrics.announces.WithLabelValues(resultLabel(err)).Inc()
	return resp, err
}

func (s *Server) announce(ctx context.Context, c caller, d digest.Digest, req *shoalpb.AnnounceRequest) (*shoalpb.AnnounceResponse, error) {
	if owner, ok := s.owner(d); ok && !req.GetForwarded() {
		resp, err := s.forward(ctx, owner, req)
		if err == nil {
			return resp, nil
		}
		// The owner is unreachable: serve from local state rather than
		// leave the agent without peers. The ring will drop the owner
		// when its lease expires.
		s.log.Warn("forward announce failed; answering locally", "owner", owner.ID, "digest", d, "err", err)
	}
	return s.local(c, d, req)
}

func (s *Server) local(c caller, d digest.Digest, req *shoalpb.AnnounceRequest) (*shoalpb.AnnounceResponse, error) {
	var seeders []ring.Member
	for _, o := range s.origins.Ring().Owners(string(d), s.cfg.Replicas) {
		if o.PeerID != "" {
			seeders = append(seeders, o)
		}
	}
	resp, err := s.swarms.announce(string(d), req, entryIP(c, req), seeders, s.policy, time.Now())
	if errors.Is(err, errIPFull) {
		s.metrics.refused.WithLabelValues("ip_entries").Inc()
	}
	if err != nil {
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	}
	return resp, nil
}

// owner returns the tracker that owns d when it is not this one.
func (s *Server) owner(d digest.Digest) (ring.Member, bool) {
	if s.trackers == nil {
		return ring.Member{}, false
	}
	o, ok := s.trackers.Ring().Owner(string(d))
	if !ok || o.ID == s.cfg.ID {
		return ring.Member{}, false
	}
	return o, true
}

// AnnounceBatch announces many blobs at once. Announces owned elsewhere
// are forwarded as one batch per owning tracker, in parallel.
func (s *Server) AnnounceBatch(ctx context.Context, req *shoalpb.AnnounceBatchRequest) (*shoalpb.AnnounceBatchResponse, error) {
	n := len(req.GetAnnounces())
	if n > maxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d announces per batch", maxBatch)
	}
	ds := make([]digest.Digest, n)
	for i, a := range req.GetAnnounces() {
		d, err := validateAnnounce(a)
		if err != nil {
			s.metrics.announces.WithLabelValues("invalid").Inc()
			return nil, status.Errorf(codes.InvalidArgument, "announce %d: %v", i, status.Convert(err).Message())
		}
		ds[i] = d
	}
	c, err := s.authenticate(ctx, req.GetProof(), req.GetAnnounces())
	if err != nil {
		s.metrics.announces.WithLabelValues(resultLabel(err)).Add(float64(n))
		return nil, err
	}
	if n > 0 {
		if err := s.admit(c, req.GetAnnounces()[0].GetPeer().GetId(), n); err != nil {
			s.metrics.announces.WithLabelValues("rate_limited").Add(float64(n))
			return nil, err
		}
	}
	out := make([]*shoalpb.AnnounceResponse, n)
	type group struct {
		owner ring.Member
		idx   []int
	}
	remote := map[string]*group{}
	for i, a := range req.GetAnnounces() {
		d := ds[i]
		if owner, ok := s.owner(d); ok && !a.GetForwarded() {
			g := remote[owner.ID]
			if g == nil {
				g = &group{owner: owner}
				remote[owner.ID] = g
			}
			g.idx = append(g.idx, i)
			continue
		}
		r, err := s.local(c, d, a)
		s.metrics.announces.WithLabelValues(resultLabel(err)).Inc()
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	var wg sync.WaitGroup
	for _, g := range remote {
		wg.Go(func() {
			batch := &shoalpb.AnnounceBatchRequest{}
			for _, i := range g.idx {
				batch.Announces = append(batch.Announces, req.GetAnnounces()[i])
			}
			resps, err := s.forwardBatch(ctx, g.owner, batch)
			for k, i := range g.idx {
				if err == nil {
					out[i] = resps[k]
				} else {
					out[i], _ = s.local(c, ds[i], req.GetAnnounces()[i])
				}
			}
			if err != nil {
				s.log.Warn("forward announce batch failed; answering locally", "owner", g.owner.ID, "err", err)
			}
		})
	}
	wg.Wait()
	for i, r := range out {
		if r == nil { // refused locally after a failed forward
			return nil, status.Errorf(codes.ResourceExhausted, "announce %d: tracker full", i)
		}
	}
	return &shoalpb.AnnounceBatchResponse{Responses: out}, nil
}

// GetMetaInfo returns a blob's metainfo from the cache or its origins.
func (s *Server) GetMetaInfo(ctx context.Context, req *shoalpb.GetMetaInfoRequest) (*shoalpb.GetMetaInfoResponse, error) {
	d, err := digest.Parse(req.GetDigest())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "digest: %v", err)
	}
	mi, hit, err := s.meta.get(ctx, d, clientAddr(ctx), s.origins.Ring().Owners(string(d), s.origins.Ring().Len()))
	switch {
	case err == nil && hit:
		s.metrics.metainfo.WithLabelValues("hit").Inc()
	case err == nil:
		s.metrics.metainfo.WithLabelValues("fetched").Inc()
	case errors.Is(err, errRemembered):
		s.metrics.metainfo.WithLabelValues("not_found_cached").Inc()
		return nil, status.Errorf(codes.NotFound, "%s: no origin has it", d)
	case errors.Is(err, errFetchLimited):
		s.metrics.metainfo.WithLabelValues("rate_limited").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "%s: %v", d, err)
	case errors.Is(err, errNotFound):
		s.metrics.metainfo.WithLabelValues("not_found").Inc()
		return nil, status.Errorf(codes.NotFound, "%s: no origin has it", d)
	default:
		s.metrics.metainfo.WithLabelValues("error").Inc()
		return nil, status.Errorf(codes.Unavailable, "%s: %v", d, err)
	}
	return &shoalpb.GetMetaInfoResponse{Metainfo: mi}, nil
}

// clientAddr is the host a gRPC call came from: the per-client limits are
// keyed by it, since GetMetaInfo carries no identity of its own.
func clientAddr(ctx context.Context) string {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	a := p.Addr.String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

func resultLabel(err error) string {
	if err == nil {
		return "ok"
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return "invalid"
	case codes.ResourceExhausted:
		return "rate_limited"
	case codes.Unauthenticated, codes.PermissionDenied:
		return "refused"
	}
	return "error"
}

// Run serves gRPC on grpcLn, metrics and health on httpLn (if not nil)
// and profiles on the debug listener (if given) until ctx ends, then
// stops gracefully. opts are extra gRPC server options (TLS credentials).
func (s *Server) Run(ctx context.Context, grpcLn, httpLn net.Listener, opts ...grpc.ServerOption) error {
	opts = append([]grpc.ServerOption{grpc.MaxRecvMsgSize(maxMessage)}, opts...)
	gs := grpc.NewServer(opts...)
	shoalpb.RegisterTrackerServer(gs, s)

	var servers []*http.Server
	errc := make(chan error, 3)
	if httpLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		hs := s.cfg.HTTPTimeouts.Server(mux, s.log)
		servers = append(servers, hs)
		go func() { errc <- ignoreClosed(hs.Serve(httpLn)) }()
	}
	if s.debugLn != nil {
		// The way to see where a loaded tracker spends its CPU.
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		to := s.cfg.HTTPTimeouts
		to.Read, to.Write = 0, max(to.Write, debugWriteTimeout)
		ds := to.Server(mux, s.log)
		servers = append(servers, ds)
		go func() { errc <- ignoreClosed(ds.Serve(s.debugLn)) }()
	}
	go func() { errc <- gs.Serve(grpcLn) }()

	sweepCtx, stopSweep := context.WithCancel(ctx)
	defer stopSweep()
	go s.sweepLoop(sweepCtx)
	preheatDone := make(chan struct{})
	go func() { defer close(preheatDone); s.preheatLoop(sweepCtx) }()
	defer func() { stopSweep(); <-preheatDone }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		gs.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, hs := range servers {
		_ = hs.Shutdown(sctx)
	}
	s.closeConns()
	return err
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.perPeer.sweep(now)
			s.perIP.sweep(now)
			s.meta.sweep(now)
			ns, np := s.swarms.sweep(now)
			s.metrics.swarms.Set(float64(ns))
			s.metrics.peers.Set(float64(np))
		}
	}
}
