// Package scheduler decides, for one blob on one node, which piece to ask
// from which peer and when. It is pure logic: the caller reports what peers
// have, what arrived and what failed, and asks for the next requests; time
// comes in as arguments, so tests drive it with a fake clock and simulated
// peers, without sockets.
//
// Policy:
//   - While a client streams the blob, the pieces just ahead of its read
//     position go first, in order, so bytes flow after about one piece.
//   - Otherwise rarest first (fewest peers holding it, random tie-break), so
//     the swarm's rare pieces spread before their holders leave.
//   - A couple of requests in flight per peer hide the round trip, and a
//     bound on the requests in flight over all peers keeps the node's own
//     downlink from being split so many ways that every piece arrives late.
//   - An origin is asked only for pieces no other known peer holds: the
//     origin's uplink is the scarce resource, so each piece should leave
//     it about once and travel on between agents.
//   - Deadlines follow each peer's measured delivery, the way TCP's
//     retransmission timer follows the round trip (RFC 6298): smoothed
//     service time plus four times its variation, doubled on each expiry.
//     A request expires only when its peer has also stopped moving bytes:
//     a slow peer on a shared uplink is not a failed one, and asking its
//     piece elsewhere would only load another uplink with a duplicate.
//   - A peer whose uplink is full says so (Busy): its request goes back to
//     the pool without penalty, and the peer rests until its retry hint.
//   - A piece is asked twice only in the end game (the last few pieces),
//     and then only when its request is late against its peer's usual
//     time.
//   - A peer that sends a piece whose hash is wrong is banned for this
//     blob.
package scheduler

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// PeerID names a peer (its libp2p peer ID).
type PeerID string

// DefaultMaxInflight bounds a download's requests in flight over all
// peers. Seeders split their uplink four ways (pkg/uplink), so a piece
// arrives at about a quarter of a link's rate: six requests, some of them
// queued at their seeders, keep the downlink full, while more only slow
// each piece down and delay its passing on (simulated 10/25/50 agents:
// p99 ÷ bound 1.15/1.28/1.34 with four, 1.12/1.23/1.28 with six,
// 1.15/1.28/1.34 with eight).
const DefaultMaxInflight = 6

// Config tunes a Scheduler. Zero values take the defaults.
type Config struct {
	// PerPeer is the most requests in flight to one peer (default 2: a
	// whole piece already covers the bandwidth-delay product, and deeper
	// queues on a slow seeder only add waiting).
	PerPeer int `yaml:"per_peer"`
	// MaxInflight is the most requests in flight over all peers, an
	// origin's aside (DefaultMaxInflight).
	MaxInflight int `yaml:"max_inflight"`
	// Window is how many pieces ahead of a streaming reader go first
	// (default 2: every node streams from the same start, so a wider
	// window has the whole fleet ask for the same few rare pieces; 100
	// simulated agents finished 4 % later with 4).
	Window int `yaml:"window"`
	// EndGameCopies is how many peers may be asked for the same piece at
	// the end (default 2).
	EndGameCopies int `yaml:"end_game_copies"`
	// BaseTimeout plus the piece length at MinRate is a peer's deadline
	// before any of its deliveries has been timed (defaults 2s and 1 MB/s:
	// 6s for a 4 MiB piece); measured times replace it from the first
	// piece on.
	BaseTimeout time.Duration `yaml:"base_timeout"`
	MinRate     float64       `yaml:"min_rate"`
}

