package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/recorder"
	"github.com/shoal-project/shoal/pkg/reference"
	"github.com/shoal-project/shoal/pkg/torrentfile"
)

// TorrentPath serves any blob as a standard .torrent:
// GET /torrent/v1/<repository>/<digest>.torrent, for whoever may pull the
// blob from that repository. Its web seed is this origin's /v2 URL of the
// blob (as the client reached it), so a stock BitTorrent client
// downloads and verifies the blob from the origins alone.
const TorrentPath = "/torrent/v1/"

// torrentInfos keeps the bencoded info dictionaries made (hashing a blob
// costs a read of it); bounded, dropped wholesale when full.
type torrentInfos struct {
	mu sync.Mutex
	m  map[digest.Digest][]byte
}

const maxTorrentInfos = 1024

func (c *torrentInfos) get(d digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[d]
	return b, ok
}

func (c *torrentInfos) put(d digest.Digest, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxTorrentInfos {
		c.m = map[digest.Digest][]byte{}
	}
	c.m[d] = b
}

func (s *Server) serveTorrent(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := recorder.New(w)
	defer func() {
		s.metrics.requests.WithLabelValues("torrent", r.Method, strconv.Itoa(rw.Status())).Inc()
		s.metrics.requestDuration.WithLabelValues("torrent", r.Method).Observe(time.Since(start).Seconds())
	}()
	if err := s.torrent(rw, r); err != nil {
		s.writeError(rw, r, err)
	}
}

func (s *Server) torrent(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return ocierr.New(ocierr.Unsupported, "method %s", r.Method)
	}
	p := r.URL.EscapedPath()
	if len(p) > maxPathLength {
		return ocierr.New(ocierr.NameInvalid, "path longer than %d bytes", maxPathLength)
	}
	rest, ok := strings.CutSuffix(strings.TrimPrefix(p, TorrentPath), ".torrent")
	i := strings.LastIndexByte(rest, '/')
	if !ok || i <= 0 {
		return ocierr.New(ocierr.Unsupported, "want %s<repository>/<digest>.torrent", TorrentPath).WithStatus(http.StatusNotFound)
	}
	name := rest[:i]
	if err := reference.ValidateName(name); err != nil {
		return ocierr.Wrap(ocierr.NameInvalid, err)
	}
	d, err := parseDigest(rest[i+1:])
	if err != nil {
		return err
	}
	if _, err := s.authorize(w, r, auth.Access{Type: "repository", Name: name, Action: auth.Pull}); err != nil {
		return err
	}
	if reg, urepo, ok := s.upstreams.Lookup(name); ok {
		if err := s.pullBlob(r.Context(), w, reg, name, urepo, d); err != nil {
			return err
		}
	}
	if ok, err := s.repoHasContent(r.Context(), name, d); err != nil {
		return err
	} else if !ok {
		return ocierr.New(ocierr.BlobUnknown, "%s in %s", d, name)
	}
	info, ok := s.torrents.get(d)
	if !ok {
		if info, err = s.torrentInfo(r.Context(), d); err != nil {
			return err
		}
		s.torrents.put(d, info)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	seed := scheme + "://" + r.Host + "/v2/" + name + "/blobs/" + d.String()
	b, err := torrentfile.File(info, []string{seed}, time.Now(), d.String())
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", torrentfile.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Content-Disposition", `attachment; filename="`+torrentfile.Name(d)+`.torrent"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
	return nil
}

// torrentInfo hashes blob d, from this origin's store or another origin's.
func (s *Server) torrentInfo(ctx context.Context, d digest.Digest) ([]byte, error) {
	var body io.Reader
	var size int64
	rd, err := s.blobs.Open(ctx, d)
	switch {
	case err == nil:
		defer rd.Close()
		body, size = io.NewSectionReader(rd, 0, rd.Size()), rd.Size()
	case errors.Is(err, blobstore.ErrNotFound) && s.cluster != nil:
		resp, _, perr := s.fromPeers(ctx, http.MethodGet, InternalBlobPath, d, nil)
		if perr != nil {
			return nil, ocierr.New(ocierr.BlobUnknown, "%s: %v", d, perr)
		}
		defer resp.Body.Close()
		if size = contentLength(resp); resp.StatusCode != http.StatusOK || size < 0 {
			return nil, fmt.Errorf("blob %s from a peer: %s", d, resp.Status)
		}
		body = resp.Body
	case errors.Is(err, blobstore.ErrNotFound):
		return nil, ocierr.New(ocierr.BlobUnknown, "%s", d)
	default:
		return nil, err
	}
	info, err := torrentfile.Info(body, size, d, metainfo.PieceLength(size))
	if errors.Is(err, torrentfile.ErrMismatch) {
		s.quarantine(ctx, d, "whole-blob digest mismatch while making a torrent")
		return nil, ocierr.New(ocierr.BlobUnknown, "%s", d)
	}
	return info, err
}
