package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/reference"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/upstream"
)

// InternalUpstreamPath is where a non-owner origin asks a blob's owner to
// pull it from its upstream: POST …/<digest>?repo=<origin repository>
// answers 204 once the owner (and, with sync replication, the other
// owners) hold it, or the upstream's error as an OCI error. Routing every
// pull of a digest to its first live owner, which shares one fetch among
// all who ask, makes the upstream send each blob once per cluster.
const InternalUpstreamPath = "/internal/v1/upstream/"

// serveAdverts lists the namespaces this origin pulls through, for agents.
func (s *Server) serveAdverts(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, _ := json.Marshal(s.upstreams.Adverts())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodGet {
		w.Write(b)
	}
}

// pullManifest makes sure the manifest ref names in a pulled-through
// repository is in the index: the tag resolved at the upstream (or the
// last digest known when it is down), the manifest fetched by digest,
// verified, stored and linked with the blobs it needs.
func (s *Server) pullManifest(ctx context.Context, w http.ResponseWriter, reg *upstream.Registry, name, urepo string, ref reference.Ref) error {
	d := ref.Digest
	if !ref.IsDigest() {
		var err error
		d, err = reg.ResolveTag(ctx, urepo, ref.Tag, func(ctx context.Context) (digest.Digest, bool) {
			d, err := s.repos.GetTag(ctx, name, ref.Tag)
			return d, err == nil
		})
		if err != nil {
			return upstreamError(w, err, ocierr.ManifestUnknown, name+":"+ref.Tag)
		}
	}
	if _, err := s.repos.GetManifest(ctx, name, d); err == nil {
		return s.pointTag(ctx, name, ref, d)
	} else if !errors.Is(err, repostore.ErrManifestUnknown) {
		return err
	}
	m, err := reg.Manifest(ctx, urepo, d)
	if err != nil {
		return upstreamError(w, err, ocierr.ManifestUnknown, name+"@"+d.String())
	}
	parsed, err := manifest.Parse(m.MediaType, m.Body)
	if err != nil {
		return ocierr.New(ocierr.ManifestUnknown, "%s@%s: the upstream's manifest is not one Shoal serves: %v", name, d, err).
			WithStatus(http.StatusBadGateway)
	}
	if _, err := blobstore.Put(ctx, s.blobs, bytes.NewReader(m.Body), int64(len(m.Body)), d); err != nil {
		return fmt.Errorf("store pulled manifest %s: %w", d, err)
	}
	s.verified.Store(d, struct{}{})
	if err := s.replicateNew(ctx, d); err != nil {
		return err
	}
	// The blobs are linked now, fetched when first read: the repository
	// holds them upstream, which is what a link says.
	for _, b := range parsed.RequiredBlobs() {
		if err := s.repos.LinkBlob(ctx, name, b.Digest); err != nil {
			return err
		}
	}
	entry := repostore.ManifestEntry{MediaType: parsed.MediaType, Size: int64(len(m.Body))}
	if parsed.Subject != nil {
		desc := parsed.Descriptor(d, int64(len(m.Body)))
		entry.Subject, entry.Referrer = parsed.Subject.Digest, &desc
	}
	if err := s.repos.PutManifest(ctx, name, d, entry); err != nil {
		return err
	}
	s.metrics.pulledThrough.WithLabelValues(reg.Namespace(), "manifest").Inc()
	return s.pointTag(ctx, name, ref, d)
}

// pointTag moves a pulled-through tag to d when the upstream moved it.
func (s *Server) pointTag(ctx context.Context, name string, ref reference.Ref, d digest.Digest) error {
	if ref.IsDigest() {
		return nil
	}
	if cur, err := s.repos.GetTag(ctx, name, ref.Tag); err == nil && cur == d {
		return nil
	}
	return s.repos.PutTag(ctx, name, ref.Tag, d)
}

// pullBlob makes sure blob d of a pulled-through repository is held by
// the cluster and linked: stored here already, or pulled by its first live
// owner (this origin, or another asked on InternalUpstreamPath).
func (s *Server) pullBlob(ctx context.Context, w http.ResponseWriter, reg *upstream.Registry, name, urepo string, d digest.Digest) error {
	if _, err := s.blobs.Stat(ctx, d); err == nil {
		return s.linkPulled(ctx, name, d)
	}
	if s.cluster != nil {
		for _, m := range s.cluster.owners(d) {
			if m.ID == s.cluster.Self {
				break
			}
			err := s.askOwnerToPull(ctx, w, m.Addr, name, d)
			if err == nil {
				return s.linkPulled(ctx, name, d)
			}
			var oe *ocierr.Error
			if errors.As(err, &oe) {
				return err // the owner asked the upstream: its answer stands
			}
			// The owner is unreachable: the next one pulls.
			s.log.Warn("blob owner cannot pull from upstream; trying the next", "digest", d, "owner", m.ID, "err", err)
		}
	}
	if err := s.pullHere(ctx, reg, urepo, d); err != nil {
		return upstreamError(w, err, ocierr.BlobUnknown, name+"@"+d.String())
	}
	return s.linkPulled(ctx, name, d)
}

