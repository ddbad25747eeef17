package origin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/httprange"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/reference"
)

// upload is one blob upload session. Its writer lives across requests; mu
// makes requests to the same session take turns. Between requests the
// writer is released: an idle session holds its hash state in memory and
// no file descriptor.
type upload struct {
	mu      sync.Mutex
	id      string
	repo    string
	client  string // the per-client limit it counts against
	w       blobstore.Writer
	started time.Time
	touched time.Time // guarded by uploads.mu
}

// errUploadsFull: a new session would pass a limit on open sessions.
var errUploadsFull = errors.New("too many upload sessions")

// uploadRetryAfter is the Retry-After sent with a refused session. Sessions
// end with their commit, usually seconds into a push, and at the latest
// after the idle timeout; half a minute neither hammers the origin nor
// strands a CI job for long.
const uploadRetryAfter = 30 * time.Second

// uploads is the table of open sessions, bounded in total and per client:
// a session costs little now, but an unbounded number of them is memory
// and disk anyone who may push can take.
type uploads struct {
	store        blobstore.Ingester
	idle         time.Duration
	maxTotal     int
	maxPerClient int
	metrics      *metrics

	mu        sync.Mutex
	m         map[string]*upload
	open      int            // sessions in m plus those being created
	perClient map[string]int // open, by client
}

func newUploads(store blobstore.Ingester, cfg Config, m *metrics) *uploads {
	return &uploads{
		store: store, idle: cfg.UploadIdleTimeout, metrics: m,
		maxTotal: cfg.MaxUploadSessions, maxPerClient: cfg.MaxUploadSessionsPerClient,
		m: map[string]*upload{}, perClient: map[string]int{},
	}
}

// retryAfter is when a refused client should try again.
func (u *uploads) retryAfter() time.Duration { return max(time.Second, min(uploadRetryAfter, u.idle)) }

// start opens a session of repo for client, or refuses with errUploadsFull.
func (u *uploads) start(ctx context.Context, repo, client string) (*upload, error) {
	u.mu.Lock()
	switch {
	case u.open >= u.maxTotal:
		u.mu.Unlock()
		u.metrics.uploadsRefused.WithLabelValues("total").Inc()
		return nil, fmt.Errorf("%w: the origin has %d open", errUploadsFull, u.maxTotal)
	case u.perClient[client] >= u.maxPerClient:
		u.mu.Unlock()
		u.metrics.uploadsRefused.WithLabelValues("client").Inc()
		return nil, fmt.Errorf("%w: this client has %d open", errUploadsFull, u.maxPerClient)
	}
	// The place is taken before the temp file is made, so concurrent
	// POSTs cannot overshoot the limits.
	u.open++
	u.perClient[client]++
	u.mu.Unlock()
	w, err := u.store.Writer(ctx)
	if err != nil {
		u.mu.Lock()
		u.free(client)
		u.mu.Unlock()
		return nil, err
	}
	var b [16]byte
	rand.Read(b[:])
	now := time.Now()
	up := &upload{id: hex.EncodeToString(b[:]), repo: repo, client: client, w: w, started: now, touched: now}
	u.mu.Lock()
	u.m[up.id] = up
	u.mu.Unlock()
	u.metrics.uploadsActive.Inc()
	return up, nil
}

// free gives back a session's place; called with mu held.
func (u *uploads) free(client string) {
	u.open--
	if u.perClient[client]--; u.perClient[client] <= 0 {
		delete(u.perClient, client)
	}
}

// park ends a request's use of a locked session: the writer lets go of its
// file until the next request. A session that cannot be parked cleanly is
// ended, since its file may not hold what was hashed.
func (u *uploads) park(up *upload) error {
	if err := up.w.Release(); err != nil {
		u.end(up)
		return err
	}
	return nil
}

// get finds a session of repo and locks it; the caller unlocks.
func (u *uploads) get(repo, id string) (*upload, error) {
	u.mu.Lock()
	up, ok := u.m[id]
	if ok {
		up.touched = time.Now()
	}
	u.mu.Unlock()
	if !ok || up.repo != repo {
		return nil, ocierr.New(ocierr.BlobUploadUnknown, "upload %q", id)
	}
	up.mu.Lock()
	// It may have ended while we waited for the lock.
	u.mu.Lock()
	_, still := u.m[id]
	u.mu.Unlock()
	if !still {
		up.mu.Unlock()
		return nil, ocierr.New(ocierr.BlobUploadUnknown, "upload %q", id)
	}
	return up, nil
}

// end removes a locked session and discards what it did not commit.
func (u *uploads) end(up *upload) {
	u.mu.Lock()
	_, ok := u.m[up.id]
	delete(u.m, up.id)
	if ok {
		u.free(up.client)
	}
	u.mu.Unlock()
	if ok {
		up.w.Close()
		u.metrics.uploadsActive.Dec()
	}
}

