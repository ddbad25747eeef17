package agent

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-project/shoal/pkg/atomicfile"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
)

// errCorrupt: a cached blob does not match its digest (or cannot be read
// to tell). It has been evicted; the caller fetches it again.
var errCorrupt = errors.New("cached blob corrupt")

// cache holds complete, verified blobs up to a size limit, evicting the
// least recently used that no one is reading. An evicted blob stops being
// seeded: upload streams lease it from here piece by piece (seedBlob), and
// the agent withdraws it from the tracker (gone).
//
// The limit is on what the agent holds on disk, so downloads in progress
// count against it too: each reserves its blob's size when it starts (its
// .part file is that size from the start), and complete blobs make room
// for it. What is never evicted, and why:
//   - a blob a local client (containerd) is reading: deleting an open file
//     frees nothing until the read ends, so the space would be counted
//     free while still taken, and the pull it serves would be no faster
//     for it;
//   - a pinned blob: a preheat's copy is what the operator asked for.
//
// A blob being seeded is held only while a piece of it is read: seeding
// is a favour to the swarm, a peer that finds a blob gone asks another,
// and holding a blob for as long as a peer keeps its stream open kept
// every layer of a rollout on disk, at twice the limit. Nor may the
// pieces in flight hold it: in a rollout peers read every layer without
// a pause, so a blob needed for room with pieces on their way is doomed
// instead — no new piece of it starts, and it goes when the last one
// has been sent. A download is never refused, and waits for room only
// while others are committing (see reserve): the client waiting for it
// needs it whatever the limit, so when downloads in progress alone exceed
// the limit the excess is theirs, and it is freed as they finish.
//
// A blob is verified when it is downloaded, but the file can rot on disk
// afterwards, and a flipped bit would then be served to every client and
// seeded to every peer. So what this process did not download itself —
// what it found on disk at start — is verified again piece by piece the
// first time each piece is read (CheckPiece), and a blob with a piece that
// fails is evicted and counted.
type cache struct {
	store *blobstore.Local
	limit int64
	log   *slog.Logger
	// onCorrupt, if set, is told of each blob evicted as corrupt.
	onCorrupt func()

	// now is the clock pins expire by (time.Now; tests move it).
	now func() time.Time

	mu   sync.Mutex
	size int64 // complete blobs
	// reserved is the size of the downloads in progress (see reserve).
	reserved int64
	// doomed is the size of the doomed entries (counted in size until
	// their last lease ends).
	doomed int64
	// committing counts downloads being synced and adopted; committed is
	// closed (and replaced) when one ends. See reserve.
	committing int
	committed  chan struct{}
	lru        *list.List // of *entry, most recent at the front
	entries    map[digest.Digest]*list.Element
	// pins: blobs a preheat asked this node to keep, until the time given.
	// Kept by digest, not on the entry, so that a pin taken before the
	// blob arrives holds from the moment it is adopted.
	pins map[digest.Digest]time.Time
	// pinFile, if set, keeps the pins across restarts: a node restarted
	// after a preheat must not evict what the preheat placed there (the
	// tracker counts it as one of the K copies). pinsDirty (under mu)
	// says the file lags the map; pinWriting that a writer is running.
	pinFile    string
	pinsDirty  bool
	pinWriting bool
	pinsOut    sync.WaitGroup // the writer (flushPins)
	// gone lists blobs evicted or doomed since the agent last took them
	// (takeGone), for it to tell the tracker; goneC is signalled when it
	// grows.
	gone  []digest.Digest
	goneC chan struct{}
	// onEvict, if set, is told of each blob evicted for room.
	onEvict func()
}

type entry struct {
	d    digest.Digest
	size int64
	// refs counts reads in flight: a client's response, or one piece on
	// its way to a peer (a lease); reading counts the former alone. An
	// entry a client reads is never evicted; one with only leases is
	// doomed instead, and deleted when the last lease ends.
	refs, reading int
	doomed        bool
	// mi is loaded on first open (under the cache's lock once known).
	mi     *metainfo.MetaInfo
	checks *pieceChecks
}

// pieceChecks records which pieces of a cached blob this process has
// verified; it lives with the entry, so every reader shares it.
type pieceChecks struct {
	all atomic.Bool // every piece verified: read without looking

	mu      sync.Mutex
	ok      []bool // made on the first check
	left    int
	corrupt bool
}

// verified is a blob this process downloaded: every piece was checked on
// arrival.
func verified() *pieceChecks {
	p := &pieceChecks{}
	p.all.Store(true)
	return p
}

