package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/repostore"
)

// Index is what a pass reads and changes in the shared index
// (repostore.Etcd).
type Index interface {
	Snapshot(ctx context.Context) (*repostore.Snapshot, error)
	Condemn(ctx context.Context, d digest.Digest, touchRev int64, linkKeys []string) (bool, error)
	TouchRevision(ctx context.Context, d digest.Digest) (int64, error)
	DeleteManifestIf(ctx context.Context, m repostore.SnapManifest, touchRev int64, tags []repostore.SnapTag) (bool, error)
	DeleteTagIf(ctx context.Context, t repostore.SnapTag) (bool, error)
}

// Cluster is what a pass needs from the origin it runs in.
type Cluster interface {
	// Self is this origin's member ID.
	Self() string
	// Owners are the IDs of the origins that should hold d.
	Owners(d digest.Digest) []string
	// Others are the IDs of the other live origins.
	Others() []string
	// Has asks origin id whether it holds d.
	Has(ctx context.Context, id string, d digest.Digest) (bool, error)
	// ReadManifest returns manifest d's bytes, from this origin or another.
	ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error)
	// Sweep has origin id run a pass of its own store.
	Sweep(ctx context.Context, id string, o Options) (*Report, error)
}

// Options select what a pass does.
type Options struct {
	// DryRun reports and removes nothing.
	DryRun bool `json:"dry_run"`
	// Retention applies the retention rules before marking.
	Retention bool `json:"retention"`
	// Peers has every other origin sweep its own store afterwards.
	Peers bool `json:"peers"`
	// Excluded are "repo@digest" manifests a dry-run retention would have
	// removed, so the peers' dry runs mark as if it had.
	Excluded []string `json:"excluded,omitempty"`
}

// Removed is one blob a pass removed (or would remove).
type Removed struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	Reason string        `json:"reason"` // "unreferenced" or "not_owner"
}

// Report is what a pass did, on one origin and, with Options.Peers, on the
// others.
type Report struct {
	Origin           string        `json:"origin"`
	DryRun           bool          `json:"dry_run"`
	Started          time.Time     `json:"started"`
	Duration         time.Duration `json:"duration_ns"`
	Revision         int64         `json:"revision"`
	Manifests        int           `json:"manifests"`
	Marked           int           `json:"marked"`
	Scanned          int           `json:"scanned"`
	TagsDeleted      []string      `json:"tags_deleted,omitempty"`
	ManifestsDeleted []string      `json:"manifests_deleted,omitempty"`
	// Blobs lists the first maxListed blobs removed; the counts below
	// cover all of them.
	Blobs        []Removed `json:"blobs,omitempty"`
	BlobsDeleted int       `json:"blobs_deleted"`
	BytesDeleted int64     `json:"bytes_deleted"`
	// Kept counts victims found in use again during the pass.
	Kept      int      `json:"kept"`
	TempFiles int      `json:"temp_files"`
	TempBytes int64    `json:"temp_bytes"`
	Errors    []string `json:"errors,omitempty"`
	Peers     []Report `json:"peers,omitempty"`
}

// maxListed bounds Report.Blobs: a first pass over a large store can
// remove millions of blobs, and the report travels as one JSON body.
const maxListed = 10000

// Collector runs passes on one origin.
type Collector struct {
	cfg     Config
	index   Index
	store   *Store
	cluster Cluster
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	mu sync.Mutex // one pass at a time
}

// New makes a collector over the shared index, this origin's (locked)
// store and its cluster. Metrics are registered on reg.
func New(cfg Config, index Index, store *Store, cluster Cluster, reg prometheus.Registerer, log *slog.Logger) (*Collector, error) {
	cfg = cfg.withDefaults()
	cfg.Retention = slices.Clone(cfg.Retention)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Collector{cfg: cfg, index: index, store: store, cluster: cluster, log: log.With("component", "gc"), m: newMetrics(reg), now: time.Now}, nil
}

