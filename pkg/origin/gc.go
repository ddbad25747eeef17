package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/gc"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/ocierr"
)

// InternalGCPath runs a garbage collection pass on this origin: POST with
// a JSON gc.Options body, answered with the gc.Report. Like the other
// internal endpoints it needs the cluster secret; `shoal-origin gc` calls
// it.
const InternalGCPath = "/internal/v1/gc"

// toucher is the part of the index that records a digest's use, so a GC
// pass running meanwhile keeps it (repostore.Etcd).
type toucher interface {
	Touch(ctx context.Context, ds ...digest.Digest) error
}

// touch records that a push uses ds, before it commits, links or checks
// them. Without a shared index (an origin alone) there is no online GC and
// nothing to record.
func (s *Server) touch(ctx context.Context, ds ...digest.Digest) error {
	t, ok := s.repos.(toucher)
	if !ok {
		return nil
	}
	if err := t.Touch(ctx, ds...); err != nil {
		return fmt.Errorf("record use of %d digests: %w", len(ds), err)
	}
	return nil
}

// SetCollector makes the origin run c's schedule and answer InternalGCPath
// with its passes. Call it before Run.
func (s *Server) SetCollector(c *gc.Collector) { s.collector = c }

// GCCluster is the view of the cluster a gc.Collector on this origin
// needs. The origin must be in cluster mode.
func (s *Server) GCCluster() gc.Cluster { return gcCluster{s} }

type gcCluster struct{ s *Server }

func (g gcCluster) Self() string { return g.s.cluster.Self }

func (g gcCluster) Owners(d digest.Digest) []string {
	var ids []string
	for _, m := range g.s.cluster.owners(d) {
		ids = append(ids, m.ID)
	}
	return ids
}

func (g gcCluster) Others() []string {
	var ids []string
	for _, m := range g.s.cluster.Members.Ring().Members() {
		if m.ID != g.s.cluster.Self {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func (g gcCluster) addr(id string) (string, error) {
	for _, m := range g.s.cluster.Members.Ring().Members() {
		if m.ID == id {
			return m.Addr, nil
		}
	}
	return "", fmt.Errorf("origin %s is not on the ring", id)
}

func (g gcCluster) Has(ctx context.Context, id string, d digest.Digest) (bool, error) {
	if id == g.s.cluster.Self {
		_, err := g.s.blobs.Stat(ctx, d)
		return err == nil, nil
	}
	addr, err := g.addr(id)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.s.cluster.cfg.PeerTimeout)
	defer cancel()
	return g.s.cluster.client.has(ctx, addr, d)
}

func (g gcCluster) ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	b, err := g.s.readManifest(ctx, d)
	if err != nil {
		return nil, err
	}
	if len(b) > manifest.MaxSize {
		return nil, errors.New("manifest over the size limit")
	}
	return b, nil
}

func (g gcCluster) Sweep(ctx context.Context, id string, o gc.Options) (*gc.Report, error) {
	addr, err := g.addr(id)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(o)
	c := g.s.cluster.client
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.scheme+"://"+addr+InternalGCPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gc on %s: %w", id, err)
	}
	defer resp.Body.Close()
	return DecodeGCReport(resp)
}

// DecodeGCReport reads an InternalGCPath answer.
func DecodeGCReport(resp *http.Response) (*gc.Report, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	var rep gc.Report
	if jerr := json.Unmarshal(b, &rep); jerr != nil || (resp.StatusCode != http.StatusOK && rep.Origin == "") {
		return nil, fmt.Errorf("gc: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if resp.StatusCode != http.StatusOK {
		return &rep, fmt.Errorf("gc on %s failed: %s", rep.Origin, strings.Join(rep.Errors, "; "))
	}
	return &rep, nil
}

// serveGC runs a pass for an authenticated caller (see serveInternal).
func (s *Server) serveGC(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return ocierr.New(ocierr.Unsupported, "method %s", r.Method).WithStatus(http.StatusMethodNotAllowed)
	}
	if s.collector == nil {
		return ocierr.New(ocierr.Unsupported, "garbage collection is not configured on this origin").WithStatus(http.StatusNotFound)
	}
	var o gc.Options
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&o); err != nil {
		return ocierr.New(ocierr.Unsupported, "gc options: %v", err).WithStatus(http.StatusBadRequest)
	}
	rep, err := s.collector.Pass(r.Context(), o)
	status := http.StatusOK
	if err != nil {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(rep)
}
