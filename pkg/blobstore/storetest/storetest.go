// Package storetest is the conformance suite every blobstore.Store
// implementation runs: storetest.Run(t, newStore).
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

// Run runs the suite; newStore returns an empty store for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, blobstore.Store)
	}{
		{"CommitThenRead", testCommitThenRead},
		{"EmptyBlob", testEmptyBlob},
		{"DigestMismatchLeavesNothing", testDigestMismatch},
		{"SizeMismatchLeavesNothing", testSizeMismatch},
		{"AbortLeavesNothing", testAbort},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"Walk", testWalk},
		{"MetaInfo", testMetaInfo},
		{"ConcurrentSameBlob", testConcurrentSameBlob},
		{"SHA512", testSHA512},
		{"RejectsBadDigest", testRejectsBadDigest},
		{"ReleaseBetweenWrites", testReleaseBetweenWrites},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// Blob returns n random bytes and their sha256 digest.
func Blob(t testing.TB, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

func put(t *testing.T, s blobstore.Store, b []byte, d digest.Digest) blobstore.Info {
	t.Helper()
	info, err := blobstore.Put(context.Background(), s, bytes.NewReader(b), int64(len(b)), d)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return info
}

func readAll(t *testing.T, s blobstore.Store, d digest.Digest) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open %s: %v", d, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	if int64(len(b)) != r.Size() {
		t.Fatalf("Size() = %d, read %d", r.Size(), len(b))
	}
	return b
}

func assertAbsent(t *testing.T, s blobstore.Store, d digest.Digest) {
	t.Helper()
	if _, err := s.Stat(context.Background(), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat %s = %v, want ErrNotFound", d, err)
	}
	n := 0
	s.Walk(context.Background(), func(blobstore.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("Walk found %d blobs in a store that should be empty", n)
	}
}

func testCommitThenRead(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 3*metainfo.MinPieceLength+17)
	info := put(t, s, b, d)
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("info = %+v", info)
	}
	if got := readAll(t, s, d); !bytes.Equal(got, b) {
		t.Fatal("read back different bytes")
	}
	r, _ := s.Open(context.Background(), d)
	defer r.Close()
	p := make([]byte, 100)
	if _, err := r.ReadAt(p, 5000); err != nil || !bytes.Equal(p, b[5000:5100]) {
		t.Fatalf("ReadAt: %v", err)
	}
}

func testEmptyBlob(t *testing.T, s blobstore.Store) {
	d := digest.FromBytes(nil)
	put(t, s, nil, d)
	if got := readAll(t, s, d); len(got) != 0 {
		t.Fatalf("empty blob read %d bytes", len(got))
	}
	mi, err := s.MetaInfo(context.Background(), d)
	if err != nil || mi.NumPieces() != 0 {
		t.Fatalf("MetaInfo = %+v, %v", mi, err)
	}
}

func testDigestMismatch(t *testing.T, s blobstore.Store) {
	b, _ := Blob(t, 1000)
	_, other := Blob(t, 1000)
	_, err := blobstore.Put(context.Background(), s, bytes.NewReader(b), -1, other)
	if !errors.Is(err, blobstore.ErrDigestMismatch) {
		t.Fatalf("Put with wrong digest = %v, want ErrDigestMismatch", err)
	}
	assertAbsent(t, s, other)
	assertAbsent(t, s, digest.FromBytes(b))
}

func testSizeMismatch(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 1000)
	_, err := blobstore.Put(context.Background(), s, bytes.NewReader(b), 999, d)
	if !errors.Is(err, blobstore.ErrSizeMismatch) {
		t.Fatalf("Put with wrong size = %v, want ErrSizeMismatch", err)
	}
	assertAbsent(t, s, d)
}

func testAbort(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 1000)
	w, err := s.Writer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := w.Commit(context.Background(), -1, d); !errors.Is(err, blobstore.ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
	assertAbsent(t, s, d)
}

func testNotFound(t *testing.T, s blobstore.Store) {
	_, d := Blob(t, 10)
	if _, err := s.Open(context.Background(), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Open = %v", err)
	}
	if _, err := s.MetaInfo(context.Background(), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("MetaInfo = %v", err)
	}
	if err := s.Delete(context.Background(), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Delete = %v", err)
	}
}

func testDelete(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 1000)
	put(t, s, b, d)
	if err := s.Delete(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	assertAbsent(t, s, d)
}

