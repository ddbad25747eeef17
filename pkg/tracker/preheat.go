package tracker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/reference"
	"github.com/shoal-project/shoal/pkg/repostore"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Preheat puts at least K complete copies of an image on agents before a
// rollout asks for it:
//   - agents poll the tracker (PreheatPoll, signed like an announce) every
//     poll interval; the poll is how the tracker knows which agents are
//     alive and where they are (zone, rack, node), and its answer carries
//     the orders assigned to that agent;
//   - a preheat picks agents matching its selector, spread over zones then
//     racks, and counts a copy only when an agent has announced every blob
//     of the image complete: progress is read from the swarm table, never
//     from what an agent says about an order;
//   - the origin is paced: while no copy exists one agent fetches (from the
//     origin, one copy), and only then the others, which fetch from it;
//   - an agent that stops polling, or has not completed within the assign
//     timeout, is replaced by another, so the preheat still reaches K;
//   - a preheat whose copies already exist assigns nothing (a no-op).
//
// Preheat state lives in the tracker that took the request. In a cluster
// of several trackers the copies are counted from this tracker's swarm
// table, so the preheat's tracker must own the image's digests (one
// tracker, or agents polling the tracker that owns them).

// PreheatConfig configures preheats. Zero values take defaults.
type PreheatConfig struct {
	// PollInterval is how often agents poll for orders (default 2s); an
	// agent silent for three intervals is dead to preheats.
	PollInterval time.Duration `yaml:"poll_interval"`
	// PinTTL is how long agents pin preheated blobs (default 1h).
	PinTTL time.Duration `yaml:"pin_ttl"`
	// Timeout fails a preheat that has not reached its copies (default 30m).
	Timeout time.Duration `yaml:"timeout"`
	// AssignTimeout replaces an agent that has not announced a complete
	// copy this long after it was told to fetch (default 10m).
	AssignTimeout time.Duration `yaml:"assign_timeout"`
	// MaxRunning bounds preheats running at once (default 64).
	MaxRunning int `yaml:"max_running"`
	// Rules start preheats on tag pushes (the tracker watches the tags in
	// etcd).
	Rules []PreheatRule `yaml:"rules"`
}

// PreheatRule preheats every tag pushed that matches it.
type PreheatRule struct {
	// Repository and Tag are path.Match patterns ("team/*", "v*"); an
	// empty Tag matches every tag.
	Repository string `yaml:"repository"`
	Tag        string `yaml:"tag"`
	// Copies is K (default 1).
	Copies int `yaml:"copies"`
	// Selector restricts the agents: equal labels; empty fields match any.
	Selector struct {
		Zone string `yaml:"zone"`
		Rack string `yaml:"rack"`
		Node string `yaml:"node"`
	} `yaml:"selector"`
	// Registry is the agents' registry name for the image (default theirs).
	Registry string `yaml:"registry"`
	// Containerd: agents also pull the image into their node's containerd
	// (default true: a tag pushed is about to be run).
	Containerd *bool `yaml:"containerd"`
}

func (c PreheatConfig) withDefaults() PreheatConfig {
	if c.PollInterval <= 0 {
		c.PollInterval = 2 * time.Second
	}
	if c.PinTTL <= 0 {
		c.PinTTL = time.Hour
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Minute
	}
	if c.AssignTimeout <= 0 {
		c.AssignTimeout = 10 * time.Minute
	}
	if c.MaxRunning <= 0 {
		c.MaxRunning = 64
	}
	return c
}

// Validate checks the rules' patterns, so a typo fails at start.
func (c PreheatConfig) Validate() error {
	for i, r := range c.Rules {
		if _, err := path.Match(r.Repository, ""); err != nil || r.Repository == "" {
			return fmt.Errorf("preheat rule %d: repository pattern %q: %v", i, r.Repository, err)
		}
		if _, err := path.Match(r.Tag, ""); err != nil {
			return fmt.Errorf("preheat rule %d: tag pattern %q: %w", i, r.Tag, err)
		}
		if r.Copies < 0 || r.Copies > maxCopies {
			return fmt.Errorf("preheat rule %d: copies must be 0..%d", i, maxCopies)
		}
	}
	return nil
}

// Bounds on what a preheat request may ask: hostile input like announces.
const (
	maxCopies       = 1000
	maxPinSeconds   = 7 * 24 * 3600
	maxRegistryLen  = 255
	maxPreheatBlobs = 1000
	maxAgents       = 1 << 17
	maxFinished     = 1024
	finishedKept    = time.Hour
	tokenMinLen     = 16
)

