package swarmsim

import (
	"slices"
	"time"

	"github.com/shoal-project/shoal/pkg/uplink"
)

// The seeding side: every host serves the pieces it holds on the streams
// peers opened to it, through one uplink gate, and the origin super-seeds.

// stream is one piece stream: dl downloads layer from seeder.
type stream struct {
	dl     *download
	seeder *host
	owner  uint64 // in the seeder's gate
	layer  int
	origin bool // the seeder is the origin
	// dlOpen: the downloader holds it among its connections; seedOpen:
	// the seeder serves it.
	dlOpen, seedOpen bool
	servIdx          int
	// What the seeder's handshake said.
	hsBits     []byte
	hsComplete bool
	// Seeder side: admitted requests waiting for a slot, and pieces being
	// sent.
	waiting []waitingReq
	sending []*flow
	super   *superState
	// Downloader side: when it connected; piece bytes landed, and what
	// had arrived at the last tick that counted as moving.
	since      time.Duration
	rcvd, mark int64
	// restUntil: the peer said busy; the scheduler does not ask it before.
	restUntil time.Duration
}

type waitingReq struct {
	t     uplink.Ticket
	piece int
}

// superState is the origin's super-seeding of one stream (pkg/p2p).
type superState struct {
	offered []bool
	batch   int
	done    bool // everything offered: the idle loop has ended
	// outstanding counts requests admitted and not yet sent (waiting or
	// on the wire); last is the stream's last activity (pkg/p2p's
	// activity).
	outstanding int
	last        time.Duration
}

// idleFor is pkg/p2p's activity.idleFor: nothing admitted that is still
// waiting or on the wire, and no activity for d.
func (ss *superState) idleFor(now, d time.Duration) bool {
	return ss.outstanding <= 0 && now-ss.last >= d
}

// add is pkg/p2p's activity.add: n requests more (or fewer) admitted
// and not yet sent, and the clock reset.
func (ss *superState) add(n int, now time.Duration) {
	ss.outstanding += n
	ss.last = now
}

// handedOut is the origin's record of one layer over all peers: each
// piece's requests admitted (sent), when last, and offers.
type handedOut struct {
	sent, offers  []int
	last, offered []time.Duration // last asked for, last offered
}

const (
	superSeedPatience = 2 * time.Second // pkg/p2p superSeedPatience
	superTick         = superSeedPatience / 4
)

// streamOpen: a dial's handshake reaches the seeder.
func (s *sim) streamOpen(st *stream) {
	h, dl := st.seeder, st.dl
	if !h.alive || dl.ended {
		// Refused (the host is down), or the dialer is gone or done.
		s.after(s.oneway(h, dl.h), event{kind: evDialResult, st: st, flag: false})
		return
	}
	st.seedOpen = true
	st.servIdx = len(h.serving[st.layer])
	h.serving[st.layer] = append(h.serving[st.layer], st)
	switch {
	case h.origin:
		// Super-seeding: the handshake offers one piece never sent.
		st.super = &superState{offered: make([]bool, s.layers[st.layer].pieces), last: s.now, batch: 1}
		st.hsBits = make([]byte, len(h.held[st.layer]))
		if i := s.offer(st, true); i >= 0 {
			setBit(st.hsBits, i)
		}
		s.after(superTick, event{kind: evSuperIdle, st: st})
	case h.nheld[st.layer] == s.layers[st.layer].pieces:
		st.hsComplete = true
	default:
		st.hsBits = slices.Clone(h.held[st.layer])
	}
	// The peer that opened the stream is in the swarm: a seeder still
	// downloading the layer may fetch from it too (agent.peerSeen).
	if back := h.dls[st.layer]; back != nil && !back.ended {
		if len(back.conns)+back.dialing < s.cfg.MaxConns {
			s.dial(back, dl.h, false)
		}
	}
	s.after(s.oneway(h, dl.h), event{kind: evDialResult, st: st, flag: true})
}

