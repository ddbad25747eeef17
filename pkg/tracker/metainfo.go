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

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

var errNotFound = errors.New("metainfo not found")

// metaInfoCache answers GetMetaInfo. Metainfo of a digest never changes, so
// entries live until evicted (LRU, bounded in bytes). Concurrent misses of
// one digest share a single origin request: a thousand agents starting the
// same layer cost the origin one.
type metaInfoCache struct {
	http     *http.Client
	maxBytes int64
	group    singleflight.Group
	onFetch  func() // counts origin requests

	mu    sync.Mutex
	ll    *list.List // front = most recent; values are *cacheEntry
	items map[digest.Digest]*list.Element
	bytes int64
}

type cacheEntry struct {
	d    digest.Digest
	mi   *shoalpb.MetaInfo
	size int64
}

func newMetaInfoCache(maxBytes int64, c *http.Client) *metaInfoCache {
	return &metaInfoCache{http: c, maxBytes: maxBytes, ll: list.New(), items: map[digest.Digest]*list.Element{}, onFetch: func() {}}
}

// get returns d's metainfo, trying owners in order on a miss.
func (c *metaInfoCache) get(ctx context.Context, d digest.Digest, owners []ring.Member) (*shoalpb.MetaInfo, bool, error) {
	if mi, ok := c.lookup(d); ok {
		return mi, true, nil
	}
	// The fetch outlives any one caller: a waiter giving up must not fail
	// the others.
	ch := c.group.DoChan(string(d), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		mi, err := c.fetch(fctx, d, owners)
		if err == nil {
			c.insert(d, mi)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+metainfo.HTTPPath+string(d), nil)
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
