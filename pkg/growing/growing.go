// Package growing holds one blob while it arrives, in order, from a source
// that is not trusted to send the right bytes (an upstream registry), and
// hands it out piece by piece as the pieces are hashed, so that a fresh
// blob's first readers need not wait for its last byte.
//
// The design, for issue #15 ("a blob still arriving from the upstream is
// already handed to the swarm piece by piece as pieces verify"):
//
//   - The size is known before the first byte (the upstream's
//     Content-Length), so the piece length and count are the blob's final
//     ones from the start (metainfo.PieceLength), and so are the offsets
//     readers ask for.
//   - Bytes go to a spool file through a metainfo.Hasher at that piece
//     length. Once piece i is whole and the hash state after it is
//     recorded, pieces 0..i are published: Wait returns for them, ReadAt
//     serves them, and MetaInfo carries their chain states. A published
//     piece says "the source sent these bytes and they hash to this
//     state", not yet "they are the blob".
//   - The last piece is checked against the digest itself, as in every
//     metainfo: it is published only once all bytes have hashed to the
//     digest and the caller's commit (into its store) succeeded. A reader
//     that has every piece has the blob, already stored where it will be
//     asked for next; a reader of a body that turns out wrong never sees
//     it end, only Err (the origin cuts its response, an agent fails its
//     download and keeps nothing).
//   - A body that is short, long, broken or wrong fails the blob: the
//     spool file is deleted and every waiter's next Wait fails. Nothing
//     partial is ever committed or served as complete: commit sees only a
//     spool that matched.
//
// Built on it, end to end:
//
//   - The origin that fetches (the blob's first live owner) serves a GET
//     of the blob piece by piece, answers a HEAD (an agent's pull check)
//     once the first piece is in, seeds the published pieces over the
//     piece protocol (super-seeded: each new piece offered to one idle
//     peer, so it leaves the origin about once), and serves the chain so
//     far on metainfo.HTTPPath?partial=1 (pkg/origin/arriving.go, seed.go).
//   - The piece protocol's handshake compares the layout (digest, size,
//     piece length), not the chain, so peers holding prefixes of different
//     lengths trade pieces.
//   - An agent whose tracker has no metainfo yet takes the prefix from the
//     origin and asks again every 100 ms until it is whole; its download
//     asks only for the pieces the prefix covers (scheduler.SetLimit,
//     piecefile.Grow), and streams each to containerd once it is checked.
//     An origin that drops the blob fails the download, and the agent
//     removes what it held of it.
//
// The tracker keeps serving and caching whole metainfo only.
//
// Left: a non-owner origin neither seeds an arriving blob nor serves its
// prefix (its clients wait for the whole blob, as before), and agents poll
// for the prefix rather than learn of growth from the origin's haves.
package growing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

// ErrMismatch is returned (wrapped) when the bytes do not hash to the
// digest or do not have the announced size.
var ErrMismatch = errors.New("blob does not match its digest or size")

// ErrFailed is returned (wrapped) by Wait and ReadAt once the blob failed.
var ErrFailed = errors.New("blob failed while arriving")

// Blob is one blob arriving. One goroutine calls Fill; any number call
// Wait, ReadAt, MetaInfo and Err. Release it once per Acquire (New
// counts as one): the spool file closes with the last reference.
type Blob struct {
	d           digest.Digest
	size        int64
	pieceLength int64
	n           int
	f           *os.File
	path        string

	mu        sync.Mutex
	chain     [][]byte // published states (chain[i]: after piece i)
	published int      // pieces readable
	changed   chan struct{}
	finished  bool
	err       error
	refs      int
}

// New starts a blob of size bytes named d, spooled in dir.
func New(dir string, d digest.Digest, size int64) (*Blob, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob %s: size unknown", d)
	}
	f, err := os.CreateTemp(dir, "growing-*")
	if err != nil {
		return nil, fmt.Errorf("blob %s: spool: %w", d, err)
	}
	pl := metainfo.PieceLength(size)
	return &Blob{d: d, size: size, pieceLength: pl, n: metainfo.NumPieces(size, pl), f: f, path: f.Name(),
		changed: make(chan struct{}), refs: 1}, nil
}

// Digest is the blob's digest.
func (b *Blob) Digest() digest.Digest { return b.d }

// Size is the blob's announced size.
func (b *Blob) Size() int64 { return b.size }

// PieceLength is the blob's piece length.
func (b *Blob) PieceLength() int64 { return b.pieceLength }

