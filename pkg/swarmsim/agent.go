package swarmsim

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/shoal-project/shoal/pkg/scheduler"
	"github.com/shoal-project/shoal/pkg/uplink"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// The downloading side: an agent's pull, and per layer pkg/swarm's
// download loop around a real scheduler.

// movingBytes is pkg/swarm's: what must arrive from a peer between two
// ticks for it to count as delivering.
const movingBytes = 8 << 10

// uselessAfter is pkg/swarm's: how long a connected peer may hold nothing
// we lack before its place may go to another.
const uselessAfter = 5 * time.Second

// maxRetryAfter is pkg/p2p's bound on a busy answer's hint.
const maxRetryAfter = 30 * time.Second

// download is one agent's download of one layer (pkg/swarm's download).
type download struct {
	h       *host
	layer   int
	sched   *scheduler.Scheduler
	conns   map[scheduler.PeerID]*stream
	tried   map[*host]*dialState
	dialing int
	stream  int // the streaming reader's next piece
	// lastSwarm is when the swarm last showed life: a piece from peers,
	// a have, a busy answer, bytes moving, a new peer holding pieces.
	lastSwarm time.Duration
	// received counts piece bytes from peers (duplicates included).
	received int64
	// busyHint is the longest wait a busy peer asked for.
	busyHint time.Duration
	// While the swarm is quiet (stalled), pieces come from the origin one
	// at a time (toppingUp), not before originRetry when it said busy.
	stalled     bool
	toppingUp   bool
	originRetry time.Duration
	// alone: nobody else was in the swarm at the last announce; while it
	// has no peers, pieces come from the origin one at a time at once,
	// not after the quiet limit.
	alone bool
	ended bool
}

// dialState is pkg/swarm's memory of a peer dialled: not again before
// next, or never.
type dialState struct {
	next  time.Duration
	never bool
	fails int
}

// startPull begins (or, after a restart, resumes) an agent's pull: layers
// in order, ParallelLayers at a time.
func (s *sim) startPull(h *host) {
	h.nextLayer, h.running = 0, 0
	s.fillLayers(h)
}

func (s *sim) fillLayers(h *host) {
	for h.running < s.cfg.ParallelLayers && h.nextLayer < len(s.layers) {
		l := h.nextLayer
		h.nextLayer++
		if h.layerDone[l] {
			continue // in the cache already
		}
		h.running++
		s.newDownload(h, l)
	}
	if h.running == 0 && !h.done {
		h.done = true
		s.res.Agents[h.idx].Done = s.now
		s.left--
	}
}

func (s *sim) newDownload(h *host, layer int) {
	li := s.layers[layer]
	have := make([]bool, li.pieces)
	for i := range have {
		have[i] = hasBit(h.held[layer], i)
	}
	s.dlSerial++
	dl := &download{
		h: h, layer: layer,
		sched:     scheduler.New(s.cfg.Scheduler, li.pieces, li.pieceLen, have, rand.New(rand.NewPCG(s.cfg.Seed, s.dlSerial))),
		conns:     map[scheduler.PeerID]*stream{},
		tried:     map[*host]*dialState{h: {never: true}},
		lastSwarm: s.now,
	}
	h.dls[layer] = dl
	s.dls = append(s.dls, dl)
	s.advanceStream(dl)
	// The manifest and the metainfo: two round trips, and a little
	// process time, so a fleet started at once does not announce in
	// lockstep.
	delay := 4*(h.lat+s.origin.lat) + s.jitter(20*time.Millisecond)
	s.after(delay, event{kind: evDlBegin, dl: dl})
}

// advanceStream moves the streaming reader past the pieces held.
func (s *sim) advanceStream(dl *download) {
	n := s.layers[dl.layer].pieces
	pos := dl.stream
	for pos < n && hasBit(dl.h.held[dl.layer], pos) {
		pos++
	}
	if pos != dl.stream || pos == 0 {
		dl.stream = pos
		if pos < n {
			dl.sched.SetStream(pos)
		}
	}
}

