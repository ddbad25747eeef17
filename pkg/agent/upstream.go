package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/swarm"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func dialTracker(addr string, files tlsconfig.Files) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if files.Enabled() {
		tc, err := files.Client()
		if err != nil {
			return nil, fmt.Errorf("agent: tracker TLS: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	// Reconnect within seconds, not gRPC's default of up to two minutes:
	// a connect lost in a rollout's first second (50 agents dialling at
	// once) would otherwise keep a node off the swarm, reading the origin,
	// for the whole pull.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("agent: tracker %s: %w", addr, err)
	}
	return conn, nil
}

// errNotFound: every origin answered 404.
var errNotFound = errors.New("not found on the origin")

// originGet sends req-like GETs to each origin of up in turn until one
// answers with a status other than a server error. The caller closes the
// body.
// originBody GETs path from up's origins and returns the body of a 200,
// at most limit bytes of it.
func (a *Agent) originBody(ctx context.Context, up Upstream, path string, limit int64) ([]byte, error) {
	resp, err := a.originGet(ctx, up, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("origin said %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}

func (a *Agent) originGet(ctx context.Context, up Upstream, method, path string, hdr http.Header) (*http.Response, error) {
	var errs []error
	for _, base := range up.Origins {
		req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := up.client.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if resp.StatusCode >= 500 {
			resp.Body.Close()
			errs = append(errs, fmt.Errorf("%s: %s", base, resp.Status))
			continue
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			return nil, errNotFound
		}
		return resp, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no origins configured")
	}
	return nil, fmt.Errorf("origins unreachable: %w", errors.Join(errs...))
}

// metaInfo asks the tracker (which caches it for the whole swarm), then
// the origins.
func (a *Agent) metaInfo(ctx context.Context, d digest.Digest, up Upstream) (*metainfo.MetaInfo, error) {
	if a.tracker != nil {
		tctx, cancel := context.WithTimeout(ctx, a.cfg.OriginTimeout)
		resp, err := a.tracker.GetMetaInfo(tctx, &shoalpb.GetMetaInfoRequest{Digest: d.String()})
		cancel()
		if err == nil {
			mi, err := metainfo.FromProto(resp.GetMetainfo())
			if err == nil && mi.Digest == d {
				return mi, nil
			}
			a.log.Warn("tracker sent bad metainfo", "digest", d, "err", err)
		} else {
			a.log.Debug("metainfo from tracker", "digest", d, "err", err)
		}
	}
	return a.originMetaInfo(ctx, d, up)
}

// originMetaInfo asks the origins for d's metainfo, accepting a prefix of
// its chain when the blob is still arriving from an upstream (see
// pkg/growing): the download then starts on the pieces it covers and
// follows the chain as it grows (growMetaInfo).
func (a *Agent) originMetaInfo(ctx context.Context, d digest.Digest, up Upstream) (*metainfo.MetaInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.OriginTimeout)
	defer cancel()
	b, err := a.originBody(ctx, up, metainfo.HTTPPath+d.String()+"?partial=1", 1<<20)
	if err != nil {
		return nil, fmt.Errorf("metainfo of %s: %w", d, err)
	}
	mi, err := metainfo.UnmarshalPrefix(b)
	if err != nil || mi.Digest != d {
		return nil, fmt.Errorf("metainfo of %s: malformed or for another blob: %v", d, err)
	}
	return mi, nil
}

// growMetaInfo asks the origins for the metainfo of a blob still arriving
// until its chain is whole, and sends each longer prefix to grow. A piece
// takes the upstream at least a few milliseconds, so asking every
// growInterval costs a small protobuf per interval per node and lags the
// origin by at most one interval. An origin that no longer knows the blob
// dropped it: what the upstream sent did not match its digest (or never
// finished), and fail is called with errArrivalFailed.
func (a *Agent) growMetaInfo(ctx context.Context, d digest.Digest, up Upstream, have *metainfo.MetaInfo, grow chan<- *metainfo.MetaInfo, fail func(error)) {
	t := time.NewTicker(growInterval)
	defer t.Stop()
	for !have.Complete() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mi, err := a.originMetaInfo(ctx, d, up)
		if errors.Is(err, errNotFound) {
			fail(fmt.Errorf("blob %s: %w", d, errArrivalFailed))
			return
		}
		if err != nil {
			a.log.Debug("metainfo of an arriving blob", "digest", d, "err", err)
			continue
		}
		if len(mi.Chain) <= len(have.Chain) && !mi.Complete() {
			continue
		}
		select {
		case grow <- mi:
			have = mi
		case <-ctx.Done():
			return
		}
	}
}

// errArrivalFailed: the origin dropped a blob while it arrived from its
// upstream; the pieces held of it were checked against a chain of bytes
// that are not the blob, and go.
var errArrivalFailed = errors.New("the origin dropped the blob while it arrived from its upstream")

// growInterval is how often an agent asks for more of an arriving blob's
// metainfo.
const growInterval = 100 * time.Millisecond

// originReader reads ranges of one blob from the origins.
type originReader struct {
	a    *Agent
	up   Upstream
	repo string
	d    digest.Digest
}

func (o *originReader) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+n-1)}}
	resp, err := o.a.originGet(ctx, o.up, http.MethodGet, "/v2/"+o.repo+"/blobs/"+o.d.String(), hdr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		// The origin's uplink serves all the readers it can: come back
		// when it says, and meanwhile keep working the swarm.
		resp.Body.Close()
		return nil, &swarm.BusyError{RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	if resp.StatusCode != http.StatusPartialContent && !(resp.StatusCode == http.StatusOK && off == 0) {
		resp.Body.Close()
		return nil, fmt.Errorf("origin range %d+%d of %s: %s", off, n, o.d, resp.Status)
	}
	return resp.Body, nil
}

// retryAfter reads a Retry-After in seconds (the form origins send),
// bounded to [1s, 30s]; anything else counts as one second.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return time.Second
	}
	return time.Duration(min(n, 30)) * time.Second
}

// tagCache remembers tag → manifest for a short time; manifests by digest
// never change and are kept in a bounded map.
type tagCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedManifest
}

type cachedManifest struct {
	body      []byte
	mediaType string
	digest    digest.Digest
	expires   time.Time // zero for digest references: forever
}

const maxManifests = 4096

func newTagCache(ttl time.Duration) *tagCache {
	return &tagCache{ttl: ttl, m: map[string]cachedManifest{}}
}

func (c *tagCache) get(key string, now time.Time) (cachedManifest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[key]
	if ok && !m.expires.IsZero() && now.After(m.expires) {
		delete(c.m, key)
		return cachedManifest{}, false
	}
	return m, ok
}

func (c *tagCache) put(key string, m cachedManifest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxManifests {
		// Cheap bound: drop an arbitrary entry; misses cost one origin
		// round trip.
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = m
}