// newCache opens the cache over store; pinFile ("" for none) keeps pins
// across restarts.
func newCache(ctx context.Context, store *blobstore.Local, limit int64, pinFile string, log *slog.Logger) (*cache, error) {
	c := &cache{store: store, limit: limit, log: log, lru: list.New(), entries: map[digest.Digest]*list.Element{},
		pins: map[digest.Digest]time.Time{}, now: time.Now, goneC: make(chan struct{}, 1), committed: make(chan struct{}),
		pinFile: pinFile}
	if pinFile != "" {
		c.loadPins() // before the first eviction, which must spare them
	}
	err := store.Walk(ctx, func(info blobstore.Info) error {
		c.entries[info.Digest] = c.lru.PushBack(&entry{d: info.Digest, size: info.Size, checks: &pieceChecks{}})
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

// open returns d for a local client's read, marked in use until its
// Close. A doomed entry is taken back: a client's read outranks a peer's.
func (c *cache) open(ctx context.Context, d digest.Digest) (*cachedBlob, bool) {
	return c.acquire(ctx, d, true)
}

// lease returns d for one piece sent to a peer, in use until its Close;
// false if d is not cached or doomed.
func (c *cache) lease(ctx context.Context, d digest.Digest) (*cachedBlob, bool) {
	return c.acquire(ctx, d, false)
}

func (c *cache) acquire(ctx context.Context, d digest.Digest, client bool) (*cachedBlob, bool) {
	c.mu.Lock()
	el, ok := c.entries[d]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	e := el.Value.(*entry)
	if e.doomed {
		if !client {
			c.mu.Unlock()
			return nil, false
		}
		e.doomed = false
		c.doomed -= e.size
	}
	e.refs++
	if client {
		e.reading++
	}
	c.lru.MoveToFront(el)
	mi := e.mi
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		e.refs--
		if client {
			e.reading--
		}
		if e.doomed && e.refs == 0 {
			if c.pinned(e.d, c.now()) {
				e.doomed = false // pinned since it was doomed
				c.doomed -= e.size
			} else {
				c.discard(e)
			}
		}
		c.evict()
		c.mu.Unlock()
	}
	rd, err := c.store.Open(ctx, d)
	if err != nil {
		release()
		if !errors.Is(err, blobstore.ErrNotFound) {
			c.log.Warn("cached blob unreadable", "digest", d, "err", err)
		}
		c.forget(e)
		return nil, false
	}
	if mi == nil {
		// A damaged metainfo file is rebuilt from the blob, which fails
		// if the blob does not hash to its digest: then the blob is
		// what is damaged.
		if mi, err = c.store.MetaInfo(ctx, d); err != nil {
			rd.Close()
			release()
			if ctx.Err() == nil {
				c.corrupt(e, -1, err)
			}
			return nil, false
		}
		c.mu.Lock()
		if e.mi == nil {
			e.mi = mi
		}
		mi = e.mi
		c.mu.Unlock()
	}
	var once sync.Once
	return &cachedBlob{c: c, e: e, mi: mi, rd: rd, release: func() { once.Do(func() { rd.Close(); release() }) }}, true
}

// reservation is a download's claim on the cache's space, from its start
// until it is adopted or given up.
type reservation struct {
	c *cache
	n int64
	// done: adopted or released; committing: fetched, being synced and
	// adopted (see commit). Both under c.mu.
	done, committing bool
}

// commitWait bounds how long a download waits for others' commits to
// make room (see reserve): a sync takes a fraction of a second, and one
// that takes longer must not hold a pull up.
const commitWait = 3 * time.Second

// reserve counts n bytes of a download in progress against the limit,
// evicting what it can to make room, until the download is adopted or the
// reservation released.
//
// When there is no room but other downloads have finished fetching and
// are being committed, it waits for them (up to commitWait or ctx): each
// is a sync away from freeing its room or turning into a blob that can
// be evicted. Without the wait, a client that has read a layer's last
// piece asks for the next while that layer syncs, and a rollout holds
// one layer more per parallel pull than the limit. It never waits for
// room that pieces still to come would free: that could take as long as
// the swarm does.
func (c *cache) reserve(ctx context.Context, n int64) *reservation {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reserved += n
	c.evict()
	var timeout <-chan time.Time
	for c.committing > 0 && c.size-c.doomed+c.reserved > c.limit && ctx.Err() == nil {
		if timeout == nil {
			t := time.NewTimer(commitWait)
			defer t.Stop()
			timeout = t.C
		}
		changed := c.committed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		case <-timeout:
			c.mu.Lock()
			return &reservation{c: c, n: n}
		}
		c.mu.Lock()
		c.evict()
	}
	return &reservation{c: c, n: n}
}

// commit marks the download fetched: syncing, then adopted or released.
func (r *reservation) commit() {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if !r.done && !r.committing {
		r.committing = true
		r.c.committing++
	}
}

// release gives the space back (a download that failed); it is a no-op
// after adopt or a first release.
func (r *reservation) release() {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	r.drop()
}

// drop is release with c.mu held.
func (r *reservation) drop() {
	if r.done {
		return
	}
	r.done = true
	r.c.reserved -= r.n
	if r.committing {
		r.c.committing--
		close(r.c.committed)
		r.c.committed = make(chan struct{})
	}
}

// adopt moves a completed download into the cache. Its reservation, if
// any, turns into the entry in the same step, so its bytes are never
// counted twice or not at all.
func (c *cache) adopt(ctx context.Context, path string, mi *metainfo.MetaInfo, r *reservation) error {
	if err := c.store.Adopt(ctx, path, mi); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r != nil {
		r.drop()
	}
	if _, ok := c.entries[mi.Digest]; !ok {
		c.entries[mi.Digest] = c.lru.PushFront(&entry{d: mi.Digest, size: mi.Size, mi: mi, checks: verified()})
		c.size += mi.Size
	}
	c.evict()
	return nil
}

// forget drops e from the index, leaving its file alone.
func (c *cache) forget(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(e)
}

// remove drops e from the index if it is still the entry for its digest
// (a blob fetched again after e was dropped has an entry of its own), and
// lists it for the agent to withdraw from the tracker.
// Called with mu held.
func (c *cache) remove(e *entry) bool {
	el, ok := c.entries[e.d]
	if !ok || el.Value.(*entry) != e {
		return false
	}
	c.size -= e.size
	if e.doomed {
		e.doomed = false
		c.doomed -= e.size
	}
	c.lru.Remove(el)
	delete(c.entries, e.d)
	c.withdraw(e.d)
	return true
}

// withdraw lists d for the agent to withdraw from the tracker.
// Called with mu held.
func (c *cache) withdraw(d digest.Digest) {
	if len(c.gone) < maxGone {
		c.gone = append(c.gone, d)
	}
	select {
	case c.goneC <- struct{}{}:
	default:
	}
}

// corrupt evicts e, whose piece (-1: the metainfo) failed its check:
// no new reader gets it, its file goes (readers that have it open fail
// their next unchecked piece), and the next request fetches it again.
func (c *cache) corrupt(e *entry, piece int, cause error) {
	e.checks.mu.Lock()
	first := !e.checks.corrupt
	e.checks.corrupt = true
	e.checks.mu.Unlock()
	c.mu.Lock()
	if c.remove(e) {
		if err := c.store.Delete(context.Background(), e.d); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			c.log.Warn("evict corrupt blob", "digest", e.d, "err", err)
		}
	}
	c.mu.Unlock()
	if first {
		c.log.Error("cached blob corrupt: evicted, it will be fetched again", "digest", e.d, "piece", piece, "err", cause)
		if c.onCorrupt != nil {
			c.onCorrupt()
		}
	}
}