// announce tells the tracker what dl holds and dials the peers it hands
// out (pkg/swarm's announce and the first-announce rule of run).
func (s *sim) announce(dl *download, first bool) {
	h := dl.h
	req := &shoalpb.AnnounceRequest{
		Digest: s.layers[dl.layer].digest,
		Peer:   &shoalpb.Peer{Id: h.id},
		Have:   &shoalpb.AnnounceRequest_Bitfield{Bitfield: slices.Clone(h.held[dl.layer])},
	}
	resp, err := s.table.Announce(req.Digest, req, s.origins, s.at())
	interval := time.Second
	if err == nil {
		for _, p := range resp.GetPeers() {
			peer := s.ids[p.GetId()]
			if peer == nil || !s.mayDial(dl, peer) {
				continue
			}
			if len(dl.conns)+dl.dialing >= s.cfg.MaxConns && !s.makeRoom(dl) {
				break
			}
			s.dial(dl, peer, p.GetOrigin())
		}
		interval = time.Duration(max(1, resp.GetIntervalSeconds())) * time.Second
	}
	switch {
	case first && len(dl.tried) == 1:
		// Nobody else has it yet: the first node of a rollout reads the
		// origin piece by piece, and joins the swarm as soon as the
		// tracker hands out peers.
		dl.alone = true
		s.res.Alone++
	default:
		dl.alone = len(dl.conns) == 0 && dl.dialing == 0 && len(dl.tried) == 1
	}
	s.after(interval, event{kind: evAnnounce, dl: dl})
	s.topUp(dl)
}

func (s *sim) announceComplete(h *host, layer int) {
	req := &shoalpb.AnnounceRequest{
		Digest: s.layers[layer].digest,
		Peer:   &shoalpb.Peer{Id: h.id},
		Have:   &shoalpb.AnnounceRequest_Complete{Complete: true},
	}
	s.table.Announce(req.Digest, req, s.origins, s.at())
}

// startSeedLoop runs pkg/agent's seedLoop: complete blobs announced at
// once and every SeedInterval.
func (s *sim) startSeedLoop(h *host) {
	s.push(event{at: s.now, kind: evSeedAnnounce, h: h, epoch: h.epoch})
}

func (s *sim) seedAnnounce(h *host, epoch int) {
	if !h.alive || h.epoch != epoch {
		return
	}
	for l, done := range h.layerDone {
		if done {
			s.announceComplete(h, l)
		}
	}
	s.after(s.cfg.SeedInterval, event{kind: evSeedAnnounce, h: h, epoch: epoch})
}

// mayDial is pkg/swarm's: not connected, not ruled out, not being
// dialled, not waiting out a backoff.
func (s *sim) mayDial(dl *download, peer *host) bool {
	ds := dl.tried[peer]
	return dl.conns[peer.pid] == nil && (ds == nil || (!ds.never && s.now >= ds.next))
}

// makeRoom is pkg/swarm's: it closes one connection, made at least
// uselessAfter ago and not to an origin, to a peer that holds nothing dl
// lacks, so a peer from the tracker can take its place. pkg/swarm takes
// the first such peer in map order; here a random one.
func (s *sim) makeRoom(dl *download) bool {
	var useless []*stream
	for _, st := range dl.conns {
		if !st.origin && s.now-st.since >= uselessAfter && !dl.sched.Useful(st.seeder.pid) {
			useless = append(useless, st)
		}
	}
	if len(useless) == 0 {
		return false
	}
	slices.SortFunc(useless, func(a, b *stream) int { return cmp.Compare(a.seeder.idx, b.seeder.idx) })
	st := useless[s.rnd.IntN(len(useless))]
	s.res.PeersReplaced++
	s.disconnect(st)
	dl.sched.RemovePeer(st.seeder.pid)
	s.retryLater(dl, st.seeder)
	s.after(s.oneway(dl.h, st.seeder), event{kind: evSeederClose, st: st})
	return true
}

// dial opens a stream from dl to peer, unless it is connected, being
// dialled or resting after a failure.
func (s *sim) dial(dl *download, peer *host, origin bool) {
	if !s.mayDial(dl, peer) {
		return
	}
	ds := dl.tried[peer]
	if ds == nil {
		ds = &dialState{}
		dl.tried[peer] = ds
	}
	ds.next = s.now + time.Hour // not again while this dial or its connection lasts
	dl.dialing++
	s.owners++
	st := &stream{dl: dl, seeder: peer, owner: s.owners, layer: dl.layer, origin: origin}
	// TCP, TLS 1.3, protocol negotiation, then the handshake frame: about
	// two and a half round trips to the seeder, one way back.
	s.after(5*s.oneway(dl.h, peer), event{kind: evStreamOpen, st: st})
}