// Fill reads the blob from r to its end, publishing pieces as they are
// hashed. If r held exactly size bytes that hash to the digest, it calls
// commit with the spool's path (the whole blob) and, if commit returns
// nil, publishes the last piece and returns nil. Any other outcome fails
// the blob, deletes the spool and returns why. Fill is called once.
func (b *Blob) Fill(ctx context.Context, r io.Reader, commit func(path string) error) error {
	err := b.fill(ctx, r)
	if err == nil {
		err = commit(b.path)
	}
	b.finish(err)
	return err
}

func (b *Blob) fill(ctx context.Context, r io.Reader) error {
	h := metainfo.NewHasher(b.d.Algorithm(), b.pieceLength)
	buf := make([]byte, 256<<10)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(buf)
		if n > 0 {
			if off+int64(n) > b.size {
				return fmt.Errorf("blob %s: %w: more than %d bytes", b.d, ErrMismatch, b.size)
			}
			if _, err := b.f.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("blob %s: spool: %w", b.d, err)
			}
			off += int64(n)
			h.Write(buf[:n])
			// The hasher records piece i's end state when piece i+1
			// begins; the last piece waits for the digest below.
			if c := h.Chain(); len(c) > b.publishedNow() {
				b.publish(c)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("blob %s: read: %w", b.d, rerr)
		}
	}
	if off != b.size {
		return fmt.Errorf("blob %s: %w: %d bytes, want %d", b.d, ErrMismatch, off, b.size)
	}
	if got := h.Digest(); got != b.d {
		return fmt.Errorf("blob %s: %w: content hashes to %s", b.d, ErrMismatch, got)
	}
	if _, err := h.MetaInfo(b.d); err != nil {
		return err
	}
	return nil
}

func (b *Blob) publishedNow() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.published
}

// publish makes the pieces whose end states are in chain readable.
func (b *Blob) publish(chain [][]byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.chain = chain
	b.published = len(chain)
	b.wake()
}

func (b *Blob) wake() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Blob) finish(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished, b.err = true, err
	if err == nil {
		b.published = b.n
	} else {
		b.err = fmt.Errorf("%w: %w", ErrFailed, err)
		b.published = 0
		os.Remove(b.path)
	}
	b.wake()
}

// Wait blocks until piece i is published (nil), the blob failed (an error
// wrapping ErrFailed), or ctx ends.
func (b *Blob) Wait(ctx context.Context, i int) error {
	if i < 0 || i >= b.n {
		return fmt.Errorf("blob %s: piece %d of %d", b.d, i, b.n)
	}
	for {
		b.mu.Lock()
		ok, err, ch := i < b.published, b.err, b.changed
		b.mu.Unlock()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReadAt reads published bytes; a read past them fails.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	end, err := min(int64(b.published)*b.pieceLength, b.size), b.err
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if off < 0 || off+int64(len(p)) > end {
		return 0, fmt.Errorf("blob %s: bytes %d+%d not published (%d are)", b.d, off, len(p), end)
	}
	return b.f.ReadAt(p, off)
}

// MetaInfo is what is known of the blob's metainfo so far: its chain
// holds the states of the published pieces, and complete says the blob
// arrived whole and matched its digest (then it is the full metainfo).
func (b *Blob) MetaInfo() (mi *metainfo.MetaInfo, complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	chain := b.chain
	if b.finished && b.err == nil {
		chain = b.chain[:max(b.n-1, 0)]
	}
	return &metainfo.MetaInfo{Digest: b.d, Size: b.size, PieceLength: b.pieceLength, Chain: chain},
		b.finished && b.err == nil
}

// Changed is closed when a piece is published or the blob finishes; take
// it before looking at what is published.
func (b *Blob) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Bitfield is the published pieces, MSB first, and whether that is all
// of them (the blob arrived whole and matched).
func (b *Blob) Bitfield() (bits []byte, complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bits = make([]byte, (b.n+7)/8)
	for i := range b.published {
		bits[i/8] |= 0x80 >> (i % 8)
	}
	return bits, b.finished && b.err == nil
}

// Published is how many pieces are readable.
func (b *Blob) Published() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.published
}

// Err is why the blob failed, once it has (nil until then, and after a
// success).
func (b *Blob) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Acquire takes a reference for a reader; false if the spool is closed.
func (b *Blob) Acquire() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refs == 0 {
		return false
	}
	b.refs++
	return true
}

// Release drops a reference; the last one closes and deletes the spool
// (a store the blob was committed to has its own copy by then).
func (b *Blob) Release() {
	b.mu.Lock()
	b.refs--
	last := b.refs == 0
	b.mu.Unlock()
	if last {
		b.f.Close()
		os.Remove(b.path)
	}
}
