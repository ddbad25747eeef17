package agent

import (
	"bytes"
	"context"
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
	c, err := newCache(ctx, store, 2500, slog.New(slog.DiscardHandler))
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
		if err := c.adopt(ctx, p, mi); err != nil {
			t.Fatal(err)
		}
		return mi.Digest
	}
	a, b := add('a'), add('b')
	rdA, releaseA, ok := c.open(ctx, a) // a is in use, and now the most recent
	if !ok {
		t.Fatal("a not cached")
	}
	cc := add('c') // 3000 > 2500: b is the least recent not in use
	if _, _, ok := c.open(ctx, b); ok {
		t.Fatal("b survived eviction")
	}
	if _, err := store.Stat(ctx, b); err == nil {
		t.Fatal("b still on disk")
	}
	d := add('d') // a is pinned, so c goes
	if _, _, ok := c.open(ctx, cc); ok {
		t.Fatal("c survived eviction")
	}
	buf := make([]byte, 10)
	if _, err := rdA.ReadAt(buf, 0); err != nil || buf[0] != 'a' {
		t.Fatalf("pinned blob unreadable: %v", err)
	}
	releaseA()
	if c.bytes() > 2500 {
		t.Fatalf("cache holds %d bytes over its 2500 limit", c.bytes())
	}
	// A restart finds what is on disk.
	c2, err := newCache(ctx, store, 2500, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, release, ok := c2.open(ctx, d); !ok {
		t.Fatal("d lost across a restart")
	} else {
		release()
	}
}
