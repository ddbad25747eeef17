package tracker

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func peer(id, zone, rack string) *shoalpb.Peer {
	return &shoalpb.Peer{Id: id, Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Labels: &shoalpb.Labels{Zone: zone, Rack: rack}}
}

// prepare fills in what sample copies out of swarm entries: the labels,
// and whether the candidate is the asker itself.
func prepare(a asker, cands []candidate) []candidate {
	for i := range cands {
		l := cands[i].peer.GetLabels()
		cands[i].zone, cands[i].rack = l.GetZone(), l.GetRack()
		cands[i].self = cands[i].peer.GetId() == a.id
	}
	return cands
}

func TestSelectPeersOrder(t *testing.T) {
	me := asker{id: "me", labels: &shoalpb.Labels{Zone: "z1", Rack: "r1"}, bitfield: []byte{0b1100_0000}}
	tests := []struct {
		name  string
		cands []candidate
		max   int
		want  []string // exact order expected
	}{
		{"excludes the asker", []candidate{{peer: peer("me", "z1", "r1"), complete: true}, {peer: peer("a", "", "")}}, 5, []string{"a"}},
		{"complete before partial before empty", []candidate{
			{peer: peer("empty", "", "")},
			{peer: peer("partial", "", ""), bitfield: []byte{0b0010_0000}},
			{peer: peer("seed", "", ""), complete: true},
		}, 5, []string{"seed", "partial", "empty"}},
		{"a partial peer with only pieces I have is no better than empty", []candidate{
			{peer: peer("same", "", ""), bitfield: []byte{0b1000_0000}},
			{peer: peer("useful", "", ""), bitfield: []byte{0b0000_0001}},
		}, 1, []string{"useful"}},
		{"rack before zone before elsewhere, when equally useful", []candidate{
			{peer: peer("far", "z2", "r1"), complete: true},
			{peer: peer("zone", "z1", "r9"), complete: true},
			{peer: peer("rack", "z1", "r1"), complete: true},
		}, 3, []string{"rack", "zone", "far"}},
		{"usefulness beats locality", []candidate{
			{peer: peer("rack-empty", "z1", "r1")},
			{peer: peer("far-seed", "z3", "r3"), complete: true},
		}, 2, []string{"far-seed", "rack-empty"}},
		{"max bounds the list", []candidate{{peer: peer("a", "", "")}, {peer: peer("b", "", "")}, {peer: peer("c", "", "")}}, 2, nil},
		{"max zero", []candidate{{peer: peer("a", "", "")}}, 0, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := selectPeers(me, prepare(me, tt.cands), tt.max, rand.New(rand.NewPCG(1, 2)))
			if tt.want == nil {
				if len(got) != tt.max {
					t.Fatalf("%d peers, want %d", len(got), tt.max)
				}
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", peerIDs(got), tt.want)
			}
			for i := range got {
				if got[i].GetId() != tt.want[i] {
					t.Fatalf("got %v, want %v", peerIDs(got), tt.want)
				}
			}
		})
	}
}

// Many askers choosing from many equal seeders must spread over all of
// them, not pile onto a few.
func TestSelectPeersSpreadsLoad(t *testing.T) {
	var cands []candidate
	for i := range 50 {
		cands = append(cands, candidate{peer: peer(fmt.Sprintf("seed-%d", i), "z1", "r1"), complete: true})
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	count := map[string]int{}
	const askers, per = 2000, 5
	for i := range askers {
		for _, p := range selectPeers(asker{id: fmt.Sprintf("a%d", i)}, cands, per, rnd) {
			count[p.GetId()]++
		}
	}
	want := askers * per / len(cands) // 200
	for id, c := range count {
		if c < want/2 || c > want*2 {
			t.Errorf("%s handed out %d times, expected about %d", id, c, want)
		}
	}
	if len(count) != len(cands) {
		t.Errorf("only %d of %d seeders ever handed out", len(count), len(cands))
	}
}

func peerIDs(ps []*shoalpb.Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.GetId()
	}
	return out
}

func testPolicy() policy {
	return policy{interval: time.Second, seederInterval: 10 * time.Second, defaultPeers: 20, maxPeers: 50, sampleSize: 200, originFanout: 2, seederTarget: 2}
}

func announceReq(d, id string, complete bool) *shoalpb.AnnounceRequest {
	r := &shoalpb.AnnounceRequest{Digest: d, Peer: peer(id, "", "")}
	if complete {
		r.Have = &shoalpb.AnnounceRequest_Complete{Complete: true}
	} else {
		r.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: []byte{0}}
	}
	return r
}

func hasOrigin(r *shoalpb.AnnounceResponse) bool {
	for _, p := range r.GetPeers() {
		if p.GetOrigin() {
			return true
		}
	}
	return false
}

