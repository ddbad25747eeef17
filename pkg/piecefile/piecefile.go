// Package piecefile holds a blob while it downloads: verified pieces land
// at their offsets in a preallocated file, readers can wait for the next
// piece (so a client streams while the swarm is still fetching), and a
// restarted agent resumes from the pieces already on disk. Each piece is
// checked as a link of the digest's hash chain (see metainfo), so once every
// piece is held the blob matches its digest: no second pass reads it back.
package piecefile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-project/shoal/pkg/atomicfile"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

var (
	// ErrBadPiece: the bytes do not match the piece's hash.
	ErrBadPiece = errors.New("piece does not match its hash")
	// ErrClosed: the file was closed or removed while waiting.
	ErrClosed = errors.New("piece file closed")
	// ErrNotYetVerifiable: the metainfo is a prefix that does not cover
	// the piece yet (see Grow); not the sender's fault.
	ErrNotYetVerifiable = errors.New("piece not covered by the metainfo yet")
)

// File is one blob under download. Its methods are safe for concurrent use.
type File struct {
	// mi's layout never changes; its chain may grow (Grow), so it is
	// swapped whole.
	mi        atomic.Pointer[metainfo.MetaInfo]
	path      string // the data
	statePath string // which pieces are held

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a piece lands
	f       *os.File
	have    []bool
	count   int
	// done is closed when every piece is held (err nil) or the file
	// closed first (err ErrClosed).
	done   chan struct{}
	err    error
	closed bool
	// refs counts readers that keep the data file open past Close: see
	// Retain.
	refs int
	// dirty counts pieces since the state file was last written, at
	// saved.
	dirty int
	saved time.Time
}

// Open starts or resumes the download of mi's blob in dir. Pieces a
// previous run recorded are re-verified from disk before they count, so a
// crash mid-write never yields a wrong piece.
func Open(dir string, mi *metainfo.MetaInfo) (*File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("piecefile: %w", err)
	}
	base := filepath.Join(dir, string(mi.Digest.Algorithm())+"-"+mi.Digest.Hex())
	f, err := os.OpenFile(base+".part", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("piecefile: %w", err)
	}
	if err := f.Truncate(mi.Size); err != nil {
		f.Close()
		return nil, fmt.Errorf("piecefile: size %s: %w", mi.Digest, err)
	}
	p := &File{
		path: base + ".part", statePath: base + ".have", f: f,
		changed: make(chan struct{}), have: make([]bool, mi.NumPieces()), done: make(chan struct{}),
	}
	p.mi.Store(mi)
	if err := p.resume(); err != nil {
		f.Close()
		return nil, err
	}
	if p.count == len(p.have) {
		close(p.done)
	}
	return p, nil
}

func (p *File) resume() error {
	state, err := os.ReadFile(p.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("piecefile: state: %w", err)
	}
	mi := p.mi.Load()
	buf := make([]byte, mi.PieceLength)
	for i := range p.have {
		if i/8 >= len(state) || state[i/8]&(0x80>>(i%8)) == 0 {
			continue
		}
		off, n := mi.PieceSpan(i)
		if _, err := p.f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("piecefile: re-read piece %d: %w", i, err)
		}
		// Pieces a prefix does not cover yet are fetched again.
		if mi.VerifyPiece(i, buf[:n]) {
			p.have[i] = true
			p.count++
		}
	}
	return nil
}

// MetaInfo is the blob's piece layout and the chain known so far.
func (p *File) MetaInfo() *metainfo.MetaInfo { return p.mi.Load() }

// Grow replaces a prefix metainfo with a longer one of the same blob (a
// blob still arriving at its origin, see metainfo.FromProtoPrefix): the
// pieces it newly covers can be written from now on. The layout must be
// the same and the known chain a prefix of the new one.
func (p *File) Grow(mi *metainfo.MetaInfo) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.mi.Load()
	if mi.Digest != old.Digest || mi.Size != old.Size || mi.PieceLength != old.PieceLength ||
		len(mi.Chain) < len(old.Chain) || !slices.EqualFunc(old.Chain, mi.Chain[:len(old.Chain)], bytes.Equal) {
		return fmt.Errorf("piecefile: metainfo of %s does not extend the one held", old.Digest)
	}
	p.mi.Store(mi)
	return nil
}

// Have reports whether piece i is held.
func (p *File) Have(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return i >= 0 && i < len(p.have) && p.have[i]
}

// Held is a copy of which pieces are held.
func (p *File) Held() []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]bool(nil), p.have...)
}

// Changed is closed when a piece lands or the file closes; take it before
// looking at what is held, so no change between the two is missed.
func (p *File) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Bitfield is the held pieces, MSB first, as announced to peers.
func (p *File) Bitfield() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bitfield()
}

