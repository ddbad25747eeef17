// Package upstream pulls images through the origin from registries Shoal
// does not own (Docker Hub, GHCR, a company registry), so that their blobs
// reach the fleet peer-to-peer like pushed ones.
//
//   - A namespace (docker.io) maps to one upstream URL with its own
//     credentials, TLS and tag TTL; its repositories live on the origin
//     under a prefix (docker.io/library/debian).
//   - A tag is resolved at the upstream, at most once per TTL, and a tag in
//     use is refreshed in the background in the last quarter of its TTL, so
//     pulls of a hot tag never wait on the upstream; when the upstream
//     cannot answer, the last digest known is served.
//   - Manifests and blobs are fetched by digest, once: concurrent asks
//     share one fetch (the origin routes each blob to one owner of the
//     cluster, which makes that once per cluster), and nothing is stored
//     unless it hashes to its digest.
//   - Upstream answers map to errors the origin turns into OCI errors:
//     404 not found, 401/403 denied, 429 throttled with its Retry-After,
//     anything else unavailable.
//   - Credentials are read from files, sent only to the upstream and its
//     token realm, and never logged or counted in metrics.
package upstream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-project/shoal/pkg/digest"
)

// AdvertisePath is where an origin lists the namespaces it pulls through,
// as JSON: {"upstreams":[{"namespace":"docker.io","prefix":"docker.io"}]}.
// Agents read it so that no second table of namespaces needs writing.
const AdvertisePath = "/upstreams/v1"

// Advert is one namespace an origin pulls through.
type Advert struct {
	Namespace string `json:"namespace"`
	Prefix    string `json:"prefix"`
}

// Adverts is AdvertisePath's body.
type Adverts struct {
	Upstreams []Advert `json:"upstreams"`
}

// Registry is the pull-through state of one upstream: its client, the
// tags resolved there and the fetches under way. Safe for concurrent use.
type Registry struct {
	cfg     Config
	client  *Client
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	flight singleflight.Group // "tag:", "manifest:", "blob:" keys
	bg     *background

	mu         sync.Mutex
	tags       map[string]tagEntry // repo:tag → digest
	refreshing map[string]bool     // tags being refreshed in the background
}

// background is the Set's lifetime for work no request waits on.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

// goDetached runs f unless the set is closed; Close waits for it.
func (b *background) goDetached(f func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Go(func() { f(b.ctx) })
	return true
}

func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}

type tagEntry struct {
	d       digest.Digest
	fetched time.Time
}

// maxTagEntries bounds the tag memory; past it, it starts over (the
// index still holds every tag for when the upstream is down).
const maxTagEntries = 65536

// Namespace is the registry name this upstream serves.
func (r *Registry) Namespace() string { return r.cfg.Namespace }

// ResolveTag returns the digest tag names in repo (the upstream's
// repository name). A tag resolved within TagTTL is not asked again. When
// the upstream cannot answer (down, failing, throttling), the last digest
// this process resolved, or else known's (the origin's index), is returned
// and the upstream's error only logged; a 404 or a refusal is returned as
// it is, since the upstream did answer.
func (r *Registry) ResolveTag(ctx context.Context, repo, tag string, known func(context.Context) (digest.Digest, bool)) (digest.Digest, error) {
	key := repo + ":" + tag
	r.mu.Lock()
	e, ok := r.tags[key]
	r.mu.Unlock()
	if age := r.now().Sub(e.fetched); ok && age < r.cfg.TagTTL {
		r.metrics.tags.WithLabelValues(r.cfg.Namespace, "cached").Inc()
		if age >= r.cfg.TagTTL*3/4 {
			r.refreshInBackground(repo, tag)
		}
		return e.d, nil
	}
	// Detached: a client that gives up must not fail the others waiting
	// on the same answer.
	d, err := r.resolveShared(context.WithoutCancel(ctx), repo, tag)
	if err == nil {
		r.metrics.tags.WithLabelValues(r.cfg.Namespace, "resolved").Inc()
		return d, nil
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDenied) || errors.Is(err, ErrMismatch) {
		r.metrics.tags.WithLabelValues(r.cfg.Namespace, "error").Inc()
		return "", err
	}
	if ok {
		r.metrics.tags.WithLabelValues(r.cfg.Namespace, "stale").Inc()
		r.log.Warn("upstream cannot resolve a tag; serving the last digest known", "namespace", r.cfg.Namespace,
			"repository", repo, "tag", tag, "digest", e.d, "age", r.now().Sub(e.fetched).Round(time.Second), "err", err)
		return e.d, nil
	}
	if d, ok := known(ctx); ok {
		r.metrics.tags.WithLabelValues(r.cfg.Namespace, "stale").Inc()
		r.log.Warn("upstream cannot resolve a tag; serving the digest the index holds", "namespace", r.cfg.Namespace,
			"repository", repo, "tag", tag, "digest", d, "err", err)
		return d, nil
	}
	r.metrics.tags.WithLabelValues(r.cfg.Namespace, "error").Inc()
	return "", err
}