// janitor expires idle sessions until ctx ends, then discards all of them.
func (u *uploads) janitor(ctx context.Context) {
	t := time.NewTicker(max(u.idle/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			u.expire(time.Time{})
			return
		case now := <-t.C:
			u.expire(now.Add(-u.idle))
		}
	}
}

// expire ends sessions last touched before cutoff; the zero cutoff ends all.
func (u *uploads) expire(cutoff time.Time) {
	u.mu.Lock()
	var stale []*upload
	for _, up := range u.m {
		if cutoff.IsZero() || up.touched.Before(cutoff) {
			stale = append(stale, up)
		}
	}
	u.mu.Unlock()
	for _, up := range stale {
		if up.mu.TryLock() { // busy sessions are not idle
			u.end(up)
			up.mu.Unlock()
		}
	}
}

// clientKey names who a request counts against for per-client limits: the
// authenticated user, or without credentials the remote address. An IPv6
// address counts as its /64, which one host commonly holds whole and
// could otherwise spread its sessions over.
func clientKey(id auth.Identity, remoteAddr string) string {
	if !id.Anonymous && id.Subject != "" {
		return "user:" + id.Subject
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "addr:" + host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return "ip:" + p.String()
		}
	}
	return "ip:" + ip.WithZone("").String()
}

func uploadLocation(repo, id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }

// writeUploadState sends the headers every upload response carries.
func writeUploadState(w http.ResponseWriter, up *upload, status int) {
	h := w.Header()
	h.Set("Location", uploadLocation(up.repo, up.id))
	h.Set("Docker-Upload-UUID", up.id)
	h.Set("Range", fmt.Sprintf("0-%d", max(up.w.Written()-1, 0)))
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
}

func writeBlobCreated(w http.ResponseWriter, repo string, d digest.Digest) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// startUpload is POST /v2/<name>/blobs/uploads/: a mount, a monolithic
// upload (?digest=), or a new session.
func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	q := r.URL.Query()
	if err := checkDigestAlgorithm(q); err != nil {
		return err
	}
	if m := q.Get("mount"); m != "" {
		done, err := s.mount(w, r, rt.name, m, q.Get("from"))
		if err != nil || done {
			return err
		}
		// Not mountable: the spec says start an ordinary session.
	}
	up, err := s.uploads.start(r.Context(), rt.name, rt.client)
	if errors.Is(err, errUploadsFull) {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.uploads.retryAfter()/time.Second)))
		return ocierr.Wrap(ocierr.TooManyRequests, err)
	}
	if err != nil {
		return err
	}
	if q.Has("digest") {
		up.mu.Lock()
		defer up.mu.Unlock()
		defer s.uploads.end(up)
		want, err := parseDigest(q.Get("digest"))
		if err != nil {
			return err
		}
		if err := s.appendBody(r, up, r.ContentLength); err != nil {
			return err
		}
		return s.commit(w, r, up, want)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if err := s.uploads.park(up); err != nil {
		return err
	}
	writeUploadState(w, up, http.StatusAccepted)
	return nil
}

// checkDigestAlgorithm refuses an upload whose digest-algorithm parameter
// (distribution-spec after 1.1) names an algorithm the origin cannot
// verify, before a session is opened for it, and one that contradicts the
// digest given with it.
func checkDigestAlgorithm(q url.Values) error {
	if !q.Has("digest-algorithm") {
		return nil
	}
	alg := digest.Algorithm(q.Get("digest-algorithm"))
	if !alg.Available() {
		return ocierr.New(ocierr.DigestInvalid, "digest-algorithm %.40q is not supported; use sha256 or sha512", string(alg))
	}
	if v := q.Get("digest"); v != "" {
		if d, err := digest.Parse(v); err == nil && d.Algorithm() != alg {
			return ocierr.New(ocierr.DigestInvalid, "digest %s does not use digest-algorithm %s", d, alg)
		}
	}
	return nil
}

// mount links a blob of another repository into repo. It reports false
// when the blob is not there to mount.
func (s *Server) mount(w http.ResponseWriter, r *http.Request, repo, mount, from string) (bool, error) {
	d, err := parseDigest(mount)
	if err != nil {
		return false, err
	}
	if from == "" {
		return false, nil
	}
	if err := reference.ValidateName(from); err != nil {
		return false, ocierr.Wrap(ocierr.NameInvalid, err)
	}
	if _, err := s.authz.Authorize(r, accessFor(route{kind: kindBlob, name: from}, http.MethodGet)...); err != nil {
		return false, nil // no read access to the source: upload instead
	}
	// Touched before the link is checked: a GC pass that has not yet
	// unlinked d now cannot (see pkg/gc).
	if err := s.touch(r.Context(), d); err != nil {
		return false, err
	}
	ok, err := s.repos.HasBlob(r.Context(), from, d)
	if err != nil || !ok {
		return false, err
	}
	// The index links only committed blobs; alone, the blob must also be
	// here (the index may have outlived it), in a cluster on its owners.
	if _, err := s.blobs.Stat(r.Context(), d); err != nil && s.cluster == nil {
		return false, nil
	}
	if err := s.repos.LinkBlob(r.Context(), repo, d); err != nil {
		return false, err
	}
	writeBlobCreated(w, repo, d)
	return true, nil
}