func (p *File) bitfield() []byte {
	b := make([]byte, (len(p.have)+7)/8)
	for i, h := range p.have {
		if h {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	return b
}

// Complete reports whether every piece is held, and so the blob matches
// its digest.
func (p *File) Complete() bool {
	select {
	case <-p.done:
		return p.err == nil
	default:
		return false
	}
}

// Done is closed once every piece is held or the file is closed; Err then
// says which.
func (p *File) Done() <-chan struct{} { return p.done }

// Err is nil until Done and while complete, ErrClosed if the file closed
// before every piece was held.
func (p *File) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// WritePiece verifies data as piece i and stores it. A piece already held
// is accepted and ignored (end-game duplicates). Verification runs before
// the lock, so pieces from different peers are hashed in parallel.
func (p *File) WritePiece(i int, data []byte) error {
	mi := p.mi.Load()
	if i >= 0 && i < mi.NumPieces() && !mi.Verifiable(i) {
		return fmt.Errorf("piece %d of %s: %w", i, mi.Digest, ErrNotYetVerifiable)
	}
	if !mi.VerifyPiece(i, data) {
		return fmt.Errorf("piece %d of %s: %w", i, mi.Digest, ErrBadPiece)
	}
	if p.Have(i) {
		return nil
	}
	// The write runs outside the lock: a pwrite of a whole piece takes
	// milliseconds, which readers and other peers' pieces should not wait
	// out. Two writers of one piece write the same bytes — both verified —
	// and nobody reads a piece before it is marked held below.
	off, _ := mi.PieceSpan(i)
	_, werr := p.f.WriteAt(data, off)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if werr != nil {
		return fmt.Errorf("piecefile: write piece %d: %w", i, werr)
	}
	if p.have[i] {
		return nil
	}
	p.have[i] = true
	p.count++
	p.dirty++
	// Record progress every few pieces or half second, not every piece:
	// losing the last few to a crash costs a re-download, not
	// correctness (resume re-verifies).
	if p.dirty >= 8 || p.count == len(p.have) || time.Since(p.saved) > 500*time.Millisecond {
		p.saved = time.Now()
		if err := atomicfile.WriteFile(p.statePath, p.bitfield(), 0o644); err != nil {
			return fmt.Errorf("piecefile: state: %w", err)
		}
		p.dirty = 0
	}
	if p.count == len(p.have) {
		close(p.done)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

// Wait blocks until piece i is held, ctx ends or the file is closed.
func (p *File) Wait(ctx context.Context, i int) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return ErrClosed
		}
		if p.have[i] {
			p.mu.Unlock()
			return nil
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReadAt reads held bytes; reading a piece not yet held is an error (wait
// for it first).
func (p *File) ReadAt(b []byte, off int64) (int, error) {
	mi := p.mi.Load()
	if off < 0 || off >= mi.Size {
		return 0, io.EOF
	}
	end := min(off+int64(len(b)), mi.Size)
	p.mu.Lock()
	for i := int(off / mi.PieceLength); i <= int((end-1)/mi.PieceLength); i++ {
		if !p.have[i] {
			p.mu.Unlock()
			return 0, fmt.Errorf("piecefile: piece %d not held yet", i)
		}
	}
	p.mu.Unlock()
	n, err := p.f.ReadAt(b[:end-off], off)
	if err == nil && end == mi.Size && int64(len(b)) > end-off {
		err = io.EOF
	}
	return n, err
}

// Path is the data file, complete and verified once Complete is true:
// the caller syncs and moves it into the blob cache.
func (p *File) Path() string { return p.path }

// Sync flushes the data file to disk.
func (p *File) Sync() error { return p.f.Sync() }

// Close stops waiters and releases the file, keeping what is on disk for
// a later resume. Readers that retained the file keep reading held pieces
// until they release it.
func (p *File) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.changed)
	select {
	case <-p.done:
	default:
		p.err = ErrClosed // nobody waits on Done forever
		close(p.done)
	}
	if p.dirty > 0 {
		atomicfile.WriteFile(p.statePath, p.bitfield(), 0o644)
	}
	if p.refs > 0 {
		return nil // the last release closes it
	}
	return p.f.Close()
}

// Retain keeps the data file open for a reader — a piece on its way to a
// peer — until release is called, even if the download is closed or
// removed meanwhile. A download that completes moves its data into the cache (a
// rename: the open file is the same inode), and the peers still reading
// pieces from it must not lose their streams at that moment: they are the
// swarm's next seeders' customers. ok is false once the file has been
// closed with no reader left.
func (p *File) Retain() (release func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed && p.refs == 0 {
		return nil, false
	}
	p.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.refs--
			if p.refs == 0 && p.closed {
				p.f.Close()
			}
		})
	}, true
}

// Remove closes the file and deletes its data and state.
func (p *File) Remove() error {
	p.Close()
	return errors.Join(removeIfExists(p.path), removeIfExists(p.statePath))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
