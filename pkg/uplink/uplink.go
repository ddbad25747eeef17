// Package uplink admits piece uploads on a seeder's uplink: a few pieces
// go out at once (slots), a short queue waits behind them, and a request
// beyond that is refused at once as busy, so the requester asks another
// peer instead of waiting behind a backlog that would make every transfer
// slow and every deadline expire. Waiting requests get slots lowest piece
// index first: the first pieces of a blob are what streaming clients wait
// on.
//
// Requests belong to owners (a seeder's streams): an owner sends one piece
// at a time, so a slot never goes to an owner already sending.
//
// When the gate is full, a request from a requester that holds fewer
// pieces of the blob than one waiting takes that one's place, and the
// displaced request is answered busy. Without it, a requester that lost a
// few races for a free place rested on those seeders, asked less often,
// lost more races, and fell further behind: simulated rollouts ended with
// a tenth of the fleet a fifth of the image behind the rest (1,000 agents
// × 25 Mbit: p50 1.39, p99 1.77 × the bound; with it 1.34 and 1.35).
//
// A Gate is pure bookkeeping with no clock and no goroutines: the p2p
// seeder wraps it with channels, and the fleet simulator drives it from
// its event loop.
package uplink

import (
	"slices"
	"sync"
	"time"
)

// Defaults: four pieces on the wire over all streams, two more promised.
// Forty pieces sent side by side on a saturated uplink all land at the
// end; four at a time land one after another and their receivers pass them
// on meanwhile (BitTorrent's unchoke slots serve the same end). Fewer than
// four leave the uplink idle in a rollout: each flow is held back by its
// receiver's downlink, which it shares with the receiver's other senders,
// so two flows filled 78-81 % of an uplink in the simulator, four 93-98 %
// (p99 ÷ bound at 10/25/50 agents: 1.30/1.39/1.41 with two, 1.12/1.23/1.28
// with four and six requests in flight per download); real rollouts in
// network namespaces, same session, gained less: 10 × 100 Mbit 1.48 →
// 1.39, 25 × 25 Mbit 1.51 → 1.44, 10 × 10 Mbit 1.38 → 1.34; six slots
// gained nothing more (1.54, 1.42). The queue keeps the
// uplink busy between a slot freeing and the next request arriving, and
// bounds an admitted request's wait to about a piece's time at the
// uplink's rate.
const (
	DefaultSlots = 4
	DefaultQueue = 2
)

// Ticket names one admitted request.
type Ticket uint64

// Gate is one seeder's uplink. Its methods are safe for concurrent use.
type Gate struct {
	mu       sync.Mutex
	slots    int
	queueCap int
	sending  int
	active   map[uint64]bool // owners sending
	waiting  []waiter
	seq      uint64
	// pieceTime is a smoothed time to send one piece (while others share
	// the uplink), for the busy answer's retry hint.
	pieceTime time.Duration
	busy      uint64
}

type waiter struct {
	t     Ticket
	owner uint64
	piece int
	held  int // the requester's pieces; Unknown sorts last
}

// Unknown is the held count of a requester that did not say: it never
// displaces a waiting request, and any requester that says may displace
// it.
const Unknown = -1

// New returns a gate with slots pieces on the wire and queue admitted
// behind them (zero values take the defaults).
func New(slots, queue int) *Gate {
	if slots <= 0 {
		slots = DefaultSlots
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	return &Gate{slots: slots, queueCap: queue, active: map[uint64]bool{}}
}

// Admit takes owner's request for piece, or refuses it (ok false) because
// the uplink already holds all it can serve soon. It never displaces a
// waiting request (see AdmitFrom).
func (g *Gate) Admit(owner uint64, piece int) (t Ticket, ok bool) {
	t, _, _, ok = g.AdmitFrom(owner, piece, Unknown)
	return t, ok
}

// AdmitFrom is Admit for a requester that holds held pieces of the blob
// (Unknown if it did not say). If the gate is full and a waiting request's
// requester holds more, the one that holds most loses its place: its
// ticket and owner are returned as bumped, for the caller to answer it
// busy, and the new request is admitted instead.
func (g *Gate) AdmitFrom(owner uint64, piece, held int) (t, bumped Ticket, bumpedOwner uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sending+len(g.waiting) >= g.slots+g.queueCap {
		worst := -1
		for k, w := range g.waiting {
			if holdsMore(w.held, held) && (worst < 0 || holdsMore(w.held, g.waiting[worst].held)) {
				worst = k
			}
		}
		g.busy++ // one request refused either way
		if worst < 0 {
			return 0, 0, 0, false
		}
		bumped, bumpedOwner = g.waiting[worst].t, g.waiting[worst].owner
		g.waiting = slices.Delete(g.waiting, worst, worst+1)
	}
	g.seq++
	g.waiting = append(g.waiting, waiter{Ticket(g.seq), owner, piece, held})
	return Ticket(g.seq), bumped, bumpedOwner, true
}

// holdsMore: a requester that holds a pieces is further along than one
// that holds b, an unknown count being the furthest.
func holdsMore(a, b int) bool {
	switch {
	case b == Unknown:
		return false
	case a == Unknown:
		return true
	}
	return a > b
}

// Next starts the best waiting request if a slot is free, among owners
// not already sending: the lowest piece index, then the oldest. The caller
// sends it and calls Done with its owner.
func (g *Gate) Next() (t Ticket, owner uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sending >= g.slots {
		return 0, 0, false
	}
	best := -1
	for k, w := range g.waiting {
		if g.active[w.owner] {
			continue
		}
		if best < 0 || w.piece < g.waiting[best].piece || (w.piece == g.waiting[best].piece && w.t < g.waiting[best].t) {
			best = k
		}
	}
	if best < 0 {
		return 0, 0, false
	}
	w := g.waiting[best]
	g.waiting = slices.Delete(g.waiting, best, best+1)
	g.sending++
	g.active[w.owner] = true
	return w.t, w.owner, true
}

// Done frees owner's slot once its piece was sent (or failed), took being
// how long the send took (0: not measured).
func (g *Gate) Done(owner uint64, took time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.active[owner] {
		return
	}
	delete(g.active, owner)
	g.sending--
	if took > 0 {
		if g.pieceTime == 0 {
			g.pieceTime = took
		} else {
			g.pieceTime += (took - g.pieceTime) / 8
		}
	}
}

// Withdraw drops a request still waiting (cancelled, or its stream ended);
// it reports false if it already started or was never admitted.
func (g *Gate) Withdraw(t Ticket) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, w := range g.waiting {
		if w.t == t {
			g.waiting = slices.Delete(g.waiting, k, k+1)
			return true
		}
	}
	return false
}

// RetryAfter is the hint sent with a busy answer: about when a place
// frees, the time for one of the pieces on the wire to finish (they finish
// in turn, one every piece-time ÷ slots on average). A requester adds
// jitter, so refused peers do not all return at once; one that comes back
// to a full gate is refused again at the cost of a few bytes, while one
// that waits too long leaves the uplink idle.
func (g *Gate) RetryAfter() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	pt := g.pieceTime
	if pt == 0 {
		pt = 500 * time.Millisecond
	}
	return pt / time.Duration(g.slots)
}

// PieceTime is the smoothed time one piece took to send (0 before any).
func (g *Gate) PieceTime() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pieceTime
}

// Load is what the gate holds now, and how many requests it has refused.
func (g *Gate) Load() (sending, waiting int, refused uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sending, len(g.waiting), g.busy
}