type agentSeen struct {
	zone, rack, node string
	seen             time.Time
}

type preheatJob struct {
	id, repo, registry string
	tag                string // asked by tag ("" by digest)
	containerd         bool   // agents also pull into containerd
	manifest           digest.Digest
	digests            []string
	copies             int
	sel                *shoalpb.Labels
	pin                time.Duration
	created, ended     time.Time
	state, err         string
	noop               bool
	assigned           map[string]time.Time // agent → when told
	replaced           map[string]bool      // agents given up on
	complete           []string
	everAssigned       bool
}

type preheater struct {
	mu     sync.Mutex
	agents map[string]*agentSeen
	jobs   map[string]*preheatJob
	rnd    *rand.Rand
	// token is sha256 of the preheat token; nil refuses Preheat calls.
	token []byte
}

func newPreheater() *preheater {
	return &preheater{agents: map[string]*agentSeen{}, jobs: map[string]*preheatJob{},
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// WithPreheatToken enables the Preheat RPCs for callers presenting token
// ("authorization: Bearer <token>"). Without it they are refused: a
// preheat makes agents fetch, so it is a privileged call. Tokens shorter
// than 16 bytes are refused too.
func WithPreheatToken(token string) Option {
	return func(s *Server) {
		if len(token) >= tokenMinLen {
			h := sha256.Sum256([]byte(token))
			s.preheat.token = h[:]
		}
	}
}

// WithTagEvents starts preheats by the config's rules on tag pushes
// read from events (repostore.Etcd.WatchTags) while Run runs.
func WithTagEvents(events <-chan repostore.TagEvent) Option {
	return func(s *Server) { s.tagEvents = events }
}

// checkToken compares the caller's bearer token with ours in constant time
// (hashes of both, so lengths leak nothing either).
func (s *Server) checkToken(ctx context.Context) error {
	if s.preheat.token == nil {
		return status.Error(codes.PermissionDenied, "preheat is disabled: the tracker has no preheat token file")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok {
			h := sha256.Sum256([]byte(tok))
			if subtle.ConstantTimeCompare(h[:], s.preheat.token) == 1 {
				return nil
			}
		}
	}
	s.metrics.preheats.WithLabelValues("refused").Inc()
	return status.Error(codes.Unauthenticated, "preheat needs the tracker's preheat token")
}

func validLabels(l *shoalpb.Labels) bool {
	return len(l.GetZone()) <= maxLabelLen && len(l.GetRack()) <= maxLabelLen && len(l.GetNode()) <= maxLabelLen
}

func matches(sel *shoalpb.Labels, zone, rack, node string) bool {
	return (sel.GetZone() == "" || sel.GetZone() == zone) &&
		(sel.GetRack() == "" || sel.GetRack() == rack) &&
		(sel.GetNode() == "" || sel.GetNode() == node)
}

// Preheat starts a preheat (or returns the running one for the same image,
// copies and selector) and answers with its status.
func (s *Server) Preheat(ctx context.Context, req *shoalpb.PreheatRequest) (*shoalpb.PreheatStatusResponse, error) {
	if err := s.checkToken(ctx); err != nil {
		return nil, err
	}
	switch {
	case reference.ValidateName(req.GetRepo()) != nil:
		return nil, status.Error(codes.InvalidArgument, "repo: invalid repository name")
	case req.GetCopies() < 1 || req.GetCopies() > maxCopies:
		return nil, status.Errorf(codes.InvalidArgument, "copies must be 1..%d", maxCopies)
	case !validLabels(req.GetSelector()):
		return nil, status.Errorf(codes.InvalidArgument, "selector labels longer than %d bytes", maxLabelLen)
	case len(req.GetRegistry()) > maxRegistryLen:
		return nil, status.Errorf(codes.InvalidArgument, "registry longer than %d bytes", maxRegistryLen)
	case req.GetPinSeconds() < 0 || req.GetPinSeconds() > maxPinSeconds:
		return nil, status.Errorf(codes.InvalidArgument, "pin_seconds must be 0..%d", maxPinSeconds)
	}
	ref, err := reference.ParseRef(req.GetReference())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "reference: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	md, blobs, err := s.resolveImage(rctx, req.GetRepo(), ref)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "resolve %s:%s: %v", req.GetRepo(), ref, err)
	}
	j, err := s.startPreheat(req, md, blobs, time.Now())
	if err != nil {
		return nil, err
	}
	return j, nil
}

// startPreheat registers a preheat of an image already resolved.
func (s *Server) startPreheat(req *shoalpb.PreheatRequest, md digest.Digest, blobs []digest.Digest, now time.Time) (*shoalpb.PreheatStatusResponse, error) {
	p := s.preheat
	pin := time.Duration(req.GetPinSeconds()) * time.Second
	if pin == 0 {
		pin = s.cfg.Preheat.PinTTL
	}
	ds := make([]string, len(blobs))
	for i, b := range blobs {
		ds[i] = string(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	running := 0
	for _, j := range p.jobs {
		if j.state != "running" {
			continue
		}
		running++
		if j.manifest == md && j.repo == req.GetRepo() && j.copies == int(req.GetCopies()) &&
			j.registry == req.GetRegistry() && sameLabels(j.sel, req.GetSelector()) {
			return j.status(), nil
		}
	}
	if running >= s.cfg.Preheat.MaxRunning {
		return nil, status.Errorf(codes.ResourceExhausted, "%d preheats running; wait for one to end", running)
	}
	j := &preheatJob{
		id: fmt.Sprintf("ph-%d-%04x", now.UnixMilli(), p.rnd.Uint32()&0xffff), repo: req.GetRepo(), registry: req.GetRegistry(),
		manifest: md, digests: ds, copies: int(req.GetCopies()), sel: req.GetSelector(), pin: pin, containerd: req.GetContainerd(),
		created: now, state: "running", assigned: map[string]time.Time{}, replaced: map[string]bool{},
	}
	if !strings.Contains(req.GetReference(), ":") {
		j.tag = req.GetReference()
	}
	p.jobs[j.id] = j
	s.metrics.preheats.WithLabelValues("started").Inc()
	s.log.Info("preheat started", "id", j.id, "repo", j.repo, "manifest", md, "blobs", len(ds), "copies", j.copies,
		"selector", fmt.Sprintf("zone=%q rack=%q node=%q", j.sel.GetZone(), j.sel.GetRack(), j.sel.GetNode()))
	s.stepLocked(j, now)
	return j.status(), nil
}

func sameLabels(a, b *shoalpb.Labels) bool {
	return a.GetZone() == b.GetZone() && a.GetRack() == b.GetRack() && a.GetNode() == b.GetNode()
}

func (j *preheatJob) status() *shoalpb.PreheatStatusResponse {
	st := &shoalpb.PreheatStatusResponse{
		Id: j.id, State: j.state, Digests: j.digests, ManifestDigest: string(j.manifest),
		CopiesWanted: int32(j.copies), CompletePeers: slices.Clone(j.complete), Noop: j.noop, Error: j.err,
	}
	for id := range j.assigned {
		st.FetchingPeers = append(st.FetchingPeers, id)
	}
	slices.Sort(st.FetchingPeers)
	return st
}

// PreheatStatus reports a preheat's progress.
func (s *Server) PreheatStatus(ctx context.Context, req *shoalpb.PreheatStatusRequest) (*shoalpb.PreheatStatusResponse, error) {
	if err := s.checkToken(ctx); err != nil {
		return nil, err
	}
	p := s.preheat
	p.mu.Lock()
	defer p.mu.Unlock()
	j, ok := p.jobs[req.GetId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such preheat")
	}
	return j.status(), nil
}

// PreheatPoll records a live agent and returns its orders.
func (s *Server) PreheatPoll(ctx context.Context, req *shoalpb.PreheatPollRequest) (*shoalpb.PreheatPollResponse, error) {
	p := req.GetPeer()
	switch {
	case p.GetId() == "" || len(p.GetId()) > maxIDLen:
		return nil, status.Errorf(codes.InvalidArgument, "peer id must be 1..%d bytes", maxIDLen)
	case len(p.GetAddrs()) > maxAddrs:
		return nil, status.Errorf(codes.InvalidArgument, "at most %d addrs", maxAddrs)
	case !validLabels(p.GetLabels()):
		return nil, status.Errorf(codes.InvalidArgument, "labels longer than %d bytes", maxLabelLen)
	}
	for _, a := range p.GetAddrs() {
		if a == "" || len(a) > maxAddrLen {
			return nil, status.Errorf(codes.InvalidArgument, "addr must be 1..%d bytes", maxAddrLen)
		}
	}
	// The same checks and charges as an announce: a poll proves the
	// peer's key, and costs one announce token.
	c, err := s.authenticate(ctx, req.GetProof(), []*shoalpb.AnnounceRequest{{Peer: p, Proof: req.GetProof()}})
	if err != nil {
		return nil, err
	}
	if err := s.admit(c, p.GetId(), 1); err != nil {
		return nil, err
	}
	now := time.Now()
	ph := s.preheat
	ph.mu.Lock()
	defer ph.mu.Unlock()
	a := ph.agents[p.GetId()]
	if a == nil {
		if len(ph.agents) >= maxAgents {
			return nil, status.Error(codes.ResourceExhausted, "tracker knows its maximum of agents; retry after the interval")
		}
		a = &agentSeen{}
		ph.agents[p.GetId()] = a
	}
	l := p.GetLabels()
	a.zone, a.rack, a.node, a.seen = l.GetZone(), l.GetRack(), l.GetNode(), now
	resp := &shoalpb.PreheatPollResponse{IntervalSeconds: int32(max(1, s.cfg.Preheat.PollInterval/time.Second))}
	for _, j := range ph.jobs {
		if _, ok := j.assigned[p.GetId()]; ok && j.state == "running" {
			resp.Orders = append(resp.Orders, &shoalpb.PreheatOrder{Id: j.id, Repo: j.repo, Registry: j.registry,
				Digests: j.digests, PinSeconds: int32(j.pin / time.Second),
				ManifestDigest: string(j.manifest), Tag: j.tag, Containerd: j.containerd})
		}
	}
	return resp, nil
}

// alive: the agent polled within three intervals.
func (s *Server) alive(a *agentSeen, now time.Time) bool {
	return a != nil && now.Sub(a.seen) < 3*s.cfg.Preheat.PollInterval
}

// stepLocked moves a preheat on: counts copies, replaces agents that died
// or stalled, assigns new ones within the pace. Called with preheat.mu.
func (s *Server) stepLocked(j *preheatJob, now time.Time) {
	if j.state != "running" {
		return
	}
	p := s.preheat
	complete := s.swarms.completeEverywhere(j.digests, now)
	j.complete = j.complete[:0]
	for _, id := range complete {
		a := p.agents[id]
		if a != nil && matches(j.sel, a.zone, a.rack, a.node) {
			j.complete = append(j.complete, id)
			delete(j.assigned, id)
		}
	}
	slices.Sort(j.complete)
	if len(j.complete) >= j.copies {
		j.state, j.ended, j.noop = "done", now, !j.everAssigned
		j.assigned = map[string]time.Time{}
		s.metrics.preheats.WithLabelValues("done").Inc()
		if j.noop {
			s.metrics.preheats.WithLabelValues("noop").Inc()
		}
		s.metrics.preheatCopies.Add(float64(len(j.complete)))
		s.log.Info("preheat done", "id", j.id, "copies", len(j.complete), "noop", j.noop, "took", now.Sub(j.created).Round(time.Millisecond))
		return
	}
	if now.Sub(j.created) > s.cfg.Preheat.Timeout {
		j.state, j.ended = "failed", now
		j.err = fmt.Sprintf("%d of %d copies after %s", len(j.complete), j.copies, s.cfg.Preheat.Timeout)
		j.assigned = map[string]time.Time{}
		s.metrics.preheats.WithLabelValues("failed").Inc()
		s.log.Warn("preheat failed", "id", j.id, "err", j.err)
		return
	}
	for id, at := range j.assigned {
		if a := p.agents[id]; !s.alive(a, now) || now.Sub(at) > s.cfg.Preheat.AssignTimeout {
			delete(j.assigned, id)
			j.replaced[id] = true
			s.metrics.preheatReplaced.Inc()
			s.log.Warn("preheat agent replaced", "id", j.id, "agent", id, "alive", s.alive(a, now))
		}
	}
	// Pace: the first copy comes off the origin, so one agent fetches it
	// alone; the others then fetch from it and from each other.
	limit := j.copies - len(j.complete)
	if len(j.complete) == 0 {
		limit = 1
	}
	if need := limit - len(j.assigned); need > 0 {
		for _, id := range s.pickAgents(j, need, now) {
			j.assigned[id] = now
			j.everAssigned = true
			s.metrics.preheatAssigned.Inc()
			s.log.Info("preheat agent assigned", "id", j.id, "agent", id)
		}
	}
	// Say why a preheat stands still, so its caller need not guess.
	j.err = ""
	if len(j.assigned) == 0 {
		j.err = fmt.Sprintf("waiting: no live agent matching the selector is left to fetch (%d agents polling)", len(p.agents))
	}
}

// pickAgents chooses up to n live agents for j, matching its selector,
// each from the zone (then rack) holding fewest of j's copies so far.
func (s *Server) pickAgents(j *preheatJob, n int, now time.Time) []string {
	p := s.preheat
	zones, racks := map[string]int{}, map[string]int{}
	count := func(id string) {
		if a := p.agents[id]; a != nil {
			zones[a.zone]++
			racks[a.zone+"/"+a.rack]++
		}
	}
	for _, id := range j.complete {
		count(id)
	}
	for id := range j.assigned {
		count(id)
	}
	var cands []string
	for id, a := range p.agents {
		_, busy := j.assigned[id]
		if busy || j.replaced[id] || slices.Contains(j.complete, id) || !s.alive(a, now) || !matches(j.sel, a.zone, a.rack, a.node) {
			continue
		}
		cands = append(cands, id)
	}
	// Random order first, so ties do not always pick the same agents.
	p.rnd.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	var out []string
	for len(out) < n && len(cands) > 0 {
		best := 0
		for i, id := range cands {
			a, b := p.agents[id], p.agents[cands[best]]
			if zones[a.zone] < zones[b.zone] || zones[a.zone] == zones[b.zone] && racks[a.zone+"/"+a.rack] < racks[b.zone+"/"+b.rack] {
				best = i
			}
		}
		id := cands[best]
		cands = slices.Delete(cands, best, best+1)
		out = append(out, id)
		count(id)
	}
	return out
}

// preheatLoop steps every running preheat each second and forgets dead
// agents and old finished preheats; it also starts preheats on tag
// pushes. It returns when ctx ends.
func (s *Server) preheatLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	events := s.tagEvents
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // the watch ended (etcd gone): rules stop, preheats go on
				s.log.Warn("tag watch ended; tag-triggered preheats stop")
				continue
			}
			s.onTag(ctx, ev)
		case now := <-t.C:
			s.stepAll(now)
		}
	}
}

