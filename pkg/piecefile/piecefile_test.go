package piecefile_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/piecefile"
)

// blob returns random bytes and a metainfo with small pieces, so tests
// have many of them.
func blob(t *testing.T, size int, pieceLen int64) ([]byte, *metainfo.MetaInfo) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	x := metainfo.NewHasher(digest.SHA256, pieceLen)
	x.Write(b)
	mi, err := x.MetaInfo(digest.FromBytes(b))
	if err != nil {
		t.Fatal(err)
	}
	return b, mi
}

func piece(b []byte, mi *metainfo.MetaInfo, i int) []byte {
	off, n := mi.PieceSpan(i)
	return b[off : off+n]
}

func TestOutOfOrderDownload(t *testing.T) {
	b, mi := blob(t, 10_000, 1024) // 10 pieces, the last short
	p, err := piecefile.Open(t.TempDir(), mi)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	order := []int{9, 3, 0, 1, 2, 8, 4, 5, 7, 6}
	for k, i := range order {
		if p.Complete() {
			t.Fatal("complete early")
		}
		if err := p.WritePiece(i, piece(b, mi, i)); err != nil {
			t.Fatal(err)
		}
		if k == 0 && !bytes.Equal(p.Bitfield(), []byte{0, 0x40}) {
			t.Fatalf("bitfield %08b", p.Bitfield())
		}
	}
	<-p.Done()
	if !p.Complete() {
		t.Fatal("not complete")
	}
	if err := p.WritePiece(3, piece(b, mi, 3)); err != nil {
		t.Fatalf("duplicate piece: %v", err)
	}
	got, err := os.ReadFile(p.Path())
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("data file differs: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	b, mi := blob(t, 4096, 1024)
	p, err := piecefile.Open(t.TempDir(), mi)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bad := bytes.Clone(piece(b, mi, 1))
	bad[0] ^= 1
	tests := []struct {
		name string
		i    int
		data []byte
	}{
		{"flipped bit", 1, bad},
		{"short", 1, piece(b, mi, 1)[:100]},
		{"long", 1, append(bytes.Clone(piece(b, mi, 1)), 0)},
		{"another piece's bytes", 2, piece(b, mi, 1)},
		{"index out of range", 4, piece(b, mi, 1)},
		{"negative index", -1, piece(b, mi, 1)},
	}
	for _, tt := range tests {
		if err := p.WritePiece(tt.i, tt.data); !errors.Is(err, piecefile.ErrBadPiece) {
			t.Errorf("%s: %v, want ErrBadPiece", tt.name, err)
		}
	}
	if p.Have(1) || p.Have(2) {
		t.Fatal("a bad piece was kept")
	}
}

// A restart keeps verified pieces; a piece torn on disk is fetched again.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	b, mi := blob(t, 16*1024, 1024)
	p, err := piecefile.Open(dir, mi)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := p.WritePiece(i, piece(b, mi, i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	// Tear piece 4 as a crash mid-write would.
	f, _ := os.OpenFile(p.Path(), os.O_RDWR, 0)
	f.WriteAt([]byte("torn"), 4*1024+10)
	f.Close()

	p, err = piecefile.Open(dir, mi)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 16 {
		if want := i < 10 && i != 4; p.Have(i) != want {
			t.Fatalf("after resume Have(%d) = %v, want %v", i, p.Have(i), want)
		}
	}
	for i := range 16 {
		if !p.Have(i) {
			if err := p.WritePiece(i, piece(b, mi, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-p.Done()
	if !p.Complete() {
		t.Fatal("resumed download did not complete")
	}
}

// A metainfo whose chain belongs to other bytes, under the real digest:
// those bytes pass up to the last piece, which cannot finish at the digest,
// so the download never completes and never ends clean.
func TestLyingChainNeverCompletes(t *testing.T) {
	b, honest := blob(t, 3000, 1024)
	other, lying := blob(t, 3000, 1024)
	lying.Digest = honest.Digest
	p, err := piecefile.Open(t.TempDir(), lying)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Remove()
	for i := range 2 {
		if err := p.WritePiece(i, piece(other, lying, i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, last := range [][]byte{piece(other, lying, 2), piece(b, honest, 2)} {
		if err := p.WritePiece(2, last); !errors.Is(err, piecefile.ErrBadPiece) {
			t.Fatalf("last piece under a lying chain: %v, want ErrBadPiece", err)
		}
	}
	if p.Complete() {
		t.Fatal("complete under a lying chain")
	}
}

func TestWaitAndRead(t *testing.T) {
	b, mi := blob(t, 3000, 1024)
	p, err := piecefile.Open(t.TempDir(), mi)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if _, err := p.ReadAt(buf, 0); err == nil {
		t.Fatal("read of a piece not held")
	}
	got := make(chan error, 1)
	go func() { got <- p.Wait(context.Background(), 2) }()
	select {
	case <-got:
		t.Fatal("Wait returned before the piece")
	case <-time.After(50 * time.Millisecond):
	}
	p.WritePiece(2, piece(b, mi, 2))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// The last piece is short: a read past the end says EOF.
	n, err := p.ReadAt(make([]byte, 2000), 2048)
	if n != 3000-2048 || err != io.EOF {
		t.Fatalf("ReadAt at the tail = %d, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Wait(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: %v", err)
	}
	go func() { got <- p.Wait(context.Background(), 0) }()
	time.Sleep(20 * time.Millisecond)
	p.Close()
	if err := <-got; !errors.Is(err, piecefile.ErrClosed) {
		t.Fatalf("Wait across Close: %v", err)
	}
}

// Closing a download that is not complete ends the wait on its verdict.
func TestDoneAfterClose(t *testing.T) {
	_, mi := blob(t, 3000, 1024)
	p, err := piecefile.Open(t.TempDir(), mi)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done never closed after Close")
	}
	if !errors.Is(p.Err(), piecefile.ErrClosed) || p.Complete() {
		t.Fatalf("after Close: err %v, complete %v", p.Err(), p.Complete())
	}
}

// A reader that retained the file keeps reading held pieces after the
// download is removed (its data moved into the cache by a rename, as the
// agent does): an upload stream must not end because the download did.
// Once the last reader lets go, the file is closed; nobody new may retain
// it.
func TestRetainOutlivesRemove(t *testing.T) {
	b, mi := blob(t, 4096, 1024)
	dir := t.TempDir()
	p, err := piecefile.Open(dir, mi)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mi.NumPieces() {
		if err := p.WritePiece(i, piece(b, mi, i)); err != nil {
			t.Fatal(err)
		}
	}
	release, ok := p.Retain()
	if !ok {
		t.Fatal("cannot retain an open file")
	}
	if err := os.Rename(p.Path(), filepath.Join(dir, "cached")); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1024)
	if _, err := p.ReadAt(got, 2048); err != nil || !bytes.Equal(got, piece(b, mi, 2)) {
		t.Fatalf("read after remove while retained: %v", err)
	}
	if _, ok := p.Retain(); !ok {
		t.Fatal("a second reader while the first holds it")
	}
	release()
	release() // twice is harmless
	if _, ok := p.Retain(); !ok {
		t.Fatal("the second reader still holds it")
	}
}

func TestRetainAfterCloseFails(t *testing.T) {
	_, mi := blob(t, 4096, 1024)
	p, err := piecefile.Open(t.TempDir(), mi)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, ok := p.Retain(); ok {
		t.Fatal("retained a closed file nobody held")
	}
}

// A download opened on a prefix of the chain (a blob still arriving at its
// origin) takes the pieces the prefix covers, refuses the others as not
// yet checkable (not bad), takes them once the chain grows, and only then
// completes; a metainfo that does not extend the one held is refused.
func TestGrow(t *testing.T) {
	b, full := blob(t, 4*1024+10, 1024) // 5 pieces, 4 states
	prefix := func(k int) *metainfo.MetaInfo {
		m := *full
		m.Chain = full.Chain[:k]
		return &m
	}
	p, err := piecefile.Open(t.TempDir(), prefix(1))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WritePiece(0, piece(b, full, 0)); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 4} {
		if err := p.WritePiece(i, piece(b, full, i)); !errors.Is(err, piecefile.ErrNotYetVerifiable) {
			t.Fatalf("piece %d past the prefix: %v, want not yet verifiable", i, err)
		}
	}
	other := prefix(2)
	other.Chain = [][]byte{full.Chain[1], full.Chain[1]}
	for _, bad := range []*metainfo.MetaInfo{prefix(0), other} {
		if err := p.Grow(bad); err == nil {
			t.Fatalf("grew to a metainfo that does not extend the held one: %d states", len(bad.Chain))
		}
	}
	if err := p.Grow(prefix(3)); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if err := p.WritePiece(i, piece(b, full, i)); err != nil {
			t.Fatalf("piece %d after the chain grew: %v", i, err)
		}
	}
	if err := p.WritePiece(4, piece(b, full, 4)); !errors.Is(err, piecefile.ErrNotYetVerifiable) {
		t.Fatalf("last piece before the chain is whole: %v", err)
	}
	if err := p.Grow(full); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{3, 4} {
		if err := p.WritePiece(i, piece(b, full, i)); err != nil {
			t.Fatal(err)
		}
	}
	if !p.Complete() || !p.MetaInfo().Complete() {
		t.Fatal("not complete with every piece and the whole chain")
	}
}