// Run runs a pass (retention and this origin's sweep) every Interval until
// ctx ends; with no interval it returns at once.
func (c *Collector) Run(ctx context.Context) error {
	if c.cfg.Interval <= 0 {
		return nil
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := c.Pass(ctx, Options{DryRun: c.cfg.DryRun, Retention: true}); err != nil && ctx.Err() == nil {
			c.log.Error("gc pass failed", "err", err)
		}
	}
}

// Pass runs one pass now (waiting for one in progress to end).
func (c *Collector) Pass(ctx context.Context, o Options) (*Report, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := c.now()
	rep := &Report{Origin: c.cluster.Self(), DryRun: o.DryRun, Started: start}
	err := c.pass(ctx, o, rep)
	rep.Duration = c.now().Sub(start)
	c.m.duration.Observe(rep.Duration.Seconds())
	if err != nil {
		c.m.runs.WithLabelValues("error").Inc()
		rep.Errors = append(rep.Errors, err.Error())
		return rep, err
	}
	c.m.runs.WithLabelValues("ok").Inc()
	c.m.lastSuccess.SetToCurrentTime()
	c.log.Info("gc pass done", "dry_run", o.DryRun, "blobs_deleted", rep.BlobsDeleted, "bytes_deleted", rep.BytesDeleted,
		"manifests_deleted", len(rep.ManifestsDeleted), "tags_deleted", len(rep.TagsDeleted), "kept", rep.Kept,
		"temp_files", rep.TempFiles, "took", rep.Duration.Round(time.Millisecond))
	if o.Peers {
		po := o
		po.Peers, po.Retention = false, false
		if o.DryRun {
			// The peers' dry runs mark as if retention had removed these.
			po.Excluded = append(slices.Clone(o.Excluded), rep.ManifestsDeleted...)
		}
		for _, id := range c.cluster.Others() {
			pr, err := c.cluster.Sweep(ctx, id, po)
			if err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("origin %s: %v", id, err))
				continue
			}
			rep.Peers = append(rep.Peers, *pr)
		}
	}
	return rep, nil
}

func (c *Collector) pass(ctx context.Context, o Options, rep *Report) error {
	// Ages are measured at the snapshot, not when the sweep reaches a
	// blob: a push that touched a digest just before the snapshot and
	// links it just after must find it young however long the pass
	// takes (reading hundreds of manifests, a paced sweep). Taken before
	// the read, so it is no later than the snapshot's revision.
	at := c.now()
	snap, err := c.index.Snapshot(ctx)
	if err != nil {
		return err
	}
	rep.Revision = snap.Revision
	parsed := map[digest.Digest]*manifest.Manifest{}
	for _, sm := range snap.Manifests {
		if parsed[sm.Digest] != nil {
			continue
		}
		b, err := c.cluster.ReadManifest(ctx, sm.Digest)
		if err != nil {
			// Its references are unknown: sweeping now could take them.
			return fmt.Errorf("gc: read manifest %s@%s: %w", sm.Repo, sm.Digest, err)
		}
		m, err := manifest.Parse(sm.Entry.MediaType, b)
		if err != nil {
			return fmt.Errorf("gc: parse manifest %s@%s: %w", sm.Repo, sm.Digest, err)
		}
		parsed[sm.Digest] = m
	}
	lim := rate.NewLimiter(rate.Inf, 1)
	if c.cfg.DeletesPerSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(c.cfg.DeletesPerSecond), 1)
	}
	gone := map[string]bool{}
	for _, k := range o.Excluded {
		gone[k] = true
	}
	if o.Retention {
		if err := c.retain(ctx, o, at, snap, parsed, lim, gone, rep); err != nil {
			return err
		}
	}
	marked := map[digest.Digest]bool{}
	for _, sm := range snap.Manifests {
		if gone[sm.Repo+"@"+string(sm.Digest)] {
			continue
		}
		rep.Manifests++
		marked[sm.Digest] = true
		m := parsed[sm.Digest]
		for _, b := range m.RequiredBlobs() {
			marked[b.Digest] = true
		}
		for _, ch := range m.RequiredManifests() {
			marked[ch.Digest] = true
		}
	}
	rep.Marked = len(marked)
	return c.sweep(ctx, o, at, snap, marked, lim, rep)
}

