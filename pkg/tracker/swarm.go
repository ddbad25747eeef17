package tracker

import (
	"errors"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Swarm state is soft: it lives in memory, every entry expires unless its
// peer announces again, and a restarted tracker is whole again after one
// announce interval. Nothing of it goes to etcd.

type peerEntry struct {
	// peer is the message handed out to others, built once per announce
	// and shared by every response until replaced: never modify it.
	peer       *shoalpb.Peer
	complete   bool
	bitfield   []byte
	zone, rack string // interned, so equal labels compare by pointer
	expires    time.Time
	ip         string // charged for the entry ("": no one)
}

type swarm struct {
	// list and index give O(1) upsert, delete and random sampling.
	list  []*peerEntry
	index map[string]int
	// complete counts complete non-origin peers: the seeders that make
	// the origin unnecessary.
	complete int
	// originGrants: agents currently allowed to fetch from the origin,
	// until the time given.
	originGrants map[string]time.Time
}

func (s *swarm) remove(id string) {
	i, ok := s.index[id]
	if !ok {
		return
	}
	e := s.list[i]
	if e.complete && !e.peer.GetOrigin() {
		s.complete--
	}
	last := len(s.list) - 1
	s.list[i] = s.list[last]
	s.index[s.list[i].peer.GetId()] = i
	s.list = s.list[:last]
	delete(s.index, id)
}

func (s *swarm) upsert(e *peerEntry) {
	id := e.peer.GetId()
	if i, ok := s.index[id]; ok {
		old := s.list[i]
		if old.complete && !old.peer.GetOrigin() {
			s.complete--
		}
		s.list[i] = e
	} else {
		s.index[id] = len(s.list)
		s.list = append(s.list, e)
	}
	if e.complete && !e.peer.GetOrigin() {
		s.complete++
	}
}

// policy holds the tunables of the hand-out.
type policy struct {
	interval       time.Duration // incomplete peers announce this often
	seederInterval time.Duration // complete peers, less often
	defaultPeers   int
	maxPeers       int
	sampleSize     int // swarms larger than this are sampled per announce
	originFanout   int // agents that may hold an origin grant at once
	seederTarget   int // complete agents at which origins stop being handed out
}

const shardCount = 64

// swarms is the sharded table of all swarms this tracker owns.
type swarms struct {
	// entries counts peer entries over all swarms, against maxEntries.
	entries    atomic.Int64
	maxEntries int64
	// perIP counts entries by the IP they are charged to, against
	// maxPerIP (0: no bound).
	ipMu     sync.Mutex
	perIP    map[string]int
	maxPerIP int
	seed     maphash.Seed
	shards   [shardCount]shardState
}

// charge counts a new entry against ip's share; false if it is used up.
func (t *swarms) charge(ip string) bool {
	if ip == "" || t.maxPerIP <= 0 {
		return true
	}
	t.ipMu.Lock()
	defer t.ipMu.Unlock()
	if t.perIP[ip] >= t.maxPerIP {
		return false
	}
	t.perIP[ip]++
	return true
}

// release gives back an entry charged to ip.
func (t *swarms) release(ip string) {
	if ip == "" || t.maxPerIP <= 0 {
		return
	}
	t.ipMu.Lock()
	defer t.ipMu.Unlock()
	if t.perIP[ip]--; t.perIP[ip] <= 0 {
		delete(t.perIP, ip)
	}
}

type shardState struct {
	mu     sync.Mutex
	swarms map[string]*swarm
	rnd    *rand.Rand
	names  map[string]string // interned zone and rack labels
	cands  []candidate       // scratch for sample, reused under mu
	picked []int             // scratch for sample's draws
}

// maxNames bounds a shard's interned labels: real clusters have tens of
// zones and racks; past this, labels are simply not interned.
const maxNames = 4096

func (sh *shardState) intern(v string) string {
	if v == "" {
		return ""
	}
	if n, ok := sh.names[v]; ok {
		return n
	}
	if len(sh.names) < maxNames {
		sh.names[v] = v
	}
	return v
}

func newSwarms(maxEntries, maxPerIP int) *swarms {
	t := &swarms{seed: maphash.MakeSeed(), maxEntries: int64(maxEntries), perIP: map[string]int{}, maxPerIP: maxPerIP}
	for i := range t.shards {
		t.shards[i].swarms = map[string]*swarm{}
		t.shards[i].rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		t.shards[i].names = map[string]string{}
	}
	return t
}

// announce records what the asker, on ip, has and returns peers for it.
// origins are the blob's owning origins that can seed (they have a peer
// ID).
func (t *swarms) announce(d string, req *shoalpb.AnnounceRequest, ip string, origins []ring.Member, p policy, now time.Time) (*shoalpb.AnnounceResponse, error) {
	sh := &t.shards[maphash.String(t.seed, d)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.swarms[d]
	peer := req.GetPeer()
	if req.GetStopped() {
		// Peers handed this one would dial it for nothing until its
		// entry expired, and it would still count as a seeder.
		if old, known := s.lookup(peer.GetId()); known {
			s.remove(peer.GetId())
			delete(s.originGrants, peer.GetId())
			t.entries.Add(-1)
			t.release(old.ip)
			if len(s.list) == 0 {
				delete(sh.swarms, d)
			}
		}
		return &shoalpb.AnnounceResponse{IntervalSeconds: int32(max(1, p.seederInterval/time.Second))}, nil
	}
	if old, known := s.lookup(peer.GetId()); !known {
		if t.entries.Load() >= t.maxEntries {
			return nil, errFull
		}
		if !t.charge(ip) {
			return nil, errIPFull
		}
		t.entries.Add(1)
	} else if old.ip != ip {
		// The peer moved: its entry now counts against its new IP.
		if !t.charge(ip) {
			return nil, errIPFull
		}
		t.release(old.ip)
	}
	if s == nil {
		s = &swarm{index: map[string]int{}, originGrants: map[string]time.Time{}}
		sh.swarms[d] = s
	}
	complete := req.GetComplete()
	interval := p.interval
	if complete {
		interval = p.seederInterval
	}
	interval = jitter(interval, sh.rnd)
	labels := peer.GetLabels()
	self := &peerEntry{
		// Labels are kept in the entry, not handed out: the tracker has
		// ranked by them, and without them a response is a third smaller.
		peer:     &shoalpb.Peer{Id: peer.GetId(), Addrs: peer.GetAddrs(), Complete: complete, Origin: peer.GetOrigin()},
		complete: complete, bitfield: req.GetBitfield(),
		zone: sh.intern(labels.GetZone()), rack: sh.intern(labels.GetRack()),
		expires: now.Add(3 * interval),
		ip:      ip,
	}
	s.upsert(self)

	want := int(req.GetMaxPeers())
	if want <= 0 {
		want = p.defaultPeers
	}
	want = min(want, p.maxPeers)

	var out []*shoalpb.Peer
	if !complete && !peer.GetOrigin() {
		out = t.grantOrigins(s, peer.GetId(), origins, p, now, interval)
	}
	sh.cands, sh.picked = sample(sh.cands[:0], sh.picked[:0], s, self, max(p.sampleSize, 2*want), now, sh.rnd)
	cands := sh.cands
	a := asker{id: peer.GetId(), labels: peer.GetLabels(), complete: complete, bitfield: req.GetBitfield()}
	// Only granted origins can repeat a swarm entry (an origin that also
	// announces); the swarm's own entries are distinct.
	granted := len(out)
	for _, c := range selectPeers(a, cands, want-granted, sh.rnd) {
		if granted == 0 || !containsPeer(out[:granted], c.GetId()) {
			out = append(out, c)
		}
	}
	return &shoalpb.AnnounceResponse{Peers: out, IntervalSeconds: int32(max(1, interval.Round(time.Second)/time.Second))}, nil
}

var (
	errFull   = errors.New("tracker holds its maximum of peer entries; retry after the interval")
	errIPFull = errors.New("peers on this IP hold their share of the tracker's entries; retry after the interval")
)

func (s *swarm) lookup(id string) (*peerEntry, bool) {
	if s == nil {
		return nil, false
	}
	i, ok := s.index[id]
	if !ok {
		return nil, false
	}
	return s.list[i], true
}

// grantOrigins hands the owning origins to the asker while seeders are
// scarce and fewer than originFanout other agents hold a grant. A grant
// lasts while its agent keeps announcing.
func (t *swarms) grantOrigins(s *swarm, id string, origins []ring.Member, p policy, now time.Time, interval time.Duration) []*shoalpb.Peer {
	if len(origins) == 0 || s.complete >= p.seederTarget {
		return nil
	}
	if _, ok := s.originGrants[id]; !ok {
		active := 0
		for agent, until := range s.originGrants {
			if now.After(until) {
				delete(s.originGrants, agent)
				continue
			}
			active++
		}
		if active >= p.originFanout {
			return nil
		}
	}
	s.originGrants[id] = now.Add(2 * interval)
	out := make([]*shoalpb.Peer, 0, len(origins))
	for _, o := range origins {
		out = append(out, &shoalpb.Peer{Id: o.PeerID, Addrs: o.P2PAddrs, Complete: true, Origin: true})
	}
	return out
}

// sample returns live candidates: all of a small swarm, or about size
// random ones of a large swarm, so an announce costs O(size), not O(swarm).
// sample appends to out up to size live entries of s, chosen at random
// when there are more.
func sample(out []candidate, picked []int, s *swarm, self *peerEntry, size int, now time.Time, rnd *rand.Rand) ([]candidate, []int) {
	pick := func(e *peerEntry) candidate {
		return candidate{peer: e.peer, complete: e.complete, bitfield: e.bitfield, zone: e.zone, rack: e.rack, self: e == self}
	}
	if len(s.list) <= size {
		for _, e := range s.list {
			if now.Before(e.expires) {
				out = append(out, pick(e))
			}
		}
		return out, picked
	}
	// Independent random draws: a stride walk would be cheaper, but a
	// small or near-n stride samples a periodic subset (every other entry),
	// which biases the hand-out when join order correlates with state.
	// Repeats are rejected against what is already picked; with size ≪ n
	// they are rare, and the draws are bounded.
	n := len(s.list)
	for tries := 0; len(picked) < size && tries < 4*size; tries++ {
		i := rnd.IntN(n)
		if slices.Contains(picked, i) {
			continue
		}
		picked = append(picked, i)
		if e := s.list[i]; now.Before(e.expires) {
			out = append(out, pick(e))
		}
	}
	return out, picked
}

// sweep drops expired peers and empty swarms, returning the number of
// swarms and peers left.
func (t *swarms) sweep(now time.Time) (nswarms, npeers int) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for d, s := range sh.swarms {
			for j := 0; j < len(s.list); {
				if e := s.list[j]; !now.Before(e.expires) {
					s.remove(e.peer.GetId())
					t.entries.Add(-1)
					t.release(e.ip)
					continue // the last entry moved into j
				}
				j++
			}
			for agent, until := range s.originGrants {
				if now.After(until) {
					delete(s.originGrants, agent)
				}
			}
			if len(s.list) == 0 {
				delete(sh.swarms, d)
				continue
			}
			nswarms++
			npeers += len(s.list)
		}
		sh.mu.Unlock()
	}
	return nswarms, npeers
}

