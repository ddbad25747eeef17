package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/reference"
	"github.com/shoal-project/shoal/pkg/repostore"
)

// resolve turns a manifest reference into a digest and its index entry.
func (s *Server) resolve(ctx context.Context, repo string, ref reference.Ref) (digest.Digest, repostore.ManifestEntry, error) {
	d := ref.Digest
	if !ref.IsDigest() {
		var err error
		d, err = s.repos.GetTag(ctx, repo, ref.Tag)
		if errors.Is(err, repostore.ErrTagUnknown) {
			return "", repostore.ManifestEntry{}, ocierr.New(ocierr.ManifestUnknown, "%s:%s", repo, ref.Tag)
		}
		if err != nil {
			return "", repostore.ManifestEntry{}, err
		}
	}
	e, err := s.repos.GetManifest(ctx, repo, d)
	if errors.Is(err, repostore.ErrManifestUnknown) {
		return "", repostore.ManifestEntry{}, ocierr.New(ocierr.ManifestUnknown, "%s@%s", repo, d)
	}
	return d, e, err
}

// parseRefFor returns the reference of a manifest URL, with the error code
// the spec expects for the method.
func parseRefFor(method, arg string) (reference.Ref, error) {
	ref, err := reference.ParseRef(arg)
	if err == nil {
		return ref, nil
	}
	switch {
	case errors.Is(err, digest.ErrInvalid), errors.Is(err, digest.ErrUnsupported):
		return ref, ocierr.Wrap(ocierr.DigestInvalid, err)
	case method == http.MethodPut:
		return ref, ocierr.Wrap(ocierr.ManifestInvalid, err)
	default:
		return ref, ocierr.Wrap(ocierr.ManifestUnknown, err)
	}
}

// readManifest reads a stored manifest and checks it against its digest:
// manifests are small, so every read is verified.
func (s *Server) readManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	rd, err := s.blobs.Open(ctx, d)
	if errors.Is(err, blobstore.ErrNotFound) && s.cluster != nil {
		// Indexed cluster-wide but not stored here: keep a verified copy,
		// manifests are small and read often.
		if ferr := s.fetchSmall(ctx, d, manifest.MaxSize); ferr != nil {
			s.log.Warn("manifest not found on any origin", "digest", d, "err", ferr)
		} else {
			rd, err = s.blobs.Open(ctx, d)
		}
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, ocierr.New(ocierr.ManifestUnknown, "%s", d)
	}
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	if rd.Size() > manifest.MaxSize {
		return nil, fmt.Errorf("manifest %s: stored size %d over limit", d, rd.Size())
	}
	b, err := io.ReadAll(io.NewSectionReader(rd, 0, rd.Size()))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	h := d.Algorithm().Hash()
	h.Write(b)
	if digest.FromHash(d.Algorithm(), h) != d {
		s.quarantine(ctx, d, "manifest digest mismatch")
		return nil, ocierr.New(ocierr.ManifestUnknown, "%s", d)
	}
	return b, nil
}

func (s *Server) getManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := parseRefFor(r.Method, rt.arg)
	if err != nil {
		return err
	}
	if reg, urepo, ok := s.upstreams.Lookup(rt.name); ok {
		if err := s.pullManifest(r.Context(), w, reg, rt.name, urepo, ref); err != nil {
			return err
		}
	}
	d, e, err := s.resolve(r.Context(), rt.name, ref)
	if err != nil {
		return err
	}
	b, err := s.readManifest(r.Context(), d)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", e.MediaType)
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("ETag", `"`+d.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		n, _ := w.Write(b)
		s.metrics.bytesOut.Add(float64(n))
	}
	return nil
}

