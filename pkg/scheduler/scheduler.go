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
//   - Several requests in flight per peer hide the round trip.
//   - When every missing piece is already requested (end game), the last
//     ones are also asked of other peers, and the losers are cancelled.
//   - An origin is asked only for pieces no other known peer holds: the
//     origin's uplink is the scarce resource, so each piece should leave
//     it about once and travel on between agents.
//   - A request not answered within a timeout scaled by the piece size is
//     withdrawn; a peer that sends a piece whose hash is wrong is banned
//     for this blob.
package scheduler

import (
	"math/rand/v2"
	"time"
)

// PeerID names a peer (its libp2p peer ID).
type PeerID string

// Config tunes a Scheduler. Zero values take the defaults.
type Config struct {
	// PerPeer is the most requests in flight to one peer (default 2: a
	// whole piece already covers the bandwidth-delay product, and deeper
	// queues on a slow seeder only turn into timeouts and duplicates).
	PerPeer int
	// Window is how many pieces ahead of a streaming reader go first
	// (default 4).
	Window int
	// EndGameCopies is how many peers may be asked for the same piece at
	// the end (default 2).
	EndGameCopies int
	// BaseTimeout plus the piece length at MinRate bounds one request
	// (defaults 2s and 1 MB/s: 6s for a 4 MiB piece).
	BaseTimeout time.Duration
	MinRate     float64
}

