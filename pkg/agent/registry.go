package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/httprange"
	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/piecefile"
	"github.com/shoal-project/shoal/pkg/recorder"
	"github.com/shoal-project/shoal/pkg/reference"
)

// acceptAll is what the agent asks origins for when a client sends no
// Accept header: every manifest type Shoal stores.
const acceptAll = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// serveV2 is the read-only registry containerd pulls from.
func (a *Agent) serveV2(w http.ResponseWriter, r *http.Request) {
	sw := recorder.New(w)
	kind := "other"
	defer func() {
		a.metrics.requests.WithLabelValues(kind, strconv.Itoa(sw.Status())).Inc()
	}()
	sw.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	err := a.route(sw, r, &kind)
	if err == nil {
		return
	}
	if sw.Code != 0 {
		// Part of a body is out: only a broken connection tells the
		// client it is wrong. Never end a wrong body cleanly.
		a.log.Warn("aborting a response", "path", r.URL.Path, "err", err)
		panic(http.ErrAbortHandler)
	}
	var oe *ocierr.Error
	if !errors.As(err, &oe) {
		a.log.Warn("request failed", "path", r.URL.Path, "err", err)
		err = ocierr.New(ocierr.Unavailable, "%v", err).WithStatus(http.StatusServiceUnavailable)
	}
	ocierr.Write(sw, r, err)
}

func (a *Agent) route(w http.ResponseWriter, r *http.Request, kind *string) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return ocierr.New(ocierr.Unsupported, "the agent is read-only").WithStatus(http.StatusMethodNotAllowed)
	}
	path := r.URL.EscapedPath()
	if path == "/v2/" || path == "/v2" {
		*kind = "base"
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
		return nil
	}
	ns := r.URL.Query().Get("ns")
	up, ok := a.cfg.Registries[ns]
	rest := strings.TrimPrefix(path, "/v2/")
	if !ok {
		// An upstream an origin cluster pulls through: its repositories
		// live there under a prefix.
		var adv advertised
		if adv, ok = a.adverts.lookup(ns); ok {
			up = a.cfg.Registries[adv.registry]
			rest = adv.prefix + "/" + rest
			// The first pull of a blob waits while the origin fetches
			// it from the upstream: longer than the server's write
			// timeout allows a response that has not begun.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(a.cfg.UpstreamTimeout))
		}
	}
	if !ok {
		// Fast, so containerd moves on to its next host.
		return ocierr.New(ocierr.NameUnknown, "registry %q is not mirrored here", ns)
	}
	if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		*kind = "manifest"
		return a.serveManifest(w, r, ns, up, rest[:i], rest[i+len("/manifests/"):])
	}
	if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
		*kind = "blob"
		name := rest[:i]
		if err := reference.ValidateName(name); err != nil {
			return ocierr.Wrap(ocierr.NameInvalid, err)
		}
		d, err := digest.Parse(rest[i+len("/blobs/"):])
		if err != nil {
			return ocierr.Wrap(ocierr.DigestInvalid, err)
		}
		if err := a.checkPull(w, r, ns, up, name, "blobs/"+d.String(), ocierr.BlobUnknown); err != nil {
			return err
		}
		return a.serveBlob(w, r, up, name, d)
	}
	return ocierr.New(ocierr.Unsupported, "no endpoint at %s on the agent", r.URL.Path).WithStatus(http.StatusNotFound)
}

