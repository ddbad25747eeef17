package origin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/ocierr"
)

// maxPage bounds n so one request cannot ask for an unbounded response.
const maxPage = 10000

// paginate applies the spec's n and last parameters to a sorted list. next
// is the "last" value for the following page, empty when there is none.
func paginate(all []string, q url.Values) (page []string, next string, err error) {
	start := 0
	if last := q.Get("last"); last != "" {
		start = sort.SearchStrings(all, last)
		if start < len(all) && all[start] == last {
			start++
		}
	}
	rest := all[start:]
	if !q.Has("n") {
		return rest, "", nil
	}
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 0 {
		return nil, "", ocierr.New(ocierr.Unsupported, "n must be a non-negative integer").WithStatus(http.StatusBadRequest)
	}
	n = min(n, maxPage)
	if n >= len(rest) {
		return rest, "", nil
	}
	if n == 0 {
		return []string{}, "", nil
	}
	return rest[:n], rest[n-1], nil
}

func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(b)
	return err
}

func setNextLink(w http.ResponseWriter, path string, q url.Values, next string) {
	if next == "" {
		return
	}
	v := url.Values{"n": {q.Get("n")}, "last": {next}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, v.Encode()))
}

func (s *Server) getTags(w http.ResponseWriter, r *http.Request, rt route) error {
	ok, err := s.repos.Exists(r.Context(), rt.name)
	if err != nil {
		return err
	}
	if !ok {
		return ocierr.New(ocierr.NameUnknown, "%s", rt.name)
	}
	tags, err := s.repos.ListTags(r.Context(), rt.name)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	page, next, err := paginate(tags, q)
	if err != nil {
		return err
	}
	setNextLink(w, "/v2/"+rt.name+"/tags/list", q, next)
	return writeJSON(w, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, nonNil(page)})
}

func (s *Server) getCatalog(w http.ResponseWriter, r *http.Request, _ route) error {
	repos, err := s.repos.Repositories(r.Context())
	if err != nil {
		return err
	}
	q := r.URL.Query()
	page, next, err := paginate(repos, q)
	if err != nil {
		return err
	}
	setNextLink(w, "/v2/_catalog", q, next)
	return writeJSON(w, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{nonNil(page)})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// getReferrers answers with an OCI index of the manifests whose subject is
// the given digest, optionally filtered by artifactType.
func (s *Server) getReferrers(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.arg)
	if err != nil {
		return err
	}
	refs, err := s.repos.Referrers(r.Context(), rt.name, d)
	if err != nil {
		return err
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		kept := refs[:0]
		for _, desc := range refs {
			if desc.ArtifactType == at {
				kept = append(kept, desc)
			}
		}
		refs = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Digest < refs[j].Digest })
	if refs == nil {
		refs = []manifest.Descriptor{}
	}
	return writeJSON(w, manifest.MediaTypeOCIIndex, struct {
		SchemaVersion int                   `json:"schemaVersion"`
		MediaType     string                `json:"mediaType"`
		Manifests     []manifest.Descriptor `json:"manifests"`
	}{2, manifest.MediaTypeOCIIndex, refs})
}