// resolveShared asks the upstream once for everyone asking at the same
// time, and remembers the answer.
func (r *Registry) resolveShared(ctx context.Context, repo, tag string) (digest.Digest, error) {
	key := repo + ":" + tag
	v, err, _ := r.flight.Do("tag:"+key, func() (any, error) {
		return r.resolveTag(ctx, repo, tag)
	})
	if err != nil {
		return "", err
	}
	d := v.(digest.Digest)
	r.mu.Lock()
	if len(r.tags) >= maxTagEntries {
		clear(r.tags)
	}
	r.tags[key] = tagEntry{d: d, fetched: r.now()}
	r.mu.Unlock()
	return d, nil
}

// refreshInBackground resolves a tag in use again before it expires; one
// refresh per tag at a time, none once the set is closed.
func (r *Registry) refreshInBackground(repo, tag string) {
	key := repo + ":" + tag
	r.mu.Lock()
	if r.refreshing[key] {
		r.mu.Unlock()
		return
	}
	r.refreshing[key] = true
	r.mu.Unlock()
	started := r.bg.goDetached(func(ctx context.Context) {
		defer func() {
			r.mu.Lock()
			delete(r.refreshing, key)
			r.mu.Unlock()
		}()
		if _, err := r.resolveShared(ctx, repo, tag); err != nil {
			// The entry stays until it expires; a request then asks
			// again and falls back as usual.
			r.log.Debug("background tag refresh failed", "namespace", r.cfg.Namespace, "repository", repo, "tag", tag, "err", err)
			return
		}
		r.metrics.tags.WithLabelValues(r.cfg.Namespace, "refreshed").Inc()
	})
	if !started {
		r.mu.Lock()
		delete(r.refreshing, key)
		r.mu.Unlock()
	}
}

func (r *Registry) resolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	d, ok, err := r.client.ResolveTag(ctx, repo, tag)
	r.count("manifest", err)
	if err != nil || ok {
		return d, err
	}
	// No digest in the HEAD's answer: read the manifest to learn it.
	m, err := r.client.GetManifest(ctx, repo, tag)
	r.count("manifest", err)
	if err != nil {
		return "", err
	}
	return m.Digest, nil
}

// Manifest fetches manifest d of repo from the upstream; concurrent asks
// for one digest share one request.
func (r *Registry) Manifest(ctx context.Context, repo string, d digest.Digest) (*Manifest, error) {
	v, err, _ := r.flight.Do("manifest:"+d.String(), func() (any, error) {
		m, err := r.client.GetManifest(context.WithoutCancel(ctx), repo, d.String())
		r.count("manifest", err)
		return m, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*Manifest), nil
}

// Store keeps a blob read from the upstream: it commits it only if the
// bytes hash to d (and count size, when size ≥ 0), atomically, and
// returns an error wrapping ErrMismatch otherwise.
type Store func(ctx context.Context, d digest.Digest, body io.Reader, size int64) error

// FetchBlob reads blob d of repo from the upstream into store, unless held
// (nil: never) says it is stored already. Concurrent asks for one digest
// share one fetch; the fetch outlives an asker that gives up, bounded by
// Timeout of no progress. held is asked inside the shared fetch: an ask
// that found the blob missing just before a fetch stored it would
// otherwise start a second one, and the upstream would send the blob
// twice (seen in CI, two agents pulling one image through one origin).
func (r *Registry) FetchBlob(ctx context.Context, repo string, d digest.Digest, held func(context.Context, digest.Digest) bool, store Store) error {
	_, err, shared := r.flight.Do("blob:"+d.String(), func() (any, error) {
		if held != nil && held(ctx, d) {
			return nil, nil
		}
		return nil, r.fetchBlob(context.WithoutCancel(ctx), repo, d, store)
	})
	if shared {
		r.metrics.blobsShared.WithLabelValues(r.cfg.Namespace).Inc()
	}
	return err
}

func (r *Registry) fetchBlob(ctx context.Context, repo string, d digest.Digest, store Store) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A body that stops moving for Timeout is abandoned: the fetch is
	// shared and must not hang every asker on a stalled upstream.
	stall := time.AfterFunc(r.cfg.Timeout, func() { cancel(errStalled) })
	defer stall.Stop()
	start := r.now()
	body, size, err := r.client.GetBlob(ctx, repo, d)
	if err != nil {
		r.count("blob", err)
		return err
	}
	defer body.Close()
	pr := &progressReader{r: body, onRead: func(n int) {
		stall.Reset(r.cfg.Timeout)
		r.metrics.bytes.WithLabelValues(r.cfg.Namespace).Add(float64(n))
	}}
	err = store(ctx, d, pr, size)
	if err != nil && context.Cause(ctx) == errStalled {
		err = &Error{Op: "GET " + repo + "/blobs/" + d.String(), Kind: ErrUnavailable, Err: errStalled}
	} else if err != nil && !errors.Is(err, ErrMismatch) && pr.readErr != nil {
		err = &Error{Op: "GET " + repo + "/blobs/" + d.String(), Kind: ErrUnavailable, Err: err}
	}
	r.count("blob", err)
	if err == nil {
		r.log.Info("blob pulled from upstream", "namespace", r.cfg.Namespace, "repository", repo, "digest", d,
			"bytes", pr.n, "took", r.now().Sub(start).Round(time.Millisecond))
	}
	return err
}

