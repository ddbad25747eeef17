package swarmsim

import (
	"context"
	"reflect"
	"testing"
	"time"
)

const mbit = 1e6 / 8 // bytes per second

// simulate runs cfg and returns the simulation's end state with its result.
func simulate(t *testing.T, cfg Config) (*sim, *Result) {
	t.Helper()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	s := newSim(cfg.withDefaults())
	if err := s.loop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.finish()
	return s, s.res
}

var fleets = []struct {
	name string
	cfg  Config
}{
	{"one layer", Config{Agents: 12, BlobBytes: 32 << 20, UpBps: 25 * mbit}},
	{"layers, stagger", Config{Agents: 20, BlobBytes: 48 << 20, Layers: 3, UpBps: 25 * mbit, Stagger: 5 * time.Second}},
	{"churn", Config{Agents: 20, BlobBytes: 32 << 20, UpBps: 25 * mbit, Churn: 0.25}},
	{"asymmetric links", Config{Agents: 15, BlobBytes: 24 << 20, UpBps: 10 * mbit, DownBps: 50 * mbit, OriginBps: 50 * mbit}},
	{"odd sizes", Config{Agents: 9, BlobBytes: 21<<20 + 12345, Layers: 2, UpBps: 40 * mbit, Latency: 20 * time.Millisecond}},
}

// Every agent ends with every piece, and every byte is accounted for:
// what agents received is what the origin and the agents sent, and it is
// one copy of the image per agent plus duplicates plus pieces cut off.
func TestConservation(t *testing.T) {
	for _, tc := range fleets {
		t.Run(tc.name, func(t *testing.T) {
			s, r := simulate(t, tc.cfg)
			if r.Failed > 0 {
				t.Fatalf("%d of %d agents did not finish in %v", r.Failed, tc.cfg.Agents, r.SimTime)
			}
			for _, h := range s.hosts[:tc.cfg.Agents] {
				for l, li := range s.layers {
					if h.nheld[l] != li.pieces {
						t.Fatalf("%s holds %d of %d pieces of layer %d", h.id, h.nheld[l], li.pieces, l)
					}
					for i := range li.pieces {
						if !hasBit(h.held[l], i) {
							t.Fatalf("%s lacks piece %d of layer %d", h.id, i, l)
						}
					}
				}
			}
			if got := r.OriginEgress + r.PeerBytes; r.ReceivedBytes != got {
				t.Errorf("agents received %d bytes; origin and agents sent %d", r.ReceivedBytes, got)
			}
			need := int64(tc.cfg.Agents) * tc.cfg.BlobBytes
			if s.useful != need {
				t.Errorf("first copies: %d bytes, want agents × image = %d", s.useful, need)
			}
			if got := need + r.DuplicateBytes + r.AbortedBytes; r.ReceivedBytes != got {
				t.Errorf("received %d bytes ≠ needed %d + duplicates %d + cut off %d", r.ReceivedBytes, need, r.DuplicateBytes, r.AbortedBytes)
			}
			var sum int64
			for _, a := range r.Agents {
				sum += a.Received
			}
			if sum != r.ReceivedBytes {
				t.Errorf("agents' own counts add up to %d, the total is %d", sum, r.ReceivedBytes)
			}
			if tc.cfg.Churn > 0 && r.AbortedBytes == 0 {
				t.Error("churn cut no piece off")
			}
			// The timeline: a sample every bound ÷ 20 until the end,
			// progress never going back, no link over its capacity.
			if want := int(r.SimTime/(r.Bound/20)) + 1; len(r.Timeline) < want-1 || len(r.Timeline) > want {
				t.Errorf("%d samples over %v, want about %d (one per %v)", len(r.Timeline), r.SimTime, want, r.Bound/20)
			}
			busiest := 0.0
			for k, smp := range r.Timeline {
				busiest = max(busiest, smp.UpUse, smp.DownUse)
				if k > 0 && (smp.Done < r.Timeline[k-1].Done || smp.Finished < r.Timeline[k-1].Finished) {
					t.Errorf("sample %d at %v went back: %+v after %+v", k, smp.At, smp, r.Timeline[k-1])
				}
				const eps = 1e-9
				if smp.UpUse > 1+eps || smp.DownUse > 1+eps || smp.OriginUse > 1+eps || smp.Done > 1+eps {
					t.Errorf("sample %d over capacity: %+v", k, smp)
				}
			}
			if busiest < 0.5 {
				t.Errorf("the agents' links were never half used (at most %.2f): the samples miss the flows", busiest)
			}
		})
	}
}

// Nobody beats physics: no agent has the image sooner than it takes to
// pull it through its downlink, nor its first piece sooner than that
// piece takes.
func TestBoundHolds(t *testing.T) {
	for _, tc := range append(fleets[:len(fleets):len(fleets)],
		struct {
			name string
			cfg  Config
		}{"alone", Config{Agents: 1, BlobBytes: 16 << 20, UpBps: 100 * mbit}}) {
		t.Run(tc.name, func(t *testing.T) {
			s, r := simulate(t, tc.cfg)
			first := time.Duration(float64(s.layers[0].pieceBytes(0)) / float64(r.Config.DownBps) * float64(time.Second))
			for i, a := range r.Agents {
				if a.Failed {
					t.Fatalf("agent %d failed", i)
				}
				if a.Took() < r.Bound {
					t.Errorf("agent %d took %v, under the bound %v", i, a.Took(), r.Bound)
				}
				if a.FirstByte-a.Start < first {
					t.Errorf("agent %d had its first piece after %v, under the %v it takes", i, a.FirstByte-a.Start, first)
				}
			}
		})
	}
}

// The same seed gives the same run.
func TestDeterministic(t *testing.T) {
	cfg := Config{Agents: 30, BlobBytes: 32 << 20, Layers: 2, UpBps: 25 * mbit, Churn: 0.1, Stagger: 2 * time.Second, Seed: 7}
	_, a := simulate(t, cfg)
	_, b := simulate(t, cfg)
	a.Wall, b.Wall = 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Errorf("two runs with seed 7 differ:\n%+v\n%+v", summary(a), summary(b))
	}
	cfg.Seed = 8
	_, c := simulate(t, cfg)
	if reflect.DeepEqual(a.Agents, c.Agents) {
		t.Error("seeds 7 and 8 gave the same run")
	}
}

func summary(r *Result) []any {
	return []any{r.Percentile(50), r.Percentile(99), r.OriginEgress, r.PeerBytes, r.DuplicateBytes, r.Events}
}

// A rollout of 200 agents is fed by the swarm: the origin sends about one
// copy of the image.
func TestOriginSendsAboutOneCopy(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("200 agents: long in -short or -race mode (the simulator is one goroutine)")
	}
	start := time.Now()
	_, r := simulate(t, Config{Agents: 200, BlobBytes: 128 << 20, UpBps: 25 * mbit, Seed: 1})
	t.Logf("200 agents: p99 %.2f × bound, origin %.2f copies, duplicates %.1f%%, %d events in %v",
		r.P99OverBound(), r.OriginCopies, 100*r.DuplicateFraction(), r.Events, time.Since(start).Round(time.Millisecond))
	if r.Failed > 0 {
		t.Fatalf("%d agents failed", r.Failed)
	}
	if r.OriginCopies > 1.5 {
		t.Errorf("the origin sent %.2f copies of the image, want ≤ 1.5", r.OriginCopies)
	}
}
