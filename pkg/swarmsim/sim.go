// Package swarmsim simulates a Shoal rollout on fleets too large for one
// machine: a discrete-event model, without sockets or goroutines, of N
// agents pulling one image from one origin, driving the code that decides
// the rollout.
//
// What runs for real:
//   - pkg/scheduler, one per agent and layer, fed as pkg/swarm feeds it:
//     peers with their bitfields, haves, pieces, busy answers, bytes
//     moving, expiries, stalled peers, the streaming position; its
//     requests go to the peers it chose;
//   - the tracker's swarm table and hand-out policy (tracker.Table): every
//     announce, origin grant and peer list is the real one;
//   - every seeder's uplink gate (pkg/uplink): slots, queue, one piece per
//     stream on the wire, busy refusals with their retry hint, lowest
//     piece first, a requester holding fewer pieces taking a waiting
//     request's place when full.
//
// What is modelled, after the code it mirrors:
//   - links: per-host uplink and downlink caps and an access latency
//     (a message between two hosts takes the sum); a piece in flight is a
//     flow sharing both links max-min fairly, recomputed locally (net.go);
//   - pkg/p2p's seeder: a have per stream as each piece lands (a growing
//     blob says so when it grows), the origin's super-seeding (one
//     never-sent piece offered per peer at a time, and not to a second
//     peer within the patience of its last offer; more when a peer idles;
//     a piece counts as gone once asked for, and a peer with a piece
//     waiting or on the wire is not idle; an idle offer skips pieces whose
//     last copy left within the patience plus two piece-times), dials of a
//     few round trips, dial-back to peers that contact us;
//   - pkg/swarm's loop: announce every interval, at most MaxConns peers
//     (a connection to a peer that has held nothing we lack for 5s gives
//     its place to a new one from the tracker), redial backoff, cancels,
//     bytes moving (8 KiB a tick), and when the swarm is quiet — no piece,
//     have, busy answer, bytes moving or new holder for max(StallTimeout,
//     3 × the slowest deadline, 3 × the longest busy hint), three times
//     that before the first piece from peers, and no request out — one
//     piece at a time from the origin's /v2, whose reader gate
//     (pkg/origin) answers 429 beyond its readers (a 429 is retried after
//     its Retry-After plus jitter); a download that finds nobody else at
//     its first announce reads the origin so at once, until the tracker
//     hands out peers, and never the whole layer in one go;
//   - pkg/agent: layers three at a time, complete blobs announced every
//     seed interval; the load test's client streams each layer in order
//     (first byte = a piece 0 held); staggered starts; churn (an agent
//     dies, its connections reset, and it comes back with what it held).
//
// What is not: TCP (no slow start, loss or queueing delay: a flow gets its
// fair share from its first byte), CPU and disk, control RPCs (manifest,
// metainfo and announces take no time beyond a start delay of two round
// trips), an unreachable tracker (every announce is answered, so pkg/swarm's
// paths for a tracker that is down are not taken), bandwidth of control
// messages, more than one origin, zones and racks. The seeder's and the download's timers tick every Config.Tick.
//
// Runs are reproducible: the same Config, Seed included, gives the same
// Result (pkg/scheduler sorts its peers before shuffling them with the
// random source it is given; where pkg/swarm takes the first of a map,
// the simulator draws from its own seeded source).
package swarmsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/scheduler"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/uplink"
)

// ErrEventLimit is returned when a run reaches Config.MaxEvents.
var ErrEventLimit = errors.New("swarmsim: event limit reached")

// base is the wall-clock time of simulated time zero, for the APIs that
// take a time.Time.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type sim struct {
	cfg     Config
	layers  []layerInfo
	rnd     *rand.Rand
	now     time.Duration
	seq     uint64
	events  eventHeap
	net     network
	hosts   []*host // agents, then the origin
	origin  *host
	table   *tracker.Table
	origins []ring.Member
	ids     map[string]*host
	res     *Result
	// left counts agents not done yet.
	left     int
	dlSerial uint64
	owners   uint64 // streams, as owners in the seeders' gates
	dls      []*download
	useful   int64 // first copies of pieces received
	// nextSample is when the timeline is sampled next.
	nextSample time.Duration
}