func (a *Agent) serveManifest(w http.ResponseWriter, r *http.Request, ns string, up Upstream, name, refStr string) error {
	if err := reference.ValidateName(name); err != nil {
		return ocierr.Wrap(ocierr.NameInvalid, err)
	}
	ref, err := reference.ParseRef(refStr)
	if err != nil {
		return ocierr.Wrap(ocierr.ManifestInvalid, err)
	}
	// The manifest itself is fetched with the agent's own credentials and
	// shared by every client; whether this client may have it is the
	// origin's answer to the client's.
	if err := a.checkPull(w, r, ns, up, name, "manifests/"+ref.String(), ocierr.ManifestUnknown); err != nil {
		return err
	}
	key := ns + "/" + name + "@" + refStr
	m, ok := a.tags.get(key, time.Now())
	if !ok {
		if m, err = a.fetchManifest(r.Context(), up, name, ref, r.Header.Get("Accept")); err != nil {
			return err
		}
		if ref.IsDigest() {
			a.tags.put(key, m)
		} else {
			m.expires = time.Now().Add(a.cfg.TagTTL)
			a.tags.put(key, m)
			a.tags.put(ns+"/"+name+"@"+m.digest.String(), cachedManifest{body: m.body, mediaType: m.mediaType, digest: m.digest})
		}
	}
	h := w.Header()
	h.Set("Content-Type", m.mediaType)
	h.Set("Docker-Content-Digest", m.digest.String())
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(m.body)
	}
	return nil
}

// fetchManifest reads a manifest from the origins and checks its digest.
func (a *Agent) fetchManifest(ctx context.Context, up Upstream, name string, ref reference.Ref, accept string) (cachedManifest, error) {
	if accept == "" {
		accept = acceptAll
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.OriginTimeout)
	defer cancel()
	resp, err := a.originGet(ctx, up, http.MethodGet, "/v2/"+name+"/manifests/"+ref.String(), http.Header{"Accept": {accept}})
	if errors.Is(err, errNotFound) {
		return cachedManifest{}, ocierr.New(ocierr.ManifestUnknown, "%s:%s", name, ref)
	}
	if err != nil {
		return cachedManifest{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cachedManifest{}, fmt.Errorf("manifest %s:%s: origin said %s", name, ref, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, manifest.MaxSize+1))
	if err != nil {
		return cachedManifest{}, fmt.Errorf("manifest %s:%s: %w", name, ref, err)
	}
	if len(body) > manifest.MaxSize {
		return cachedManifest{}, fmt.Errorf("manifest %s:%s over %d bytes", name, ref, manifest.MaxSize)
	}
	sum := sha256.Sum256(body)
	got := digest.Digest("sha256:" + hex.EncodeToString(sum[:]))
	want := ref.Digest
	if want == "" {
		want = digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	}
	if want != "" && want.Algorithm() == digest.SHA256 && got != want {
		return cachedManifest{}, fmt.Errorf("manifest %s:%s hashes to %s, not %s", name, ref, got, want)
	}
	return cachedManifest{body: body, mediaType: resp.Header.Get("Content-Type"), digest: got}, nil
}

func (a *Agent) serveBlob(w http.ResponseWriter, r *http.Request, up Upstream, name string, d digest.Digest) error {
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+d.String()+`"`)
	start := time.Now()
	// A blob can take as long as the swarm does: the server's limits on a
	// whole response would cut it, so they bound each write instead.
	st := httpserver.NewStream(w, a.cfg.HTTPTimeouts.Write)
	var rest *resume
	if b, ok := a.cache.open(r.Context(), d); ok {
		var err error
		rest, err = a.serveCached(w, r, st, b, start)
		b.Close()
		if !errors.Is(err, errCorrupt) {
			return err
		}
		// Evicted: fetch it again, and go on from where the body broke
		// off if it had begun.
	}
	f := a.fetch(d, name, up)
	select {
	case <-f.ready:
	case <-r.Context().Done():
		return r.Context().Err()
	}
	st.Progress() // the wait is not the client's: the answer gets its own time
	if f.prepErr != nil {
		if errors.Is(f.prepErr, errNotFound) {
			return ocierr.New(ocierr.BlobUnknown, "%s", d)
		}
		return f.prepErr
	}
	if rest != nil {
		if f.mi.Size != rest.size {
			return fmt.Errorf("blob %s: %d bytes fetched again, %d cached", d, f.mi.Size, rest.size)
		}
		return a.stream(r.Context(), w, st, f, d, rest.span, rest.status, start, true)
	}
	span, status, err := httprange.Select(h, r, f.mi.Size)
	if err != nil {
		return ocierr.Wrap(ocierr.RangeInvalid, err)
	}
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(span.Length, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return nil
	}
	return a.stream(r.Context(), w, st, f, d, span, status, start, false)
}

