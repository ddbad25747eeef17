package origin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ocierr"
)

// Where and how the origin serves metainfo; the names live in pkg/metainfo
// so trackers and agents need not import the origin.
const (
	MetaInfoPath        = metainfo.HTTPPath
	MetaInfoContentType = metainfo.ContentType
)

func (s *Server) getMetaInfo(w http.ResponseWriter, r *http.Request) {
	rw := &responseWriter{ResponseWriter: w}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writeError(rw, r, ocierr.New(ocierr.Unsupported, "method %s", r.Method))
		return
	}
	// Piece hashes reveal nothing of the content, but on a closed registry
	// they still need an authenticated caller.
	if _, err := s.authz.Authorize(r); err != nil {
		s.writeError(rw, r, ocierr.Wrap(ocierr.Unauthorized, err))
		return
	}
	d, err := parseDigest(strings.TrimPrefix(r.URL.EscapedPath(), MetaInfoPath))
	if err != nil {
		s.writeError(rw, r, err)
		return
	}
	mi, err := s.blobs.MetaInfo(r.Context(), d)
	if errors.Is(err, blobstore.ErrNotFound) {
		s.writeError(rw, r, ocierr.New(ocierr.BlobUnknown, "%s", d))
		return
	}
	if err != nil {
		s.writeError(rw, r, err)
		return
	}
	b, err := mi.Marshal()
	if err != nil {
		s.writeError(rw, r, err)
		return
	}
	rw.Header().Set("Content-Type", MetaInfoContentType)
	rw.Header().Set("Content-Length", strconv.Itoa(len(b)))
	rw.Header().Set("Docker-Content-Digest", d.String())
	rw.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		rw.Write(b)
	}
}
