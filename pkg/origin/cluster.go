package origin

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/recorder"
	"github.com/shoal-project/shoal/pkg/ring"
)

// ClusterConfig is how an origin shares blobs with the other origins.
type ClusterConfig struct {
	// Replicas is how many origins own each blob (default 3, capped by
	// the cluster's size).
	Replicas int `yaml:"replicas"`
	// Replication is "sync" (default): a push returns 201 once WriteQuorum
	// owners hold the blob; or "async": once this origin holds it, with
	// copies to the owners queued on disk and retried until done.
	Replication string `yaml:"replication"`
	// WriteQuorum is, in sync mode, how many owners must hold a pushed
	// blob before the push succeeds (default: all of them). Owners that
	// fail beyond the quorum get the blob from the retry queue.
	WriteQuorum int `yaml:"write_quorum"`
	// RepairBandwidth bounds, in bytes per second, the copying to new
	// owners after a membership change (default 100 MiB/s).
	RepairBandwidth int64 `yaml:"repair_bandwidth"`
	// SecretFile holds the bearer token origins present to each other's
	// internal endpoints, so that only cluster members read and write
	// blobs through them. A cluster refuses to start without one.
	SecretFile string `yaml:"secret_file"`
	// Secret is the token itself, for origins built in process (tests,
	// embedding); it is never read from YAML or flags, where it would sit
	// in a ConfigMap or on a command line. SecretFile wins when both are
	// set.
	Secret string `yaml:"-"`
	// PeerTimeout bounds a metadata call to another origin (default 5s);
	// blob transfers are bounded by progress, not time.
	PeerTimeout time.Duration `yaml:"peer_timeout"`
}

func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.Replicas <= 0 {
		c.Replicas = 3
	}
	if c.Replication == "" {
		c.Replication = "sync"
	}
	if c.RepairBandwidth <= 0 {
		c.RepairBandwidth = 100 << 20
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = 5 * time.Second
	}
	return c
}

// minSecretLen is the shortest cluster secret accepted: 128 bits, as
// `openssl rand -hex 32` gives with room to spare.
const minSecretLen = 16

// ErrNoClusterSecret: an origin was asked to join a cluster without a
// cluster secret, which would leave its internal endpoints open to anyone
// who can reach it.
var ErrNoClusterSecret = errors.New("origin: cluster mode needs a cluster secret (cluster.secret_file or --cluster-secret-file)")

// LoadSecret returns c with Secret read from SecretFile, or
// ErrNoClusterSecret when there is none: an origin checks it before it
// joins the cluster, so a misconfigured one never appears on the ring.
func (c ClusterConfig) LoadSecret() (ClusterConfig, error) {
	if c.SecretFile != "" {
		sec, err := auth.ReadSecretFile(c.SecretFile, minSecretLen)
		if err != nil {
			return c, fmt.Errorf("origin: cluster secret: %w", err)
		}
		c.Secret = sec
	}
	if c.Secret == "" {
		return c, ErrNoClusterSecret
	}
	if len(c.Secret) < minSecretLen {
		return c, fmt.Errorf("origin: cluster secret is %d bytes, need at least %d", len(c.Secret), minSecretLen)
	}
	return c, nil
}

func (c ClusterConfig) validate() error {
	if c.Replication != "sync" && c.Replication != "async" {
		return fmt.Errorf("origin: cluster.replication %q: want sync or async", c.Replication)
	}
	if c.WriteQuorum < 0 {
		return errors.New("origin: cluster.write_quorum must not be negative")
	}
	return nil
}

// Members is the live set of origins: a membership.Group, or a fixed ring
// whose Subscribe never fires.
type Members interface {
	Ring() *ring.Ring
	Subscribe() <-chan struct{}
}

// Peers is what WithCluster needs to reach the other origins.
type Peers struct {
	// Members is the origin ring, this origin included.
	Members Members
	// Self is this origin's member ID.
	Self string
	// Client calls other origins (default http.DefaultClient's transport).
	Client *http.Client
	// Scheme is "http" or "https" (default: https when the origin serves
	// TLS, with a client that presents its certificate).
	Scheme string
}