func (s *Server) putManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := parseRefFor(r.Method, rt.arg)
	if err != nil {
		return err
	}
	// Extra tags (distribution-spec after 1.1: PUT …/manifests/<ref>?tag=a&tag=b)
	// are checked before anything is stored, so a bad one leaves no trace.
	tags, err := extraTags(r, ref)
	if err != nil {
		return err
	}
	if r.ContentLength > manifest.MaxSize {
		return ocierr.New(ocierr.ManifestInvalid, "manifest of %d bytes is over the %d byte limit", r.ContentLength, manifest.MaxSize).WithStatus(http.StatusRequestEntityTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, manifest.MaxSize+1))
	if err != nil {
		return ocierr.New(ocierr.ManifestInvalid, "reading body: %v", err)
	}
	s.metrics.bytesIn.Add(float64(len(body)))
	if len(body) > manifest.MaxSize {
		return ocierr.New(ocierr.ManifestInvalid, "manifest over the %d byte limit", manifest.MaxSize).WithStatus(http.StatusRequestEntityTooLarge)
	}
	m, err := manifest.Parse(r.Header.Get("Content-Type"), body)
	if err != nil {
		return ocierr.Wrap(ocierr.ManifestInvalid, err)
	}
	alg := digest.SHA256
	if ref.IsDigest() {
		alg = ref.Digest.Algorithm()
	}
	h := alg.Hash()
	h.Write(body)
	d := digest.FromHash(alg, h)
	if ref.IsDigest() && d != ref.Digest {
		return ocierr.New(ocierr.DigestInvalid, "manifest hashes to %s, not %s", d, ref.Digest)
	}
	used := []digest.Digest{d}
	for _, b := range m.RequiredBlobs() {
		used = append(used, b.Digest)
	}
	for _, c := range m.RequiredManifests() {
		used = append(used, c.Digest)
	}
	// Touched before the references are checked: a GC pass that has not
	// yet unlinked them now cannot, and one that has makes the check fail
	// (see pkg/gc).
	if err := s.touch(r.Context(), used...); err != nil {
		return err
	}
	if err := s.checkReferences(r.Context(), rt.name, m); err != nil {
		return err
	}
	if _, err := blobstore.Put(r.Context(), s.blobs, bytes.NewReader(body), int64(len(body)), d); err != nil {
		return fmt.Errorf("store manifest %s: %w", d, err)
	}
	s.verified.Store(d, struct{}{})
	if err := s.replicateNew(r.Context(), d); err != nil {
		return err
	}
	entry := repostore.ManifestEntry{MediaType: m.MediaType, Size: int64(len(body))}
	if m.Subject != nil {
		desc := m.Descriptor(d, int64(len(body)))
		entry.Subject, entry.Referrer = m.Subject.Digest, &desc
	}
	if err := s.repos.PutManifest(r.Context(), rt.name, d, entry); err != nil {
		return err
	}
	for _, tag := range tags {
		if err := s.repos.PutTag(r.Context(), rt.name, tag, d); err != nil {
			return err
		}
	}
	hd := w.Header()
	if len(r.URL.Query()["tag"]) > 0 {
		// OCI-Tag answers the ?tag= form only: a client that sent none
		// learns nothing new from it.
		for _, tag := range tags {
			hd.Add("OCI-Tag", tag)
		}
	}
	hd.Set("Location", "/v2/"+rt.name+"/manifests/"+d.String())
	hd.Set("Docker-Content-Digest", d.String())
	if m.Subject != nil {
		hd.Set("OCI-Subject", m.Subject.Digest.String())
	}
	hd.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// maxExtraTags bounds the ?tag= values of one PUT: each is an index write.
const maxExtraTags = 64

// extraTags is every tag a manifest PUT applies: the reference when it is
// a tag, then each ?tag= value, validated and without repeats.
func extraTags(r *http.Request, ref reference.Ref) ([]string, error) {
	q := r.URL.Query()["tag"]
	if len(q) > maxExtraTags {
		return nil, ocierr.New(ocierr.ManifestInvalid, "%d tag parameters; at most %d", len(q), maxExtraTags)
	}
	var tags []string
	seen := map[string]bool{}
	add := func(t string) {
		if !seen[t] {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	if !ref.IsDigest() {
		add(ref.Tag)
	}
	for _, t := range q {
		if err := reference.ValidateTag(t); err != nil {
			return nil, ocierr.Wrap(ocierr.ManifestInvalid, fmt.Errorf("tag parameter: %w", err))
		}
		add(t)
	}
	return tags, nil
}

// checkReferences refuses a manifest whose blobs or child manifests are not
// in the repository. The subject is exempt: the spec lets a referrer arrive
// before what it refers to.
func (s *Server) checkReferences(ctx context.Context, repo string, m *manifest.Manifest) error {
	for _, b := range m.RequiredBlobs() {
		ok, err := s.repos.HasBlob(ctx, repo, b.Digest)
		if err != nil {
			return err
		}
		if !ok {
			return ocierr.New(ocierr.ManifestBlobUnknown, "blob %s", b.Digest)
		}
	}
	for _, c := range m.RequiredManifests() {
		_, err := s.repos.GetManifest(ctx, repo, c.Digest)
		if errors.Is(err, repostore.ErrManifestUnknown) {
			return ocierr.New(ocierr.ManifestBlobUnknown, "manifest %s", c.Digest)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := parseRefFor(r.Method, rt.arg)
	if err != nil {
		return err
	}
	if ref.IsDigest() {
		err = s.repos.DeleteManifest(r.Context(), rt.name, ref.Digest)
	} else {
		err = s.repos.DeleteTag(r.Context(), rt.name, ref.Tag)
	}
	if errors.Is(err, repostore.ErrManifestUnknown) || errors.Is(err, repostore.ErrTagUnknown) {
		return ocierr.New(ocierr.ManifestUnknown, "%s in %s", ref, rt.name)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
