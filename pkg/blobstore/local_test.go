package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/blobstore/storetest"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/proctest"
)

func TestLocal(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Store {
		s, err := blobstore.NewLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A crash mid-upload leaves a temp file; reopening the store removes it and
// the blob is not visible.
func TestLocalCrashLeavesNoPartialBlob(t *testing.T) {
	dir := t.TempDir()
	s, _ := blobstore.NewLocal(dir)
	b, d := storetest.Blob(t, 1<<20)
	w, _ := s.Writer(context.Background())
	w.Write(b[:1000]) // "crash": never committed nor closed

	s2, err := blobstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp has %d files after reopen", len(ents))
	}
	if _, err := s2.Stat(context.Background(), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("partial blob visible: %v", err)
	}
}

// Losing the metainfo file (crash between blob rename and metainfo rename, or
// a damaged file) is repaired from the blob.
func TestLocalMetaInfoRebuilt(t *testing.T) {
	dir := t.TempDir()
	s, _ := blobstore.NewLocal(dir)
	b, d := storetest.Blob(t, metainfo.MinPieceLength+1)
	if _, err := blobstore.Put(context.Background(), s, bytes.NewReader(b), int64(len(b)), d); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "metainfo", "sha256", d.Hex()[:2], d.Hex())
	for name, damage := range map[string]func() error{
		"removed": func() error { return os.Remove(mp) },
		"garbage": func() error { return os.WriteFile(mp, []byte("not protobuf \xff\xff"), 0o644) },
		// Written before the piece-length rule changed: whole-blob pieces.
		"older rule": func() error {
			x := metainfo.NewHasher(digest.SHA256, 2*metainfo.MinPieceLength)
			x.Write(b)
			mi, err := x.MetaInfo(d)
			if err != nil {
				return err
			}
			m, _ := mi.Marshal()
			return os.WriteFile(mp, m, 0o644)
		},
	} {
		t.Run(name, func(t *testing.T) {
			if err := damage(); err != nil {
				t.Fatal(err)
			}
			mi, err := s.MetaInfo(context.Background(), d)
			if err != nil || mi.NumPieces() != 2 {
				t.Fatalf("MetaInfo = %v, %v", mi, err)
			}
			if _, err := os.Stat(mp); err != nil {
				t.Fatalf("metainfo not rewritten: %v", err)
			}
		})
	}
}

func TestAdopt(t *testing.T) {
	dir := t.TempDir()
	s, err := blobstore.NewLocal(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("piece"), 1000)
	mi, err := metainfo.Compute(digest.FromBytes(data), bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "download.part")
	os.WriteFile(part, data[:100], 0o644)
	if err := s.Adopt(context.Background(), part, mi); !errors.Is(err, blobstore.ErrSizeMismatch) {
		t.Fatalf("short file adopted: %v", err)
	}
	os.WriteFile(part, data, 0o644)
	if err := s.Adopt(context.Background(), part, mi); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("adopted file still at its old path")
	}
	got, err := s.MetaInfo(context.Background(), mi.Digest)
	if err != nil || !got.Equal(mi) {
		t.Fatalf("metainfo after adopt: %v %v", got, err)
	}
	rd, err := s.Open(context.Background(), mi.Digest)
	if err != nil || rd.Size() != int64(len(data)) {
		t.Fatalf("open after adopt: %v", err)
	}
	rd.Close()
}

// Released writers hold no descriptor, however many there are: an upload
// session costs a file descriptor only while a request writes to it.
func TestLocalReleasedWritersHoldNoDescriptor(t *testing.T) {
	s, err := blobstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	before := proctest.OpenFDs(t)
	ws := make([]blobstore.Writer, n)
	blobs := make([][]byte, n)
	for i := range ws {
		if ws[i], err = s.Writer(context.Background()); err != nil {
			t.Fatal(err)
		}
		blobs[i], _ = storetest.Blob(t, 100+i)
		ws[i].Write(blobs[i][:50])
		if err := ws[i].Release(); err != nil {
			t.Fatal(err)
		}
	}
	if got := proctest.OpenFDs(t) - before; got > 10 {
		t.Fatalf("%d released writers hold %d more descriptors", n, got)
	}
	for i, w := range ws {
		w.Write(blobs[i][50:])
		if _, err := w.Commit(context.Background(), -1, digest.FromBytes(blobs[i])); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
}

// The hash of a released writer is kept in memory, so the file it commits
// must be the very file it hashed: one changed on disk between writes
// fails the writer, and nothing is committed.
func TestLocalReleasedWriterRefusesAChangedFile(t *testing.T) {
	tests := []struct {
		name   string
		change func(path string) error
	}{
		{"appended", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("extra"))
			return err
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 10) }},
		{"replaced", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			other := p + ".other"
			if err := os.WriteFile(other, b, 0o644); err != nil {
				return err
			}
			return os.Rename(other, p)
		}},
		{"removed", os.Remove},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := blobstore.NewLocal(dir)
			if err != nil {
				t.Fatal(err)
			}
			b, d := storetest.Blob(t, 1000)
			w, err := s.Writer(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			w.Write(b[:500])
			if err := w.Release(); err != nil {
				t.Fatal(err)
			}
			tmp, _ := filepath.Glob(filepath.Join(dir, "tmp", "blob-*"))
			if len(tmp) != 1 {
				t.Fatalf("temp files %v, want one", tmp)
			}
			if err := tt.change(tmp[0]); err != nil {
				t.Fatal(err)
			}
			w.Write(b[500:])
			if _, err := w.Commit(context.Background(), -1, d); err == nil {
				t.Fatal("a writer whose file changed while released committed")
			}
			if _, err := s.Stat(context.Background(), d); !errors.Is(err, blobstore.ErrNotFound) {
				t.Fatalf("blob visible after a failed commit: %v", err)
			}
		})
	}
}
