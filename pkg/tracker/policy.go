package tracker

import (
	"math/bits"
	"math/rand/v2"
	"slices"

	shoalpb "github.com/shoal-project/shoal/proto"
)

// The hand-out policy decides which peers an announcing agent learns about.
// It is where a rollout is won or lost:
//   - Peers that can give the asker something come first: complete peers,
//     then partial peers holding pieces the asker lacks. Peers with nothing
//     yet still fill the list, since they will have pieces by the time the
//     asker connects.
//   - Among equals, the same rack, then the same zone: cross-rack links are
//     the ones that saturate.
//   - A random tie-break spreads askers over all seeders instead of handing
//     everyone the same few.
//   - Origins are handed out only while complete agents are scarce, and to
//     a bounded set of agents at a time, so each piece leaves the origin
//     about once and the swarm serves the rest.

// candidate is a swarm member as the policy sees it.
type candidate struct {
	peer     *shoalpb.Peer
	complete bool
	bitfield []byte
}

// asker is the announcing peer.
type asker struct {
	id       string
	labels   *shoalpb.Labels
	complete bool
	bitfield []byte
}

// selectPeers returns up to n peers from cands for a, best first.
func selectPeers(a asker, cands []candidate, n int, rnd *rand.Rand) []*shoalpb.Peer {
	if n <= 0 {
		return nil
	}
	type scored struct {
		c     candidate
		score float64
	}
	ranked := make([]scored, 0, len(cands))
	for _, c := range cands {
		if c.peer.GetId() == a.id {
			continue
		}
		ranked = append(ranked, scored{c, usefulness(a, c)*4 + locality(a.labels, c.peer.GetLabels()) + rnd.Float64()})
	}
	slices.SortFunc(ranked, func(x, y scored) int {
		switch {
		case x.score > y.score:
			return -1
		case x.score < y.score:
			return 1
		}
		return 0
	})
	out := make([]*shoalpb.Peer, 0, min(n, len(ranked)))
	for _, r := range ranked[:min(n, len(ranked))] {
		p := clonePeer(r.c.peer)
		p.Complete = r.c.complete
		out = append(out, p)
	}
	return out
}

// usefulness: 2 for a complete peer, 1 for a partial one with pieces the
// asker lacks, 0 otherwise. A complete asker (a seeder re-announcing)
// needs nothing, so every peer ranks 0 and locality decides.
func usefulness(a asker, c candidate) float64 {
	switch {
	case a.complete:
		return 0
	case c.complete:
		return 2
	case hasMissing(c.bitfield, a.bitfield):
		return 1
	}
	return 0
}

// hasMissing reports whether theirs has a bit set that mine lacks.
func hasMissing(theirs, mine []byte) bool {
	for i, b := range theirs {
		var m byte
		if i < len(mine) {
			m = mine[i]
		}
		if b&^m != 0 {
			return true
		}
	}
	return false
}

// locality: 2 for the same rack (in the same zone), 1 for the same zone.
// Empty labels match nothing.
func locality(a, b *shoalpb.Labels) float64 {
	if a.GetZone() == "" || a.GetZone() != b.GetZone() {
		return 0
	}
	if a.GetRack() != "" && a.GetRack() == b.GetRack() {
		return 2
	}
	return 1
}

func pieceCount(bitfield []byte) int {
	n := 0
	for _, b := range bitfield {
		n += bits.OnesCount8(b)
	}
	return n
}

func clonePeer(p *shoalpb.Peer) *shoalpb.Peer {
	return &shoalpb.Peer{Id: p.GetId(), Addrs: slices.Clone(p.GetAddrs()), Labels: p.GetLabels(), Complete: p.GetComplete(), Origin: p.GetOrigin()}
}