// maxPins bounds the blobs pinned at once; a preheat names at most a
// thousand blobs, and the tracker runs a bounded number of preheats.
const maxPins = 1 << 14

// pin keeps d (now or once it arrives) until until; a later pin extends it.
// It reports false when maxPins blobs are pinned already.
func (c *cache) pin(d digest.Digest, until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.pins) >= maxPins {
		for p, u := range c.pins {
			if !now.Before(u) {
				delete(c.pins, p)
			}
		}
	}
	if old, ok := c.pins[d]; ok || len(c.pins) < maxPins {
		if until.After(old) {
			c.pins[d] = until
			c.savePins()
		}
		if el, ok := c.entries[d]; ok && el.Value.(*entry).doomed {
			// Pinned on its way out: it stays, and is seeded again.
			e := el.Value.(*entry)
			e.doomed = false
			c.doomed -= e.size
			c.evict() // the room it was to make comes from others
		}
		return true
	}
	return false
}

// pinsOnDisk is the pin file's form: digest → expiry (RFC 3339).
type pinsOnDisk map[string]time.Time

// savePins marks the pin file stale and starts a writer if none runs;
// called with mu held. The writer rewrites the file until it is current,
// so a preheat pinning a thousand blobs costs a few writes, not a
// thousand, and never holds mu across an fsync.
func (c *cache) savePins() {
	if c.pinFile == "" {
		return
	}
	c.pinsDirty = true
	if c.pinWriting {
		return
	}
	c.pinWriting = true
	c.pinsOut.Add(1)
	go func() {
		defer c.pinsOut.Done()
		c.mu.Lock()
		for c.pinsDirty {
			c.pinsDirty = false
			snap := make(pinsOnDisk, len(c.pins))
			for d, u := range c.pins {
				snap[d.String()] = u
			}
			c.mu.Unlock()
			b, err := json.Marshal(snap)
			if err == nil {
				err = atomicfile.WriteFile(c.pinFile, b, 0o600)
			}
			if err != nil {
				c.log.Warn("saving pins; they hold until the agent restarts", "file", c.pinFile, "err", err)
			}
			c.mu.Lock()
		}
		c.pinWriting = false
		c.mu.Unlock()
	}()
}

