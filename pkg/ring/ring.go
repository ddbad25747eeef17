// Package ring places keys (blob digests) on cluster members by weighted
// rendezvous hashing: every member scores every key, the highest scores own
// it. Unlike a token ring it needs no virtual nodes for an even spread, and a
// member joining or leaving moves only the keys it wins or held — about 1/N
// of them — which keeps repair traffic small.
//
// Scores depend only on member IDs, weights and the key, so every process
// that sees the same member set computes the same owners.
package ring

import (
	"cmp"
	"hash/fnv"
	"math"
	"slices"
)

// Member is one node of a cluster as the ring sees it. Fields other than ID
// and Weight ride along for callers (where to reach it, its peer identity).
type Member struct {
	// ID names the member; it must be unique and stable across restarts.
	ID string `json:"id"`
	// Addr is where the member serves (HTTP for origins, gRPC for trackers).
	Addr string `json:"addr"`
	// Weight scales the member's share of keys; 0 means 1.
	Weight float64 `json:"weight,omitempty"`
	// PeerID and P2PAddrs identify an origin in swarms, when it seeds.
	PeerID   string   `json:"peer_id,omitempty"`
	P2PAddrs []string `json:"p2p_addrs,omitempty"`
}

// Ring is an immutable set of members. The zero Ring and a nil *Ring are
// empty.
type Ring struct {
	members []Member
	seeds   []uint64
	weights []float64
	uniform bool
}

// New returns a ring of members. Later duplicates of an ID are dropped;
// order does not matter.
func New(members []Member) *Ring {
	ms := slices.Clone(members)
	slices.SortStableFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	ms = slices.CompactFunc(ms, func(a, b Member) bool { return a.ID == b.ID })
	r := &Ring{members: ms, seeds: make([]uint64, len(ms)), weights: make([]float64, len(ms)), uniform: true}
	for i, m := range ms {
		r.seeds[i] = hashString(m.ID)
		w := m.Weight
		if w <= 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			w = 1
		}
		r.weights[i] = w
		if w != r.weights[0] {
			r.uniform = false
		}
	}
	return r
}

// Len is the number of members.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}

// Members returns the members sorted by ID.
func (r *Ring) Members() []Member {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Member returns the member with id.
func (r *Ring) Member(id string) (Member, bool) {
	if r == nil {
		return Member{}, false
	}
	i, ok := slices.BinarySearchFunc(r.members, id, func(m Member, id string) int { return cmp.Compare(m.ID, id) })
	if !ok {
		return Member{}, false
	}
	return r.members[i], true
}

// Owners returns the n members that own key, best first; fewer when the
// ring is smaller than n.
func (r *Ring) Owners(key string, n int) []Member {
	if r.Len() == 0 || n <= 0 {
		return nil
	}
	n = min(n, len(r.members))
	kh := hashString(key)
	// Keep the best n in a small sorted slice: n is a replication factor
	// (1–5), so insertion beats a heap or sorting every member.
	type scored struct {
		score float64
		i     int
	}
	top := make([]scored, 0, n)
	for i := range r.members {
		s := r.score(i, kh)
		if len(top) == n && s <= top[n-1].score {
			continue
		}
		if len(top) < n {
			top = append(top, scored{})
		}
		j := len(top) - 1
		for ; j > 0 && top[j-1].score < s; j-- {
			top[j] = top[j-1]
		}
		top[j] = scored{s, i}
	}
	out := make([]Member, len(top))
	for k, t := range top {
		out[k] = r.members[t.i]
	}
	return out
}

// Owner returns the single owner of key.
func (r *Ring) Owner(key string) (Member, bool) {
	o := r.Owners(key, 1)
	if len(o) == 0 {
		return Member{}, false
	}
	return o[0], true
}

// IsOwner reports whether id is among the n owners of key.
func (r *Ring) IsOwner(key, id string, n int) bool {
	for _, m := range r.Owners(key, n) {
		if m.ID == id {
			return true
		}
	}
	return false
}

// score is the weighted rendezvous score of member i for a key hash. With
// equal weights the mixed hash itself orders members; otherwise
// -w/ln(u) with u uniform in (0,1) gives each member a share of keys
// proportional to its weight.
func (r *Ring) score(i int, kh uint64) float64 {
	h := mix(r.seeds[i] ^ kh)
	if r.uniform {
		return float64(h >> 11)
	}
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return -r.weights[i] / math.Log(u)
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return mix(h.Sum64())
}

// mix is the splitmix64 finalizer: FNV alone leaves related inputs (IDs
// "origin-1", "origin-2") with correlated high bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Ring returns r, so a fixed ring can stand where a live view (such as a
// membership group) is expected.
func (r *Ring) Ring() *Ring { return r }