// retain applies the retention rules repository by repository.
func (c *Collector) retain(ctx context.Context, o Options, now time.Time, snap *repostore.Snapshot, parsed map[digest.Digest]*manifest.Manifest, lim *rate.Limiter, gone map[string]bool, rep *Report) error {
	tags := map[string][]repostore.SnapTag{}
	for _, t := range snap.Tags {
		tags[t.Repo] = append(tags[t.Repo], t)
	}
	ms := map[string][]repoManifest{}
	for _, sm := range snap.Manifests {
		rm := repoManifest{SnapManifest: sm, Pushed: snap.Touches[sm.Digest].At}
		for _, ch := range parsed[sm.Digest].RequiredManifests() {
			rm.Children = append(rm.Children, ch.Digest)
		}
		ms[sm.Repo] = append(ms[sm.Repo], rm)
	}
	for repo, list := range ms {
		rule := ruleFor(c.cfg.Retention, repo)
		tagDrops, drops := plan(rule, tags[repo], list, now, c.cfg.Grace)
		// Tags this pass deleted are no longer there to compare.
		deleted := map[string]bool{}
		for _, td := range tagDrops {
			if err := lim.Wait(ctx); err != nil {
				return err
			}
			ok := o.DryRun
			if !o.DryRun {
				var err error
				if ok, err = c.index.DeleteTagIf(ctx, td.Tag); err != nil {
					return err
				}
			}
			if !ok {
				continue // moved since the snapshot: its new manifest decides
			}
			deleted[td.Tag.Tag] = true
			c.m.tags.Inc()
			rep.TagsDeleted = append(rep.TagsDeleted, td.Tag.Repo+":"+td.Tag.Tag)
			c.log.Info("gc: tag removed by retention", "repo", repo, "tag", td.Tag.Tag, "digest", td.Tag.Digest, "reason", td.Reason, "dry_run", o.DryRun)
		}
		for _, dm := range drops {
			if err := lim.Wait(ctx); err != nil {
				return err
			}
			var pointing []repostore.SnapTag
			for _, t := range tags[repo] {
				if t.Digest == dm.Manifest.Digest && !deleted[t.Tag] {
					pointing = append(pointing, t)
				}
			}
			ok := o.DryRun
			if !o.DryRun {
				var err error
				ok, err = c.index.DeleteManifestIf(ctx, dm.Manifest.SnapManifest, snap.Touches[dm.Manifest.Digest].Revision, pointing)
				if err != nil {
					return err
				}
			}
			if !ok {
				c.log.Info("gc: manifest kept, pushed or tagged again during the pass", "repo", repo, "digest", dm.Manifest.Digest)
				continue
			}
			key := repo + "@" + string(dm.Manifest.Digest)
			gone[key] = true
			c.m.manifests.Inc()
			rep.ManifestsDeleted = append(rep.ManifestsDeleted, key)
			c.log.Info("gc: manifest removed by retention", "repo", repo, "digest", dm.Manifest.Digest, "rule", rule.String(), "reason", dm.Reason, "dry_run", o.DryRun)
		}
	}
	return nil
}

