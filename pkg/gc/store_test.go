package gc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
)

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := blobstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return Lock(l, filepath.Join(dir, "tmp")), dir
}

func TestDeleteIf(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		still   func(context.Context) (bool, error)
		wantErr error
		gone    bool
	}{
		{"still garbage", func(context.Context) (bool, error) { return true, nil }, nil, true},
		{"used again", func(context.Context) (bool, error) { return false, nil }, errKept, false},
		{"check failed", func(context.Context) (bool, error) { return false, errors.New("etcd down") }, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			b := []byte("victim")
			d := digest.FromBytes(b)
			if _, err := blobstore.Put(ctx, s, bytes.NewReader(b), int64(len(b)), d); err != nil {
				t.Fatal(err)
			}
			n, err := s.DeleteIf(ctx, d, tt.still)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("DeleteIf: %v, want %v", err, tt.wantErr)
			}
			_, serr := s.Stat(ctx, d)
			if gone := errors.Is(serr, blobstore.ErrNotFound); gone != tt.gone {
				t.Fatalf("gone = %v, want %v (DeleteIf %d, %v)", gone, tt.gone, n, err)
			}
			if tt.gone && n != int64(len(b)) {
				t.Errorf("freed %d bytes, want %d", n, len(b))
			}
		})
	}
}

// A commit of the digest being deleted waits for the delete, so the new
// bytes land after it and stay.
func TestCommitWaitsForDelete(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	b := []byte("reused")
	d := digest.FromBytes(b)
	if _, err := blobstore.Put(ctx, s, bytes.NewReader(b), int64(len(b)), d); err != nil {
		t.Fatal(err)
	}
	inCheck, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s.DeleteIf(ctx, d, func(context.Context) (bool, error) {
			close(inCheck)
			<-release // the re-check read an old touch
			return true, nil
		})
	})
	<-inCheck
	committed := make(chan error, 1)
	wg.Go(func() {
		_, err := blobstore.Put(ctx, s, bytes.NewReader(b), int64(len(b)), d)
		committed <- err
	})
	select {
	case err := <-committed:
		t.Fatalf("commit went through during a delete's re-check: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, d); err != nil {
		t.Fatalf("the blob committed after the delete is gone: %v", err)
	}
}

func TestPurgeTemp(t *testing.T) {
	ctx := context.Background()
	for _, dry := range []bool{true, false} {
		s, dir := newStore(t)
		w, err := s.Writer(ctx) // a live session: recent, kept
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		w.Write([]byte("live"))
		old := filepath.Join(dir, "tmp", "blob-leaked")
		if err := os.WriteFile(old, []byte("leaked bytes"), 0o644); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(-3 * time.Hour)
		os.Chtimes(old, past, past)
		n, size, err := s.PurgeTemp(time.Now().Add(-2*time.Hour), dry)
		if err != nil || n != 1 || size != int64(len("leaked bytes")) {
			t.Fatalf("dry=%v: PurgeTemp = %d, %d, %v; want 1 file of %d bytes", dry, n, size, err, len("leaked bytes"))
		}
		if _, err := os.Stat(old); (err == nil) != dry {
			t.Errorf("dry=%v: leaked file exists: %v", dry, err == nil)
		}
		if _, err := w.Commit(ctx, -1, digest.FromBytes([]byte("live"))); err != nil {
			t.Errorf("dry=%v: live session's commit: %v", dry, err)
		}
	}
}
