// Package origin is Shoal's authoritative registry: the OCI distribution-spec
// v1.1 API on /v2 over a blob store and a repository index. CI pushes here;
// agents and other origins read from here.
package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/gc"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/recorder"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/upstream"
)

// Server is one origin. Create it with New, serve it with Run (or mount
// Handler on a server of your own).
type Server struct {
	cfg     Config
	blobs   blobstore.Store
	repos   repostore.Store
	authz   auth.Authorizer
	issuer  http.Handler       // token issuer, nil unless configured
	caps    *capability.Issuer // nil unless capability_key_file is set
	uploads *uploads
	metrics *metrics
	gather  prometheus.Gatherer
	reg     prometheus.Registerer

	// upstreams are the registries pulled through (nil: none); see
	// pullthrough.go.
	upstreams *upstream.Set
	arriving  *arriving // blobs arriving from upstreams; nil without any
	torrents  torrentInfos
	log       *slog.Logger

	// verified holds the blobs whose bytes have been hashed against their
	// digest since this process started; reads of others are verified as
	// they are served (see serveBlob).
	verified sync.Map

	collector *gc.Collector // nil: no garbage collection

	tls     *originTLS    // nil: plain HTTP
	cluster *cluster      // nil for an origin alone
	egress  *rate.Limiter // nil: blob bodies go out unpaced
	readers *readerGate

	ready chan struct{} // closed once Run listens
}

