package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/grpc"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// evictSize is each test blob's size: three real pieces.
const evictSize = 3 * metainfo.MinPieceLength

// seedingAgent is an agent reduced to its cache and what its seeder asks
// of it (Lookup), with a cache limit of two and a half test blobs.
func seedingAgent(t *testing.T) (*Agent, *blobstore.Local) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := blobstore.NewLocal(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCache(ctx, store, evictSize*5/2, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{cache: c, ctx: ctx, log: slog.New(slog.DiscardHandler), inflight: map[digest.Digest]*inflight{}}, store
}

// cacheBlob puts a new random blob into a's cache as a download does.
func cacheBlob(t *testing.T, a *Agent) *p2ptest.Blob {
	t.Helper()
	b := p2ptest.NewBlob(evictSize, metainfo.MinPieceLength)
	p := filepath.Join(t.TempDir(), "dl")
	if err := os.WriteFile(p, b.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.cache.adopt(context.Background(), p, b.MI, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

// readPiece reads piece i of blob from r and checks it against its hash.
func readPiece(t *testing.T, r interface {
	ReadAt([]byte, int64) (int, error)
}, mi *metainfo.MetaInfo, i int) error {
	t.Helper()
	off, n := mi.PieceSpan(i)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, off); err != nil {
		return err
	}
	if !mi.VerifyPiece(i, buf) {
		t.Fatalf("piece %d read wrong", i)
	}
	return nil
}

// A blob being seeded is held by the piece reads in flight, not by the
// streams open on it, and only as long as those pieces take: with a
// stream open and nothing read, the blob is evicted when room is needed;
// with a piece for a peer on its way, it is doomed — that piece reads to
// its end, no new one starts, and the blob goes when it is done; a local
// client's read keeps it. A stream asking for a piece of a blob gone gets
// p2p.ErrUnavailable, not an error reading a deleted file.
func TestSeededBlobHeldOnlyPerPiece(t *testing.T) {
	tests := []struct {
		name string
		// hold: what reads a while the cache fills: "" nothing, "peer" a
		// piece on its way to a peer, "client" a local client.
		hold string
		// pin: a is pinned once the cache has filled.
		pin bool
		// during: a is on disk and leasable while the hold lasts; after:
		// a is still cached once the hold ends.
		onDisk, leasable, after bool
	}{
		{name: "stream open, nothing read: evicted", hold: ""},
		{name: "piece for a peer in flight: finishes, then goes", hold: "peer", onDisk: true},
		{name: "client reading: kept", hold: "client", onDisk: true, leasable: true, after: true},
		{name: "pinned on its way out: kept", hold: "peer", pin: true, onDisk: true, leasable: true, after: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ag, store := seedingAgent(t)
			a := cacheBlob(t, ag)
			// What the seeder holds for the life of a stream.
			blob, ok := ag.Lookup(a.MI.Digest)
			if !ok {
				t.Fatal("a not served")
			}
			leased, ok := blob.(p2p.Leased)
			if !ok {
				t.Fatalf("a cached blob is served as a %T, not p2p.Leased", blob)
			}
			lease, err := leased.Lease()
			if err != nil {
				t.Fatal(err)
			}
			if err := readPiece(t, lease, a.MI, 0); err != nil {
				t.Fatal(err)
			}
			var hold interface {
				ReadAt([]byte, int64) (int, error)
				Close() error
			}
			switch tt.hold {
			case "peer":
				hold = lease
			case "client":
				lease.Close()
				if hold, ok = ag.cache.open(context.Background(), a.MI.Digest); !ok {
					t.Fatal("a not cached")
				}
			default:
				lease.Close()
			}
			// Two more blobs: the cache holds two and a half, and a is
			// the least recent.
			cacheBlob(t, ag)
			cacheBlob(t, ag)
			if tt.pin {
				ag.cache.pin(a.MI.Digest, time.Now().Add(time.Hour))
			}
			if _, err := store.Stat(context.Background(), a.MI.Digest); (err == nil) != tt.onDisk {
				t.Fatalf("a on disk = %v, want %v", err == nil, tt.onDisk)
			}
			if got := slices.Contains(ag.cache.digests(), a.MI.Digest); got != tt.leasable {
				t.Fatalf("a announced while it is held = %v, want %v", got, tt.leasable)
			}
			if l, err := leased.Lease(); (err == nil) != tt.leasable {
				t.Fatalf("a new piece of a while it is held: %v, want leasable %v", err, tt.leasable)
			} else if err == nil {
				l.Close()
			} else if !errors.Is(err, p2p.ErrUnavailable) {
				t.Fatalf("lease refused with %v, want ErrUnavailable", err)
			}
			if hold != nil {
				// What is in flight reads to its end.
				if err := readPiece(t, hold, a.MI, 1); err != nil {
					t.Fatalf("read in flight cut off: %v", err)
				}
				hold.Close()
			}
			if got := ag.cache.has(a.MI.Digest); got != tt.after {
				t.Fatalf("a cached after the hold = %v, want %v", got, tt.after)
			}
			if _, err := store.Stat(context.Background(), a.MI.Digest); (err == nil) != tt.after {
				t.Fatalf("a on disk after the hold = %v, want %v", err == nil, tt.after)
			}
			if got := ag.cache.bytes(); got > ag.cache.limit {
				t.Fatalf("cache holds %d bytes over its limit %d", got, ag.cache.limit)
			}
			if tt.after {
				return
			}
			// The stream asks for another piece of a; a new one asks for a.
			if _, err := leased.Lease(); !errors.Is(err, p2p.ErrUnavailable) {
				t.Fatalf("lease after eviction: %v, want ErrUnavailable", err)
			}
			if err := readPiece(t, blob, a.MI, 2); !errors.Is(err, p2p.ErrUnavailable) {
				t.Fatalf("read after eviction: %v, want ErrUnavailable", err)
			}
			if _, ok := ag.Lookup(a.MI.Digest); ok {
				t.Fatal("an evicted blob is still looked up for new streams")
			}
			if gone := ag.cache.takeGone(); !slices.Contains(gone, a.MI.Digest) {
				t.Fatalf("evicted %v, want a among them, for the tracker", gone)
			}
		})
	}
}

// The measured defect, over the wire: a peer's upload stream stays open
// on a blob while the cache fills past its limit. The blob must go (the
// stream has no piece on its way), and the peer's next request must get
// an "unavailable" answer it can act on, not the piece. Before pieces
// leased the blob, the open stream kept it, and in a rollout every layer
// stayed on disk at twice the limit.
func TestOpenUploadStreamDoesNotHoldBlob(t *testing.T) {
	ag, store := seedingAgent(t)
	seeder := p2ptest.NewHost(t, p2p.HostConfig{})
	p2p.NewSeeder(seeder, ag, nil, slog.New(slog.DiscardHandler))
	leech := p2ptest.NewHost(t, p2p.HostConfig{})
	info := peer.AddrInfo{ID: seeder.ID(), Addrs: seeder.Addrs()}

	a := cacheBlob(t, ag)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := p2p.Dial(ctx, leech, info, a.MI, p2ptest.Empty{MI: a.MI})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, a.MI.PieceLength)
	next := func(i int) error {
		if err := conn.Request(i); err != nil {
			return err
		}
		for {
			ev, err := conn.Next(buf)
			if err != nil {
				return err
			}
			if ev.Have || ev.Busy {
				continue
			}
			if ev.Piece != i || !a.MI.VerifyPiece(i, ev.Data) {
				t.Fatalf("asked for piece %d, got %d (verifies: %v)", i, ev.Piece, a.MI.VerifyPiece(ev.Piece, ev.Data))
			}
			return nil
		}
	}
	if err := next(0); err != nil {
		t.Fatalf("piece 0: %v", err)
	}
	// The piece has gone out; the stream stays open. The cache fills.
	cacheBlob(t, ag)
	cacheBlob(t, ag)
	if ag.cache.has(a.MI.Digest) {
		t.Fatalf("a blob with an open upload stream and no piece in flight was not evicted: cache holds %d bytes, limit %d",
			ag.cache.bytes(), ag.cache.limit)
	}
	if _, err := store.Stat(context.Background(), a.MI.Digest); err == nil {
		t.Fatal("evicted blob still on disk")
	}
	err = next(1)
	if !errors.Is(err, p2p.ErrRemote) || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("piece 1 of an evicted blob: %v, want the peer's unavailable answer", err)
	}
	// A new stream is told the blob is not held.
	if _, err := p2p.Dial(ctx, leech, info, a.MI, p2ptest.Empty{MI: a.MI}); !errors.Is(err, p2p.ErrRemote) {
		t.Fatalf("new stream for an evicted blob: %v, want refused", err)
	}
}