func (s *Server) stepAll(now time.Time) {
	p := s.preheat
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, a := range p.agents {
		if now.Sub(a.seen) > 10*s.cfg.Preheat.PollInterval {
			delete(p.agents, id)
		}
	}
	var finished []*preheatJob
	for _, j := range p.jobs {
		s.stepLocked(j, now)
		if j.state != "running" {
			finished = append(finished, j)
		}
	}
	// Keep finished preheats an hour for their status, at most maxFinished.
	slices.SortFunc(finished, func(a, b *preheatJob) int { return b.ended.Compare(a.ended) })
	for i, j := range finished {
		if i >= maxFinished || now.Sub(j.ended) > finishedKept {
			delete(p.jobs, j.id)
		}
	}
}

// onTag starts the preheats of the rules a pushed tag matches. It runs in
// the preheat loop, so a slow origin (resolve is bounded at 30 s) delays
// the next step rather than piling up goroutines under a burst of pushes.
func (s *Server) onTag(ctx context.Context, ev repostore.TagEvent) {
	if ev.Digest == "" {
		return // a deletion
	}
	for _, r := range s.cfg.Preheat.Rules {
		if ok, _ := path.Match(r.Repository, ev.Repo); !ok {
			continue
		}
		if ok, _ := path.Match(r.Tag, ev.Tag); r.Tag != "" && !ok {
			continue
		}
		// Reference: the tag, which the containerd pull names the image
		// by; the image itself is resolved by the digest pushed.
		req := &shoalpb.PreheatRequest{Repo: ev.Repo, Reference: ev.Tag, Copies: int32(max(1, r.Copies)),
			Selector: &shoalpb.Labels{Zone: r.Selector.Zone, Rack: r.Selector.Rack, Node: r.Selector.Node}, Registry: r.Registry,
			Containerd: r.Containerd == nil || *r.Containerd}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		md, blobs, err := s.resolveImage(rctx, ev.Repo, reference.Ref{Digest: ev.Digest})
		cancel()
		if err != nil {
			s.log.Warn("tag preheat: resolve", "repo", ev.Repo, "tag", ev.Tag, "digest", ev.Digest, "err", err)
			continue
		}
		if _, err := s.startPreheat(req, md, blobs, time.Now()); err != nil {
			s.log.Warn("tag preheat", "repo", ev.Repo, "tag", ev.Tag, "err", err)
		}
	}
}
