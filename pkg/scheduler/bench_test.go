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