// Origins go to at most originFanout agents at a time, stay with them while
// they announce, and stop once enough agents are complete.
func TestOriginGrants(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	origins := []ring.Member{{ID: "o1", PeerID: "origin-peer", P2PAddrs: []string{"/ip4/10.0.0.1/tcp/4001"}}}
	p := testPolicy()
	sw := newSwarms(1<<20, 0)
	now := time.Unix(1000, 0)
	grants := map[string]bool{}
	for _, id := range []string{"a", "b", "c", "d"} {
		grants[id] = hasOrigin(sw.ann(d, announceReq(d, id, false), origins, p, now))
	}
	if !grants["a"] || !grants["b"] || grants["c"] || grants["d"] {
		t.Fatalf("grants %v, want only the first two (fanout 2)", grants)
	}
	// a keeps its grant on re-announce; c still waits.
	if !hasOrigin(sw.ann(d, announceReq(d, "a", false), origins, p, now.Add(time.Second))) {
		t.Fatal("a lost its grant while announcing")
	}
	if hasOrigin(sw.ann(d, announceReq(d, "c", false), origins, p, now.Add(time.Second))) {
		t.Fatal("c got a grant while two are held")
	}
	// b stops announcing: its grant lapses and c gets it.
	later := now.Add(5 * time.Second)
	sw.ann(d, announceReq(d, "a", false), origins, p, later)
	if !hasOrigin(sw.ann(d, announceReq(d, "c", false), origins, p, later)) {
		t.Fatal("c did not get the lapsed grant")
	}
	// Two complete agents: origins are no longer handed out.
	sw.ann(d, announceReq(d, "s1", true), origins, p, later)
	sw.ann(d, announceReq(d, "s2", true), origins, p, later)
	if r := sw.ann(d, announceReq(d, "a", false), origins, p, later); hasOrigin(r) {
		t.Fatal("origin handed out with seeders present")
	} else if len(r.GetPeers()) == 0 || !r.GetPeers()[0].GetComplete() {
		t.Fatalf("seeders should come first: %v", r.GetPeers())
	}
}

func TestSweepExpires(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000002"
	p := testPolicy()
	sw := newSwarms(1<<20, 0)
	now := time.Unix(1000, 0)
	sw.ann(d, announceReq(d, "leecher", false), nil, p, now)
	sw.ann(d, announceReq(d, "seeder", true), nil, p, now)
	if ns, np := sw.sweep(now.Add(time.Second)); ns != 1 || np != 2 {
		t.Fatalf("sweep = %d swarms %d peers", ns, np)
	}
	// Three missed intervals (±10%) drop the leecher; the seeder
	// announces ten times less often and stays.
	if _, np := sw.sweep(now.Add(4 * time.Second)); np != 1 {
		t.Fatalf("%d peers after the leecher's expiry", np)
	}
	if ns, np := sw.sweep(now.Add(40 * time.Second)); ns != 0 || np != 0 {
		t.Fatalf("swarm not dropped: %d %d", ns, np)
	}
	r := sw.ann(d, announceReq(d, "new", false), nil, p, now.Add(41*time.Second))
	if len(r.GetPeers()) != 0 {
		t.Fatalf("expired peers handed out: %v", peerIDs(r.GetPeers()))
	}
	if iv := r.GetIntervalSeconds(); iv != 1 {
		t.Fatalf("interval %d", iv)
	}
}

// A huge swarm is sampled: the answer is still full and comes from live
// peers only.
func TestLargeSwarmSampled(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000003"
	p := testPolicy()
	sw := newSwarms(1<<20, 0)
	now := time.Unix(1000, 0)
	for i := range 5000 {
		sw.ann(d, announceReq(d, fmt.Sprintf("p%d", i), i%10 == 0), nil, p, now)
	}
	r := sw.ann(d, announceReq(d, "me", false), nil, p, now)
	if len(r.GetPeers()) != p.defaultPeers {
		t.Fatalf("%d peers, want %d", len(r.GetPeers()), p.defaultPeers)
	}
	// A sample of 200 holds about 20 of the 500 seeders; they lead.
	seeders := 0
	for _, pe := range r.GetPeers() {
		if pe.GetComplete() {
			seeders++
		}
	}
	if !r.GetPeers()[0].GetComplete() || seeders < 10 {
		t.Fatalf("%d seeders in %v", seeders, peerIDs(r.GetPeers()))
	}
}

// ann is announce for tests whose table never fills.
func (t *swarms) ann(d string, req *shoalpb.AnnounceRequest, origins []ring.Member, p policy, now time.Time) *shoalpb.AnnounceResponse {
	r, err := t.announce(d, req, "", origins, p, now)
	if err != nil {
		panic(err)
	}
	return r
}

func TestTableBound(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000004"
	sw := newSwarms(3, 0)
	now := time.Unix(1000, 0)
	for i := range 3 {
		sw.ann(d, announceReq(d, fmt.Sprintf("p%d", i), false), nil, testPolicy(), now)
	}
	if _, err := sw.announce(d, announceReq(d, "p3", false), "", nil, testPolicy(), now); err == nil {
		t.Fatal("a fourth peer fit in a table of three")
	}
	// Known peers still re-announce; expiry frees room.
	sw.ann(d, announceReq(d, "p0", false), nil, testPolicy(), now)
	sw.sweep(now.Add(time.Hour))
	sw.ann(d, announceReq(d, "p3", false), nil, testPolicy(), now.Add(time.Hour))
}

func TestPeerLimiter(t *testing.T) {
	l := newPeerLimiter(10, 5)
	now := time.Unix(1000, 0)
	allowed := 0
	for range 20 {
		if l.allowN("flood", 1, now) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("burst allowed %d, want 5", allowed)
	}
	if !l.allowN("other", 1, now) {
		t.Fatal("one peer's flood limited another")
	}
	if !l.allowN("flood", 1, now.Add(100*time.Millisecond)) || l.allowN("flood", 1, now.Add(100*time.Millisecond)) {
		t.Fatal("refill is not 10/s")
	}
	l.sweep(now.Add(time.Hour))
	for i := range l.shards {
		if len(l.shards[i].m) != 0 {
			t.Fatal("idle buckets kept")
		}
	}
}