var errStalled = errors.New("upstream body made no progress within the timeout")

// progressReader counts and reports what it reads, and remembers a read
// error (the upstream's fault) apart from the store's own.
type progressReader struct {
	r       io.Reader
	n       int64
	readErr error
	onRead  func(int)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.onRead(n)
	}
	if err != nil && err != io.EOF {
		p.readErr = err
	}
	return n, err
}

// count records one upstream request's result: the kind of error, never
// its text (which may hold a URL).
func (r *Registry) count(what string, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		result = "not_found"
	case errors.Is(err, ErrDenied):
		result = "denied"
	case errors.Is(err, ErrThrottled):
		result = "throttled"
	case errors.Is(err, ErrMismatch):
		result = "mismatch"
	default:
		result = "unavailable"
	}
	r.metrics.requests.WithLabelValues(r.cfg.Namespace, what, result).Inc()
}

// Set is every upstream an origin pulls through, found by the repository
// prefix.
type Set struct {
	regs []*Registry // longest prefix first
	bg   *background
}

// NewSet makes the registries of cfgs. Namespaces and prefixes must be
// unique. Metrics go to reg when it is not nil.
func NewSet(cfgs []Config, reg prometheus.Registerer, log *slog.Logger) (*Set, error) {
	if log == nil {
		log = slog.Default()
	}
	m := newMetrics(reg)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Set{bg: &background{ctx: ctx, cancel: cancel}}
	seen := map[string]bool{}
	for _, c := range cfgs {
		cl, err := NewClient(c)
		if err != nil {
			cancel()
			return nil, err
		}
		c = cl.cfg
		if seen["ns:"+c.Namespace] || seen["prefix:"+c.Prefix] {
			cancel()
			return nil, errors.New("upstream " + c.Namespace + ": namespace or prefix configured twice")
		}
		seen["ns:"+c.Namespace], seen["prefix:"+c.Prefix] = true, true
		s.regs = append(s.regs, &Registry{cfg: c, client: cl, log: log, metrics: m, now: time.Now, bg: s.bg,
			tags: map[string]tagEntry{}, refreshing: map[string]bool{}})
	}
	sort.SliceStable(s.regs, func(i, j int) bool { return len(s.regs[i].cfg.Prefix) > len(s.regs[j].cfg.Prefix) })
	return s, nil
}

// Lookup finds the upstream of an origin repository name: the registry
// whose prefix it starts with, and the repository's name upstream. A
// Docker Hub image named without "library/" is not special: clients
// (containerd, docker) already send library/debian.
func (s *Set) Lookup(name string) (*Registry, string, bool) {
	if s == nil {
		return nil, "", false
	}
	for _, r := range s.regs {
		if rest, ok := strings.CutPrefix(name, r.cfg.Prefix+"/"); ok && rest != "" {
			return r, rest, true
		}
	}
	return nil, "", false
}

// Adverts lists the namespaces for AdvertisePath, sorted.
func (s *Set) Adverts() Adverts {
	a := Adverts{Upstreams: []Advert{}}
	if s == nil {
		return a
	}
	for _, r := range s.regs {
		a.Upstreams = append(a.Upstreams, Advert{Namespace: r.cfg.Namespace, Prefix: r.cfg.Prefix})
	}
	sort.Slice(a.Upstreams, func(i, j int) bool { return a.Upstreams[i].Namespace < a.Upstreams[j].Namespace })
	return a
}

// Close stops background refreshes, waits for them, and drops the
// clients' idle connections.
func (s *Set) Close() {
	if s == nil {
		return
	}
	s.bg.close()
	for _, r := range s.regs {
		r.client.Close()
	}
}