func testWalk(t *testing.T, s blobstore.Store) {
	want := map[digest.Digest]int64{}
	for i := range 5 {
		b, d := Blob(t, 100*(i+1))
		put(t, s, b, d)
		want[d] = int64(len(b))
	}
	got := map[digest.Digest]int64{}
	if err := s.Walk(context.Background(), func(i blobstore.Info) error { got[i.Digest] = i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk found %d blobs, want %d", len(got), len(want))
	}
	for d, n := range want {
		if got[d] != n {
			t.Fatalf("Walk %s size %d, want %d", d, got[d], n)
		}
	}
}

func testMetaInfo(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 2*metainfo.MinPieceLength+5)
	put(t, s, b, d)
	mi, err := s.MetaInfo(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := metainfo.Compute(d, bytes.NewReader(b), int64(len(b)))
	if mi.NumPieces() != 3 || mi.Size != int64(len(b)) || mi.PieceLength != metainfo.MinPieceLength {
		t.Fatalf("metainfo = %d pieces, size %d, piece length %d", mi.NumPieces(), mi.Size, mi.PieceLength)
	}
	for i := range mi.NumPieces() {
		if i < len(want.Chain) && !bytes.Equal(mi.Chain[i], want.Chain[i]) {
			t.Fatalf("piece %d chain state differs", i)
		}
		off, n := mi.PieceSpan(i)
		if !mi.VerifyPiece(i, b[off:off+n]) {
			t.Fatalf("piece %d does not verify", i)
		}
	}
}

func testConcurrentSameBlob(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 1<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := blobstore.Put(context.Background(), s, bytes.NewReader(b), int64(len(b)), d)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Put: %v", err)
		}
	}
	if got := readAll(t, s, d); !bytes.Equal(got, b) {
		t.Fatal("concurrent puts left different bytes")
	}
}

func testSHA512(t *testing.T, s blobstore.Store) {
	b, _ := Blob(t, 5000)
	h := digest.SHA512.Hash()
	h.Write(b)
	d := digest.FromHash(digest.SHA512, h)
	put(t, s, b, d)
	if got := readAll(t, s, d); !bytes.Equal(got, b) {
		t.Fatal("sha512 blob differs")
	}
}

func testRejectsBadDigest(t *testing.T, s blobstore.Store) {
	for _, d := range []digest.Digest{"", "sha256:../../etc/passwd", "md5:abc", digest.Digest("sha256:A" + string(bytes.Repeat([]byte("0"), 63)))} {
		if _, err := s.Stat(context.Background(), d); err == nil || errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want a digest error", d, err)
		}
		if _, err := blobstore.Put(context.Background(), s, bytes.NewReader(nil), 0, d); err == nil {
			t.Errorf("Put(%q) succeeded", d)
		}
	}
}

// A writer released between writes, as an upload session is between
// requests, commits the same blob as one written in one go, and still
// refuses a digest its bytes do not have.
func testReleaseBetweenWrites(t *testing.T, s blobstore.Store) {
	b, d := Blob(t, 2*metainfo.MinPieceLength+99)
	cuts := []int{0, 1, metainfo.MinPieceLength - 1, metainfo.MinPieceLength + 7, len(b)}
	write := func(want digest.Digest) error {
		w, err := s.Writer(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		for i := 1; i < len(cuts); i++ {
			if err := w.Release(); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if _, err := w.Write(b[cuts[i-1]:cuts[i]]); err != nil {
				t.Fatalf("Write after Release: %v", err)
			}
			if w.Written() != int64(cuts[i]) {
				t.Fatalf("Written = %d, want %d", w.Written(), cuts[i])
			}
		}
		if err := w.Release(); err != nil {
			t.Fatalf("Release: %v", err)
		}
		_, err = w.Commit(context.Background(), int64(len(b)), want)
		return err
	}
	_, other := Blob(t, 10)
	if err := write(other); !errors.Is(err, blobstore.ErrDigestMismatch) {
		t.Fatalf("Commit with a wrong digest after Release = %v, want ErrDigestMismatch", err)
	}
	assertAbsent(t, s, d)
	if err := write(d); err != nil {
		t.Fatalf("Commit after Release: %v", err)
	}
	if got := readAll(t, s, d); !bytes.Equal(got, b) {
		t.Fatal("a released writer committed different bytes")
	}
	mi, err := s.MetaInfo(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mi.NumPieces() {
		off, n := mi.PieceSpan(i)
		if !mi.VerifyPiece(i, b[off:off+n]) {
			t.Fatalf("piece %d does not verify after a released write", i)
		}
	}
}
