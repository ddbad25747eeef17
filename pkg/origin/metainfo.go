package origin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/recorder"
)

// Where and how the origin serves metainfo; the names live in pkg/metainfo
// so trackers and agents need not import the origin.
const (
	MetaInfoPath        = metainfo.HTTPPath
	MetaInfoContentType = metainfo.ContentType
)

func (s *Server) getMetaInfo(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := recorder.New(w)
	defer func() {
		s.metrics.requests.WithLabelValues("metainfo", r.Method, strconv.Itoa(rw.Status())).Inc()
		s.metrics.requestDuration.WithLabelValues("metainfo", r.Method).Observe(time.Since(start).Seconds())
	}()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writeError(rw, r, ocierr.New(ocierr.Unsupported, "method %s", r.Method))
		return
	}
	// The same rule as a blob GET: trackers and agents read metainfo
	// anonymously when anonymous pull is on, with their own users when it
	// is off.
	if _, err := s.authorize(rw, r, auth.MetaInfo); err != nil {
		s.writeError(rw, r, err)
		return
	}
	d, err := parseDigest(strings.TrimPrefix(r.URL.EscapedPath(), MetaInfoPath))
	if err != nil {
		s.writeError(rw, r, err)
		return
	}
	if r.URL.Query().Get("partial") == "1" {
		if s.writeArrivingMetaInfo(rw, r, d) {
			return
		}
		rw.Header().Set(metainfo.CompleteHeader, "true")
	}
	if err := s.writeMetaInfo(rw, r, d, true); err != nil {
		rw.Header().Del(metainfo.CompleteHeader)
		s.writeError(rw, r, err)
	}
}

// writeArrivingMetaInfo answers with what is known of the metainfo of d
// while it arrives from an upstream here: the states of the pieces
// published so far. False if d is not arriving here.
func (s *Server) writeArrivingMetaInfo(w http.ResponseWriter, r *http.Request, d digest.Digest) bool {
	if s.arriving == nil {
		return false
	}
	g, _ := s.arriving.get(d)
	if g == nil {
		return false
	}
	defer g.Release()
	mi, complete := g.MetaInfo()
	b, err := mi.Marshal()
	if err != nil {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", MetaInfoContentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Docker-Content-Digest", d.String())
	h.Set(metainfo.CompleteHeader, strconv.FormatBool(complete))
	// It grows: nobody may keep it.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
	return true
}

// writeMetaInfo answers with d's metainfo; fromPeers lets it come from
// another origin when d is not stored here.
func (s *Server) writeMetaInfo(w http.ResponseWriter, r *http.Request, d digest.Digest, fromPeers bool) error {
	mi, err := s.blobs.MetaInfo(r.Context(), d)
	if errors.Is(err, blobstore.ErrNotFound) && fromPeers && s.cluster != nil {
		mi, err = s.peerMetaInfo(r.Context(), d)
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		return ocierr.New(ocierr.BlobUnknown, "%s", d)
	}
	if err != nil {
		return err
	}
	b, err := mi.Marshal()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", MetaInfoContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Docker-Content-Digest", d.String())
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
	return nil
}