// WithCluster makes the origin one of several: pushes replicate to each
// blob's owners, reads of blobs held elsewhere are proxied, and membership
// changes trigger repair. The index (tags, links) must be shared too; see
// repostore.Etcd.
func WithCluster(p Peers) Option {
	return func(s *Server) { s.cluster = &cluster{Peers: p} }
}

// cluster is an origin's view of and work for its peers.
type cluster struct {
	Peers
	cfg    ClusterConfig
	client peerClient
	queue  *replicationQueue
	repair *rate.Limiter
	wake   chan struct{}
}

func (s *Server) initCluster() error {
	c := s.cluster
	c.cfg = s.cfg.Cluster.withDefaults()
	if err := c.cfg.validate(); err != nil {
		return err
	}
	var err error
	if c.cfg, err = c.cfg.LoadSecret(); err != nil {
		return err
	}
	if c.Members == nil || c.Self == "" {
		return errors.New("origin: a cluster needs members and this origin's ID")
	}
	hc, scheme := c.Client, c.Scheme
	if s.tls != nil {
		// Origins of one cluster share their TLS settings: one that serves
		// HTTPS calls the others over HTTPS, with its own certificate.
		if hc == nil {
			hc = s.tls.peerClient()
		}
		if scheme == "" {
			scheme = "https"
		}
	}
	if hc == nil {
		hc = &http.Client{}
	}
	if scheme == "" {
		scheme = "http"
	}
	c.client = peerClient{http: hc, scheme: scheme, secret: c.cfg.Secret}
	q, err := openReplicationQueue(s.cfg.DataDir + "/replication")
	if err != nil {
		return err
	}
	c.queue = q
	s.metrics.replicationQueue.Set(float64(q.len()))
	// One second of burst: a repair copy waits for tokens in 1 MiB steps.
	c.repair = rate.NewLimiter(rate.Limit(c.cfg.RepairBandwidth), int(max(c.cfg.RepairBandwidth, 1<<20)))
	c.wake = make(chan struct{}, 1)
	return nil
}

// owners are the origins that should hold d.
func (c *cluster) owners(d digest.Digest) []ring.Member {
	return c.Members.Ring().Owners(d.String(), c.cfg.Replicas)
}

// sources are the origins to read d from: its owners first, then the rest,
// which may still hold it from before a membership change. Never self.
func (c *cluster) sources(d digest.Digest) []ring.Member {
	r := c.Members.Ring()
	all := r.Owners(d.String(), r.Len())
	out := all[:0:0]
	for _, m := range all {
		if m.ID != c.Self {
			out = append(out, m)
		}
	}
	return out
}