// retryLater lets a peer be dialled again after a backoff that doubles
// with each failure (1s to 30s).
func (s *sim) retryLater(dl *download, peer *host) {
	ds := dl.tried[peer]
	if ds == nil {
		ds = &dialState{}
		dl.tried[peer] = ds
	}
	if ds.never {
		return
	}
	ds.fails++
	ds.next = s.now + min(time.Second<<min(ds.fails-1, 5), 30*time.Second)
}

// dialResult: the seeder's handshake (or a refusal) reaches the dialer.
func (s *sim) dialResult(st *stream, ok bool) {
	dl := st.dl
	if dl.ended {
		if ok {
			s.after(s.oneway(dl.h, st.seeder), event{kind: evSeederClose, st: st})
		}
		return
	}
	dl.dialing--
	if !ok {
		dl.sched.RemovePeer(st.seeder.pid)
		s.retryLater(dl, st.seeder)
		return
	}
	id := st.seeder.pid
	dl.conns[id] = st
	st.dlOpen = true
	st.since = s.now
	dl.sched.AddPeer(id, st.hsBits, st.hsComplete, s.at())
	if st.origin {
		dl.sched.MarkOrigin(id)
	}
	if st.hsComplete || slices.ContainsFunc(st.hsBits, func(b byte) bool { return b != 0 }) {
		// A new peer that holds pieces: early in a rollout the swarm
		// fills from the origin outwards, and this is it reaching us.
		s.alive(dl)
	}
	s.think(dl)
}

// think is the top of pkg/swarm's loop: fill the peers' pipelines.
func (s *sim) think(dl *download) {
	if dl.ended {
		return
	}
	for _, r := range dl.sched.Next(s.at()) {
		st := dl.conns[r.Peer]
		if st == nil {
			dl.sched.RemovePeer(r.Peer)
			continue
		}
		s.res.Requests++
		s.after(s.oneway(dl.h, st.seeder), event{kind: evRequest, st: st, piece: r.Piece})
	}
}

// alive: the swarm showed life (pkg/swarm resets its quiet clock).
func (s *sim) alive(dl *download) {
	dl.lastSwarm, dl.stalled = s.now, false
}

// arrived is how many bytes have reached dl on st so far (pkg/p2p's
// Conn.Moved, pieces only): the pieces landed and what has come of those
// on the way.
func (s *sim) arrived(st *stream) int64 {
	n := st.rcvd
	ow := s.oneway(st.seeder, st.dl.h)
	for _, f := range st.sending {
		if s.now-ow > f.start {
			n += min(max(f.sent(s.now-ow), 0), f.bytes)
		}
	}
	return n
}

// disconnect forgets st on the downloader's side.
func (s *sim) disconnect(st *stream) {
	if !st.dlOpen {
		return
	}
	st.dlOpen = false
	delete(st.dl.conns, st.seeder.pid)
}

// sendCancels cancels requests on the wire, in a fixed order.
func (s *sim) sendCancels(dl *download, rs []scheduler.Request) {
	slices.SortFunc(rs, func(a, b scheduler.Request) int {
		return cmp.Or(cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Piece, b.Piece))
	})
	for _, r := range rs {
		if st := dl.conns[r.Peer]; st != nil {
			s.after(s.oneway(dl.h, st.seeder), event{kind: evCancel, st: st, piece: r.Piece})
		}
	}
}

// piece: a piece's last byte reaches the downloader.
func (s *sim) piece(st *stream, piece int) {
	dl := st.dl
	n := s.layers[st.layer].pieceBytes(piece)
	if !st.dlOpen || dl.ended {
		s.res.DuplicateBytes += n
		return
	}
	st.rcvd += n
	dl.received += n
	if ds := dl.tried[st.seeder]; ds != nil {
		ds.fails = 0
	}
	if hasBit(dl.h.held[dl.layer], piece) {
		s.res.DuplicateBytes += n
		dl.sched.Received(st.seeder.pid, piece, true, s.at())
	} else {
		cancel := dl.sched.Received(st.seeder.pid, piece, true, s.at())
		s.got(dl, piece, cancel)
	}
	s.alive(dl)
	s.think(dl)
}