// sweep removes what this origin no longer needs from its own store.
func (c *Collector) sweep(ctx context.Context, o Options, now time.Time, snap *repostore.Snapshot, marked map[digest.Digest]bool, lim *rate.Limiter, rep *Report) error {
	var infos []blobstore.Info
	if err := c.store.Walk(ctx, func(i blobstore.Info) error { infos = append(infos, i); return nil }); err != nil {
		return fmt.Errorf("gc: walk store: %w", err)
	}
	rep.Scanned = len(infos)
	self := c.cluster.Self()
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := info.Digest
		young := now.Sub(info.ModTime) < c.cfg.Grace
		if marked[d] {
			if young || slices.Contains(c.cluster.Owners(d), self) || !c.ownersHold(ctx, d) {
				continue
			}
			c.remove(ctx, o, d, "not_owner", lim, rep, func(context.Context) (bool, error) {
				// The ring may have moved while the owners were asked.
				return !slices.Contains(c.cluster.Owners(d), self), nil
			})
			continue
		}
		// The last push's touch decides, not the file's time: a copy
		// made by replication or a manifest cached here is no new use.
		// Only a blob never touched (stored before touches existed)
		// falls back on its file time.
		touched := snap.Touches[d]
		if touched.Revision != 0 {
			young = now.Sub(touched.At) < c.cfg.Grace
		}
		if young {
			continue
		}
		if !o.DryRun {
			if err := lim.Wait(ctx); err != nil {
				return err
			}
			ok, err := c.index.Condemn(ctx, d, touched.Revision, snap.Links[d])
			if err != nil {
				rep.Errors = append(rep.Errors, err.Error())
				continue
			}
			if !ok {
				c.kept(d, rep)
				continue
			}
		}
		c.remove(ctx, o, d, "unreferenced", lim, rep, func(ctx context.Context) (bool, error) {
			rev, err := c.index.TouchRevision(ctx, d)
			return rev == touched.Revision, err
		})
	}
	n, b, err := c.store.PurgeTemp(now.Add(-c.cfg.TempMaxAge), o.DryRun)
	if err != nil {
		return err
	}
	rep.TempFiles, rep.TempBytes = n, b
	if !o.DryRun {
		c.m.tempFiles.Add(float64(n))
	}
	return nil
}

func (c *Collector) kept(d digest.Digest, rep *Report) {
	rep.Kept++
	c.m.kept.Inc()
	c.log.Info("gc: blob used again during the pass; kept", "digest", d)
}

// ownersHold reports whether every owner of d holds it.
func (c *Collector) ownersHold(ctx context.Context, d digest.Digest) bool {
	for _, id := range c.cluster.Owners(d) {
		ok, err := c.cluster.Has(ctx, id, d)
		if err != nil || !ok {
			return false
		}
	}
	return true
}

// remove deletes d if still says so under d's lock (or, dry, reports it).
func (c *Collector) remove(ctx context.Context, o Options, d digest.Digest, reason string, lim *rate.Limiter, rep *Report, still func(context.Context) (bool, error)) {
	if o.DryRun {
		info, err := c.store.Stat(ctx, d)
		if err == nil {
			rep.list(Removed{Digest: d, Size: info.Size, Reason: reason})
			rep.BlobsDeleted++
			rep.BytesDeleted += info.Size
		}
		return
	}
	if err := lim.Wait(ctx); err != nil {
		return
	}
	size, err := c.store.DeleteIf(ctx, d, still)
	switch {
	case errors.Is(err, errKept):
		c.kept(d, rep)
		return
	case errors.Is(err, blobstore.ErrNotFound):
		return
	case err != nil:
		rep.Errors = append(rep.Errors, fmt.Sprintf("delete %s: %v", d, err))
		return
	}
	rep.list(Removed{Digest: d, Size: size, Reason: reason})
	rep.BlobsDeleted++
	rep.BytesDeleted += size
	c.m.blobs.WithLabelValues(reason).Inc()
	c.m.bytes.WithLabelValues(reason).Add(float64(size))
	c.log.Info("gc: blob deleted", "digest", d, "bytes", size, "reason", reason)
}

func (r *Report) list(rm Removed) {
	if len(r.Blobs) < maxListed {
		r.Blobs = append(r.Blobs, rm)
	}
}