func (c *cluster) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// replicateNew runs after a pushed blob (or manifest) is committed here and
// before the client hears 201.
func (s *Server) replicateNew(ctx context.Context, d digest.Digest) error {
	c := s.cluster
	if c == nil {
		return nil
	}
	if c.cfg.Replication == "async" {
		if err := c.queue.add(d); err != nil {
			return fmt.Errorf("queue replication of %s: %w", d, err)
		}
		s.metrics.replicationQueue.Set(float64(c.queue.len()))
		c.kick()
		return nil
	}
	owners := c.owners(d)
	need := c.cfg.WriteQuorum
	if need == 0 || need > len(owners) {
		need = len(owners)
	}
	have := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, m := range owners {
		if m.ID == c.Self {
			mu.Lock()
			have++
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			err := s.copyTo(ctx, m, d, "push", nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			have++
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		// Whatever the quorum says, the owners that missed out get the
		// blob from the retry queue.
		if err := c.queue.add(d); err != nil {
			errs = append(errs, err)
		}
		s.metrics.replicationQueue.Set(float64(c.queue.len()))
		c.kick()
	}
	if have < need {
		return ocierr.New(ocierr.Unavailable, "blob %s reached %d of the %d owners required: %v", d, have, need, errors.Join(errs...)).
			WithStatus(http.StatusServiceUnavailable)
	}
	if len(errs) > 0 {
		s.log.Warn("pushed blob short of owners; queued", "digest", d, "have", have, "owners", len(owners), "err", errors.Join(errs...))
	}
	return nil
}

// copyTo makes sure origin m holds d, sending it from here if it does not.
// lim, if not nil, paces the bytes.
func (s *Server) copyTo(ctx context.Context, m ring.Member, d digest.Digest, cause string, lim *rate.Limiter) error {
	c := s.cluster
	hctx, cancel := context.WithTimeout(ctx, c.cfg.PeerTimeout)
	ok, err := c.client.has(hctx, m.Addr, d)
	cancel()
	if err != nil {
		s.metrics.replications.WithLabelValues(cause, "error").Inc()
		return err
	}
	if ok {
		s.metrics.replications.WithLabelValues(cause, "present").Inc()
		return nil
	}
	rd, err := s.blobs.Open(ctx, d)
	if err != nil {
		s.metrics.replications.WithLabelValues(cause, "error").Inc()
		return fmt.Errorf("open %s to copy: %w", d, err)
	}
	defer rd.Close()
	var body io.Reader = io.NewSectionReader(rd, 0, rd.Size())
	if lim != nil {
		body = &pace.Reader{Ctx: ctx, R: body, Lim: lim, Count: s.metrics.repairBytes.Add}
	}
	if err := c.client.push(ctx, m.Addr, d, body, rd.Size()); err != nil {
		s.metrics.replications.WithLabelValues(cause, "error").Inc()
		return err
	}
	s.metrics.replications.WithLabelValues(cause, "copied").Inc()
	s.log.Debug("blob copied", "digest", d, "to", m.ID, "cause", cause, "bytes", rd.Size())
	return nil
}

// copyToOwners copies d to every owner but self.
func (s *Server) copyToOwners(ctx context.Context, d digest.Digest, cause string, lim *rate.Limiter) error {
	var errs []error
	for _, m := range s.cluster.owners(d) {
		if m.ID == s.cluster.Self {
			continue
		}
		if err := s.copyTo(ctx, m, d, cause, lim); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runCluster drains the replication queue and repairs placement after
// membership changes, until ctx ends.
func (s *Server) runCluster(ctx context.Context) {
	c := s.cluster
	changes := c.Members.Subscribe()
	var wg sync.WaitGroup
	wg.Go(func() { s.drainQueue(ctx) })
	wg.Go(func() {
		// Repair once at start (this origin may have been away while the
		// ring changed), then after each change, coalescing bursts.
		for {
			s.metrics.members.Set(float64(c.Members.Ring().Len()))
			s.repairAll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-changes:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	})
	wg.Wait()
}

// repairAll walks the local store and copies every blob to those of its
// owners that lack it, paced by the repair bandwidth.
func (s *Server) repairAll(ctx context.Context) {
	start := time.Now()
	var blobs, failed int
	err := s.blobs.Walk(ctx, func(info blobstore.Info) error {
		blobs++
		if err := s.copyToOwners(ctx, info.Digest, "repair", s.cluster.repair); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed++
			s.log.Warn("repair copy failed; queued", "digest", info.Digest, "err", err)
			if qerr := s.cluster.queue.add(info.Digest); qerr == nil {
				s.cluster.kick()
			}
		}
		return nil
	})
	s.metrics.replicationQueue.Set(float64(s.cluster.queue.len()))
	if err != nil && ctx.Err() == nil {
		s.log.Error("repair walk failed", "err", err)
	}
	s.log.Info("repair pass done", "blobs", blobs, "failed", failed, "took", time.Since(start).Round(time.Millisecond))
}

// drainQueue retries queued blobs with per-blob exponential backoff.
func (s *Server) drainQueue(ctx context.Context) {
	const minBackoff, maxBackoff = 500 * time.Millisecond, time.Minute
	type retry struct {
		next    time.Time
		backoff time.Duration
	}
	retries := map[digest.Digest]*retry{}
	for {
		now := time.Now()
		wait := maxBackoff
		for _, d := range s.cluster.queue.list() {
			rt := retries[d]
			if rt != nil && now.Before(rt.next) {
				wait = min(wait, rt.next.Sub(now))
				continue
			}
			err := s.copyToOwners(ctx, d, "queue", nil)
			if errors.Is(err, blobstore.ErrNotFound) {
				err = nil // deleted since: nothing left to copy
			}
			if err == nil {
				s.cluster.queue.remove(d)
				delete(retries, d)
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if rt == nil {
				rt = &retry{backoff: minBackoff}
				retries[d] = rt
			} else {
				rt.backoff = min(2*rt.backoff, maxBackoff)
			}
			rt.next = time.Now().Add(rt.backoff)
			wait = min(wait, rt.backoff)
			s.log.Debug("replication retry", "digest", d, "in", rt.backoff, "err", err)
		}
		s.metrics.replicationQueue.Set(float64(s.cluster.queue.len()))
		select {
		case <-ctx.Done():
			return
		case <-s.cluster.wake:
		case <-time.After(wait):
		}
	}
}

// proxyBlob answers a blob GET or HEAD from another origin that holds it.
// Range passes through; the other origin verifies what it sends, and a
// transfer cut short here is cut short for the client too.
func (s *Server) proxyBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) error {
	hdr := http.Header{}
	if rg := r.Header.Get("Range"); rg != "" {
		hdr.Set("Range", rg)
	}
	resp, from, err := s.fromPeers(r.Context(), r.Method, InternalBlobPath, d, hdr)
	if err != nil {
		s.metrics.proxied.WithLabelValues("missing").Inc()
		return ocierr.New(ocierr.BlobUnknown, "%s: %v", d, err)
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Length", "Content-Range", "Content-Type", "Docker-Content-Digest", "ETag", "Accept-Ranges"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		s.metrics.proxied.WithLabelValues("ok").Inc()
		return nil
	}
	n, err := io.Copy(w, resp.Body)
	s.metrics.bytesOut.Add(float64(n))
	if want := contentLength(resp); err != nil || (want >= 0 && n != want) {
		s.metrics.proxied.WithLabelValues("cut").Inc()
		s.log.Warn("proxied blob cut short", "digest", d, "from", from, "sent", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.metrics.proxied.WithLabelValues("ok").Inc()
	return nil
}

// fromPeers starts a read of d at path from the first origin that has it,
// owners first; a missing or failing origin is skipped.
func (s *Server) fromPeers(ctx context.Context, method, path string, d digest.Digest, hdr http.Header) (*http.Response, string, error) {
	var errs []error
	for _, m := range s.cluster.sources(d) {
		resp, err := s.cluster.client.get(ctx, method, m.Addr, path, d, hdr)
		if err == nil {
			return resp, m.ID, nil
		}
		if !errors.Is(err, errPeerMissing) {
			s.log.Debug("peer read failed", "digest", d, "from", m.ID, "err", err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", m.ID, err))
	}
	if len(errs) == 0 {
		return nil, "", errors.New("no other origin")
	}
	return nil, "", errors.Join(errs...)
}

// fetchSmall copies a small blob (a manifest) from another origin into the
// local store, verified, so it can be served and validated here.
func (s *Server) fetchSmall(ctx context.Context, d digest.Digest, limit int64) error {
	resp, _, err := s.fromPeers(ctx, http.MethodGet, InternalBlobPath, d, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", blobstore.ErrNotFound, err)
	}
	defer resp.Body.Close()
	size := contentLength(resp)
	if resp.StatusCode != http.StatusOK || size > limit {
		return fmt.Errorf("fetch %s: %s, %d bytes", d, resp.Status, size)
	}
	_, err = blobstore.Put(ctx, s.blobs, io.LimitReader(resp.Body, limit+1), size, d)
	return err
}

// peerMetaInfo gets d's metainfo from another origin and checks it is
// well-formed and about d.
func (s *Server) peerMetaInfo(ctx context.Context, d digest.Digest) (*metainfo.MetaInfo, error) {
	resp, _, err := s.fromPeers(ctx, http.MethodGet, InternalMetaInfoPath, d, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", blobstore.ErrNotFound, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	mi, err := metainfo.Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("metainfo of %s from a peer: %w", d, err)
	}
	if mi.Digest != d {
		return nil, fmt.Errorf("peer sent metainfo of %s for %s", mi.Digest, d)
	}
	return mi, nil
}

// serveInternal is the origin-to-origin blob endpoint.
func (s *Server) serveInternal(w http.ResponseWriter, r *http.Request) {
	rw := recorder.New(w)
	if s.cluster == nil {
		http.NotFound(w, r)
		return
	}
	if err := s.internalCertOK(r); err != nil {
		s.writeError(rw, r, err)
		return
	}
	// initCluster refused to start without a secret, so there is always
	// one to check.
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cluster.cfg.Secret)) != 1 {
		s.writeError(rw, r, ocierr.New(ocierr.Unauthorized, "internal endpoint needs the cluster secret"))
		return
	}
	if r.URL.EscapedPath() == InternalGCPath {
		if err := s.serveGC(rw, r); err != nil {
			s.writeError(rw, r, err)
		}
		return
	}
	if p := r.URL.EscapedPath(); strings.HasPrefix(p, InternalMetaInfoPath) {
		d, err := parseDigest(strings.TrimPrefix(p, InternalMetaInfoPath))
		if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
			err = ocierr.New(ocierr.Unsupported, "method %s", r.Method).WithStatus(http.StatusMethodNotAllowed)
		}
		if err == nil {
			err = s.writeMetaInfo(rw, r, d, false)
		}
		if err != nil {
			s.writeError(rw, r, err)
		}
		return
	}
	if p := r.URL.EscapedPath(); strings.HasPrefix(p, InternalUpstreamPath) {
		d, err := parseDigest(strings.TrimPrefix(p, InternalUpstreamPath))
		if err == nil {
			err = s.serveUpstreamInternal(rw, r, d)
		}
		if err != nil {
			s.writeError(rw, r, err)
		}
		return
	}
	d, err := parseDigest(strings.TrimPrefix(r.URL.EscapedPath(), InternalBlobPath))
	if err != nil {
		s.writeError(rw, r, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		rd, err := s.blobs.Open(r.Context(), d)
		if errors.Is(err, blobstore.ErrNotFound) {
			err = ocierr.New(ocierr.BlobUnknown, "%s", d)
		} else if err == nil {
			defer rd.Close()
			err = s.serveBlob(rw, r, d, rd)
		}
		if err != nil {
			s.writeError(rw, r, err)
		}
	case http.MethodPut:
		if err := s.receiveBlob(r, d); err != nil {
			s.writeError(rw, r, err)
			return
		}
		rw.Header().Set("Content-Length", "0")
		rw.WriteHeader(http.StatusCreated)
	default:
		rw.Header().Set("Allow", "GET, HEAD, PUT")
		s.writeError(rw, r, ocierr.New(ocierr.Unsupported, "method %s", r.Method).WithStatus(http.StatusMethodNotAllowed))
	}
}

// receiveBlob stores a blob another origin sends, verified like a push.
func (s *Server) receiveBlob(r *http.Request, d digest.Digest) error {
	if _, err := s.blobs.Stat(r.Context(), d); err == nil {
		return nil
	}
	if r.ContentLength > s.cfg.MaxBlobSize {
		return ocierr.New(ocierr.SizeInvalid, "blob of %d bytes over the limit", r.ContentLength).WithStatus(http.StatusRequestEntityTooLarge)
	}
	body := http.MaxBytesReader(nil, r.Body, s.cfg.MaxBlobSize)
	_, err := blobstore.Put(r.Context(), s.blobs, body, r.ContentLength, d)
	switch {
	case errors.Is(err, blobstore.ErrDigestMismatch):
		return ocierr.Wrap(ocierr.DigestInvalid, err)
	case errors.Is(err, blobstore.ErrSizeMismatch):
		return ocierr.Wrap(ocierr.SizeInvalid, err)
	case err != nil:
		return err
	}
	s.metrics.bytesIn.Add(float64(max(r.ContentLength, 0)))
	s.verified.Store(d, struct{}{})
	return nil
}