// sample adds the fleet at time at to the timeline. Flows' rates hold
// between events, so the rates now are the rates at at.
func (s *sim) sample(at time.Duration) {
	smp := Sample{At: at, Done: float64(s.useful) / float64(int64(s.cfg.Agents)*s.cfg.BlobBytes), Flows: len(s.net.heap)}
	working := 0
	for _, h := range s.hosts {
		if h.origin {
			continue
		}
		if h.done {
			smp.Finished++
			continue
		}
		working++
		up, down := &s.net.links[h.up], &s.net.links[h.down]
		for _, f := range up.flows {
			smp.UpUse += f.rate / up.cap
		}
		for _, f := range down.flows {
			smp.DownUse += f.rate / down.cap
		}
	}
	up := &s.net.links[s.origin.up]
	for _, f := range up.flows {
		smp.OriginUse += f.rate / up.cap
	}
	if working > 0 {
		smp.UpUse /= float64(working)
		smp.DownUse /= float64(working)
	}
	s.res.Timeline = append(s.res.Timeline, smp)
}

// Run simulates the rollout described by cfg until every agent is done,
// MaxSimTime passes (unfinished agents fail), MaxEvents is reached
// (ErrEventLimit, with the result so far) or ctx ends. The same Config
// gives the same Result, wall time aside.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	cfg = cfg.withDefaults()
	s := newSim(cfg)
	err := s.loop(ctx)
	s.finish()
	s.res.Wall = time.Since(start)
	return s.res, err
}

func newSim(cfg Config) *sim {
	s := &sim{
		cfg:    cfg,
		layers: cfg.layers(),
		rnd:    rand.New(rand.NewPCG(cfg.Seed, 0x5ea5)),
		ids:    map[string]*host{},
		left:   cfg.Agents,
	}
	tcfg := cfg.Tracker
	tcfg.Seed = cfg.Seed ^ 0x7a11 | 1
	s.table = tracker.NewTable(tcfg)
	s.res = &Result{Config: cfg, Bound: cfg.bound(), PieceLength: s.layers[0].pieceLen, Agents: make([]AgentResult, cfg.Agents)}
	for _, l := range s.layers {
		s.res.Pieces += l.pieces
	}
	for i := range cfg.Agents + 1 {
		h := &host{idx: i, alive: true, lat: cfg.Latency, slots: cfg.Slots, queue: cfg.Queue}
		if i < cfg.Agents {
			h.id = fmt.Sprintf("agent%05d", i)
			h.up = s.net.addLink(float64(cfg.UpBps) * cfg.PayloadShare)
			h.down = s.net.addLink(float64(cfg.DownBps) * cfg.PayloadShare)
		} else {
			h.id, h.origin = "origin", true
			h.slots, h.queue = cfg.OriginSlots, cfg.OriginQueue
			h.readers = &readerGate{max: cfg.OriginReaders}
			h.up = s.net.addLink(float64(cfg.OriginBps) * cfg.PayloadShare)
			h.down = s.net.addLink(0)
			s.origin = h
			s.origins = []ring.Member{{ID: "origin-0", PeerID: h.id}}
			h.served = make([]*handedOut, len(s.layers))
			for l, li := range s.layers {
				h.served[l] = &handedOut{sent: make([]int, li.pieces), offers: make([]int, li.pieces),
					last: make([]time.Duration, li.pieces), offered: make([]time.Duration, li.pieces)}
			}
		}
		h.pid = scheduler.PeerID(h.id)
		h.gate = uplink.New(h.slots, h.queue)
		h.pending = map[uplink.Ticket]*admitted{}
		h.held = make([][]byte, len(s.layers))
		h.nheld = make([]int, len(s.layers))
		h.serving = make([][]*stream, len(s.layers))
		h.dls = make([]*download, len(s.layers))
		h.layerDone = make([]bool, len(s.layers))
		for l, li := range s.layers {
			h.held[l] = make([]byte, (li.pieces+7)/8)
			if h.origin {
				for p := range li.pieces {
					setBit(h.held[l], p)
				}
				h.nheld[l] = li.pieces
				h.layerDone[l] = true
			}
		}
		s.hosts = append(s.hosts, h)
		s.ids[h.id] = h
	}
	churned := int(cfg.Churn * float64(cfg.Agents))
	for i := range cfg.Agents {
		var offset time.Duration
		if cfg.Agents > 1 {
			offset = cfg.Stagger * time.Duration(i) / time.Duration(cfg.Agents-1)
		}
		h := s.hosts[i]
		s.res.Agents[i].Start = offset
		s.push(event{at: offset, kind: evAgentStart, h: h})
		if i < churned {
			s.push(event{at: offset + cfg.ChurnAt, kind: evLeave, h: h})
		}
	}
	return s
}

