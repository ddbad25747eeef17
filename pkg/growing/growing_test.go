package growing

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

func blobOf(n int) ([]byte, digest.Digest) {
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

// Pieces are readable as soon as they are whole, before the body ends;
// the last one only once the whole body matched the digest.
func TestPublishesPiecesBeforeTheEnd(t *testing.T) {
	data, d := blobOf(3*metainfo.MinPieceLength + 1000)
	b, err := New(t.TempDir(), d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	pr, pw := io.Pipe()
	filled := make(chan error, 1)
	var spooled []byte
	go func() {
		filled <- b.Fill(context.Background(), pr, func(path string) error {
			var err error
			spooled, err = os.ReadFile(path)
			return err
		})
	}()
	// Piece 0 and the first byte of piece 1: piece 0 is published.
	pw.Write(data[:metainfo.MinPieceLength+1])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Wait(ctx, 0); err != nil {
		t.Fatalf("piece 0 not published while the body is still arriving: %v", err)
	}
	got := make([]byte, metainfo.MinPieceLength)
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data[:metainfo.MinPieceLength]) {
		t.Fatalf("read piece 0: %v", err)
	}
	if _, err := b.ReadAt(got[:10], metainfo.MinPieceLength); err == nil {
		t.Fatal("read bytes of an unpublished piece")
	}
	if mi, complete := b.MetaInfo(); complete || len(mi.Chain) != 1 {
		t.Fatalf("metainfo mid-way: complete %v, %d states, want 1", complete, len(mi.Chain))
	}
	// Everything but the last byte: the last piece still waits.
	pw.Write(data[metainfo.MinPieceLength+1 : len(data)-1])
	if err := b.Wait(ctx, 2); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if err := b.Wait(short, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("last piece before the digest matched: %v", err)
	}
	pw.Write(data[len(data)-1:])
	pw.Close()
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx, 3); err != nil {
		t.Fatal(err)
	}
	mi, complete := b.MetaInfo()
	want, _ := metainfo.Compute(d, bytes.NewReader(data), int64(len(data)))
	if !complete || !mi.Equal(want) {
		t.Fatalf("final metainfo complete %v, equal to a whole pass %v", complete, mi.Equal(want))
	}
	if !bytes.Equal(spooled, data) {
		t.Fatal("commit saw other bytes than the blob")
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// Whatever goes wrong, the blob fails whole: waiters get ErrFailed, no
// byte is readable any more, and the spool is gone.
func TestFailures(t *testing.T) {
	data, d := blobOf(2*metainfo.MinPieceLength + 5)
	wrong := append([]byte(nil), data...)
	wrong[len(wrong)-1] ^= 1
	diskFull := errors.New("disk full")
	for _, tt := range []struct {
		name      string
		body      io.Reader
		mismatch  bool
		commitErr error // what commit returns; set: commit is expected
	}{
		{"wrong last byte", bytes.NewReader(wrong), true, nil},
		{"short", bytes.NewReader(data[:len(data)-1]), true, nil},
		{"long", io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte{0})), true, nil},
		{"broken", &failingReader{bytes.NewReader(data[:metainfo.MinPieceLength+10]), io.ErrUnexpectedEOF}, false, nil},
		{"commit fails", bytes.NewReader(data), false, diskFull},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			b, err := New(dir, d, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Release()
			committed := false
			err = b.Fill(context.Background(), tt.body, func(string) error { committed = true; return tt.commitErr })
			if committed != (tt.commitErr != nil) {
				t.Fatalf("commit called: %v", committed)
			}
			if tt.commitErr != nil && !errors.Is(err, tt.commitErr) {
				t.Fatalf("Fill: %v, want the commit's error", err)
			}
			if err == nil || errors.Is(err, ErrMismatch) != tt.mismatch {
				t.Fatalf("Fill: %v, want a mismatch: %v", err, tt.mismatch)
			}
			if err := b.Wait(context.Background(), 0); !errors.Is(err, ErrFailed) {
				t.Fatalf("Wait after failure: %v", err)
			}
			if _, err := b.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrFailed) {
				t.Fatalf("ReadAt after failure: %v", err)
			}
			if _, complete := b.MetaInfo(); complete {
				t.Fatal("failed blob says complete")
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Fatalf("spool still there: %v", left)
			}
		})
	}
}

// The spool outlives Fill while a reader holds it, and goes with the last
// reference.
func TestReferences(t *testing.T) {
	data, d := blobOf(1000)
	dir := t.TempDir()
	b, err := New(dir, d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Fill(context.Background(), bytes.NewReader(data), func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !b.Acquire() {
		t.Fatal("acquire")
	}
	b.Release()
	got := make([]byte, len(data))
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with a reference held: %v", err)
	}
	b.Release()
	if b.Acquire() {
		t.Fatal("acquired a closed blob")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("spool after the last release: %v", left)
	}
}
