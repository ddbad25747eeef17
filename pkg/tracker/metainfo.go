package tracker

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

var (
	errNotFound = errors.New("metainfo not found")
	// errRemembered is a not-found answered from the negative cache.
	errRemembered = fmt.Errorf("%w (remembered)", errNotFound)
	// errFetchLimited: a miss that would have cost an origin request was
	// refused by the fetch limits.
	errFetchLimited = errors.New("too many metainfo misses; retry later")
)

// metaInfoCache answers GetMetaInfo. Metainfo of a digest never changes, so
// entries live until evicted (LRU, bounded in bytes). Concurrent misses of
// one digest share a single origin request: a thousand agents starting the
// same layer cost the origin one.
//
// Anyone who can reach the tracker can ask for digests nobody pushed, and
// each would cost an origin request per origin. So a digest every origin
// denies is remembered for negTTL, and misses that reach the origins are
// rate limited, per client address and over the whole tracker: a rollout
// misses a handful of new layers at once, a flood misses thousands.
type metaInfoCache struct {
	http     *http.Client
	scheme   string // of the origins' addresses: "http" or "https"
	maxBytes int64
	group    singleflight.Group
	onFetch  func() // counts origin requests
	now      func() time.Time

	negTTL    time.Duration
	global    *rate.Limiter // nil: unlimited
	perClient *peerLimiter  // nil: unlimited

	mu    sync.Mutex
	ll    *list.List // front = most recent; values are *cacheEntry
	items map[digest.Digest]*list.Element
	bytes int64
	// missing maps digests no origin has to when that stops being
	// trusted. The fetch limits bound how fast it grows; maxMissing bounds
	// it outright.
	missing map[digest.Digest]time.Time
}

// maxMissing bounds the negative cache: at the default limits it holds at
// most a few thousand entries, so reaching this means the limits are off.
const maxMissing = 1 << 16

type cacheEntry struct {
	d    digest.Digest
	mi   *shoalpb.MetaInfo
	size int64
}

func newMetaInfoCache(cfg Config, c *http.Client) *metaInfoCache {
	mc := &metaInfoCache{
		http: c, scheme: "http", maxBytes: cfg.MetaInfoCacheBytes, negTTL: cfg.MetaInfoNegativeTTL,
		ll: list.New(), items: map[digest.Digest]*list.Element{}, missing: map[digest.Digest]time.Time{},
		onFetch: func() {}, now: time.Now,
	}
	if cfg.MetaInfoFetchRate > 0 {
		mc.global = rate.NewLimiter(rate.Limit(cfg.MetaInfoFetchRate), cfg.MetaInfoFetchBurst)
	}
	if cfg.MetaInfoClientFetchRate > 0 {
		mc.perClient = newPeerLimiter(cfg.MetaInfoClientFetchRate, cfg.MetaInfoClientFetchBurst)
	}
	return mc
}

// get returns d's metainfo, trying owners in order on a miss. client is
// the caller's address, which the per-client fetch limit is keyed by. An
// error wraps errNotFound (errRemembered when the negative cache answered)
// or is errFetchLimited, or says why the origins could not answer.
func (c *metaInfoCache) get(ctx context.Context, d digest.Digest, client string, owners []ring.Member) (*shoalpb.MetaInfo, bool, error) {
	if mi, ok := c.lookup(d); ok {
		return mi, true, nil
	}
	if c.knownMissing(d) {
		return nil, false, errRemembered
	}
	// The fetch outlives any one caller: a waiter giving up must not fail
	// the others. Only the caller that starts a fetch is charged for it;
	// those joining it cost the origins nothing.
	ch := c.group.DoChan(string(d), func() (any, error) {
		if !c.admit(client) {
			return nil, errFetchLimited
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		mi, err := c.fetch(fctx, d, owners)
		switch {
		case err == nil:
			c.insert(d, mi)
		case errors.Is(err, errNotFound):
			c.remember(d)
		}
		return mi, err
	})
	select {
	case <-ctx.Done():
		return nil, false, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, false, r.Err
		}
		return r.Val.(*shoalpb.MetaInfo), false, nil
	}
}

