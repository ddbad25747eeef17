package scheduler

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/uplink"
)

// TestSharedSlowUplink: twelve downloaders start at once on two complete
// seeders whose uplinks (3 MB/s each, 4 MiB pieces: 1.4s a piece alone)
// are shared by everyone's requests, the way a rollout's first seconds
// load the first seeders. Each seeder admits through a real uplink.Gate
// (a few sending, a few waiting, busy beyond) and splits its rate evenly
// over the pieces on the wire. On a fake clock in 10ms steps: every
// download completes, no request expires (slow is not failed), nothing is
// asked twice outside the end game, and refused requesters go elsewhere
// (busy answers happen, and both seeders carry load).
func TestSharedSlowUplink(t *testing.T) {
	const (
		pieces  = 16
		piece   = 4 << 20
		rate    = 3e6 // bytes/s per seeder uplink
		clients = 12
		step    = 10 * time.Millisecond
	)
	type flow struct {
		client int
		piece  int
		left   float64
		owner  uint64
	}
	type seeder struct {
		id      PeerID
		gate    *uplink.Gate
		waiting map[uplink.Ticket]flow
		sending []flow
		sent    int
	}
	seeders := []*seeder{
		{id: "s0", gate: uplink.New(0, 0), waiting: map[uplink.Ticket]flow{}},
		{id: "s1", gate: uplink.New(0, 0), waiting: map[uplink.Ticket]flow{}},
	}
	scheds := make([]*Scheduler, clients)
	now := t0
	for c := range scheds {
		scheds[c] = New(Config{}, pieces, piece, nil, rand.New(rand.NewPCG(uint64(c), 9)))
		for _, s := range seeders {
			scheds[c].AddPeer(s.id, nil, true, now)
		}
	}
	done := 0
	for steps := 0; done < clients; steps++ {
		if steps > 100_000 {
			t.Fatalf("no end: %d of %d done", done, clients)
		}
		for c, sc := range scheds {
			if sc.Done() {
				continue
			}
			for _, r := range sc.Next(now) {
				s := seeders[r.Peer[1]-'0']
				tk, ok := s.gate.Admit(uint64(c), r.Piece)
				if !ok {
					sc.Busy(r.Peer, r.Piece, now.Add(s.gate.RetryAfter()))
					continue
				}
				s.waiting[tk] = flow{client: c, piece: r.Piece, left: piece, owner: uint64(c)}
			}
		}
		for _, s := range seeders {
			for {
				tk, _, ok := s.gate.Next()
				if !ok {
					break
				}
				s.sending = append(s.sending, s.waiting[tk])
				delete(s.waiting, tk)
			}
			if len(s.sending) == 0 {
				continue
			}
			share := rate * step.Seconds() / float64(len(s.sending))
			kept := s.sending[:0]
			for _, f := range s.sending {
				f.left -= share
				scheds[f.client].Moving(s.id, now)
				if f.left > 0 {
					kept = append(kept, f)
					continue
				}
				s.gate.Done(f.owner, time.Second)
				s.sent++
				sc := scheds[f.client]
				if sc.Done() || sc.Have(f.piece) {
					continue
				}
				sc.Received(s.id, f.piece, true, now)
				if sc.Done() {
					done++
				}
			}
			s.sending = kept
		}
		now = now.Add(step)
		for _, sc := range scheds {
			if e := sc.Expire(now); len(e) > 0 {
				t.Fatalf("at +%s: expired %v on a slow but moving uplink", now.Sub(t0), e)
			}
		}
	}
	var busy, endGame int
	for _, sc := range scheds {
		c := sc.Counters()
		busy += c.Busy
		endGame += c.EndGame
	}
	sent := seeders[0].sent + seeders[1].sent
	t.Logf("%d clients × %d pieces in %s: %d sent (%d by s0, %d by s1), %d busy answers, %d end-game requests",
		clients, pieces, now.Sub(t0), sent, seeders[0].sent, seeders[1].sent, busy, endGame)
	if busy == 0 {
		t.Fatal("no busy answers: the uplinks admitted everything")
	}
	if seeders[0].sent < sent/4 || seeders[1].sent < sent/4 {
		t.Fatal("refused requesters did not go to the other seeder")
	}
	if dup := sent - clients*pieces; dup > endGame {
		t.Fatalf("%d duplicate pieces sent, %d end-game requests: duplicates outside the end game", dup, endGame)
	}
	if endGame > clients*endGameMax {
		t.Fatalf("%d end-game requests: more than the last %d pieces of each client", endGame, endGameMax)
	}
}
