package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkNextBoundFull is the call a download makes on every event (a
// have, a piece, a tick) while its requests in flight are at the bound:
// the common case in a rollout, and what the fleet simulator spent most of
// its time on.
func BenchmarkNextBoundFull(b *testing.B) {
	for _, peers := range []int{8, 32, 128} {
		b.Run(fmt.Sprint(peers), func(b *testing.B) {
			now := time.Unix(0, 0)
			s := New(Config{}, 256, 1<<20, nil, rand.New(rand.NewPCG(1, 2)))
			for p := range peers {
				s.AddPeer(PeerID(fmt.Sprintf("peer%03d", p)), nil, true, now)
			}
			if len(s.Next(now)) == 0 || s.Inflight() < DefaultMaxInflight {
				b.Fatal("the bound is not reached")
			}
			for b.Loop() {
				if len(s.Next(now)) != 0 {
					b.Fatal("asked beyond the bound")
				}
			}
		})
	}
}

// BenchmarkNextAllAsked is the call late in a download, on every have
// and every piece, once each missing piece is asked of someone and the
// bound is no longer reached: there is nothing to ask, and finding that
// out once cost a scan of the blob for every peer.
func BenchmarkNextAllAsked(b *testing.B) {
	now := time.Unix(0, 0)
	have := make([]bool, 256)
	for i := range have[:251] {
		have[i] = true
	}
	s := New(Config{}, len(have), 1<<20, have, rand.New(rand.NewPCG(1, 2)))
	for p := range 32 {
		s.AddPeer(PeerID(fmt.Sprintf("peer%03d", p)), nil, true, now)
	}
	if n := len(s.Next(now)); n != 5 {
		b.Fatalf("asked %d pieces, want the 5 missing", n)
	}
	for b.Loop() {
		if len(s.Next(now)) != 0 {
			b.Fatal("asked a piece twice outside the end game")
		}
	}
}