func (c Config) withDefaults() Config {
	if c.PerPeer <= 0 {
		c.PerPeer = 2
	}
	if c.Window <= 0 {
		c.Window = 4
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

// Request is one piece asked of one peer.
type Request struct {
	Peer  PeerID
	Piece int
}

type peerState struct {
	has      []bool
	complete bool
	origin   bool
	inflight map[int]time.Time // piece → deadline
	banned   bool
	// lastPiece is when the peer last delivered; a peer with requests
	// out and nothing delivered for long is stalled.
	lastPiece time.Time
}

// Scheduler plans the download of one blob. It is not safe for concurrent
// use; the caller serialises calls.
type Scheduler struct {
	cfg     Config
	pieces  int
	timeout time.Duration
	have    []bool
	missing int
	avail   []int // peers holding each piece
	asked   []int // requests in flight for each piece
	peers   map[PeerID]*peerState
	stream  int // next piece a streaming reader needs; -1 when none
	rnd     *rand.Rand
}

// New plans a blob of n pieces of pieceLength bytes, holding those marked
// in have (nil: none).
func New(cfg Config, n int, pieceLength int64, have []bool, rnd *rand.Rand) *Scheduler {
	cfg = cfg.withDefaults()
	s := &Scheduler{
		cfg: cfg, pieces: n,
		timeout: cfg.BaseTimeout + time.Duration(float64(pieceLength)/cfg.MinRate*float64(time.Second)),
		have:    make([]bool, n), missing: n,
		avail: make([]int, n), asked: make([]int, n),
		peers: map[PeerID]*peerState{}, stream: -1, rnd: rnd,
	}
	for i, h := range have {
		if i < n && h {
			s.have[i] = true
			s.missing--
		}
	}
	return s
}

// RequestTimeout is how long one request may take before it is withdrawn.
func (s *Scheduler) RequestTimeout() time.Duration { return s.timeout }

// Done reports whether every piece is held.
func (s *Scheduler) Done() bool { return s.missing == 0 }

// Have reports whether piece i is held.
func (s *Scheduler) Have(i int) bool { return i >= 0 && i < s.pieces && s.have[i] }

// SetStream tells where a streaming reader is (-1: nobody streams).
func (s *Scheduler) SetStream(next int) { s.stream = next }

// AddPeer adds a peer with its bitfield (MSB first), or complete. Adding a
// known peer replaces what it has.
func (s *Scheduler) AddPeer(id PeerID, bitfield []byte, complete bool, now time.Time) {
	if old, ok := s.peers[id]; ok {
		if old.banned {
			return
		}
		s.RemovePeer(id)
	}
	p := &peerState{has: make([]bool, s.pieces), complete: complete, inflight: map[int]time.Time{}, lastPiece: now}
	for i := range s.pieces {
		if complete || (i/8 < len(bitfield) && bitfield[i/8]&(0x80>>(i%8)) != 0) {
			p.has[i] = true
			s.avail[i]++
		}
	}
	s.peers[id] = p
}

// MarkOrigin says the peer is an origin: asked only for what no one else
// has.
func (s *Scheduler) MarkOrigin(id PeerID) {
	if p, ok := s.peers[id]; ok {
		p.origin = true
	}
}

// PeerHas records a peer's new piece (a "have" message).
func (s *Scheduler) PeerHas(id PeerID, i int) {
	p, ok := s.peers[id]
	if !ok || p.banned || i < 0 || i >= s.pieces || p.has[i] {
		return
	}
	p.has[i] = true
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
}

func (s *Scheduler) drop(p *peerState) {
	for i := range p.inflight {
		s.asked[i]--
	}
	clear(p.inflight)
	for i, h := range p.has {
		if h {
			s.avail[i]--
		}
	}
	clear(p.has)
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

// Received records piece i from peer id. ok false means its hash was wrong:
// the peer is banned for this blob. It returns the other peers asked for
// the same piece, whose requests the caller should cancel.
func (s *Scheduler) Received(id PeerID, i int, ok bool, now time.Time) (cancel []Request) {
	p, known := s.peers[id]
	if !known || i < 0 || i >= s.pieces {
		return nil
	}
	if _, asked := p.inflight[i]; asked {
		delete(p.inflight, i)
		s.asked[i]--
	}
	if !ok {
		p.banned = true
		s.drop(p)
		return nil
	}
	p.lastPiece = now
	return s.Got(i)
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
			delete(q.inflight, i)
			s.asked[i]--
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
		if s.have[i] {
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

// Expire withdraws requests past their deadline and returns them, so the
// caller can cancel them on the wire; the pieces go back to the pool.
func (s *Scheduler) Expire(now time.Time) (expired []Request) {
	for id, p := range s.peers {
		for i, deadline := range p.inflight {
			if now.After(deadline) {
				delete(p.inflight, i)
				s.asked[i]--
				expired = append(expired, Request{id, i})
			}
		}
	}
	return expired
}

// Stalled lists peers with requests out that have delivered nothing for d:
// the caller replaces them with fresh peers from the tracker.
func (s *Scheduler) Stalled(now time.Time, d time.Duration) []PeerID {
	var out []PeerID
	for id, p := range s.peers {
		if !p.banned && len(p.inflight) > 0 && now.Sub(p.lastPiece) > d {
			out = append(out, id)
		}
	}
	return out
}

// Next fills every peer's pipeline and returns the new requests.
func (s *Scheduler) Next(now time.Time) []Request {
	if s.missing == 0 {
		return nil
	}
	endGame := s.endGame()
	var out []Request
	// Peers in random order, so no peer is always asked first.
	ids := make([]PeerID, 0, len(s.peers))
	for id, p := range s.peers {
		if !p.banned {
			ids = append(ids, id)
		}
	}
	s.rnd.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for _, id := range ids {
		p := s.peers[id]
		limit := s.cfg.PerPeer
		if p.origin {
			// One piece at a time from an origin: by the time it lands,
			// other agents' haves say which pieces are already out.
			limit = 1
		}
		for len(p.inflight) < limit {
			i := s.pick(p, endGame)
			if i < 0 {
				break
			}
			p.inflight[i] = now.Add(s.timeout)
			s.asked[i]++
			out = append(out, Request{id, i})
		}
	}
	return out
}

// endGameMax is the most missing pieces for the end game to begin.
const endGameMax = 4

// endGame: every missing piece is already asked of someone, and few remain.
func (s *Scheduler) endGame() bool {
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
	return true
}

// pick chooses the next piece for p, or -1.
func (s *Scheduler) pick(p *peerState, endGame bool) int {
	wanted := func(i int) bool {
		if s.have[i] || !p.has[i] {
			return false
		}
		if _, mine := p.inflight[i]; mine {
			return false
		}
		if p.origin && s.avail[i] > 1 {
			return false // an agent has it: get it there
		}
		if endGame {
			return s.asked[i] < s.cfg.EndGameCopies
		}
		return s.asked[i] == 0
	}
	if s.stream >= 0 {
		for i := s.stream; i < min(s.pieces, s.stream+s.cfg.Window); i++ {
			if wanted(i) {
				return i
			}
		}
	}
	best, bestAvail, ties := -1, 0, 0
	for i := range s.pieces {
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