// unserve takes st off its seeder's list.
func (s *sim) unserve(st *stream) {
	if !st.seedOpen {
		return
	}
	st.seedOpen = false
	list := st.seeder.serving[st.layer]
	last := len(list) - 1
	list[st.servIdx] = list[last]
	list[st.servIdx].servIdx = st.servIdx
	list[last] = nil
	st.seeder.serving[st.layer] = list[:last]
	for _, w := range st.waiting {
		st.seeder.gate.Withdraw(w.t)
		delete(st.seeder.pending, w.t)
	}
	st.waiting = nil
}

// request: a piece request reaches the seeder.
func (s *sim) request(st *stream, piece int) {
	h := st.seeder
	if !st.seedOpen || !hasBit(h.held[st.layer], piece) {
		return // the requester's deadline takes care of it
	}
	// The request says how many pieces the requester holds (pkg/swarm's
	// RequestHeld), and a full gate may give it a waiting request's place;
	// that one is answered busy at once (pkg/p2p answers it once the
	// stream's piece on the wire, if any, is sent).
	t, bumped, _, ok := h.gate.AdmitFrom(st.owner, piece, st.dl.sched.Held())
	if a := h.pending[bumped]; bumped != 0 && a != nil {
		delete(h.pending, bumped)
		a.st.waiting = slices.DeleteFunc(a.st.waiting, func(w waitingReq) bool { return w.t == bumped })
		s.res.Refused++
		s.after(s.oneway(h, a.st.dl.h), event{kind: evBusy, st: a.st, piece: a.piece, d: h.gate.RetryAfter()})
	}
	if !ok {
		s.res.Refused++
		s.after(s.oneway(h, st.dl.h), event{kind: evBusy, st: st, piece: piece, d: h.gate.RetryAfter()})
		return
	}
	h.pending[t] = &admitted{st, piece}
	st.waiting = append(st.waiting, waitingReq{t, piece})
	if st.super != nil {
		st.super.add(1, s.now)
		// Gone from the moment it is asked for: not offered to others
		// while it waits or is on the wire.
		ho := h.served[st.layer]
		ho.sent[piece]++
		ho.last[piece] = s.now
	}
	s.pump(h)
}

// pump starts the requests the gate lets go.
func (s *sim) pump(h *host) {
	for {
		t, _, ok := h.gate.Next()
		if !ok {
			return
		}
		a := h.pending[t]
		st := a.st
		st.waiting = slices.DeleteFunc(st.waiting, func(w waitingReq) bool { return w.t == t })
		f := &flow{
			up: h.up, down: st.dl.h.down, bytes: s.layers[st.layer].pieceBytes(a.piece),
			st: st, ticket: uint64(t), piece: a.piece,
		}
		st.sending = append(st.sending, f)
		s.net.start(f, s.now)
	}
}

// cancel: a cancel reaches the seeder; a request not yet sent is dropped.
func (s *sim) cancel(st *stream, piece int) {
	if !st.seedOpen {
		return
	}
	for k, w := range st.waiting {
		if w.piece == piece {
			if st.seeder.gate.Withdraw(w.t) {
				delete(st.seeder.pending, w.t)
				if st.super != nil {
					st.super.add(-1, s.now)
				}
			}
			st.waiting = slices.Delete(st.waiting, k, k+1)
			return
		}
	}
}

// seederClose: the downloader closed (reset) the stream. Waiting requests
// go; a piece being sent finishes on a close and is cut on a reset.
func (s *sim) seederClose(st *stream, reset bool) {
	s.unserve(st)
	if reset && st.seeder.alive {
		for len(st.sending) > 0 {
			s.abort(st.sending[0])
		}
		s.pump(st.seeder)
	}
}