// resume is the rest of a response whose cached blob turned out corrupt
// after the status line went out.
type resume struct {
	span   httprange.Span
	status int
	size   int64
}

// serveCached serves a cached blob. Like the origin, it serves one range
// or the whole body: a list of ranges gets the whole blob with 200 (RFC
// 9110 lets a server ignore Range), never a multipart body that many tiny
// ranges make larger than the blob itself.
//
// A blob whose every piece this process has verified goes out as it is,
// by sendfile. Otherwise each piece is verified just before it is sent
// (read and hashed, then sent from the page cache), rather than the whole
// blob before the first byte: a streaming client then waits one piece's
// hash (about a millisecond at 1 MiB), not the whole blob's (over half a
// second at 1 GiB), and a Range read hashes only the pieces it touches. A
// piece that fails evicts the blob and returns errCorrupt, with the rest
// of the response if the status line has gone out; nothing of the bad
// piece is sent.
func (a *Agent) serveCached(w http.ResponseWriter, r *http.Request, st *httpserver.Stream, b *cachedBlob, start time.Time) (*resume, error) {
	mi := b.mi
	h := w.Header()
	span, status, err := httprange.Select(h, r, mi.Size)
	if err != nil {
		return nil, ocierr.Wrap(ocierr.RangeInvalid, err)
	}
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(span.Length, 10))
	if r.Method == http.MethodHead || span.Length == 0 {
		w.WriteHeader(status)
		return nil, nil
	}
	rd := seekable(b.rd)
	if b.verified() {
		w.WriteHeader(status)
		a.metrics.ttfb.Observe(time.Since(start).Seconds())
		if _, err := rd.Seek(span.Start, io.SeekStart); err != nil {
			return nil, fmt.Errorf("blob %s: %w", mi.Digest, err)
		}
		n, _ := st.Copy(w, rd, span.Length)
		a.metrics.served.Add(float64(n))
		// A short copy is a client gone or stalled past the write
		// timeout; Content-Length tells any client that the body is cut.
		return nil, nil
	}
	pb := checkBufs.Get().(*[]byte)
	defer checkBufs.Put(pb)
	wrote := false
	for off, end := span.Start, span.Start+span.Length; off < end; {
		i := int(off / mi.PieceLength)
		if err := b.CheckPiece(i, *pb); err != nil {
			if !wrote {
				return nil, err
			}
			return &resume{span: httprange.Span{Start: off, Length: end - off}, status: status, size: mi.Size}, err
		}
		if !wrote {
			w.WriteHeader(status)
			a.metrics.ttfb.Observe(time.Since(start).Seconds())
			wrote = true
		}
		if _, err := rd.Seek(off, io.SeekStart); err != nil {
			return nil, fmt.Errorf("blob %s: %w", mi.Digest, err)
		}
		want := min(int64(i+1)*mi.PieceLength, end) - off
		n, _ := st.Copy(w, rd, want)
		a.metrics.served.Add(float64(n))
		if n < want {
			return nil, nil // the client went away or stalled
		}
		off += n
	}
	return nil, nil
}