// host is an agent or the origin.
type host struct {
	idx       int
	id        string
	pid       scheduler.PeerID
	origin    bool
	up, down  int32
	lat       time.Duration
	alive     bool
	epoch     int
	slots     int
	queue     int
	gate      *uplink.Gate
	pending   map[uplink.Ticket]*admitted
	held      [][]byte // per layer, MSB first
	nheld     []int
	serving   [][]*stream // per layer: streams this host seeds
	dls       []*download // per layer: the download in progress
	layerDone []bool
	served    []*handedOut // origin: super-seeding per layer
	readers   *readerGate  // origin: /v2 readers admitted
	nextLayer int
	running   int
	done      bool
	gotFirst  bool
}

// admitted is a request its seeder's gate took.
type admitted struct {
	st    *stream
	piece int
}

func (s *sim) push(e event) {
	s.seq++
	e.seq = s.seq
	s.events.push(e)
}

// after schedules e at d from now.
func (s *sim) after(d time.Duration, e event) {
	e.at = s.now + d
	s.push(e)
}

// oneway is the delay of a message between two hosts.
func (s *sim) oneway(a, b *host) time.Duration { return a.lat + b.lat }

func (s *sim) at() time.Time { return base.Add(s.now) }

func (s *sim) loop(ctx context.Context) error {
	for s.left > 0 {
		var next time.Duration
		flowFirst := false
		switch {
		case len(s.events) == 0 && len(s.net.heap) == 0:
			return nil // nothing can happen any more: the rest fail
		case len(s.events) == 0:
			flowFirst = true
		case len(s.net.heap) == 0:
		default:
			flowFirst = s.net.heap[0].finish <= s.events[0].at
		}
		if flowFirst {
			next = s.net.heap[0].finish
		} else {
			next = s.events[0].at
		}
		if next > s.cfg.MaxSimTime {
			return nil
		}
		for step := s.res.Bound / 20; step > 0 && s.nextSample <= next; {
			s.sample(s.nextSample)
			s.nextSample += step
		}
		s.now = next
		s.res.Events++
		if s.res.Events > s.cfg.MaxEvents {
			return fmt.Errorf("%w (%d) at %v simulated", ErrEventLimit, s.cfg.MaxEvents, s.now)
		}
		if s.res.Events&0xffff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if flowFirst {
			s.flowDone(s.net.heap[0])
			continue
		}
		s.dispatch(s.events.pop())
	}
	return nil
}

func (s *sim) dispatch(e event) {
	switch e.kind {
	case evAgentStart:
		s.startPull(e.h)
		s.startSeedLoop(e.h)
	case evDlBegin:
		if !e.dl.ended {
			s.announce(e.dl, true)
			s.after(s.cfg.Tick, event{kind: evTick, dl: e.dl})
		}
	case evAnnounce:
		if !e.dl.ended {
			s.announce(e.dl, false)
		}
	case evTick:
		s.tick(e.dl)
	case evSeedAnnounce:
		s.seedAnnounce(e.h, e.epoch)
	case evStreamOpen:
		s.streamOpen(e.st)
	case evDialResult:
		s.dialResult(e.st, e.flag)
	case evRequest:
		s.request(e.st, e.piece)
	case evCancel:
		s.cancel(e.st, e.piece)
	case evBusy:
		s.busy(e.st, e.piece, e.d)
	case evPiece:
		s.piece(e.st, e.piece)
	case evHave:
		s.have(e.st, e.piece)
	case evSeederClose:
		s.seederClose(e.st, false)
	case evSeederReset:
		s.seederClose(e.st, true)
	case evConnErr:
		s.connErr(e.st)
	case evSuperIdle:
		s.superIdle(e.st)
	case evHTTPStart:
		s.httpStart(e.dl, e.piece)
	case evHTTPPiece:
		s.httpPiece(e.dl, e.piece)
	case evHTTPBusy:
		s.httpBusy(e.dl, e.piece, e.d)
	case evLeave:
		s.leave(e.h)
	case evReturn:
		s.back(e.h)
	}
}

