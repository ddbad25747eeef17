package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/httprange"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/repostore"
)

// parseDigest turns a path or query digest into a DIGEST_INVALID error when
// malformed.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", ocierr.Wrap(ocierr.DigestInvalid, err)
	}
	return d, nil
}

// repoHasContent reports whether repo may read d through the blob endpoint:
// a linked blob, or one of its manifests.
func (s *Server) repoHasContent(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	ok, err := s.repos.HasBlob(ctx, repo, d)
	if err != nil || ok {
		return ok, err
	}
	_, err = s.repos.GetManifest(ctx, repo, d)
	if errors.Is(err, repostore.ErrManifestUnknown) {
		return false, nil
	}
	return err == nil, err
}

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.arg)
	if err != nil {
		return err
	}
	if reg, urepo, ok := s.upstreams.Lookup(rt.name); ok {
		// A HEAD too: an agent's pull check, after which it follows the
		// blob's metainfo as it grows and fetches pieces as they land.
		g, err := s.arrivingFor(r.Context(), w, reg, rt.name, urepo, d)
		if err != nil {
			return err
		}
		if g != nil {
			defer g.Release()
			if r.Method == http.MethodGet {
				release, err := s.admitReader(w)
				if err != nil {
					return err
				}
				defer release()
			}
			return s.serveArriving(w, r, g)
		}
		if err := s.pullBlob(r.Context(), w, reg, rt.name, urepo, d); err != nil {
			return err
		}
	}
	ok, err := s.repoHasContent(r.Context(), rt.name, d)
	if err != nil {
		return err
	}
	if !ok {
		return ocierr.New(ocierr.BlobUnknown, "%s in %s", d, rt.name)
	}
	if r.Method == http.MethodGet {
		release, err := s.admitReader(w)
		if err != nil {
			return err
		}
		defer release()
	}
	rd, err := s.blobs.Open(r.Context(), d)
	if errors.Is(err, blobstore.ErrNotFound) && s.cluster != nil {
		// Indexed but not here: this origin is not an owner, or the
		// blob has not reached it yet.
		return s.proxyBlob(w, r, d)
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		return ocierr.New(ocierr.BlobUnknown, "%s", d)
	}
	if err != nil {
		return err
	}
	defer rd.Close()
	return s.serveBlob(w, r, d, rd)
}

// admitReader admits one blob reader within the uplink, or answers 429
// with when to come back.
func (s *Server) admitReader(w http.ResponseWriter) (release func(), err error) {
	release, after, ok := s.readers.admit()
	if !ok {
		s.metrics.readersRefused.Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int((after+time.Second-1)/time.Second)))
		return nil, ocierr.New(ocierr.TooManyRequests, "the origin's uplink serves all the readers it can")
	}
	return release, nil
}

// serveBlob answers GET or HEAD (with Range) for a stored blob.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, rd blobstore.Reader) error {
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+d.String()+`"`)
	span, status, err := httprange.Select(h, r, rd.Size())
	if err != nil {
		return ocierr.Wrap(ocierr.RangeInvalid, err)
	}
	h.Set("Content-Length", strconv.FormatInt(span.Length, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead || span.Length == 0 {
		return nil
	}
	var out io.Writer = w
	if s.egress != nil {
		out = &pace.Writer{Ctx: r.Context(), W: w, Lim: s.egress}
	}
	n, err := s.sendBlob(r.Context(), out, rd, d, span)
	s.metrics.bytesOut.Add(float64(n))
	if errors.Is(err, errCorrupt) {
		// Headers are out; only a broken connection tells the client the
		// body is bad. Never end a wrong body cleanly.
		panic(http.ErrAbortHandler)
	}
	return err
}

// errCorrupt: the stored bytes do not match their digest.
var errCorrupt = errors.New("stored blob is corrupt")

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// sendBlob writes span of blob d. A blob already verified in this process
// goes out with sendfile. Otherwise the bytes are checked as they go: a whole
// body against the digest, holding back its last buffer until the sum
// matches; a partial one piece by piece against the metainfo. On a mismatch
// the blob is removed and errCorrupt returned before the span is complete.
func (s *Server) sendBlob(ctx context.Context, w io.Writer, rd blobstore.Reader, d digest.Digest, span httprange.Span) (int64, error) {
	if _, ok := s.verified.Load(d); ok {
		if _, err := rd.Seek(span.Start, io.SeekStart); err != nil {
			return 0, err
		}
		var src io.Reader = rd
		if fr, ok := rd.(*blobstore.FileReader); ok {
			src = fr.File // sendfile needs the *os.File itself
		}
		return io.CopyN(w, src, span.Length)
	}
	if span.Start == 0 && span.Length == rd.Size() {
		return s.sendWhole(ctx, w, rd, d)
	}
	return s.sendPieces(ctx, w, rd, d, span)
}

func (s *Server) sendWhole(ctx context.Context, w io.Writer, rd blobstore.Reader, d digest.Digest) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	h := d.Algorithm().Hash()
	var sent int64
	size := rd.Size()
	for off := int64(0); off < size; {
		n, err := rd.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == size) {
			return sent, fmt.Errorf("read blob %s: %w", d, err)
		}
		h.Write(buf[:n])
		off += int64(n)
		if off == size && digest.FromHash(d.Algorithm(), h) != d {
			return sent, s.quarantine(ctx, d, "whole-blob digest mismatch")
		}
		m, err := w.Write(buf[:n])
		sent += int64(m)
		if err != nil {
			return sent, err
		}
	}
	s.verified.Store(d, struct{}{})
	return sent, nil
}