// stream writes span of a blob under download as its pieces are verified
// (wrote: the status line is already out). The piece holding the blob's
// last byte is the one checked against the digest itself, so a body that
// does not match its digest never ends cleanly.
func (a *Agent) stream(ctx context.Context, w http.ResponseWriter, st *httpserver.Stream, f *inflight, d digest.Digest, span httprange.Span, status int, start time.Time, wrote bool) error {
	mi := f.mi
	src := &blobSource{a: a, f: f, d: d}
	defer src.close()
	last := mi.NumPieces() - 1
	for off, end := span.Start, span.Start+span.Length; off < end; {
		i := int(off / mi.PieceLength)
		if !f.pf.Have(i) {
			// Tell the scheduler where the reader is, so the pieces just
			// ahead go first.
			latest(f.stream, i)
		}
		if err := a.waitPiece(ctx, f, i, i == last); err != nil {
			return err
		}
		if !wrote {
			w.WriteHeader(status)
			a.metrics.ttfb.Observe(time.Since(start).Seconds())
			wrote = true
		}
		pieceEnd := min(int64(i+1)*mi.PieceLength, end)
		rd, err := src.reader(ctx, i)
		if err != nil {
			return err
		}
		if _, err := rd.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		n, err := st.Copy(w, rd, pieceEnd-off)
		a.metrics.served.Add(float64(n))
		if err != nil {
			return nil // the client went away (a short file is caught by the wait above)
		}
		off += n
	}
	return nil
}

// waitPiece blocks until piece i can be read: verified in the piecefile,
// or the download finished and the blob is in the cache. The final piece
// waits until every piece is held — each checked as a link of the digest's
// hash chain, so the blob then matches its digest — but not for the sync
// into the cache, which is the download's business, not the client's.
func (a *Agent) waitPiece(ctx context.Context, f *inflight, i int, final bool) error {
	if !final {
		err := f.pf.Wait(ctx, i)
		if err == nil {
			return nil
		}
		if !errors.Is(err, piecefile.ErrClosed) {
			return err
		}
	} else {
		select {
		case <-f.pf.Done():
			if f.pf.Complete() {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// latest puts i in ch (capacity one), replacing a value not yet taken.
func latest(ch chan int, i int) {
	for {
		select {
		case ch <- i:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// blobSource reads a blob being served while it downloads: from the
// download's file — only pieces the caller has waited for — and, once the
// download has moved into the cache under another name, from the cache.
// Either is opened once for the rest of the response, and is an *os.File
// when it can be, so the body goes out by sendfile(2).
type blobSource struct {
	a      *Agent
	f      *inflight
	d      digest.Digest
	rd     io.ReadSeeker
	closer io.Closer
	cached *cachedBlob
}

// reader is where to read piece i from. Pieces read from the cache are
// checked like any cached read: the download that put the blob there
// verified it, but a cache entry older than the download would not have.
func (s *blobSource) reader(ctx context.Context, i int) (io.ReadSeeker, error) {
	if s.cached != nil {
		if err := s.cached.CheckPiece(i, nil); err != nil {
			return nil, err
		}
	}
	if s.rd != nil {
		return s.rd, nil
	}
	if f, err := os.Open(s.f.pf.Path()); err == nil {
		// The same inode whether or not it is renamed into the cache
		// meanwhile.
		s.rd, s.closer = f, f
		return f, nil
	}
	select {
	case <-s.f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.f.err != nil {
		return nil, s.f.err
	}
	b, ok := s.a.cache.open(ctx, s.d)
	if !ok {
		return nil, fmt.Errorf("blob %s left the cache while being served", s.d)
	}
	s.cached, s.rd = b, seekable(b.rd) // closing b closes rd
	if err := b.CheckPiece(i, nil); err != nil {
		return nil, err
	}
	return s.rd, nil
}

// seekable is rd as the copy should see it: the *os.File itself when
// there is one, since sendfile needs it.
func seekable(rd blobstore.Reader) io.ReadSeeker {
	if fr, ok := rd.(*blobstore.FileReader); ok {
		return fr.File
	}
	return rd
}

func (s *blobSource) close() {
	if s.closer != nil {
		s.closer.Close()
	}
	if s.cached != nil {
		s.cached.Close()
	}
}