// offer is pkg/p2p's Seeder.offer: for this peer, the piece of the layer
// sent least, then offered least, that it was not offered yet; or -1.
// With firstPass only pieces never sent, and not one offered to another
// peer within the patience; without, not a piece whose last copy went out
// less than the spread time ago (the swarm has it soon).
func (s *sim) offer(st *stream, firstPass bool) int {
	ho := s.origin.served[st.layer]
	best := -1
	for i := range ho.sent {
		if st.super.offered[i] {
			continue
		}
		if best < 0 || ho.sent[i] < ho.sent[best] || (ho.sent[i] == ho.sent[best] && ho.offers[i] < ho.offers[best]) {
			best = i
		}
	}
	if best < 0 || (firstPass && ho.sent[best] > 0) {
		return -1
	}
	if firstPass && ho.offers[best] > 0 && s.now-ho.offered[best] < superSeedPatience {
		// Offered to another peer a moment ago and not asked for yet:
		// two peers asking for it would take it twice.
		return -1
	}
	if !firstPass && ho.sent[best] > 0 && s.now-ho.last[best] < superSeedPatience+2*s.origin.gate.PieceTime() {
		return -1
	}
	ho.offers[best]++
	ho.offered[best] = s.now
	st.super.offered[best] = true
	return best
}

// superIdle is pkg/p2p's offerWhenIdle tick: a peer that has had nothing
// asked or sent for the patience is offered more, twice as many each
// time, until everything was offered.
func (s *sim) superIdle(st *stream) {
	ss := st.super
	if !st.seedOpen || ss.done {
		return
	}
	if ss.idleFor(s.now, superSeedPatience) {
		ss.last = s.now
		for range ss.batch {
			next := s.offer(st, false)
			all := !slices.Contains(ss.offered, false)
			if next >= 0 {
				s.after(s.oneway(st.seeder, st.dl.h), event{kind: evHave, st: st, piece: next})
			}
			if all {
				ss.done = true // offered everything: the loop ends
				return
			}
			if next < 0 {
				break // what is left has just gone out
			}
		}
		ss.batch *= 2
	}
	s.after(superTick, event{kind: evSuperIdle, st: st})
}

// haveAll tells the streams h seeds that it now holds piece of layer:
// pkg/p2p's sendHaves wakes as a growing blob gains a piece.
func (s *sim) haveAll(h *host, layer, piece int) {
	for _, st := range h.serving[layer] {
		if st.super == nil {
			s.after(s.oneway(h, st.dl.h), event{kind: evHave, st: st, piece: piece})
		}
	}
}

// httpStart: an HTTP range read of one piece reaches the origin's /v2,
// which serves it beside the seeder, on the same uplink, if its reader
// gate has room, and answers 429 otherwise.
func (s *sim) httpStart(dl *download, piece int) {
	if dl.ended {
		return
	}
	if after, ok := s.origin.readers.admit(); !ok {
		s.after(s.oneway(s.origin, dl.h), event{kind: evHTTPBusy, dl: dl, piece: piece, d: after})
		return
	}
	f := &flow{up: s.origin.up, down: dl.h.down, bytes: s.layers[dl.layer].pieceBytes(piece), dl: dl, piece: piece}
	s.net.start(f, s.now)
}

// readerGate is pkg/origin's: at most max /v2 blob bodies at once, the
// rest answered 429 with a Retry-After in whole seconds.
type readerGate struct {
	max, busy int
	took      time.Duration // smoothed body time
}

func (g *readerGate) admit() (retryAfter time.Duration, ok bool) {
	if g.busy >= g.max {
		after := max(time.Second, min(10*time.Second, g.took/time.Duration(g.max)))
		return (after + time.Second - 1).Truncate(time.Second), false
	}
	g.busy++
	return 0, true
}

// release frees a place; took is the body's time (0: cut off).
func (g *readerGate) release(took time.Duration) {
	g.busy--
	if took <= 0 {
		return
	}
	if g.took == 0 {
		g.took = took
	} else {
		g.took += (took - g.took) / 8
	}
}
