package gc

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
)

// lockStripes is how many mutexes guard the digests; a collision only
// makes two unrelated blobs take turns for a moment.
const lockStripes = 256

// Store is a blob store whose commits, reads and GC deletes of one digest
// take turns: the lock the sweep re-checks a victim under is the lock
// every commit and every "do you hold it?" answer of the origin takes.
// Wrap the origin's store with Lock and hand the same Store to both the
// origin and the Collector.
type Store struct {
	blobstore.Store
	seed  maphash.Seed
	locks [lockStripes]sync.Mutex
	// tmpDir holds writers in progress, for orphan cleanup ("" if the
	// store keeps them elsewhere).
	tmpDir string
}

// Lock wraps s. tmpDir is where s keeps writers in progress (for a Local
// store, <root>/tmp), or "" to leave temp files alone.
func Lock(s blobstore.Store, tmpDir string) *Store {
	return &Store{Store: s, seed: maphash.MakeSeed(), tmpDir: tmpDir}
}

func (s *Store) lock(d digest.Digest) *sync.Mutex {
	return &s.locks[maphash.String(s.seed, string(d))%lockStripes]
}

// Stat implements blobstore.Provider under d's lock.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (blobstore.Info, error) {
	mu := s.lock(d)
	mu.Lock()
	defer mu.Unlock()
	return s.Store.Stat(ctx, d)
}

// Open implements blobstore.Provider under d's lock (held only while
// opening: an open file outlives its unlink).
func (s *Store) Open(ctx context.Context, d digest.Digest) (blobstore.Reader, error) {
	mu := s.lock(d)
	mu.Lock()
	defer mu.Unlock()
	return s.Store.Open(ctx, d)
}

// Writer implements blobstore.Ingester: its Commit takes the digest's lock.
func (s *Store) Writer(ctx context.Context) (blobstore.Writer, error) {
	w, err := s.Store.Writer(ctx)
	if err != nil {
		return nil, err
	}
	return &lockedWriter{Writer: w, s: s}, nil
}

type lockedWriter struct {
	blobstore.Writer
	s *Store
}

func (w *lockedWriter) Commit(ctx context.Context, size int64, want digest.Digest) (blobstore.Info, error) {
	mu := w.s.lock(want)
	mu.Lock()
	defer mu.Unlock()
	return w.Writer.Commit(ctx, size, want)
}

// errKept: the re-check under the lock found the blob live again.
var errKept = errors.New("kept: used again since it was marked")

// DeleteIf deletes d only if still(ctx) says so, both under d's lock, and
// returns the bytes freed. errKept when still said no.
func (s *Store) DeleteIf(ctx context.Context, d digest.Digest, still func(context.Context) (bool, error)) (int64, error) {
	mu := s.lock(d)
	mu.Lock()
	defer mu.Unlock()
	ok, err := still(ctx)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errKept
	}
	info, err := s.Store.Stat(ctx, d)
	if err != nil {
		return 0, err
	}
	if err := s.Store.Delete(ctx, d); err != nil {
		return 0, err
	}
	return info.Size, nil
}

// PurgeTemp removes writer files not modified since before cutoff: an
// upload session writes or is expired within its idle timeout, so an
// older file belongs to none (a leaked writer). A session whose file
// this removes fails its next request instead of committing (the store
// checks the file is still the one it made). It returns files and bytes
// removed, or what it would remove when dry.
func (s *Store) PurgeTemp(cutoff time.Time, dry bool) (int, int64, error) {
	if s.tmpDir == "" {
		return 0, 0, nil
	}
	ents, err := os.ReadDir(s.tmpDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("gc: temp files: %w", err)
	}
	var n int
	var bytes int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || fi.IsDir() || !fi.ModTime().Before(cutoff) {
			continue
		}
		if !dry {
			if err := os.Remove(filepath.Join(s.tmpDir, e.Name())); err != nil {
				continue
			}
		}
		n++
		bytes += fi.Size()
	}
	return n, bytes, nil
}