func (s *Server) linkPulled(ctx context.Context, name string, d digest.Digest) error {
	ok, err := s.repos.HasBlob(ctx, name, d)
	if err != nil || ok {
		return err
	}
	return s.repos.LinkBlob(ctx, name, d)
}

// pullHere fetches d from the upstream into this origin's store (one fetch
// however many ask), then copies it to the other owners as a push would.
func (s *Server) pullHere(ctx context.Context, reg *upstream.Registry, urepo string, d digest.Digest) error {
	held := func(ctx context.Context, d digest.Digest) bool {
		_, err := s.blobs.Stat(ctx, d)
		return err == nil // a fetch that just finished stored it
	}
	return reg.FetchBlob(ctx, urepo, d, held, func(ctx context.Context, d digest.Digest, body io.Reader, size int64) error {
		if size > s.cfg.MaxBlobSize {
			return fmt.Errorf("%w: blob of %d bytes over max_blob_size", upstream.ErrMismatch, size)
		}
		if size >= 0 {
			// Known size: readers may have it piece by piece.
			return s.storeArriving(ctx, reg, d, body, size)
		}
		_, err := blobstore.Put(ctx, s.blobs, io.LimitReader(body, s.cfg.MaxBlobSize+1), size, d)
		if errors.Is(err, blobstore.ErrDigestMismatch) || errors.Is(err, blobstore.ErrSizeMismatch) {
			s.metrics.verifyFailures.Inc()
			s.log.Error("upstream sent a blob that does not match its digest; nothing stored", "namespace", reg.Namespace(), "digest", d, "err", err)
			return fmt.Errorf("%w: %w", upstream.ErrMismatch, err)
		}
		if err != nil {
			return err
		}
		s.verified.Store(d, struct{}{})
		s.metrics.pulledThrough.WithLabelValues(reg.Namespace(), "blob").Inc()
		return s.replicateNew(ctx, d)
	})
}

// askOwnerToPull asks the origin at addr to pull d for repository name.
// An OCI error is the owner's answer (the upstream's, passed on); any
// other error means the owner could not be asked.
func (s *Server) askOwnerToPull(ctx context.Context, w http.ResponseWriter, addr, name string, d digest.Digest) error {
	c := s.cluster
	u := c.client.url(addr, InternalUpstreamPath, d) + "?repo=" + url.QueryEscape(name)
	resp, err := c.client.do(ctx, http.MethodPost, u, nil, 0, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var doc struct {
		Errors []struct {
			Code    ocierr.Code `json:"code"`
			Message string      `json:"message"`
			Detail  any         `json:"detail"`
		} `json:"errors"`
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable ||
		json.Unmarshal(body, &doc) != nil || len(doc.Errors) == 0 {
		return fmt.Errorf("owner %s: %s", addr, resp.Status)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	e := doc.Errors[0]
	detail, _ := e.Detail.(string)
	return ocierr.New(e.Code, "%s", detail).WithStatus(resp.StatusCode)
}

// serveUpstreamInternal is InternalUpstreamPath; the caller checked the
// cluster secret.
func (s *Server) serveUpstreamInternal(w http.ResponseWriter, r *http.Request, d digest.Digest) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return ocierr.New(ocierr.Unsupported, "method %s", r.Method).WithStatus(http.StatusMethodNotAllowed)
	}
	name := r.URL.Query().Get("repo")
	reg, urepo, ok := s.upstreams.Lookup(name)
	if !ok || reference.ValidateName(name) != nil {
		return ocierr.New(ocierr.NameUnknown, "%.300q is not under an upstream of this origin", name)
	}
	if _, err := s.blobs.Stat(r.Context(), d); err != nil {
		if err := s.pullHere(r.Context(), reg, urepo, d); err != nil {
			return upstreamError(w, err, ocierr.BlobUnknown, name+"@"+d.String())
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// upstreamError turns what the upstream said into the OCI error for the
// client: 404 → unknown, 401/403 → denied (the origin's credentials, not
// the client's, were refused), 429 → too many requests with the upstream's
// Retry-After, a digest mismatch → 502, anything else → 503.
func upstreamError(w http.ResponseWriter, err error, unknown ocierr.Code, what string) error {
	var ue *upstream.Error
	errors.As(err, &ue)
	if ue != nil && ue.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((ue.RetryAfter+time.Second-1)/time.Second)))
	}
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		return ocierr.New(unknown, "%s: not found upstream", what)
	case errors.Is(err, upstream.ErrDenied):
		return ocierr.New(ocierr.Denied, "%s: the upstream refused the origin's credentials", what)
	case errors.Is(err, upstream.ErrThrottled):
		return ocierr.New(ocierr.TooManyRequests, "%s: the upstream is rate limiting", what)
	case errors.Is(err, upstream.ErrMismatch):
		return ocierr.New(ocierr.Unavailable, "%s: the upstream sent content that does not match its digest; nothing was stored", what).
			WithStatus(http.StatusBadGateway)
	case errors.Is(err, upstream.ErrUnavailable):
		return ocierr.New(ocierr.Unavailable, "%s: the upstream is unavailable", what).WithStatus(http.StatusServiceUnavailable)
	}
	return err
}
