package agent

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

// cache holds complete, verified blobs up to a size limit, evicting the
// least recently used that no one is reading. An evicted blob stops being
// seeded: the seeder looks blobs up here for every new stream.
type cache struct {
	store *blobstore.Local
	limit int64
	log   *slog.Logger

	mu      sync.Mutex
	size    int64
	lru     *list.List // of *entry, most recent at the front
	entries map[digest.Digest]*list.Element
}

type entry struct {
	d    digest.Digest
	size int64
	refs int // open readers; an entry in use is never evicted
}

func newCache(ctx context.Context, store *blobstore.Local, limit int64, log *slog.Logger) (*cache, error) {
	c := &cache{store: store, limit: limit, log: log, lru: list.New(), entries: map[digest.Digest]*list.Element{}}
	err := store.Walk(ctx, func(info blobstore.Info) error {
		c.entries[info.Digest] = c.lru.PushBack(&entry{d: info.Digest, size: info.Size})
		c.size += info.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent: load cache: %w", err)
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

// open returns a reader of d and marks it in use until release.
func (c *cache) open(ctx context.Context, d digest.Digest) (blobstore.Reader, func(), bool) {
	c.mu.Lock()
	el, ok := c.entries[d]
	if !ok {
		c.mu.Unlock()
		return nil, nil, false
	}
	e := el.Value.(*entry)
	e.refs++
	c.lru.MoveToFront(el)
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		e.refs--
		c.evict()
		c.mu.Unlock()
	}
	rd, err := c.store.Open(ctx, d)
	if err != nil {
		release()
		if !errors.Is(err, blobstore.ErrNotFound) {
			c.log.Warn("cached blob unreadable", "digest", d, "err", err)
		}
		c.forget(d)
		return nil, nil, false
	}
	var once sync.Once
	return rd, func() { once.Do(func() { rd.Close(); release() }) }, true
}

func (c *cache) metaInfo(ctx context.Context, d digest.Digest) (*metainfo.MetaInfo, error) {
	return c.store.MetaInfo(ctx, d)
}

// adopt moves a completed download into the cache.
func (c *cache) adopt(ctx context.Context, path string, mi *metainfo.MetaInfo) error {
	if err := c.store.Adopt(ctx, path, mi); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[mi.Digest]; !ok {
		c.entries[mi.Digest] = c.lru.PushFront(&entry{d: mi.Digest, size: mi.Size})
		c.size += mi.Size
	}
	c.evict()
	return nil
}

func (c *cache) forget(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[d]; ok {
		c.size -= el.Value.(*entry).size
		c.lru.Remove(el)
		delete(c.entries, d)
	}
}

// evict removes least recently used blobs not in use until the cache fits.
// Called with mu held.
func (c *cache) evict() {
	for el := c.lru.Back(); el != nil && c.size > c.limit; {
		prev := el.Prev()
		e := el.Value.(*entry)
		if e.refs == 0 {
			if err := c.store.Delete(context.Background(), e.d); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
				c.log.Warn("evict", "digest", e.d, "err", err)
			} else {
				c.log.Debug("evicted", "digest", e.d, "bytes", e.size)
			}
			c.size -= e.size
			c.lru.Remove(el)
			delete(c.entries, e.d)
		}
		el = prev
	}
}

// digests lists what the cache holds, for announcing.
func (c *cache) digests() []digest.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]digest.Digest, 0, len(c.entries))
	for d := range c.entries {
		out = append(out, d)
	}
	return out
}

func (c *cache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