func (s *Server) sendPieces(ctx context.Context, w io.Writer, rd blobstore.Reader, d digest.Digest, span httprange.Span) (int64, error) {
	mi, err := s.blobs.MetaInfo(ctx, d)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, mi.PieceLength)
	var sent int64
	first, last := int(span.Start/mi.PieceLength), int(span.End()/mi.PieceLength)
	for i := first; i <= last; i++ {
		off, n := mi.PieceSpan(i)
		p := buf[:n]
		if _, err := rd.ReadAt(p, off); err != nil && !errors.Is(err, io.EOF) {
			return sent, fmt.Errorf("read blob %s: %w", d, err)
		}
		if !mi.VerifyPiece(i, p) {
			return sent, s.checkAfterBadPiece(ctx, d, i)
		}
		lo := max(span.Start, off) - off
		hi := min(span.Start+span.Length, off+n) - off
		m, err := w.Write(p[lo:hi])
		sent += int64(m)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// checkAfterBadPiece decides whether the blob or its metainfo is wrong. Either
// way the current response is aborted; the next one is served from a good
// state.
func (s *Server) checkAfterBadPiece(ctx context.Context, d digest.Digest, piece int) error {
	rd, err := s.blobs.Open(ctx, d)
	if err != nil {
		return err
	}
	defer rd.Close()
	h := d.Algorithm().Hash()
	if _, err := io.Copy(h, io.NewSectionReader(rd, 0, rd.Size())); err != nil {
		return err
	}
	if digest.FromHash(d.Algorithm(), h) != d {
		return s.quarantine(ctx, d, fmt.Sprintf("piece %d and whole-blob digest mismatch", piece))
	}
	s.log.Warn("metainfo did not match a good blob; it will be rebuilt", "digest", d, "piece", piece)
	s.verified.Store(d, struct{}{})
	return errCorrupt
}

// quarantine removes a blob whose bytes do not match its digest, so it is
// never served again; a client re-pushes it.
func (s *Server) quarantine(ctx context.Context, d digest.Digest, why string) error {
	s.metrics.verifyFailures.Inc()
	s.verified.Delete(d)
	s.log.Error("stored blob is corrupt; removing it", "digest", d, "reason", why)
	if err := s.blobs.Delete(ctx, d); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		s.log.Error("remove corrupt blob", "digest", d, "err", err)
	}
	return errCorrupt
}

func (s *Server) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.arg)
	if err != nil {
		return err
	}
	err = s.repos.UnlinkBlob(r.Context(), rt.name, d)
	if errors.Is(err, repostore.ErrBlobUnknown) {
		return ocierr.New(ocierr.BlobUnknown, "%s in %s", d, rt.name)
	}
	if err != nil {
		return err
	}
	// The bytes stay in the blob store: another repository may link them.
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
