// Package blobstore is Shoal's content-addressed blob store: blobs are named by
// their digest, verified on commit, and stored with their metainfo (piece
// hashes) beside them.
//
// The Store interface is made of small roles so that a caller asks only for
// what it uses; Local is the filesystem implementation and storetest holds the
// conformance suite every implementation must pass.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

// Errors returned (wrapped) by stores; check them with errors.Is.
var (
	// ErrNotFound: no committed blob has this digest.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch: the written bytes do not hash to the expected digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch: the written byte count differs from the expected size.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrClosed: the writer was already committed or aborted.
	ErrClosed = errors.New("writer closed")
)

// Info describes a committed blob.
type Info struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// Reader reads one committed blob. It is safe for concurrent ReadAt calls.
type Reader interface {
	io.ReadSeekCloser
	io.ReaderAt
	// Size is the blob's size in bytes.
	Size() int64
}

// Provider reads committed blobs.
type Provider interface {
	// Stat returns ErrNotFound if d is not committed.
	Stat(ctx context.Context, d digest.Digest) (Info, error)
	// Open returns ErrNotFound if d is not committed. The caller closes the reader.
	Open(ctx context.Context, d digest.Digest) (Reader, error)
}

// Writer receives the bytes of one blob. Nothing is visible to Provider until
// Commit succeeds; Close without Commit discards everything. A Writer is not
// safe for concurrent use.
type Writer interface {
	io.Writer
	// Written is the number of bytes written so far.
	Written() int64
	// Commit verifies that the bytes written have the given size (if size is
	// negative it is not checked) and digest, makes the blob durable and
	// visible, and stores its metainfo. On ErrDigestMismatch or
	// ErrSizeMismatch the bytes are discarded. The writer is closed afterwards
	// either way.
	Commit(ctx context.Context, size int64, want digest.Digest) (Info, error)
	// Close aborts an uncommitted writer; after Commit it is a no-op.
	Close() error
	// Release lets go of what the writer holds open between writes (its
	// file descriptor) while keeping its state, hash included; the next
	// Write or Commit takes it back. A writer that lives across requests
	// (an upload session) calls it after each one, so that idle sessions
	// cost memory, not descriptors. An error is sticky: Commit fails too.
	Release() error
}

// Ingester starts new blobs.
type Ingester interface {
	// Writer starts a new blob.
	Writer(ctx context.Context) (Writer, error)
}

// Manager lists and removes blobs.
type Manager interface {
	// Delete removes a blob and its metainfo; ErrNotFound if absent.
	Delete(ctx context.Context, d digest.Digest) error
	// Walk calls fn for every committed blob, in no particular order. An
	// error from fn stops the walk and is returned.
	Walk(ctx context.Context, fn func(Info) error) error
}

// MetaInfoProvider returns the metainfo (piece layout and hash chain) of
// committed blobs.
type MetaInfoProvider interface {
	// MetaInfo returns ErrNotFound if d is not committed. If the metainfo
	// was lost (a crash between commit and its write), it is recomputed.
	MetaInfo(ctx context.Context, d digest.Digest) (*metainfo.MetaInfo, error)
}

// Store is the whole blob store.
type Store interface {
	Provider
	Ingester
	Manager
	MetaInfoProvider
}

// Put writes a whole blob from r and commits it as want with the given size
// (negative: unchecked).
func Put(ctx context.Context, s Ingester, r io.Reader, size int64, want digest.Digest) (Info, error) {
	w, err := s.Writer(ctx)
	if err != nil {
		return Info{}, err
	}
	defer w.Close()
	if _, err := io.Copy(w, r); err != nil {
		return Info{}, fmt.Errorf("put %s: %w", want, err)
	}
	return w.Commit(ctx, size, want)
}