// admit charges one origin fetch to client and to the tracker.
func (c *metaInfoCache) admit(client string) bool {
	now := c.now()
	if c.perClient != nil && !c.perClient.allowN(client, 1, now) {
		return false
	}
	return c.global == nil || c.global.AllowN(now, 1)
}

// knownMissing reports whether every origin denied d less than negTTL ago.
func (c *metaInfoCache) knownMissing(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.missing[d]
	if ok && !c.now().Before(until) {
		delete(c.missing, d)
		return false
	}
	return ok
}

// remember records that no origin has d. A blob pushed meanwhile is found
// once the entry expires; agents asking sooner read the origins directly.
func (c *metaInfoCache) remember(d digest.Digest) {
	if c.negTTL <= 0 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.missing) >= maxMissing {
		c.sweepMissingLocked(now)
		if len(c.missing) >= maxMissing {
			clear(c.missing)
		}
	}
	c.missing[d] = now.Add(c.negTTL)
}

// sweep forgets expired negative entries and idle clients.
func (c *metaInfoCache) sweep(now time.Time) {
	if c.perClient != nil {
		c.perClient.sweep(now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepMissingLocked(now)
}

func (c *metaInfoCache) sweepMissingLocked(now time.Time) {
	for d, until := range c.missing {
		if !now.Before(until) {
			delete(c.missing, d)
		}
	}
}

func (c *metaInfoCache) lookup(d digest.Digest) (*shoalpb.MetaInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[d]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*cacheEntry).mi, true
}

func (c *metaInfoCache) insert(d digest.Digest, mi *shoalpb.MetaInfo) {
	size := int64(128)
	for _, st := range mi.GetChain() {
		size += int64(len(st))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[d]; ok {
		return
	}
	c.items[d] = c.ll.PushFront(&cacheEntry{d: d, mi: mi, size: size})
	c.bytes += size
	for c.bytes > c.maxBytes && c.ll.Len() > 1 {
		e := c.ll.Remove(c.ll.Back()).(*cacheEntry)
		delete(c.items, e.d)
		c.bytes -= e.size
	}
}

// fetch asks each owner in turn. Only when every origin says 404 is the
// blob unknown; any other failure is reported as unavailable.
func (c *metaInfoCache) fetch(ctx context.Context, d digest.Digest, owners []ring.Member) (*shoalpb.MetaInfo, error) {
	if len(owners) == 0 {
		return nil, errors.New("no origins known")
	}
	var errs []error
	notFound := 0
	for _, o := range owners {
		mi, err := c.fetchFrom(ctx, o.Addr, d)
		if err == nil {
			return mi, nil
		}
		if errors.Is(err, errNotFound) {
			notFound++
		}
		errs = append(errs, fmt.Errorf("origin %s: %w", o.ID, err))
	}
	if notFound == len(owners) {
		return nil, errNotFound
	}
	return nil, errors.Join(errs...)
}

func (c *metaInfoCache) fetchFrom(ctx context.Context, addr string, d digest.Digest) (*shoalpb.MetaInfo, error) {
	c.onFetch()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+addr+metainfo.HTTPPath+string(d), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, errNotFound
	default:
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	// An origin is trusted for what it says, not for how much: bound the
	// body to the largest valid metainfo.
	body, err := io.ReadAll(io.LimitReader(resp.Body, metainfo.MaxPieces*40+1024))
	if err != nil {
		return nil, err
	}
	mi, err := metainfo.Unmarshal(body)
	if err != nil {
		return nil, err
	}
	if mi.Digest != d {
		return nil, fmt.Errorf("answered metainfo of %s", mi.Digest)
	}
	return mi.Proto(), nil
}