// Option customises New.
type Option func(*Server)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithRegistry registers metrics on reg and serves it on /metrics (default:
// a fresh registry with the Go and process collectors).
func WithRegistry(reg *prometheus.Registry) Option {
	return func(s *Server) { s.gather, s.reg = reg, reg; s.metrics = newMetrics(reg) }
}

// WithEgressLimit paces blob bodies sent on /v2 with lim, which the origin's
// seeder may share: the origin's uplink is one budget.
func WithEgressLimit(lim *rate.Limiter) Option { return func(s *Server) { s.egress = lim } }

// WithStores replaces the blob store and index (default: local stores
// under DataDir).
func WithStores(b blobstore.Store, r repostore.Store) Option {
	return func(s *Server) { s.blobs, s.repos = b, r }
}

// New creates an origin from cfg.
func New(cfg Config, opts ...Option) (*Server, error) {
	cfg = cfg.applyDefaults()
	s := &Server{cfg: cfg, log: slog.Default(), ready: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.blobs == nil || s.repos == nil {
		if err := cfg.validate(); err != nil {
			return nil, err
		}
		b, err := blobstore.NewLocal(cfg.DataDir + "/blobstore")
		if err != nil {
			return nil, err
		}
		r, err := repostore.NewLocal(cfg.DataDir + "/repositories")
		if err != nil {
			return nil, err
		}
		s.blobs, s.repos = b, r
	}
	if s.metrics == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		s.gather, s.reg, s.metrics = reg, reg, newMetrics(reg)
	}
	authz, err := auth.New(cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("origin: auth: %w", err)
	}
	s.authz = authz
	if cfg.Auth.Mode == "token" && cfg.Auth.Htpasswd != "" && cfg.TokenPath != "" {
		if s.issuer, err = auth.NewTokenIssuer(cfg.Auth); err != nil {
			return nil, fmt.Errorf("origin: token issuer: %w", err)
		}
	}
	if err := s.loadTLS(); err != nil {
		return nil, err
	}
	if err := s.loadCapabilities(); err != nil {
		return nil, err
	}
	if len(cfg.Upstreams) > 0 {
		if s.upstreams, err = upstream.NewSet(cfg.Upstreams, s.reg, s.log); err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
		s.arriving = newArriving(s.reg)
	}
	s.uploads = newUploads(s.blobs, cfg, s.metrics)
	s.readers = newReaderGate(cfg.BlobReaders, s.egress)
	if s.cluster != nil {
		if err := s.initCluster(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Handler serves /v2, /metrics, /healthz, /readyz and, when configured, the
// token issuer.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc(MetaInfoPath, s.getMetaInfo)
	mux.HandleFunc(InternalBlobPath, s.serveInternal)
	mux.HandleFunc(InternalMetaInfoPath, s.serveInternal)
	mux.HandleFunc(InternalGCPath, s.serveInternal)
	mux.HandleFunc(capability.HTTPPath, s.serveCapability)
	mux.HandleFunc(upstream.AdvertisePath, s.serveAdverts)
	mux.HandleFunc(InternalUpstreamPath, s.serveInternal)
	mux.HandleFunc(TorrentPath, s.serveTorrent)
	if s.issuer != nil {
		mux.Handle(s.cfg.TokenPath, s.issuer)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /v2 is routed by hand: ServeMux would clean ".." and "%2F" out of
		// the path and redirect, and the spec wants them rejected.
		if p := r.URL.EscapedPath(); p == "/v2" || strings.HasPrefix(p, "/v2/") {
			s.serveV2(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if _, err := s.repos.Repositories(r.Context()); err != nil {
		http.Error(w, "index unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// Run listens on cfg.Addr (or uses ln if given) and serves until ctx is
// cancelled, then shuts down gracefully: no new connections, in-flight
// requests (uploads included) get up to ShutdownTimeout to finish.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("origin: listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	jctx, stopJanitor := context.WithCancel(context.Background())
	wg.Go(func() { s.uploads.janitor(jctx) })
	if s.cluster != nil {
		wg.Go(func() { s.runCluster(jctx) })
	}
	if s.collector != nil {
		wg.Go(func() { s.collector.Run(jctx) })
	}
	defer func() { stopJanitor(); wg.Wait(); s.upstreams.Close() }()

	if s.tls != nil {
		srv.TLSConfig = s.tls.serverConfig()
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("origin listening", "addr", ln.Addr().String(), "data_dir", s.cfg.DataDir, "auth", s.cfg.Auth.Mode,
		"https", s.tls != nil, "client_ca", s.cfg.TLS.ClientCAFile)
	close(s.ready)
	select {
	case err := <-errc:
		return fmt.Errorf("origin: serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("origin shutting down", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("origin: shutdown: %w", err)
	}
	<-errc
	return nil
}

// Ready is closed when Run is listening.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// handlerFunc is one endpoint+method.
type handlerFunc func(w http.ResponseWriter, r *http.Request, rt route) error

func (s *Server) endpoints() map[kind]map[string]handlerFunc {
	return map[kind]map[string]handlerFunc{
		kindBase:        {"GET": s.getBase, "HEAD": s.getBase},
		kindCatalog:     {"GET": s.getCatalog},
		kindTags:        {"GET": s.getTags},
		kindManifest:    {"GET": s.getManifest, "HEAD": s.getManifest, "PUT": s.putManifest, "DELETE": s.deleteManifest},
		kindBlob:        {"GET": s.getBlob, "HEAD": s.getBlob, "DELETE": s.deleteBlob},
		kindUploadStart: {"POST": s.startUpload},
		kindUpload:      {"GET": s.uploadStatus, "PATCH": s.patchUpload, "PUT": s.putUpload, "DELETE": s.cancelUpload},
		kindReferrers:   {"GET": s.getReferrers},
	}
}

// accessFor is what a request needs from the authorizer.
func accessFor(rt route, method string) []auth.Access {
	switch rt.kind {
	case kindBase:
		return nil
	case kindCatalog:
		return []auth.Access{{Type: "registry", Name: "catalog", Action: auth.Pull}}
	}
	repo := func(a auth.Action) auth.Access { return auth.Access{Type: "repository", Name: rt.name, Action: a} }
	switch method {
	case http.MethodGet, http.MethodHead:
		if rt.kind == kindUpload {
			return []auth.Access{repo(auth.Push)}
		}
		return []auth.Access{repo(auth.Pull)}
	case http.MethodDelete:
		if rt.kind == kindUpload {
			return []auth.Access{repo(auth.Push)}
		}
		return []auth.Access{repo(auth.Delete)}
	default:
		return []auth.Access{repo(auth.Pull), repo(auth.Push)}
	}
}

func (s *Server) serveV2(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := recorder.New(w)
	endpoint := "unknown"
	defer func() {
		s.metrics.requests.WithLabelValues(endpoint, r.Method, strconv.Itoa(rw.Status())).Inc()
		s.metrics.requestDuration.WithLabelValues(endpoint, r.Method).Observe(time.Since(start).Seconds())
	}()
	rw.Header().Set("Docker-Distribution-API-Version", "registry/2.0")

	rt, err := parseRoute(r.URL.EscapedPath())
	if err != nil {
		if errors.Is(err, errNotFound) {
			err = ocierr.New(ocierr.Unsupported, "no endpoint at %s", r.URL.Path).WithStatus(http.StatusNotFound)
		}
		s.writeError(rw, r, err)
		return
	}
	endpoint = rt.kind.String()
	methods := s.endpoints()[rt.kind]
	h, ok := methods[r.Method]
	if !ok {
		allow := make([]string, 0, len(methods))
		for m := range methods {
			allow = append(allow, m)
		}
		sort.Strings(allow)
		rw.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(rw, r, ocierr.New(ocierr.Unsupported, "method %s not allowed on %s", r.Method, endpoint))
		return
	}
	id, err := s.authorize(rw, r, accessFor(rt, r.Method)...)
	if err != nil {
		s.writeError(rw, r, err)
		return
	}
	rt.client = clientKey(id, r.RemoteAddr)
	if _, _, ok := s.upstreams.Lookup(rt.name); ok && r.Method != http.MethodGet && r.Method != http.MethodHead {
		// A pulled-through repository mirrors its upstream: a push here
		// would shadow it for every node.
		s.writeError(rw, r, ocierr.New(ocierr.Denied, "%s mirrors an upstream registry and is read-only", rt.name))
		return
	}
	if err := h(rw, r, rt); err != nil {
		s.writeError(rw, r, err)
	}
}

// authorize asks the authorizer for access and turns a refusal into the
// OCI error to answer with, setting the challenge a 401 must carry.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, access ...auth.Access) (auth.Identity, error) {
	id, err := s.authz.Authorize(r, access...)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, auth.ErrUnauthorized):
		w.Header().Set("WWW-Authenticate", auth.Challenge(err))
		return id, ocierr.Wrap(ocierr.Unauthorized, err)
	case errors.Is(err, auth.ErrDenied):
		return id, ocierr.Wrap(ocierr.Denied, err)
	}
	return id, err
}

// writeError answers with an OCI error unless the handler already sent a
// status (then the connection is what tells the client).
func (s *Server) writeError(w *recorder.Writer, r *http.Request, err error) {
	var oe *ocierr.Error
	if !errors.As(err, &oe) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("request rejected", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if w.Code != 0 {
		return
	}
	// Drain a little of an unread body so the connection can be reused,
	// but never read an attacker's gigabytes.
	if r.Body != nil {
		io.CopyN(io.Discard, r.Body, 64<<10)
	}
	ocierr.Write(w, r, err)
}

func (s *Server) getBase(w http.ResponseWriter, r *http.Request, _ route) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		io.WriteString(w, "{}")
	}
	return nil
}
