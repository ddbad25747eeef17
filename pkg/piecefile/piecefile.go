// Package piecefile holds a blob while it downloads: verified pieces land
// at their offsets in a preallocated file, readers can wait for the next
// piece (so a client streams while the swarm is still fetching), the whole
// digest is computed in order as pieces complete, and a restarted agent
// resumes from the pieces already on disk.
package piecefile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/atomicfile"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

var (
	// ErrBadPiece: the bytes do not match the piece's hash.
	ErrBadPiece = errors.New("piece does not match its hash")
	// ErrDigestMismatch: every piece matched, yet the whole blob does not
	// hash to its digest (the metainfo lied).
	ErrDigestMismatch = errors.New("blob does not match its digest")
	// ErrClosed: the file was closed or removed while waiting.
	ErrClosed = errors.New("piece file closed")
)

// File is one blob under download. Its methods are safe for concurrent use.
type File struct {
	mi        *metainfo.MetaInfo
	path      string // the data
	statePath string // which pieces are held

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a piece lands
	f       *os.File
	have    []bool
	count   int
	// The whole-blob hash advances over pieces in order, in its own
	// goroutine so it overlaps the per-piece checks; next is the first
	// piece it has not covered. hashed is closed when it covered them all,
	// with hashErr the verdict.
	whole   hash.Hash
	next    int
	hashed  chan struct{}
	hashErr error
	stop    chan struct{}
	closed  bool
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
		mi: mi, path: base + ".part", statePath: base + ".have", f: f,
		changed: make(chan struct{}), have: make([]bool, mi.NumPieces()), whole: sha256.New(),
		hashed: make(chan struct{}), stop: make(chan struct{}),
	}
	if err := p.resume(); err != nil {
		f.Close()
		return nil, err
	}
	go p.hashLoop()
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
	buf := make([]byte, p.mi.PieceLength)
	for i := range p.have {
		if i/8 >= len(state) || state[i/8]&(0x80>>(i%8)) == 0 {
			continue
		}
		off, n := p.mi.PieceSpan(i)
		if _, err := p.f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("piecefile: re-read piece %d: %w", i, err)
		}
		if p.mi.VerifyPiece(i, buf[:n]) {
			p.have[i] = true
			p.count++
		}
	}
	return nil
}

// MetaInfo is the blob's piece layout.
func (p *File) MetaInfo() *metainfo.MetaInfo { return p.mi }

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

// Complete reports whether every piece is held and the whole digest has
// been checked and matches.
func (p *File) Complete() bool {
	select {
	case <-p.hashed:
		return p.hashErr == nil
	default:
		return false
	}
}

// Hashed is closed once every piece is held and the whole digest has been
// checked; Err then says whether it matched.
func (p *File) Hashed() <-chan struct{} { return p.hashed }

// Err is the whole-digest verdict after Hashed: nil, or ErrDigestMismatch
// (the pieces matched lying metainfo) or a read error.
func (p *File) Err() error {
	select {
	case <-p.hashed:
		return p.hashErr
	default:
		return nil
	}
}

// WritePiece verifies data against piece i's hash and stores it. A piece
// already held is accepted and ignored (end-game duplicates).
func (p *File) WritePiece(i int, data []byte) error {
	if !p.mi.VerifyPiece(i, data) {
		return fmt.Errorf("piece %d of %s: %w", i, p.mi.Digest, ErrBadPiece)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.have[i] {
		return nil
	}
	off, _ := p.mi.PieceSpan(i)
	if _, err := p.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("piecefile: write piece %d: %w", i, err)
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
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

// hashLoop feeds the whole-blob hash with pieces as they become
// contiguous from the front, reading back those that arrived out of order,
// until all are covered or the file closes.
func (p *File) hashLoop() {
	buf := make([]byte, p.mi.PieceLength)
	for {
		p.mu.Lock()
		for p.next < len(p.have) && p.have[p.next] && !p.closed {
			i := p.next
			p.mu.Unlock()
			off, n := p.mi.PieceSpan(i)
			if _, err := p.f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
				p.finish(fmt.Errorf("piecefile: hash piece %d: %w", i, err))
				return
			}
			p.whole.Write(buf[:n])
			p.mu.Lock()
			p.next++
		}
		done, closed, ch := p.next == len(p.have), p.closed, p.changed
		p.mu.Unlock()
		if done {
			var err error
			if digest.FromHash(digest.SHA256, p.whole) != p.mi.Digest {
				err = fmt.Errorf("%s: %w", p.mi.Digest, ErrDigestMismatch)
			}
			p.finish(err)
			return
		}
		if closed {
			p.finish(ErrClosed) // nobody waits on Hashed forever
			return
		}
		select {
		case <-ch:
		case <-p.stop:
			p.finish(ErrClosed)
			return
		}
	}
}

func (p *File) finish(err error) {
	p.hashErr = err
	close(p.hashed)
	// Wake waiters: a reader blocked on the last piece wants the verdict.
	p.mu.Lock()
	if !p.closed {
		close(p.changed)
		p.changed = make(chan struct{})
	}
	p.mu.Unlock()
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
	if off < 0 || off >= p.mi.Size {
		return 0, io.EOF
	}
	end := min(off+int64(len(b)), p.mi.Size)
	p.mu.Lock()
	for i := int(off / p.mi.PieceLength); i <= int((end-1)/p.mi.PieceLength); i++ {
		if !p.have[i] {
			p.mu.Unlock()
			return 0, fmt.Errorf("piecefile: piece %d not held yet", i)
		}
	}
	p.mu.Unlock()
	n, err := p.f.ReadAt(b[:end-off], off)
	if err == nil && end == p.mi.Size && int64(len(b)) > end-off {
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
// a later resume.
func (p *File) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.changed)
	close(p.stop)
	if p.dirty > 0 {
		atomicfile.WriteFile(p.statePath, p.bitfield(), 0o644)
	}
	return p.f.Close()
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
