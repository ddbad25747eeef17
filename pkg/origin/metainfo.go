package origin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/ocierr"
)

// MetaInfoPath is where the origin serves a blob's metainfo:
// GET MetaInfoPath + "<digest>" answers the protobuf shoal.v1.MetaInfo.
// Trackers call it; it is outside /v2 because it is not part of the OCI API
// and names no repository.
const MetaInfoPath = "/shoal/v1/metainfo/"

// MetaInfoContentType is the media type of the metainfo response.
const MetaInfoContentType = "application/vnd.shoal.metainfo.v1+protobuf"

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