// got records a new piece: held, cancelled elsewhere, announced to the
// streams this agent seeds, read by the streaming client.
func (s *sim) got(dl *download, piece int, cancel []scheduler.Request) {
	h := dl.h
	setBit(h.held[dl.layer], piece)
	h.nheld[dl.layer]++
	s.useful += s.layers[dl.layer].pieceBytes(piece)
	s.sendCancels(dl, cancel)
	s.haveAll(h, dl.layer, piece)
	if piece == 0 && !h.gotFirst {
		h.gotFirst = true
		s.res.Agents[h.idx].FirstByte = s.now
	}
	s.advanceStream(dl)
	if h.nheld[dl.layer] == s.layers[dl.layer].pieces {
		s.complete(dl)
	}
}

// complete: the layer is whole. The download closes its streams (its
// upload streams go on), announces itself complete and the pull goes on
// with the next layer.
func (s *sim) complete(dl *download) {
	h := dl.h
	dl.ended = true
	for _, st := range sortedConns(dl) {
		s.disconnect(st)
		s.after(s.oneway(h, st.seeder), event{kind: evSeederClose, st: st})
	}
	h.dls[dl.layer] = nil
	h.layerDone[dl.layer] = true
	s.announceComplete(h, dl.layer)
	h.running--
	s.fillLayers(h)
}

func sortedConns(dl *download) []*stream {
	out := make([]*stream, 0, len(dl.conns))
	for _, st := range dl.conns {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b *stream) int { return cmp.Compare(a.seeder.idx, b.seeder.idx) })
	return out
}

// have: a seeder's have reaches the downloader.
func (s *sim) have(st *stream, piece int) {
	dl := st.dl
	if !st.dlOpen || dl.ended {
		return
	}
	// News of a piece at a peer says the swarm is alive.
	s.alive(dl)
	dl.sched.PeerHas(st.seeder.pid, piece)
	// A have can only make a request of its own peer, and not of a peer
	// resting after a busy answer, nor for a piece held.
	if s.now >= st.restUntil && !hasBit(dl.h.held[dl.layer], piece) {
		s.think(dl)
	}
}

// busy: a seeder's full uplink refused a request.
func (s *sim) busy(st *stream, piece int, hint time.Duration) {
	dl := st.dl
	if !st.dlOpen || dl.ended {
		return
	}
	// A busy peer has what we want and serves it when its uplink frees:
	// the swarm is alive, if congested.
	s.alive(dl)
	// Jittered, so refused peers do not all come back at once.
	hint = min(hint, maxRetryAfter)
	retry := hint + s.jitter(hint/2+50*time.Millisecond)
	dl.busyHint = max(dl.busyHint, hint)
	dl.sched.Busy(st.seeder.pid, piece, base.Add(s.now+retry))
	st.restUntil = max(st.restUntil, s.now+retry)
	s.think(dl)
}

// connErr: the seeder went away under the stream.
func (s *sim) connErr(st *stream) {
	if !st.dlOpen || st.dl.ended {
		return
	}
	s.disconnect(st)
	st.dl.sched.RemovePeer(st.seeder.pid)
	s.retryLater(st.dl, st.seeder)
	s.think(st.dl) // its requests went back to the pool
}

// tick is pkg/swarm's timer: bytes moving, expiries, stalled peers, and
// the origin when the swarm is quiet.
func (s *sim) tick(dl *download) {
	if dl.ended {
		return
	}
	now := s.at()
	// Piece bytes arriving from a peer are progress, even before the
	// piece is whole; a have or a busy frame is not.
	for _, st := range dl.conns {
		if m := s.arrived(st); m-st.mark >= movingBytes {
			st.mark = m
			dl.sched.Moving(st.seeder.pid, now)
			dl.lastSwarm = s.now
		}
	}
	expired := dl.sched.Expire(now)
	s.sendCancels(dl, expired)
	var stalled []scheduler.PeerID
	if len(expired) > 0 {
		// A peer turns stalled only by expiring: nothing new otherwise.
		stalled = dl.sched.Stalled()
		slices.Sort(stalled)
	}
	for _, id := range stalled {
		s.res.PeersDropped++
		if st := dl.conns[id]; st != nil {
			s.disconnect(st)
			s.after(s.oneway(dl.h, st.seeder), event{kind: evSeederReset, st: st})
			s.retryLater(dl, st.seeder)
		}
		dl.sched.RemovePeer(id)
	}
	s.topUp(dl)
	// pkg/swarm asks the scheduler for requests on every turn of its
	// loop. With more requests out than the bound over all peers, the
	// excess being the one an origin may have, it has none to give.
	if dl.sched.Inflight() <= s.cfg.maxInflight() {
		s.think(dl)
	}
	s.after(s.cfg.Tick, event{kind: evTick, dl: dl})
}

