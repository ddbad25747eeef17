package main

import (
	"testing"
	"time"
)

// --preheat runs a second rollout after a preheat of K agents: the preheat
// costs the origin about one copy, the rollout after it close to none, and
// the report has both beside the cold rollout.
func TestPreheatPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet of processes")
	}
	o := options{Agents: 4, Image: 16 << 20, Layers: 2, LinkBps: 50 << 20, Preheat: 2,
		Bin: binDir(t), Out: t.TempDir(), Timeout: 2 * time.Minute}
	r := runFleet(t, o)
	if len(r.Summaries) != 2 || r.Summaries[1].Mode != "preheat" {
		t.Fatalf("summaries %+v, want p2p then preheat", r.Summaries)
	}
	cold, warm := r.Summaries[0], r.Summaries[1]
	if warm.Failed != 0 || cold.Failed != 0 {
		t.Fatalf("failed: cold %d, warm %d", cold.Failed, warm.Failed)
	}
	if warm.PreheatCopies < o.Preheat {
		t.Fatalf("preheat made %d copies, want %d", warm.PreheatCopies, o.Preheat)
	}
	// One copy from the origin (pieces a first fetcher re-asks may add a
	// little), then the rollout fetches from the preheated agents.
	if c := float64(warm.PreheatEgress) / float64(o.Image); c < 0.99 || c > 1.5 {
		t.Fatalf("preheat: origin sent %.2f copies, want about 1", c)
	}
	if warm.EgressCopies > 0.1 {
		t.Fatalf("rollout after the preheat: origin sent %.2f copies, want about 0", warm.EgressCopies)
	}
	if r.PreheatVsCold <= 0 {
		t.Fatal("no preheated ÷ cold ratio in the report")
	}
	t.Logf("cold p50 %.2fs p99 %.2fs egress %.2fx; preheated p50 %.2fs p99 %.2fs egress %.2fx (preheat %.2fs, %.2fx)",
		cold.P50, cold.P99, cold.EgressCopies, warm.P50, warm.P99, warm.EgressCopies, warm.PreheatSeconds,
		float64(warm.PreheatEgress)/float64(o.Image))
}
