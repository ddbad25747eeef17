package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-project/shoal/pkg/atomicfile"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

// Local stores blobs in a directory:
//
//	<root>/blobs/<alg>/<hex[:2]>/<hex>      blob bytes
//	<root>/metainfo/<alg>/<hex[:2]>/<hex>   metainfo (protobuf)
//	<root>/tmp/                             writers in progress
//
// Every file is written to tmp, fsynced and renamed into place, so a crash
// leaves either the whole verified blob or nothing under blobs/. tmp is
// emptied when the store is opened.
type Local struct {
	root string
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating if needed) a store rooted at dir and removes any
// writer left behind by a crash.
func NewLocal(dir string) (*Local, error) {
	s := &Local{root: dir}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("blobstore: clean %s: %w", s.tmpDir(), err)
	}
	for _, d := range []string{s.tmpDir(), filepath.Join(dir, "blobs"), filepath.Join(dir, "metainfo")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	return s, nil
}

func (s *Local) tmpDir() string { return filepath.Join(s.root, "tmp") }

func (s *Local) path(kind string, d digest.Digest) string {
	hex := d.Hex()
	return filepath.Join(s.root, kind, string(d.Algorithm()), hex[:2], hex)
}

// checkDigest refuses digests that did not come through digest.Parse: the
// digest becomes a path, so this is the last guard against traversal.
func checkDigest(d digest.Digest) error {
	if _, err := digest.Parse(string(d)); err != nil {
		return err
	}
	return nil
}

// Stat implements Provider.
func (s *Local) Stat(_ context.Context, d digest.Digest) (Info, error) {
	if err := checkDigest(d); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.path("blobs", d))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Open implements Provider. The reader is an *os.File underneath; File gives