func (c Config) withDefaults() Config {
	if c.PerPeer <= 0 {
		c.PerPeer = 2
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.Window <= 0 {
		c.Window = 2
	}
	if c.EndGameCopies <= 0 {
		c.EndGameCopies = 2
	}
	if c.BaseTimeout <= 0 {
		c.BaseTimeout = 2 * time.Second
	}
	if c.MinRate <= 0 {
		c.MinRate = 1e6
	}
	return c
}

// Counters say how the transfer control behaved, for metrics and the load
// test's report.
type Counters struct {
	// Expired: requests withdrawn because their peer went quiet past its
	// deadline.
	Expired int
	// Busy: requests a peer refused because its uplink was full.
	Busy int
	// EndGame: second requests for a piece already asked elsewhere.
	EndGame int
}

// Request is one piece asked of one peer.
type Request struct {
	Peer  PeerID
	Piece int
}

type peerState struct {
	id       PeerID
	has      []bool
	held     []int // the pieces in has, in the order they were learnt
	complete bool
	origin   bool
	inflight map[int]time.Time // piece → when it was asked
	banned   bool
	// lastActive is when the peer last delivered a piece or moved bytes
	// of one; a request's clock runs from the later of its asking and
	// this, so requests queued behind a piece on the wire wait for free.
	lastActive time.Time
	// lastPiece is when the peer last delivered a piece.
	lastPiece time.Time
	// srtt and rttvar: smoothed time to deliver one piece once the peer
	// is working on it, and its variation (zero: not measured yet).
	srtt, rttvar time.Duration
	// backoff doubles the deadline after each expiry, until a delivery.
	backoff int
	// expiries counts expiries since the last delivery: a peer that keeps
	// expiring has failed.
	expiries int
	// restUntil: the peer said its uplink is full; not asked before.
	restUntil time.Time
}

// Scheduler plans the download of one blob. It is not safe for concurrent
// use; the caller serialises calls.
type Scheduler struct {
	cfg      Config
	pieces   int
	initial  time.Duration // deadline before any measurement
	have     []bool
	missing  int
	avail    []int // peers holding each piece
	asked    []int // requests in flight for each piece
	inflight int   // over all peers
	ofOrigin int   // of those, asked of origins: outside the bound
	peers    map[PeerID]*peerState
	stream   int // next piece a streaming reader needs; -1 when none
	rnd      *rand.Rand
	counters Counters
	ids      []*peerState // scratch for Next
	// order is the peers sorted by ID, rebuilt only when the set changes:
	// Next runs on every event, and sorting (then looking each peer up by
	// ID) there dominated the fleet simulator's profile.
	order      []*peerState
	orderStale bool
	// open is scratch for Next: the pieces it may ask for, in index
	// order. Built once per call, it spares every peer's pick a scan of
	// the whole blob — late in a download, when every missing piece is
	// already asked, there is nothing to scan at all.
	open    []int
	origins int    // peers marked as origins
	late    []bool // scratch for the end game
	// limit: only pieces below it are asked for (see SetLimit).
	limit int
}

// New plans a blob of n pieces of pieceLength bytes, holding those marked
// in have (nil: none).
func New(cfg Config, n int, pieceLength int64, have []bool, rnd *rand.Rand) *Scheduler {
	cfg = cfg.withDefaults()
	s := &Scheduler{
		cfg: cfg, pieces: n,
		initial: cfg.BaseTimeout + time.Duration(float64(pieceLength)/cfg.MinRate*float64(time.Second)),
		have:    make([]bool, n), missing: n,
		avail: make([]int, n), asked: make([]int, n), late: make([]bool, n),
		peers: map[PeerID]*peerState{}, stream: -1, rnd: rnd, limit: n,
	}
	for i, h := range have {
		if i < n && h {
			s.have[i] = true
			s.missing--
		}
	}
	return s
}

// Counters reports how the transfer control has behaved so far.
func (s *Scheduler) Counters() Counters { return s.counters }

// Held is how many pieces are held (what a request tells seeders, see
// pkg/uplink).
func (s *Scheduler) Held() int { return s.pieces - s.missing }

// Done reports whether every piece is held.
func (s *Scheduler) Done() bool { return s.missing == 0 }

// Have reports whether piece i is held.
func (s *Scheduler) Have(i int) bool { return i >= 0 && i < s.pieces && s.have[i] }

// SetLimit has only pieces below n asked for, of peers and in Wanted:
// those of a blob still arriving at its origin that this node can check
// so far (default: all). Requests already out stay out.
func (s *Scheduler) SetLimit(n int) { s.limit = max(0, min(n, s.pieces)) }

// SetStream tells where a streaming reader is (-1: nobody streams).
func (s *Scheduler) SetStream(next int) { s.stream = next }

// AddPeer adds a peer with its bitfield (MSB first), or complete. Adding a
// known peer replaces what it has; what was measured of it is kept.
func (s *Scheduler) AddPeer(id PeerID, bitfield []byte, complete bool, now time.Time) {
	p := &peerState{id: id, lastActive: now}
	if old, ok := s.peers[id]; ok {
		if old.banned {
			return
		}
		s.RemovePeer(id)
		p.srtt, p.rttvar = old.srtt, old.rttvar
	}
	p.has, p.complete, p.inflight = make([]bool, s.pieces), complete, map[int]time.Time{}
	for i := range s.pieces {
		if complete || (i/8 < len(bitfield) && bitfield[i/8]&(0x80>>(i%8)) != 0) {
			p.has[i] = true
			p.held = append(p.held, i)
			s.avail[i]++
		}
	}
	s.orderStale = true // a replaced peer is a new peerState
	s.peers[id] = p
}

// MarkOrigin says the peer is an origin: asked only for what no one else
// has.
func (s *Scheduler) MarkOrigin(id PeerID) {
	if p, ok := s.peers[id]; ok && !p.origin {
		p.origin = true
		s.origins++
	}
}

// PeerHas records a peer's new piece (a "have" message).
func (s *Scheduler) PeerHas(id PeerID, i int) {
	p, ok := s.peers[id]
	if !ok || p.banned || i < 0 || i >= s.pieces || p.has[i] {
		return
	}
	p.has[i] = true
	p.held = append(p.held, i)
	s.avail[i]++
}

// RemovePeer forgets a peer (gone, or replaced); its requests are
// returned to the pool. A banned peer stays banned.
func (s *Scheduler) RemovePeer(id PeerID) {
	p, ok := s.peers[id]
	if !ok {
		return
	}
	s.drop(p)
	if p.banned {
		return
	}
	delete(s.peers, id)
	if p.origin {
		s.origins--
	}
	s.orderStale = true
}

func (s *Scheduler) drop(p *peerState) {
	for i := range p.inflight {
		s.withdraw(p, i)
	}
	for i, h := range p.has {
		if h {
			s.avail[i]--
		}
	}
	clear(p.has)
	p.held = p.held[:0]
}

func (s *Scheduler) withdraw(p *peerState, i int) {
	delete(p.inflight, i)
	s.asked[i]--
	s.inflight--
	if p.origin {
		s.ofOrigin--
	}
}

// Peers is the number of usable (not banned) peers.
func (s *Scheduler) Peers() int {
	n := 0
	for _, p := range s.peers {
		if !p.banned {
			n++
		}
	}
	return n
}

// Moving records that bytes of a piece from peer id are arriving: it is
// working on our requests, however slowly.
func (s *Scheduler) Moving(id PeerID, now time.Time) {
	if p, ok := s.peers[id]; ok && now.After(p.lastActive) {
		p.lastActive = now
	}
}

// Received records piece i from peer id. ok false means its hash was wrong:
// the peer is banned for this blob. It returns the other peers asked for
// the same piece, whose requests the caller should cancel.
func (s *Scheduler) Received(id PeerID, i int, ok bool, now time.Time) (cancel []Request) {
	p, known := s.peers[id]
	if !known || i < 0 || i >= s.pieces {
		return nil
	}
	if asked, was := p.inflight[i]; was {
		s.withdraw(p, i)
		if ok {
			// The peer worked on this piece from when it was asked or
			// from its previous delivery, whichever came later.
			p.sample(now.Sub(later(asked, p.lastPiece)))
		}
	}
	if !ok {
		p.banned = true
		s.drop(p)
		return nil
	}
	p.lastActive, p.lastPiece, p.backoff, p.expiries = now, now, 0, 0
	return s.Got(i)
}

// sample folds one measured piece time into the estimate (RFC 6298 §2).
func (p *peerState) sample(r time.Duration) {
	if r <= 0 {
		return
	}
	if p.srtt == 0 {
		p.srtt, p.rttvar = r, r/2
		return
	}
	d := p.srtt - r
	if d < 0 {
		d = -d
	}
	p.rttvar += (d - p.rttvar) / 4
	p.srtt += (r - p.srtt) / 8
}

const (
	minRTO = 500 * time.Millisecond
	maxRTO = 2 * time.Minute
)

// rto is how long the peer may stay quiet with our requests out. A peer
// not measured yet gets the slowest measured peer's deadline, or the
// configured one while nobody has delivered: a new peer's uplink is
// likely as shared as the others'.
func (s *Scheduler) rto(p *peerState) time.Duration {
	d := s.initial
	if p.srtt > 0 {
		d = p.srtt + max(100*time.Millisecond, 4*p.rttvar)
	} else if slow := s.slowest(); slow > 0 {
		d = max(d, slow)
	}
	d <<= min(p.backoff, 6)
	return min(max(d, minRTO), maxRTO)
}

// Slowest is the longest deadline among measured peers (0: none): the
// download's own measure of how long the swarm may take over a piece.
func (s *Scheduler) Slowest() time.Duration { return s.slowest() }

func (s *Scheduler) slowest() time.Duration {
	var d time.Duration
	for _, p := range s.peers {
		if p.srtt > 0 {
			d = max(d, p.srtt+max(100*time.Millisecond, 4*p.rttvar))
		}
	}
	return d
}

// Useful reports whether peer id holds a piece we lack.
func (s *Scheduler) Useful(id PeerID) bool {
	p, ok := s.peers[id]
	if !ok || p.banned {
		return false
	}
	for i, h := range p.has {
		if h && !s.have[i] {
			return true
		}
	}
	return false
}

// Inflight is the number of requests out (not expired, refused or
// answered): while any is, the download is waiting on peers that
// accepted, not stalled.
func (s *Scheduler) Inflight() int { return s.inflight }

// Busy records that peer id refused piece i because its uplink is full:
// the request goes back to the pool, and the peer is not asked again
// before retryAt.
func (s *Scheduler) Busy(id PeerID, i int, retryAt time.Time) {
	p, ok := s.peers[id]
	if !ok {
		return
	}
	if _, was := p.inflight[i]; was {
		s.withdraw(p, i)
	}
	s.counters.Busy++
	if retryAt.After(p.restUntil) {
		p.restUntil = retryAt
	}
}

// Got records piece i as held from outside the swarm (the origin), and
// returns the requests for it still out, to be cancelled.
func (s *Scheduler) Got(i int) (cancel []Request) {
	if i < 0 || i >= s.pieces || s.have[i] {
		return nil
	}
	s.have[i] = true
	s.missing--
	for pid, q := range s.peers {
		if _, asked := q.inflight[i]; asked {
			s.withdraw(q, i)
			cancel = append(cancel, Request{pid, i})
		}
	}
	return cancel
}

// Wanted is the missing piece to get elsewhere when the swarm stalls: the
// first one from the streaming position that nobody has been asked for,
// else the first missing one; -1 when none is missing.
func (s *Scheduler) Wanted() int {
	start := max(s.stream, 0)
	first := -1
	for k := range s.pieces {
		i := (start + k) % s.pieces
		if s.have[i] || i >= s.limit {
			continue
		}
		if s.asked[i] == 0 {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	return first
}

// Expire withdraws the requests of peers that have been quiet — no piece
// and no bytes of one — for longer than their deadline, and returns them
// so the caller can cancel them on the wire; the pieces go back to the
// pool and the peer's next deadline doubles.
func (s *Scheduler) Expire(now time.Time) (expired []Request) {
	for id, p := range s.peers {
		if len(p.inflight) == 0 {
			continue
		}
		rto := s.rto(p)
		hit := false
		for i, asked := range p.inflight {
			if now.Sub(later(asked, p.lastActive)) > rto {
				s.withdraw(p, i)
				expired = append(expired, Request{id, i})
				hit = true
			}
		}
		if hit {
			s.counters.Expired++
			p.backoff++
			p.expiries++
			p.lastActive = now // the next deadline runs from here
			// Its pieces go to other peers first: a quiet peer rests for
			// its (doubled) deadline before it is asked again.
			p.restUntil = now.Add(s.rto(p))
		}
	}
	return expired
}

// Stalled lists peers whose requests expired twice in a row with nothing
// delivered in between: the caller replaces them with fresh peers.
func (s *Scheduler) Stalled() []PeerID {
	var out []PeerID
	for id, p := range s.peers {
		if !p.banned && p.expiries >= 2 {
			out = append(out, id)
		}
	}
	return out
}

// Next fills the peers' pipelines, within the bound over all peers, and
// returns the new requests.
func (s *Scheduler) Next(now time.Time) []Request {
	if s.missing == 0 {
		return nil
	}
	// With the bound reached only origins, which are outside it, can be
	// asked: the others are not worth looking at.
	full := s.inflight-s.ofOrigin >= s.cfg.MaxInflight
	if full && s.origins == 0 {
		return nil
	}
	endGame := s.endGame(now)
	s.open = s.open[:0]
	for i := range s.limit {
		if !s.have[i] && s.askable(i, endGame) {
			s.open = append(s.open, i)
		}
	}
	if len(s.open) == 0 {
		return nil
	}
	// Sorted before the shuffle: map order is not the random source's, and
	// the same seed must plan the same requests (the fleet simulator).
	if s.orderStale {
		s.order = s.order[:0]
		for _, p := range s.peers {
			s.order = append(s.order, p)
		}
		slices.SortFunc(s.order, func(a, b *peerState) int { return strings.Compare(string(a.id), string(b.id)) })
		s.orderStale = false
	}
	s.ids = s.ids[:0]
	for _, p := range s.order {
		if !p.banned && !now.Before(p.restUntil) && (!full || p.origin) {
			s.ids = append(s.ids, p)
		}
	}
	ids := s.ids
	if len(ids) == 0 {
		return nil
	}
	// Peers in random order, so no peer is always asked first.
	s.rnd.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	// Origins first, and outside the bound: a piece an origin offers is
	// one no agent has yet, and the origin's uplink — the swarm's root —
	// idles while the offer waits.
	front := 0
	for k, p := range ids {
		if p.origin {
			ids[front], ids[k] = ids[k], ids[front]
			front++
		}
	}
	var out []Request
	// Round robin, one request per peer per round: with the bound over
	// all peers, filling one peer's pipeline first would leave the
	// others idle.
	for depth := range s.cfg.PerPeer {
		for _, p := range ids {
			if s.inflight-s.ofOrigin >= s.cfg.MaxInflight && !p.origin {
				return out
			}
			limit := s.cfg.PerPeer
			if p.origin {
				// One piece at a time from an origin: by the time it
				// lands, other agents' haves say which pieces are
				// already out.
				limit = 1
			}
			if len(p.inflight) > depth || len(p.inflight) >= limit {
				continue
			}
			i := s.pick(p, endGame)
			if i < 0 {
				continue
			}
			if s.asked[i] > 0 {
				s.counters.EndGame++
			}
			p.inflight[i] = now
			s.asked[i]++
			s.inflight++
			if p.origin {
				s.ofOrigin++
			}
			out = append(out, Request{p.id, i})
		}
	}
	return out
}

// askable: piece i, missing, may be asked of a peer that has it — nobody
// has been asked yet, or it is late in the end game and may be asked once
// more.
func (s *Scheduler) askable(i int, endGame bool) bool {
	if s.asked[i] == 0 {
		return true
	}
	return endGame && s.late[i] && s.asked[i] < s.cfg.EndGameCopies
}

// endGameMax is the most missing pieces for the end game to begin.
const endGameMax = 4

// endGame: every missing piece is already asked of someone, and few
// remain. It marks in s.late the pieces whose request is overdue against
// its peer's usual time: only those are asked twice.
func (s *Scheduler) endGame(now time.Time) bool {
	// Only for the last few pieces: with many requests in flight, "all
	// missing pieces are asked for" comes early, and duplicating that many
	// requests spends the peers' uplinks twice.
	if s.missing > endGameMax {
		return false
	}
	for i := range s.pieces {
		if !s.have[i] && s.asked[i] == 0 {
			return false
		}
	}
	clear(s.late)
	any := false
	for _, p := range s.peers {
		// Late: longer on the way than the peer's usual piece time and
		// its variation, counted from when the peer could start on it.
		usual := p.srtt + 2*p.rttvar
		if p.srtt == 0 {
			usual = s.initial / 2
		}
		for i, asked := range p.inflight {
			if now.Sub(later(asked, p.lastPiece)) > usual {
				s.late[i] = true
				any = true
			}
		}
	}
	return any
}

// pick chooses the next piece for p among s.open, or -1.
func (s *Scheduler) pick(p *peerState, endGame bool) int {
	wanted := func(i int) bool {
		// s.open was built for this call; pieces asked since then may
		// no longer be askable.
		if s.have[i] || !p.has[i] || i >= s.limit || !s.askable(i, endGame) {
			return false
		}
		if s.asked[i] > 0 {
			if _, mine := p.inflight[i]; mine {
				return false
			}
		}
		return !p.origin || s.avail[i] <= 1 // else an agent has it: get it there
	}
	if s.stream >= 0 {
		for i := s.stream; i < min(s.limit, s.stream+s.cfg.Window); i++ {
			if wanted(i) {
				return i
			}
		}
	}
	// The shorter list of the two: early in a rollout peers hold few of
	// the many open pieces, late the open pieces are few.
	scan := s.open
	if len(p.held) < len(scan) {
		scan = p.held
	}
	best, bestAvail, ties := -1, 0, 0
	for _, i := range scan {
		if !wanted(i) {
			continue
		}
		switch a := s.avail[i]; {
		case best < 0 || a < bestAvail:
			best, bestAvail, ties = i, a, 1
		case a == bestAvail:
			// Reservoir sampling among equally rare pieces.
			ties++
			if s.rnd.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