// topUp: the swarm has been quiet past the stall timeout, with no
// request out that a peer accepted, so the piece the stream needs comes
// from the origin, one at a time, while the download keeps working its
// peers.
func (s *sim) topUp(dl *download) {
	if dl.ended || dl.toppingUp || dl.sched.Inflight() > 0 || s.now < dl.originRetry {
		return
	}
	// StallTimeout is a floor: on a slow swarm the limit is a few of its
	// own piece-times, as measured (deadlines, busy hints); three times
	// that before anything came from peers.
	limit := max(s.cfg.StallTimeout, 3*dl.sched.Slowest(), 3*dl.busyHint)
	if dl.received == 0 {
		limit *= 3
	}
	if s.now-dl.lastSwarm <= limit && !(dl.alone && len(dl.conns) == 0) {
		return
	}
	i := dl.sched.Wanted()
	if i < 0 {
		return
	}
	if !dl.stalled {
		dl.stalled = true
		s.res.Stalls++
	}
	dl.toppingUp = true
	s.after(s.oneway(dl.h, s.origin), event{kind: evHTTPStart, dl: dl, piece: i})
}

// httpBusy: the origin answered a range read with 429 and a Retry-After
// (whole seconds, read as 1 to 30).
func (s *sim) httpBusy(dl *download, piece int, after time.Duration) {
	if dl.ended {
		return
	}
	s.res.OriginBusy++
	after = min(max(after, time.Second), 30*time.Second)
	wait := after + s.jitter(after/2+100*time.Millisecond)
	dl.toppingUp = false
	dl.originRetry = s.now + wait
}

// httpPiece: a piece read from the origin over HTTP lands.
func (s *sim) httpPiece(dl *download, piece int) {
	n := s.layers[dl.layer].pieceBytes(piece)
	if dl.ended {
		s.res.DuplicateBytes += n
		return
	}
	dl.toppingUp = false
	s.res.TopUps++
	if hasBit(dl.h.held[dl.layer], piece) {
		s.res.DuplicateBytes += n
	} else {
		s.got(dl, piece, dl.sched.Got(piece))
	}
	if dl.ended {
		return
	}
	s.topUp(dl)
	s.think(dl)
}

// jitter is a random duration in [0, d).
func (s *sim) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(s.rnd.Int64N(int64(d)))
}

// leave: churn kills the agent. Its connections reset, its flows stop;
// it keeps the pieces it held.
func (s *sim) leave(h *host) {
	if !h.alive {
		return
	}
	h.alive = false
	h.epoch++
	s.res.Agents[h.idx].Restarts++
	var pump []*host
	for _, l := range []int32{h.up, h.down} {
		for len(s.net.links[l].flows) > 0 {
			f := s.net.links[l].flows[len(s.net.links[l].flows)-1]
			if f.st != nil && f.st.seeder != h {
				pump = append(pump, f.st.seeder)
			}
			s.abort(f)
		}
	}
	for l, dl := range h.dls {
		if dl == nil {
			continue
		}
		dl.ended = true
		for _, st := range sortedConns(dl) {
			s.disconnect(st)
			// The seeder sees the reset at once: nothing more to send.
			s.unserve(st)
			pump = append(pump, st.seeder)
		}
		h.dls[l] = nil
	}
	for l := range h.serving {
		for _, st := range h.serving[l] {
			st.seedOpen = false
			st.waiting = nil
			s.after(s.oneway(h, st.dl.h), event{kind: evConnErr, st: st})
		}
		h.serving[l] = nil
	}
	h.gate = uplink.New(h.slots, h.queue)
	clear(h.pending)
	h.running = 0
	for _, p := range pump {
		if p.alive {
			s.pump(p)
		}
	}
	s.after(s.cfg.ChurnDelay, event{kind: evReturn, h: h})
}

// back: the agent restarted with its pieces; its seed loop announces
// what it holds whole and the pull, if unfinished, resumes.
func (s *sim) back(h *host) {
	h.alive = true
	s.startSeedLoop(h)
	if !h.done {
		s.startPull(h)
	}
}