// flowDone: the last byte of f left its sender.
func (s *sim) flowDone(f *flow) {
	s.net.stop(f, s.now)
	s.account(f, f.bytes)
	if f.st == nil {
		s.origin.readers.release(s.now - f.start)
		s.after(s.oneway(s.origin, f.dl.h), event{kind: evHTTPPiece, dl: f.dl, piece: f.piece})
		return
	}
	st, h := f.st, f.st.seeder
	st.sending = deleteFlow(st.sending, f)
	h.gate.Done(st.owner, s.now-f.start)
	delete(h.pending, uplink.Ticket(f.ticket))
	s.after(s.oneway(h, st.dl.h), event{kind: evPiece, st: st, piece: f.piece})
	if st.super != nil && st.seedOpen {
		st.super.add(-1, s.now) // a piece on the wire is activity until it is sent
		if next := s.offer(st, true); next >= 0 {
			s.after(s.oneway(h, st.dl.h), event{kind: evHave, st: st, piece: next})
		}
	}
	s.pump(h)
}

// abort cuts f off: the sender or the receiver is gone, or the stream was
// reset. The bytes already sent count on both sides.
func (s *sim) abort(f *flow) {
	s.net.stop(f, s.now)
	n := f.sent(s.now)
	s.account(f, n)
	s.res.AbortedBytes += n
	if f.st == nil {
		s.origin.readers.release(0)
		return
	}
	st, h := f.st, f.st.seeder
	st.sending = deleteFlow(st.sending, f)
	if h.alive {
		h.gate.Done(st.owner, 0)
		delete(h.pending, uplink.Ticket(f.ticket))
	}
}

// account counts n bytes of f as sent and received.
func (s *sim) account(f *flow, n int64) {
	var from, to *host
	if f.st == nil {
		from, to = s.origin, f.dl.h
	} else {
		from, to = f.st.seeder, f.st.dl.h
	}
	s.res.ReceivedBytes += n
	s.res.Agents[to.idx].Received += n
	if from.origin {
		s.res.OriginEgress += n
		s.res.Agents[to.idx].FromOrigin += n
	} else {
		s.res.PeerBytes += n
		s.res.Agents[from.idx].Uploaded += n
	}
}

func deleteFlow(fs []*flow, f *flow) []*flow {
	if i := slices.Index(fs, f); i >= 0 {
		return slices.Delete(fs, i, i+1)
	}
	return fs
}

func (s *sim) finish() {
	r := s.res
	r.SimTime = s.now
	// Pieces on their way to agents that already hold them are duplicates
	// too (the end game's losers, mostly).
	for _, e := range s.events {
		var dl *download
		switch e.kind {
		case evPiece:
			dl = e.st.dl
		case evHTTPPiece:
			dl = e.dl
		default:
			continue
		}
		if hasBit(dl.h.held[dl.layer], e.piece) {
			r.DuplicateBytes += s.layers[dl.layer].pieceBytes(e.piece)
		}
	}
	for i := range r.Agents {
		if !s.hosts[i].done {
			r.Agents[i].Failed = true
			r.Failed++
		}
	}
	r.OriginCopies = float64(r.OriginEgress) / float64(s.cfg.BlobBytes)
	for _, dl := range s.dls {
		c := dl.sched.Counters()
		r.Expired += c.Expired
		r.Busy += c.Busy
		r.EndGame += c.EndGame
	}
}

func setBit(b []byte, i int)      { b[i/8] |= 0x80 >> (i % 8) }
func hasBit(b []byte, i int) bool { return b[i/8]&(0x80>>(i%8)) != 0 }
