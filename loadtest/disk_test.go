package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A file deleted while open still holds its space, and the watch counts
// it for the process holding it; a walk of the directory alone would not.
func TestDiskCountsDeletedButOpen(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cache", "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	kept, gone := filepath.Join(dir, "cache", "blobs", "kept"), filepath.Join(dir, "cache", "blobs", "gone")
	os.WriteFile(kept, make([]byte, 1000), 0o644)
	os.WriteFile(gone, make([]byte, 5000), 0o644)
	os.WriteFile(filepath.Join(dir, "x.part"), make([]byte, 400), 0o644)
	os.WriteFile(filepath.Join(dir, "peer.key"), make([]byte, 77), 0o644) // metadata: not counted
	f, err := os.Open(gone)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := os.Open(gone) // open twice: counted once
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	os.Remove(gone)
	w := &diskWatch{use: diskUse{LimitBytes: 5500}}
	w.sample([]diskSource{{dir: dir, pid: os.Getpid}})
	if w.use.MaxBytes != 6400 || w.use.MaxUnlinkedBytes != 5000 || w.use.MaxMetaBytes != 77 || w.use.OverLimit != 1 {
		t.Fatalf("sampled %+v, want 6400 held, 5000 of it deleted, 77 of metadata, over the limit", w.use)
	}
	f.Close()
	g.Close()
	w.sample([]diskSource{{dir: dir, pid: os.Getpid}})
	if w.use.OverLimit != 1 || unlinkedBytes(os.Getpid(), dir) != 0 {
		t.Fatalf("closed files still counted: %+v", w.use)
	}
}
