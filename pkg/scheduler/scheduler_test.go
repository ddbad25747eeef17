package scheduler

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func bits(n int, set ...int) []byte {
	b := make([]byte, (n+7)/8)
	for _, i := range set {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}

func newTest(n int, cfg Config) *Scheduler {
	return New(cfg, n, 4<<20, nil, rand.New(rand.NewPCG(1, 2)))
}

func byPeer(reqs []Request) map[PeerID][]int {
	out := map[PeerID][]int{}
	for _, r := range reqs {
		out[r.Peer] = append(out[r.Peer], r.Piece)
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

func TestPick(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		cfg    Config
		peers  map[PeerID][]int // nil slice: complete
		have   []int
		stream int
		want   map[PeerID][]int
	}{
		{"rarest first", 3, Config{PerPeer: 1},
			map[PeerID][]int{"a": {0, 1, 2}, "b": {1, 2}, "c": {2}}, nil, -1,
			map[PeerID][]int{"a": {0}, "b": {1}, "c": {2}}},
		{"pipelining up to PerPeer", 10, Config{PerPeer: 3},
			map[PeerID][]int{"a": nil}, nil, -1, map[PeerID][]int{"a": {-3}}}, // any 3: equally rare
		{"streaming window first, in order", 10, Config{PerPeer: 2, Window: 2},
			map[PeerID][]int{"a": nil}, nil, 5, map[PeerID][]int{"a": {5, 6}}},
		{"window skips held pieces", 10, Config{PerPeer: 2, Window: 3},
			map[PeerID][]int{"a": nil}, []int{5, 6}, 5, map[PeerID][]int{"a": {7, 0}}},
		{"held pieces are not asked", 3, Config{},
			map[PeerID][]int{"a": nil}, []int{0, 2}, -1, map[PeerID][]int{"a": {1}}},
		{"nobody has it", 2, Config{}, map[PeerID][]int{"a": {}}, nil, -1, map[PeerID][]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := make([]bool, tt.n)
			for _, i := range tt.have {
				have[i] = true
			}
			s := New(tt.cfg, tt.n, 4<<20, have, rand.New(rand.NewPCG(1, 2)))
			for id, ps := range tt.peers {
				s.AddPeer(id, bits(tt.n, ps...), ps == nil, t0)
			}
			s.SetStream(tt.stream)
			got := byPeer(s.Next(t0))
			if tt.name == "window skips held pieces" {
				// 7 from the window, then any rarest piece.
				if len(got["a"]) != 2 || !slices.Contains(got["a"], 7) {
					t.Fatalf("got %v", got)
				}
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for id, w := range tt.want {
				if len(w) == 1 && w[0] < 0 {
					if len(got[id]) != -w[0] {
						t.Fatalf("got %v, want %d requests", got, -w[0])
					}
					continue
				}
				if !slices.Equal(got[id], w) {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestEndGameAndCancel(t *testing.T) {
	s := newTest(2, Config{PerPeer: 4, MaxInflight: 8})
	s.AddPeer("a", nil, true, t0)
	s.AddPeer("b", nil, true, t0)
	first := s.Next(t0)
	if len(first) != 2 {
		t.Fatalf("first round %v: each piece once", first)
	}
	if dups := s.Next(t0.Add(time.Second)); len(dups) != 0 {
		t.Fatalf("duplicates %v before any request is late", dups)
	}
	// Past the unmeasured peers' usual time (half the 6s initial
	// deadline): the end game asks each late piece of the other peer.
	late := t0.Add(3500 * time.Millisecond)
	dups := s.Next(late)
	if len(dups) != 2 {
		t.Fatalf("end game round %v after %v: each late piece once more", dups, first)
	}
	for _, d := range dups {
		for _, f := range first {
			if d == f {
				t.Fatalf("end game asked %v of the peer already asked", d)
			}
		}
	}
	if more := s.Next(late); len(more) != 0 {
		t.Fatalf("beyond EndGameCopies: %v", more)
	}
	if c := s.Counters(); c.EndGame != 2 {
		t.Fatalf("counters %+v: want 2 end-game requests", c)
	}
	cancel := s.Received(first[0].Peer, first[0].Piece, true, late)
	if len(cancel) != 1 || cancel[0].Peer == first[0].Peer || cancel[0].Piece != first[0].Piece {
		t.Fatalf("cancel %v after %v delivered", cancel, first[0])
	}
	for _, d := range dups {
		if d.Piece != first[0].Piece {
			s.Received(d.Peer, d.Piece, true, late)
		}
	}
	if !s.Done() {
		t.Fatal("not done")
	}
	if s.Next(late) != nil {
		t.Fatal("requests after done")
	}
}

func TestBadPieceBans(t *testing.T) {
	s := newTest(4, Config{PerPeer: 2})
	s.AddPeer("liar", nil, true, t0)
	reqs := s.Next(t0)
	s.Received("liar", reqs[0].Piece, false, t0)
	if s.Have(reqs[0].Piece) {
		t.Fatal("bad piece kept")
	}
	s.AddPeer("liar", nil, true, t0) // re-announced by the tracker
	s.PeerHas("liar", 3)
	if r := s.Next(t0); len(r) != 0 {
		t.Fatalf("banned peer asked again: %v", r)
	}
	s.AddPeer("honest", nil, true, t0)
	r := s.Next(t0)
	if len(r) != 2 || r[0].Peer != "honest" {
		t.Fatalf("after ban: %v", r)
	}
	if s.Peers() != 1 {
		t.Fatalf("usable peers %d", s.Peers())
	}
}

func TestExpireAndStall(t *testing.T) {
	s := newTest(4, Config{PerPeer: 1, BaseTimeout: time.Second, MinRate: 4 << 20}) // 2s before any measurement
	s.AddPeer("quiet", nil, true, t0)
	r := s.Next(t0)
	if len(r) != 1 {
		t.Fatal(r)
	}
	if e := s.Expire(t0.Add(1900 * time.Millisecond)); len(e) != 0 {
		t.Fatalf("expired early: %v", e)
	}
	e := s.Expire(t0.Add(2100 * time.Millisecond))
	if len(e) != 1 || e[0] != r[0] {
		t.Fatalf("expired %v, want %v", e, r)
	}
	if st := s.Stalled(); len(st) != 0 {
		t.Fatalf("stalled after one expiry: %v", st)
	}
	// The peer rests for its doubled deadline (4s) before it is asked
	// again, and the new request gets 4s too.
	if r := s.Next(t0.Add(5 * time.Second)); len(r) != 0 {
		t.Fatalf("resting peer asked at 5s: %v", r)
	}
	if r := s.Next(t0.Add(6200 * time.Millisecond)); len(r) != 1 {
		t.Fatalf("not asked again after its rest: %v", r)
	}
	if e := s.Expire(t0.Add(10 * time.Second)); len(e) != 0 {
		t.Fatalf("backed-off deadline expired early: %v", e)
	}
	if e := s.Expire(t0.Add(10300 * time.Millisecond)); len(e) != 1 {
		t.Fatalf("second expiry: %v", e)
	}
	if st := s.Stalled(); len(st) != 1 || st[0] != "quiet" {
		t.Fatalf("two expiries in a row: stalled %v", st)
	}
	if c := s.Counters(); c.Expired != 2 {
		t.Fatalf("counters %+v", c)
	}
	s.RemovePeer("quiet")
	s.AddPeer("fast", nil, true, t0)
	if r2 := s.Next(t0.Add(11 * time.Second)); len(r2) != 1 || r2[0].Peer != "fast" {
		t.Fatalf("reassigned %v", r2)
	}
}

// A slow peer that keeps moving bytes is not a failed one, however long a
// piece takes; and deadlines follow what a peer has been measured at.
func TestDeadlinesFollowMeasuredDelivery(t *testing.T) {
	s := newTest(8, Config{PerPeer: 1, BaseTimeout: time.Second, MinRate: 4 << 20})
	s.AddPeer("slow", nil, true, t0)
	now := t0
	for k := range 3 {
		r := s.Next(now)
		if len(r) != 1 {
			t.Fatalf("round %d: %v", k, r)
		}
		// 10s per piece, five times the initial deadline, bytes
		// arriving all along.
		for range 100 {
			now = now.Add(100 * time.Millisecond)
			s.Moving("slow", now)
			if e := s.Expire(now); len(e) != 0 {
				t.Fatalf("round %d: a moving peer's request expired at +%s", k, now.Sub(t0))
			}
		}
		s.Received("slow", r[0].Piece, true, now)
	}
	// Measured at 10s a piece: a quiet spell of 9s is within its usual
	// time, one far beyond it is not.
	r := s.Next(now)
	if e := s.Expire(now.Add(9 * time.Second)); len(e) != 0 {
		t.Fatalf("expired within the measured time: %v", e)
	}
	if e := s.Expire(now.Add(40 * time.Second)); len(e) != 1 || e[0] != r[0] {
		t.Fatalf("quiet far past the measured time: expired %v", e)
	}
}

// A busy peer's request goes back to the pool at once, the piece goes to
// another peer, and the busy one rests until its hint.
func TestBusyGoesElsewhere(t *testing.T) {
	s := newTest(1, Config{PerPeer: 1})
	s.AddPeer("full", nil, true, t0)
	r := s.Next(t0)
	if len(r) != 1 || r[0].Peer != "full" {
		t.Fatal(r)
	}
	s.Busy("full", r[0].Piece, t0.Add(2*time.Second))
	s.AddPeer("idle", nil, true, t0)
	if r := s.Next(t0); len(r) != 1 || r[0].Peer != "idle" {
		t.Fatalf("after busy: %v, want the idle peer", r)
	}
	s.RemovePeer("idle")
	if r := s.Next(t0.Add(time.Second)); len(r) != 0 {
		t.Fatalf("resting peer asked: %v", r)
	}
	if r := s.Next(t0.Add(2 * time.Second)); len(r) != 1 || r[0].Peer != "full" {
		t.Fatalf("after its retry hint: %v", r)
	}
	if c := s.Counters(); c.Busy != 1 || c.Expired != 0 || c.EndGame != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// Requests in flight over all peers stay within MaxInflight, spread one
// per peer before any peer gets a second.
func TestMaxInflight(t *testing.T) {
	s := newTest(64, Config{PerPeer: 2, MaxInflight: 5})
	for _, id := range []PeerID{"a", "b", "c", "d"} {
		s.AddPeer(id, nil, true, t0)
	}
	got := byPeer(s.Next(t0))
	total := 0
	for id, ps := range got {
		total += len(ps)
		if len(ps) == 0 || len(ps) > 2 {
			t.Fatalf("%s: %v", id, ps)
		}
	}
	if total != 5 || len(got) != 4 {
		t.Fatalf("got %v: want 5 requests over all 4 peers", got)
	}
	if more := s.Next(t0); len(more) != 0 {
		t.Fatalf("beyond MaxInflight: %v", more)
	}
}

// TestSwarmSimulation downloads a 64-piece blob from ten simulated peers
// on a fake clock: partial and complete peers with different speeds, one
// that never answers and one that sends corrupt pieces. The download must
// finish, ban the liar, route around the silent peer, and fetch each
// piece about once.
func TestSwarmSimulation(t *testing.T) {
	const n = 64
	rnd := rand.New(rand.NewPCG(7, 8))
	s := New(Config{PerPeer: 3, BaseTimeout: time.Second, MinRate: 4 << 20}, n, 4<<20, nil, rnd)
	type sim struct {
		latency time.Duration
		silent  bool
		liar    bool
	}
	peers := map[PeerID]sim{}
	for i := range 8 {
		id := PeerID(rune('a' + i))
		var set []int
		for p := range n {
			if rnd.IntN(3) == 0 {
				set = append(set, p)
			}
		}
		peers[id] = sim{latency: time.Duration(50+50*i) * time.Millisecond}
		s.AddPeer(id, bits(n, set...), false, t0)
	}
	peers["seed"] = sim{latency: 300 * time.Millisecond}
	s.AddPeer("seed", nil, true, t0)
	peers["silent"] = sim{silent: true}
	s.AddPeer("silent", nil, true, t0)
	peers["liar"] = sim{latency: 10 * time.Millisecond, liar: true}
	s.AddPeer("liar", nil, true, t0)

	type delivery struct {
		at time.Time
		r  Request
	}
	var pending []delivery
	now := t0
	requested, cancelled := 0, 0
	liarBanned := false
	for step := 0; !s.Done(); step++ {
		if step > 10_000 {
			t.Fatal("no progress")
		}
		for _, r := range s.Next(now) {
			requested++
			if r.Peer == "liar" && liarBanned {
				t.Fatal("asked the banned liar")
			}
			if p := peers[r.Peer]; !p.silent {
				pending = append(pending, delivery{now.Add(p.latency), r})
			}
		}
		now = now.Add(10 * time.Millisecond)
		s.Expire(now)
		kept := pending[:0]
		for _, d := range pending {
			if d.at.After(now) {
				kept = append(kept, d)
				continue
			}
			liar := peers[d.r.Peer].liar
			cancelled += len(s.Received(d.r.Peer, d.r.Piece, !liar, now))
			liarBanned = liarBanned || liar
		}
		pending = kept
		for _, id := range s.Stalled() {
			s.RemovePeer(id)
		}
	}
	if s.Peers() >= len(peers) {
		t.Fatal("the liar and the silent peer are still in use")
	}
	t.Logf("64 pieces: %d requests (%d cancelled in end game), done at +%s", requested, cancelled, now.Sub(t0))
	if requested > 2*n {
		t.Fatalf("%d requests for %d pieces", requested, n)
	}
}

// An origin's offer is asked at once, even with the in-flight bound used
// up by agents: the origin's uplink is the swarm's root and idles while
// the offer waits. Useful tells peers that hold something we lack.
func TestOriginFirstAndUseful(t *testing.T) {
	s := newTest(8, Config{PerPeer: 2, MaxInflight: 2})
	s.AddPeer("agent", bits(8, 0, 1, 2, 3), false, t0)
	s.AddPeer("empty", bits(8), false, t0)
	s.AddPeer("origin", bits(8, 7), false, t0)
	s.MarkOrigin("origin")
	got := byPeer(s.Next(t0))
	if len(got["agent"]) != 2 || len(got["origin"]) != 1 || got["origin"][0] != 7 {
		t.Fatalf("got %v: want two from the agent (the bound) and the origin's offer besides", got)
	}
	for id, want := range map[PeerID]bool{"agent": true, "empty": false, "origin": true, "nobody": false} {
		if s.Useful(id) != want {
			t.Errorf("Useful(%s) = %v", id, !want)
		}
	}
	if s.Inflight() != 3 {
		t.Fatalf("inflight %d", s.Inflight())
	}
}

// A limit keeps requests, and the origin's one-at-a-time fallback, to the
// pieces a node can check so far; raising it lets the rest be asked.
func TestLimit(t *testing.T) {
	s := newTest(6, Config{PerPeer: 10})
	s.SetLimit(2)
	s.AddPeer("origin", nil, true, t0)
	got := byPeer(s.Next(t0))
	if !slices.Equal(got["origin"], []int{0, 1}) {
		t.Fatalf("limit 2: asked %v, want pieces 0 and 1", got)
	}
	if w := s.Wanted(); w != 0 {
		t.Fatalf("Wanted with pieces 0, 1 asked under limit 2: %d, want 0 (asked, the first missing)", w)
	}
	s.Received("origin", 0, true, t0)
	s.Received("origin", 1, true, t0)
	if w := s.Wanted(); w != -1 {
		t.Fatalf("Wanted with every piece under the limit held: %d, want -1", w)
	}
	if reqs := s.Next(t0); len(reqs) != 0 {
		t.Fatalf("asked %v past the limit", reqs)
	}
	s.SetLimit(99)
	if got := byPeer(s.Next(t0)); !slices.Equal(got["origin"], []int{2, 3, 4, 5}) {
		t.Fatalf("limit raised: asked %v, want pieces 2 to 5", got)
	}
}