// flushPins waits for the pin writer: a pin taken just before the agent
// stops is on disk when it has.
func (c *cache) flushPins() { c.pinsOut.Wait() }

// loadPins reads pinFile, keeping the pins not yet expired. A file that
// cannot be read is reported and ignored: pins are a promise about space,
// and an agent that cannot keep it must still start.
func (c *cache) loadPins() {
	b, err := os.ReadFile(c.pinFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var disk pinsOnDisk
	if err == nil {
		err = json.Unmarshal(b, &disk)
	}
	if err != nil {
		c.log.Warn("pins not restored", "file", c.pinFile, "err", err)
		return
	}
	now := c.now()
	for k, u := range disk {
		d, err := digest.Parse(k)
		if err != nil || !now.Before(u) || len(c.pins) >= maxPins {
			continue
		}
		c.pins[d] = u
	}
}

// pinned reports whether d is pinned at now, dropping an expired pin.
// Called with mu held.
func (c *cache) pinned(d digest.Digest, now time.Time) bool {
	until, ok := c.pins[d]
	if ok && !now.Before(until) {
		delete(c.pins, d)
		return false
	}
	return ok
}

// pinnedCount counts live pins, dropping expired ones.
func (c *cache) pinnedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for d := range c.pins {
		c.pinned(d, now)
	}
	return len(c.pins)
}

// has reports whether d is cached.
func (c *cache) has(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[d]
	return ok
}

// evict removes least recently used blobs that are neither being read
// nor pinned until the cache and the downloads in progress fit (see
// cache for the rule). Pinned blobs may hold the cache above its limit;
// a pin's blob is released when the pin expires (the next eviction after
// that takes it).
// Called with mu held.
func (c *cache) evict() {
	now := c.now()
	for el := c.lru.Back(); el != nil && c.size-c.doomed+c.reserved > c.limit; {
		prev := el.Prev()
		e := el.Value.(*entry)
		switch {
		case e.doomed || e.reading > 0 || c.pinned(e.d, now):
		case e.refs == 0:
			c.discard(e)
		default:
			// Only pieces for peers: they finish, no new one starts,
			// and the last to end deletes it. Peers hear it is gone now.
			e.doomed = true
			c.doomed += e.size
			c.log.Debug("doomed", "digest", e.d, "bytes", e.size, "pieces_in_flight", e.refs)
			c.withdraw(e.d)
		}
		el = prev
	}
}

// discard deletes e, evicted for room.
// Called with mu held.
func (c *cache) discard(e *entry) {
	if err := c.store.Delete(context.Background(), e.d); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		c.log.Warn("evict", "digest", e.d, "err", err)
	} else {
		c.log.Debug("evicted", "digest", e.d, "bytes", e.size)
	}
	if c.remove(e) && c.onEvict != nil {
		c.onEvict()
	}
}

// maxGone bounds the evictions remembered for the tracker; past it the
// tracker learns of the rest when their entries expire.
const maxGone = 1 << 12

// evicted is signalled when blobs have been evicted since the last
// takeGone.
func (c *cache) evicted() <-chan struct{} { return c.goneC }

// takeGone returns the blobs evicted or doomed since its last call that
// are not cached (or taken back) again since.
func (c *cache) takeGone() []digest.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.gone[:0:0]
	for _, d := range c.gone {
		el, ok := c.entries[d]
		if (!ok || el.Value.(*entry).doomed) && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	c.gone = c.gone[:0]
	return out
}