// appendBody copies the request body into the session. declared is the
// client's Content-Length (-1 if unknown); the body may not exceed it or the
// blob size limit.
func (s *Server) appendBody(r *http.Request, up *upload, declared int64) error {
	limit := s.cfg.MaxBlobSize - up.w.Written()
	if declared > limit {
		return ocierr.New(ocierr.SizeInvalid, "blob larger than the limit of %d bytes", s.cfg.MaxBlobSize)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := io.CopyBuffer(up.w, io.LimitReader(r.Body, limit+1), *bp)
	s.metrics.bytesIn.Add(float64(n))
	if err != nil {
		return ocierr.New(ocierr.BlobUploadInvalid, "reading body: %v", err)
	}
	if n > limit {
		return ocierr.New(ocierr.SizeInvalid, "blob larger than the limit of %d bytes", s.cfg.MaxBlobSize)
	}
	if declared >= 0 && n != declared {
		return ocierr.New(ocierr.SizeInvalid, "body had %d bytes, Content-Length said %d", n, declared)
	}
	return nil
}

// checkChunkRange enforces in-order chunks: a Content-Range must start where
// the session ends and agree with Content-Length.
func checkChunkRange(r *http.Request, up *upload) error {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return nil
	}
	sp, err := httprange.ParseContentRange(cr)
	if err != nil {
		return ocierr.Wrap(ocierr.RangeInvalid, err)
	}
	if sp.Start != up.w.Written() {
		return ocierr.New(ocierr.RangeInvalid, "chunk starts at %d, upload is at %d", sp.Start, up.w.Written())
	}
	if r.ContentLength >= 0 && r.ContentLength != sp.Length {
		return ocierr.New(ocierr.RangeInvalid, "Content-Range covers %d bytes, Content-Length is %d", sp.Length, r.ContentLength)
	}
	return nil
}

// patchUpload is PATCH: a chunk (with Content-Range) or a stream (without).
func (s *Server) patchUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	up, err := s.uploads.get(rt.name, rt.arg)
	if err != nil {
		return err
	}
	defer up.mu.Unlock()
	if err := checkChunkRange(r, up); err != nil {
		// Tell the client where the upload really is.
		w.Header().Set("Location", uploadLocation(up.repo, up.id))
		w.Header().Set("Range", fmt.Sprintf("0-%d", max(up.w.Written()-1, 0)))
		return err
	}
	if err := s.appendBody(r, up, r.ContentLength); err != nil {
		// A session with a torn chunk cannot be trusted to resume.
		s.uploads.end(up)
		return err
	}
	if err := s.uploads.park(up); err != nil {
		return err
	}
	writeUploadState(w, up, http.StatusAccepted)
	return nil
}

// putUpload is PUT ?digest=: an optional last chunk, then commit.
func (s *Server) putUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	up, err := s.uploads.get(rt.name, rt.arg)
	if err != nil {
		return err
	}
	defer up.mu.Unlock()
	want, err := parseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		return err
	}
	if err := checkChunkRange(r, up); err != nil {
		return err
	}
	defer s.uploads.end(up)
	if err := s.appendBody(r, up, r.ContentLength); err != nil {
		return err
	}
	return s.commit(w, r, up, want)
}

// commit verifies and stores the session's blob and links it into the
// repository. The session is over whatever happens.
func (s *Server) commit(w http.ResponseWriter, r *http.Request, up *upload, want digest.Digest) error {
	if err := s.touch(r.Context(), want); err != nil {
		return err
	}
	_, err := up.w.Commit(r.Context(), -1, want)
	switch {
	case errors.Is(err, blobstore.ErrDigestMismatch):
		return ocierr.Wrap(ocierr.DigestInvalid, err)
	case errors.Is(err, digest.ErrInvalid), errors.Is(err, digest.ErrUnsupported):
		return ocierr.Wrap(ocierr.DigestInvalid, err)
	case err != nil:
		return err
	}
	s.metrics.uploadDuration.Observe(time.Since(up.started).Seconds())
	s.verified.Store(want, struct{}{})
	if err := s.replicateNew(r.Context(), want); err != nil {
		return err
	}
	if err := s.repos.LinkBlob(r.Context(), up.repo, want); err != nil {
		return err
	}
	writeBlobCreated(w, up.repo, want)
	return nil
}

// uploadStatus is GET on a session: where it is.
func (s *Server) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) error {
	up, err := s.uploads.get(rt.name, rt.arg)
	if err != nil {
		return err
	}
	defer up.mu.Unlock()
	writeUploadState(w, up, http.StatusNoContent)
	return nil
}

// cancelUpload is DELETE on a session.
func (s *Server) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	up, err := s.uploads.get(rt.name, rt.arg)
	if err != nil {
		return err
	}
	defer up.mu.Unlock()
	s.uploads.end(up)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