// A download in progress counts against the limit from its start (its
// .part file is already its size on disk): complete blobs make room for
// it, least recent first, except one a local client is reading or one
// that is pinned; a download is never held back for want of room. Once
// adopted, its bytes count once, as the cached blob.
func TestDownloadsInProgressCountAgainstLimit(t *testing.T) {
	tests := []struct {
		name string
		// readOld: a client is reading the older blob; pinOld: it is pinned;
		// readNew: a client is reading the newer one.
		readOld, pinOld, readNew bool
		wantOld, wantNew         bool
	}{
		{name: "oldest makes room", wantOld: false, wantNew: true},
		{name: "a blob being read is spared", readOld: true, wantOld: true, wantNew: false},
		{name: "a pinned blob is spared", pinOld: true, wantOld: true, wantNew: false},
		{name: "nothing to evict: the download goes over", readOld: true, readNew: true, wantOld: true, wantNew: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ag, _ := seedingAgent(t)
			c := ag.cache
			old, young := cacheBlob(t, ag), cacheBlob(t, ag)
			hold := func(b *p2ptest.Blob) {
				r, ok := c.open(context.Background(), b.MI.Digest)
				if !ok {
					t.Fatal("blob not cached")
				}
				t.Cleanup(func() { r.Close() })
			}
			if tt.readOld {
				hold(old)
			}
			if tt.readNew {
				hold(young)
			}
			if tt.pinOld {
				c.pin(old.MI.Digest, time.Now().Add(time.Hour))
			}
			dl := p2ptest.NewBlob(evictSize, metainfo.MinPieceLength)
			room := c.reserve(context.Background(), dl.MI.Size)
			if got := c.has(old.MI.Digest); got != tt.wantOld {
				t.Fatalf("older blob cached = %v, want %v", got, tt.wantOld)
			}
			if got := c.has(young.MI.Digest); got != tt.wantNew {
				t.Fatalf("newer blob cached = %v, want %v", got, tt.wantNew)
			}
			held := c.bytes()
			p := filepath.Join(t.TempDir(), "part")
			if err := os.WriteFile(p, dl.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := c.adopt(context.Background(), p, dl.MI, room); err != nil {
				t.Fatal(err)
			}
			room.release() // after adopt: a no-op, not space given back twice
			c.mu.Lock()
			reserved := c.reserved
			c.mu.Unlock()
			want := held + dl.MI.Size
			if want > c.limit {
				// Everything else is in use: the new blob is the one that
				// can go, and the limit holds again.
				want = held
			}
			if reserved != 0 || c.bytes() != want {
				t.Fatalf("after adopt: %d reserved, %d cached; want 0 and %d", reserved, c.bytes(), want)
			}
		})
	}
}

