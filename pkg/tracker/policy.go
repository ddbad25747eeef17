package tracker

import (
	"math/rand/v2"

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

// candidate is a swarm member as the policy sees it. Its fields are
// copied out of the swarm entry so scoring a candidate touches no other
// memory: with 10k peers those pointer chases were most of the cost.
type candidate struct {
	peer       *shoalpb.Peer // handed out as is: never modified once stored
	complete   bool
	bitfield   []byte
	zone, rack string
	self       bool // the asker's own entry
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
	// Keep the best n in a sorted slice: n (tens) is far below the
	// candidates (hundreds), so this beats sorting them all.
	type scored struct {
		c     *candidate
		score float64
	}
	top := make([]scored, 0, min(n, len(cands)))
	zone, rack := a.labels.GetZone(), a.labels.GetRack()
	for i := range cands {
		c := &cands[i]
		if c.self {
			continue
		}
		sc := usefulness(a, *c)*4 + locality(zone, rack, c.zone, c.rack) + rnd.Float64()
		if len(top) == n && sc <= top[n-1].score {
			continue
		}
		if len(top) < n {
			top = append(top, scored{})
		}
		j := len(top) - 1
		for ; j > 0 && top[j-1].score < sc; j-- {
			top[j] = top[j-1]
		}
		top[j] = scored{c, sc}
	}
	out := make([]*shoalpb.Peer, len(top))
	for i, r := range top {
		out[i] = r.c.peer
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
func locality(aZone, aRack, bZone, bRack string) float64 {
	if aZone == "" || aZone != bZone {
		return 0
	}
	if aRack != "" && aRack == bRack {
		return 2
	}
	return 1
}
