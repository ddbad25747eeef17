package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/growing"
	"github.com/shoal-project/shoal/pkg/httprange"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/upstream"
)

// arriving are the blobs this origin is receiving from an upstream right
// now (see pkg/growing): a GET of one is served piece by piece as the
// pieces hash, instead of after the last byte; a HEAD (an agent's pull
// check) answers once the first piece is in; the origin seeds the pieces
// published (seed.go) and serves the chain so far on
// metainfo.HTTPPath?partial=1, so agents fetch pieces while the rest
// arrives.
type arriving struct {
	mu      sync.Mutex
	blobs   map[digest.Digest]*growing.Blob
	changed chan struct{} // closed and replaced when blobs changes

	inFlight prometheus.Gauge
	streamed prometheus.Counter
}

func newArriving(reg prometheus.Registerer) *arriving {
	a := &arriving{blobs: map[digest.Digest]*growing.Blob{}, changed: make(chan struct{}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_origin_arriving_blobs",
			Help: "Blobs being received from an upstream, readable piece by piece as they hash.",
		}),
		streamed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_arriving_reads_total",
			Help: "Blob GETs served from a blob still arriving from its upstream.",
		})}
	reg.MustRegister(a.inFlight, a.streamed)
	return a
}

func (a *arriving) put(d digest.Digest, b *growing.Blob) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.blobs[d] = b
	a.inFlight.Set(float64(len(a.blobs)))
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *arriving) drop(d digest.Digest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.blobs, d)
	a.inFlight.Set(float64(len(a.blobs)))
	close(a.changed)
	a.changed = make(chan struct{})
}

// get returns d with a reference taken (Release it), and a channel closed
// at the next change.
func (a *arriving) get(d digest.Digest) (*growing.Blob, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.blobs[d]
	if b != nil && !b.Acquire() {
		b = nil
	}
	return b, a.changed
}

// storeArriving receives a blob of known size from the upstream through a
// growing blob that readers can see, and commits it into the store only
// once it matched its digest whole. It stays readable until the store
// holds it, so a reader finds it in one place or the other.
func (s *Server) storeArriving(ctx context.Context, reg *upstream.Registry, d digest.Digest, body io.Reader, size int64) error {
	dir := filepath.Join(s.cfg.DataDir, "arriving")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	g, err := growing.New(dir, d, size)
	if err != nil {
		return err
	}
	defer g.Release()
	s.arriving.put(d, g)
	defer s.arriving.drop(d)
	start := time.Now()
	// The last piece goes out only once the blob is stored (and
	// replicated, as a push would be): a client that read it all finds
	// it here when it asks next, metainfo included.
	err = g.Fill(ctx, body, func(path string) error {
		// The store hashes it again as it commits: a second pass over a
		// file in the page cache, which keeps the store the only judge of
		// what it holds.
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := blobstore.Put(ctx, s.blobs, f, size, d); err != nil {
			return fmt.Errorf("store pulled blob %s: %w", d, err)
		}
		s.verified.Store(d, struct{}{})
		s.metrics.pulledThrough.WithLabelValues(reg.Namespace(), "blob").Inc()
		return s.replicateNew(ctx, d)
	})
	if errors.Is(err, growing.ErrMismatch) {
		s.metrics.verifyFailures.Inc()
		s.log.Error("upstream sent a blob that does not match its digest; nothing stored", "namespace", reg.Namespace(), "digest", d, "err", err)
		return fmt.Errorf("%w: %w", upstream.ErrMismatch, err)
	}
	if err == nil {
		s.log.Debug("blob arrived from upstream", "digest", d, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// arrivingFor returns blob d of repository name while it arrives at this
// origin, starting the upstream fetch when this origin is the one to make
// it, once its first piece is readable (so an upstream that fails at once
// still gets its proper error status rather than a cut body). It returns
// nil, nil when the blob is not to be streamed: held already, fetched by
// another owner, not linked to the repository, or done by the time its
// first piece would have been ready (then the store has it).
func (s *Server) arrivingFor(ctx context.Context, w http.ResponseWriter, reg *upstream.Registry, name, urepo string, d digest.Digest) (*growing.Blob, error) {
	if _, err := s.blobs.Stat(ctx, d); err == nil {
		return nil, nil
	}
	if s.cluster != nil {
		if owners := s.cluster.owners(d); len(owners) == 0 || owners[0].ID != s.cluster.Self {
			return nil, nil
		}
	}
	// Only blobs a pulled manifest linked: anything else is asked of the
	// upstream the way it always was.
	if ok, err := s.repos.HasBlob(ctx, name, d); err != nil || !ok {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- s.pullHere(context.WithoutCancel(ctx), reg, urepo, d) }()
	var g *growing.Blob
	for g == nil {
		var changed <-chan struct{}
		g, changed = s.arriving.get(d)
		if g != nil {
			break
		}
		select {
		case err := <-done:
			if err != nil {
				return nil, upstreamError(w, err, ocierr.BlobUnknown, name+"@"+d.String())
			}
			return nil, nil
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if g.Size() == 0 {
		// No piece to hand out before the digest check: wait for it.
		g.Release()
		if err := <-done; err != nil {
			return nil, upstreamError(w, err, ocierr.BlobUnknown, name+"@"+d.String())
		}
		return nil, nil
	}
	if err := g.Wait(ctx, 0); err != nil {
		g.Release()
		if errors.Is(err, growing.ErrFailed) {
			return nil, upstreamError(w, <-done, ocierr.BlobUnknown, name+"@"+d.String())
		}
		return nil, err
	}
	return g, nil
}

// serveArriving answers a GET or HEAD (with Range) of a blob still arriving: each
// piece goes out once published, the last only after the whole blob
// matched its digest. If it fails instead, the response is cut: a body
// that is not the blob never ends cleanly.
func (s *Server) serveArriving(w http.ResponseWriter, r *http.Request, g *growing.Blob) error {
	if r.Method == http.MethodGet {
		s.arriving.streamed.Inc()
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", g.Digest().String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+g.Digest().String()+`"`)
	span, status, err := httprange.Select(h, r, g.Size())
	if err != nil {
		return ocierr.Wrap(ocierr.RangeInvalid, err)
	}
	h.Set("Content-Length", strconv.FormatInt(span.Length, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	var out io.Writer = w
	if s.egress != nil {
		out = &pace.Writer{Ctx: r.Context(), W: w, Lim: s.egress}
	}
	rc := http.NewResponseController(w)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	pl := g.PieceLength()
	for off, end := span.Start, span.Start+span.Length; off < end; {
		i := int(off / pl)
		if err := g.Wait(r.Context(), i); err != nil {
			if errors.Is(err, growing.ErrFailed) {
				panic(http.ErrAbortHandler)
			}
			return nil // the client went away
		}
		n := min(int64(len(buf)), (int64(i)+1)*pl-off, end-off)
		if _, err := g.ReadAt(buf[:n], off); err != nil {
			panic(http.ErrAbortHandler)
		}
		if _, err := out.Write(buf[:n]); err != nil {
			return nil
		}
		s.metrics.bytesOut.Add(float64(n))
		off += n
		if off%pl == 0 {
			// A piece is out: let it reach the client now rather than
			// when the buffer fills, as the next may take a while.
			rc.Flush()
		}
	}
	return nil
}
