package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

func TestCacheEvictsLeastRecentlyUsedNotInUse(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := blobstore.NewLocal(filepath.Join(dir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCache(ctx, store, 2500, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	add := func(fill byte) digest.Digest {
		data := bytes.Repeat([]byte{fill}, 1000)
		mi, err := metainfo.Compute(digest.FromBytes(data), bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "dl")
		os.WriteFile(p, data, 0o644)
		if err := c.adopt(ctx, p, mi, nil); err != nil {
			t.Fatal(err)
		}
		return mi.Digest
	}
	a, b := add('a'), add('b')
	bA, ok := c.open(ctx, a) // a is in use, and now the most recent
	if !ok {
		t.Fatal("a not cached")
	}
	cc := add('c') // 3000 > 2500: b is the least recent not in use
	if _, ok := c.open(ctx, b); ok {
		t.Fatal("b survived eviction")
	}
	if _, err := store.Stat(ctx, b); err == nil {
		t.Fatal("b still on disk")
	}
	d := add('d') // a is pinned, so c goes
	if _, ok := c.open(ctx, cc); ok {
		t.Fatal("c survived eviction")
	}
	buf := make([]byte, 10)
	if _, err := bA.ReadAt(buf, 0); err != nil || buf[0] != 'a' {
		t.Fatalf("pinned blob unreadable: %v", err)
	}
	bA.Close()
	if c.bytes() > 2500 {
		t.Fatalf("cache holds %d bytes over its 2500 limit", c.bytes())
	}
	// A restart finds what is on disk.
	c2, err := newCache(ctx, store, 2500, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if bD, ok := c2.open(ctx, d); !ok {
		t.Fatal("d lost across a restart")
	} else {
		bD.Close()
	}
}

// A blob found on disk at start is checked piece by piece as it is read:
// pieces before a flipped byte pass, the piece holding it fails, and the
// blob is evicted from the index and the disk and counted once. A blob
// this process downloaded needs no check.
func TestCacheChecksBlobsFoundOnDisk(t *testing.T) {
	const size = 3*metainfo.MinPieceLength + 1000
	tests := []struct {
		name    string
		flip    int64 // -1: none
		restart bool
		bad     int // first piece that fails, -1: none
	}{
		{"downloaded here", -1, false, -1},
		{"intact after restart", -1, true, -1},
		{"first byte", 0, true, 0},
		{"middle piece", 2*metainfo.MinPieceLength + 17, true, 2},
		{"last byte", size - 1, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			store, err := blobstore.NewLocal(filepath.Join(dir, "cache"))
			if err != nil {
				t.Fatal(err)
			}
			log := slog.New(slog.DiscardHandler)
			c, err := newCache(ctx, store, 1<<30, "", log)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, size)
			rand.Read(data)
			mi, err := metainfo.Compute(digest.FromBytes(data), bytes.NewReader(data), size)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "dl")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := c.adopt(ctx, p, mi, nil); err != nil {
				t.Fatal(err)
			}
			if tt.flip >= 0 {
				flipByte(t, filepath.Join(dir, "cache", "blobs", "sha256", mi.Digest.Hex()[:2], mi.Digest.Hex()), tt.flip)
			}
			if tt.restart {
				if c, err = newCache(ctx, store, 1<<30, "", log); err != nil {
					t.Fatal(err)
				}
			}
			corrupt := 0
			c.onCorrupt = func() { corrupt++ }
			b, ok := c.open(ctx, mi.Digest)
			if !ok {
				t.Fatal("not cached")
			}
			defer b.Close()
			if b.verified() == tt.restart {
				t.Fatalf("verified at open: %v, after a restart: %v", b.verified(), tt.restart)
			}
			for i := range mi.NumPieces() {
				err := b.CheckPiece(i, make([]byte, 4096))
				switch {
				case tt.bad < 0 || i < tt.bad:
					if err != nil {
						t.Fatalf("piece %d: %v", i, err)
					}
				case !errors.Is(err, errCorrupt):
					t.Fatalf("piece %d: %v, want %v", i, err, errCorrupt)
				}
			}
			if tt.bad < 0 {
				if !b.verified() || corrupt != 0 {
					t.Fatalf("verified %v, %d corrupt", b.verified(), corrupt)
				}
				return
			}
			if corrupt != 1 {
				t.Fatalf("counted %d corrupt blobs, want 1", corrupt)
			}
			if _, ok := c.open(ctx, mi.Digest); ok {
				t.Fatal("corrupt blob still cached")
			}
			if _, err := store.Stat(ctx, mi.Digest); !errors.Is(err, blobstore.ErrNotFound) {
				t.Fatalf("corrupt blob still on disk: %v", err)
			}
		})
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