// it to callers that can use sendfile.
func (s *Local) Open(_ context.Context, d digest.Digest) (Reader, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path("blobs", d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return &FileReader{File: f, size: fi.Size()}, nil
}

// FileReader is the Reader of Local: an open file and its size.
type FileReader struct {
	*os.File
	size int64
}

// Size implements Reader.
func (r *FileReader) Size() int64 { return r.size }

// Delete implements Manager.
func (s *Local) Delete(_ context.Context, d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	if _, err := os.Stat(s.path("blobs", d)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	// Metainfo first: a crash between the two leaves a blob whose
	// metainfo is rebuilt on demand, never metainfo of a missing blob.
	if err := os.Remove(s.path("metainfo", d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete metainfo %s: %w", d, err)
	}
	err := os.Remove(s.path("blobs", d))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// Walk implements Manager.
func (s *Local) Walk(ctx context.Context, fn func(Info) error) error {
	base := filepath.Join(s.root, "blobs")
	return filepath.WalkDir(base, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(base, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 3 {
			return nil
		}
		d, err := digest.Parse(parts[0] + ":" + parts[2])
		if err != nil {
			return nil // not ours; never fail a walk on a stray file
		}
		fi, err := de.Info()
		if err != nil {
			return nil // removed during the walk
		}
		return fn(Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// MetaInfo implements MetaInfoProvider.
func (s *Local) MetaInfo(ctx context.Context, d digest.Digest) (*metainfo.MetaInfo, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.path("metainfo", d))
	if err == nil {
		if m, err := metainfo.Unmarshal(b); err == nil && m.Digest == d {
			return m, nil
		}
		// A damaged metainfo file, or one cut by an older piece-length
		// rule, is rebuilt from the blob below.
	}
	r, err := s.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	m, err := metainfo.Compute(d, r, r.Size())
	if err != nil {
		return nil, err
	}
	if err := s.writeMetaInfo(m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Local) writeMetaInfo(m *metainfo.MetaInfo) error {
	b, err := m.Marshal()
	if err == nil {
		err = atomicfile.WriteFile(s.path("metainfo", m.Digest), b, 0o644)
	}
	if err != nil {
		return fmt.Errorf("metainfo %s: %w", m.Digest, err)
	}
	return nil
}

// Writer implements Ingester.
func (s *Local) Writer(_ context.Context) (Writer, error) {
	f, err := os.CreateTemp(s.tmpDir(), "blob-")
	if err != nil {
		return nil, fmt.Errorf("blobstore: new writer: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("blobstore: new writer: %w", err)
	}
	return &localWriter{s: s, f: f, path: f.Name(), id: fi,
		hasher: metainfo.NewHasher(digest.SHA256, metainfo.MinPieceLength)}, nil
}

// localWriter hashes as it writes, once: the sha256 digest and the chain
// at the smallest piece length come from the same pass, and the chain at
// any larger one is a subset of it, so a commit of a sha256 blob needs no
// second read.
//
// Because the hash lives in memory, the file may be closed between writes
// (Release) and reopened without reading it again. What is committed is
// the file, so a reopen checks that it is still the one this writer
// created and holds exactly the bytes hashed; anything else fails the
// writer rather than commit bytes the digest was not computed over.
type localWriter struct {
	s      *Local
	f      *os.File // nil while released
	path   string
	id     os.FileInfo // the temp file as created, for os.SameFile
	hasher *metainfo.Hasher
	n      int64
	closed bool
	err    error // sticky write error
}

// open takes the file back after Release.
func (w *localWriter) open() error {
	if w.f != nil {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	f, err := os.OpenFile(w.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		w.err = fmt.Errorf("blobstore: reopen: %w", err)
		return w.err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("blobstore: reopen: %w", err)
	case !os.SameFile(fi, w.id):
		err = errors.New("blobstore: reopen: the temp file was replaced")
	case fi.Size() != w.n:
		err = fmt.Errorf("blobstore: reopen: the temp file has %d bytes, %d were written", fi.Size(), w.n)
	}
	if err != nil {
		f.Close()
		w.err = err
		return err
	}
	w.f = f
	return nil
}

func (w *localWriter) Release() error {
	if w.closed || w.f == nil {
		return w.err
	}
	err := w.f.Close()
	w.f = nil
	if err != nil && w.err == nil {
		// A failed close can mean lost writes (NFS reports them here).
		w.err = fmt.Errorf("blobstore: release: %w", err)
	}
	return w.err
}

func (w *localWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if err := w.open(); err != nil {
		return 0, err
	}
	n, err := w.f.Write(p)
	w.hasher.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("blobstore: write: %w", err)
		return n, w.err
	}
	return n, nil
}

func (w *localWriter) Written() int64 { return w.n }

func (w *localWriter) Commit(ctx context.Context, size int64, want digest.Digest) (Info, error) {
	if w.closed {
		return Info{}, ErrClosed
	}
	defer w.Close()
	if w.err != nil {
		return Info{}, w.err
	}
	if err := w.open(); err != nil {
		return Info{}, err
	}
	if err := checkDigest(want); err != nil {
		return Info{}, err
	}
	if size >= 0 && size != w.n {
		return Info{}, fmt.Errorf("blob %s: wrote %d bytes, want %d: %w", want, w.n, size, ErrSizeMismatch)
	}
	got, err := w.digest(want.Algorithm())
	if err != nil {
		return Info{}, err
	}
	if got != want {
		return Info{}, fmt.Errorf("blob %s: content hashes to %s: %w", want, got, ErrDigestMismatch)
	}
	if err := w.f.Sync(); err != nil {
		return Info{}, fmt.Errorf("blob %s: sync: %w", want, err)
	}
	if err := w.f.Close(); err != nil {
		return Info{}, fmt.Errorf("blob %s: close: %w", want, err)
	}
	if err := atomicfile.Install(w.path, w.s.path("blobs", want)); err != nil {
		return Info{}, fmt.Errorf("blob %s: install: %w", want, err)
	}
	w.closed = true
	mi, err := w.metaInfo(ctx, want)
	if err != nil {
		return Info{}, err
	}
	if err := w.s.writeMetaInfo(mi); err != nil {
		return Info{}, err
	}
	return w.s.Stat(ctx, want)
}

// digest returns the digest of what was written, in algorithm a.
func (w *localWriter) digest(a digest.Algorithm) (digest.Digest, error) {
	if a == digest.SHA256 {
		return w.hasher.Digest(), nil
	}
	h := a.Hash()
	if _, err := io.Copy(h, io.NewSectionReader(w.f, 0, w.n)); err != nil {
		return "", fmt.Errorf("blobstore: rehash: %w", err)
	}
	return digest.FromHash(a, h), nil
}

// metaInfo returns the chain, recomputing it from the committed file when
// the blob is not sha256.
func (w *localWriter) metaInfo(ctx context.Context, d digest.Digest) (*metainfo.MetaInfo, error) {
	if d.Algorithm() == digest.SHA256 {
		return w.hasher.MetaInfoAt(d, metainfo.PieceLength(w.n))
	}
	r, err := w.s.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return metainfo.Compute(d, r, r.Size())
}

func (w *localWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.f != nil {
		w.f.Close()
	}
	if err := os.Remove(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: discard: %w", err)
	}
	return nil
}

// Adopt moves a complete file at path (on the store's filesystem) into the
// store as mi's blob, with mi as its metainfo. The caller vouches that the
// file hashes to mi.Digest — a piecefile checks that as the pieces land —
// so the bytes are not read again; only the size is checked.
func (s *Local) Adopt(_ context.Context, path string, mi *metainfo.MetaInfo) error {
	if err := checkDigest(mi.Digest); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("adopt %s: %w", mi.Digest, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != mi.Size {
		err = fmt.Errorf("%d bytes, metainfo says %d: %w", fi.Size(), mi.Size, ErrSizeMismatch)
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("adopt %s: %w", mi.Digest, err)
	}
	if err := atomicfile.Install(path, s.path("blobs", mi.Digest)); err != nil {
		return fmt.Errorf("adopt %s: %w", mi.Digest, err)
	}
	return s.writeMetaInfo(mi)
}