// A download that finds no room while another is committing (fetched,
// syncing) waits for that commit, which frees the room; with nothing
// committing it never waits, since the room would come only as fast as
// the swarm.
func TestReserveWaitsOnlyForCommits(t *testing.T) {
	ag, store := seedingAgent(t)
	c := ag.cache
	ctx := context.Background()
	first := p2ptest.NewBlob(evictSize, metainfo.MinPieceLength)
	r1 := c.reserve(ctx, evictSize)
	c.reserve(ctx, evictSize) // a second download, still fetching
	over := make(chan *reservation, 1)
	go func() { over <- c.reserve(ctx, evictSize) }() // 9 MiB reserved, limit 7.5
	select {
	case r := <-over:
		// Nothing is committing: the third goes ahead over the limit.
		r.release()
	case <-time.After(5 * time.Second):
		t.Fatal("a download waited for room that only pieces to come would free")
	}
	r1.commit()
	third := make(chan *reservation, 1)
	go func() { third <- c.reserve(ctx, evictSize) }()
	select {
	case <-third:
		t.Fatal("a download went ahead over the limit while another was committing")
	case <-time.After(100 * time.Millisecond):
	}
	p := filepath.Join(t.TempDir(), "part")
	if err := os.WriteFile(p, first.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.adopt(ctx, p, first.MI, r1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-third:
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the commit made room")
	}
	// The room came from the committed blob, least recent and unread.
	if _, err := store.Stat(ctx, first.MI.Digest); err == nil || c.has(first.MI.Digest) {
		t.Fatal("the committed blob was kept over the limit")
	}
}

// recordingTracker records announce batches; other calls are not expected.
type recordingTracker struct {
	shoalpb.TrackerClient
	mu      sync.Mutex
	batches []*shoalpb.AnnounceBatchRequest
}

func (r *recordingTracker) AnnounceBatch(_ context.Context, in *shoalpb.AnnounceBatchRequest, _ ...grpc.CallOption) (*shoalpb.AnnounceBatchResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, in)
	return &shoalpb.AnnounceBatchResponse{}, nil
}

// An evicted blob is withdrawn from the tracker at once (announced
// stopped), so peers stop being handed this node for it — including a
// blob evicted by its own download's adopt, while that download is still
// winding down, which is how a full cache evicts in a rollout.
func TestEvictedBlobWithdrawnFromTracker(t *testing.T) {
	ag, _ := seedingAgent(t)
	ag.host = p2ptest.NewHost(t, p2p.HostConfig{})
	rt := &recordingTracker{}
	ag.tracker = rt
	a := cacheBlob(t, ag)
	ag.inflight[a.MI.Digest] = &inflight{} // its download has not returned yet
	cacheBlob(t, ag)
	cacheBlob(t, ag)
	select {
	case <-ag.cache.evicted():
	default:
		t.Fatal("eviction not signalled")
	}
	ag.withdraw(context.Background())
	stopped := map[string]bool{}
	for _, b := range rt.batches {
		for _, an := range b.GetAnnounces() {
			if an.GetPeer().GetId() != ag.host.ID().String() {
				t.Fatalf("withdrawn as %q, not as this node", an.GetPeer().GetId())
			}
			stopped[an.GetDigest()] = an.GetStopped() && !an.GetComplete()
		}
	}
	if !stopped[a.MI.Digest.String()] || len(stopped) != 1 {
		t.Fatalf("announced %v, want only a, stopped", stopped)
	}
	if slices.Contains(ag.cache.digests(), a.MI.Digest) {
		t.Fatal("an evicted blob is still announced as seeded")
	}
}