// jitter spreads announces ±10% so a fleet that started together does not
// announce in lockstep forever.
func jitter(d time.Duration, rnd *rand.Rand) time.Duration {
	return d - d/10 + time.Duration(rnd.Int64N(int64(d/5)+1))
}

func containsPeer(ps []*shoalpb.Peer, id string) bool {
	for _, p := range ps {
		if p.GetId() == id {
			return true
		}
	}
	return false
}

// completeEverywhere lists the non-origin peers that announced every one
// of ds complete and have not expired: the complete copies of an image.
func (t *swarms) completeEverywhere(ds []string, now time.Time) []string {
	var have map[string]bool
	for i, d := range ds {
		sh := &t.shards[maphash.String(t.seed, d)%shardCount]
		sh.mu.Lock()
		next := map[string]bool{}
		if s := sh.swarms[d]; s != nil {
			for _, e := range s.list {
				id := e.peer.GetId()
				if e.complete && !e.peer.GetOrigin() && now.Before(e.expires) && (i == 0 || have[id]) {
					next[id] = true
				}
			}
		}
		sh.mu.Unlock()
		if have = next; len(have) == 0 {
			return nil
		}
	}
	out := make([]string, 0, len(have))
	for id := range have {
		out = append(out, id)
	}
	return out
}