// digests lists what the cache holds, for announcing: not what is doomed,
// which was withdrawn, and which peers can no longer get.
func (c *cache) digests() []digest.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]digest.Digest, 0, len(c.entries))
	for d, el := range c.entries {
		if !el.Value.(*entry).doomed {
			out = append(out, d)
		}
	}
	return out
}

func (c *cache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// seedBlob is a cached blob as an upload stream sees it: its layout, and
// a lease on its bytes for each piece sent (p2p.Leased), so that an open
// stream does not keep the blob from eviction.
type seedBlob struct {
	c   *cache
	ctx context.Context
	mi  *metainfo.MetaInfo
}

func (b *seedBlob) MetaInfo() *metainfo.MetaInfo { return b.mi }
func (b *seedBlob) Bitfield() ([]byte, bool)     { return nil, true }

// Lease opens the blob for one piece: a read in flight, which eviction
// lets finish. It fails with p2p.ErrUnavailable once the blob is evicted
// or doomed (or cached again cut differently, which the stream's
// handshake did not agree to).
func (b *seedBlob) Lease() (p2p.Lease, error) {
	cb, ok := b.c.lease(b.ctx, b.mi.Digest)
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", b.mi.Digest, p2p.ErrUnavailable)
	}
	if cb.mi.PieceLength != b.mi.PieceLength || cb.mi.Size != b.mi.Size {
		cb.Close()
		return nil, fmt.Errorf("blob %s cached again with another layout: %w", b.mi.Digest, p2p.ErrUnavailable)
	}
	return cb, nil
}

// ReadAt reads through a lease of its own, for callers that do not lease.
func (b *seedBlob) ReadAt(p []byte, off int64) (int, error) {
	l, err := b.Lease()
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.ReadAt(p, off)
}

// cachedBlob is one read of a cached blob in flight: a client's response,
// or one piece for a peer (a seedBlob's lease). It implements p2p.Blob,
// p2p.Lease and p2p.Checked.
type cachedBlob struct {
	c       *cache
	e       *entry
	mi      *metainfo.MetaInfo
	rd      blobstore.Reader
	release func()
}

func (b *cachedBlob) MetaInfo() *metainfo.MetaInfo            { return b.mi }
func (b *cachedBlob) Bitfield() ([]byte, bool)                { return nil, true }
func (b *cachedBlob) ReadAt(p []byte, off int64) (int, error) { return b.rd.ReadAt(p, off) }
func (b *cachedBlob) Close() error                            { b.release(); return nil }

// verified reports whether every piece has been verified in this process,
// so the file can be sent as it is.
func (b *cachedBlob) verified() bool { return b.e.checks.all.Load() }

// checkBufs are scratch buffers for checks whose caller has none.
var checkBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// CheckPiece verifies piece i against the metainfo unless this process
// already has, reading it through buf (nil: a pooled buffer). A piece that
// fails, or cannot be read, evicts the blob; the error is then errCorrupt.
// Two readers may check one piece at once: the cost is a second hash, and
// a lock held across the read would stall one on the other's disk.
func (b *cachedBlob) CheckPiece(i int, buf []byte) error {
	p := b.e.checks
	if p.all.Load() {
		return nil
	}
	n := b.mi.NumPieces()
	p.mu.Lock()
	if p.ok == nil {
		p.ok, p.left = make([]bool, n), n
	}
	done, bad := i >= 0 && i < n && p.ok[i], p.corrupt
	p.mu.Unlock()
	if bad {
		return fmt.Errorf("blob %s: %w", b.e.d, errCorrupt)
	}
	if done {
		return nil
	}
	chk, err := b.mi.CheckPiece(i)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.e.d, err)
	}
	if buf == nil {
		pb := checkBufs.Get().(*[]byte)
		defer checkBufs.Put(pb)
		buf = *pb
	}
	off, l := b.mi.PieceSpan(i)
	if _, err := io.CopyBuffer(chk, io.NewSectionReader(b.rd, off, l), buf); err != nil {
		b.c.corrupt(b.e, i, err)
		return fmt.Errorf("blob %s piece %d: %w: %w", b.e.d, i, errCorrupt, err)
	}
	if !chk.OK() {
		b.c.corrupt(b.e, i, errors.New("piece does not match its hash"))
		return fmt.Errorf("blob %s piece %d: %w", b.e.d, i, errCorrupt)
	}
	p.mu.Lock()
	if !p.ok[i] {
		p.ok[i] = true
		p.left--
		if p.left == 0 {
			p.all.Store(true)
		}
	}
	p.mu.Unlock()
	return nil
}
