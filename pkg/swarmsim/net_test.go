package swarmsim

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// runFlows starts flows (uplink, downlink, bytes) at time zero on links of
// the given capacities and returns when each finished.
func runFlows(caps []float64, flows [][3]int) []time.Duration {
	var n network
	for _, c := range caps {
		n.addLink(c)
	}
	fs := make([]*flow, len(flows))
	for i, f := range flows {
		fs[i] = &flow{up: int32(f[0]), down: int32(f[1]), bytes: int64(f[2]), piece: i}
		n.start(fs[i], 0)
	}
	done := make([]time.Duration, len(flows))
	for len(n.heap) > 0 {
		f := n.heap[0]
		done[f.piece] = f.finish
		n.stop(f, f.finish)
	}
	return done
}

func near(got, want time.Duration) bool {
	return math.Abs(float64(got-want)) <= 1e-3*float64(want)+float64(time.Microsecond)
}

// k flows on one uplink each get 1/k of it when their downlinks are wide.
func TestSharedUplink(t *testing.T) {
	const capUp, size = 1e6, 4e6 // 1 MB/s, 4 MB: 4s alone
	for _, k := range []int{1, 2, 4, 8, 16} {
		caps := []float64{capUp}
		var flows [][3]int
		for i := range k {
			caps = append(caps, 100*capUp)
			flows = append(flows, [3]int{0, i + 1, size})
		}
		want := time.Duration(float64(k) * size / capUp * float64(time.Second))
		for i, got := range runFlows(caps, flows) {
			if !near(got, want) {
				t.Errorf("%d flows: flow %d took %v, want %v (1/%d of the uplink each)", k, i, got, want, k)
			}
		}
	}
}

// The same from the other side, and the mixed cases water-filling is for.
func TestLinkSharing(t *testing.T) {
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	for _, tc := range []struct {
		name  string
		caps  []float64
		flows [][3]int
		want  []time.Duration
	}{
		{"k uplinks into one downlink", []float64{1e6, 1e6, 1e6, 1e6, 1e6},
			[][3]int{{0, 4, 1e6}, {1, 4, 1e6}, {2, 4, 1e6}, {3, 4, 1e6}}, []time.Duration{sec(4), sec(4), sec(4), sec(4)}},
		{"a narrow downlink leaves its share to the other flow", []float64{10e6, 1e6, 100e6},
			// Flow 0 is held to 1 MB/s by its downlink; flow 1 gets the
			// other 9 MB/s of the uplink, then all 10.
			[][3]int{{0, 1, 1e6}, {0, 2, 18e6}}, []time.Duration{sec(1), sec(1.9)}},
		{"the sum never exceeds a link", []float64{1e6, 1e6, 1e6},
			// Uplink 0 feeds downlinks 1 and 2; they share nothing else.
			[][3]int{{0, 1, 1e6}, {0, 2, 1e6}}, []time.Duration{sec(2), sec(2)}},
		{"a flow ending speeds up the rest", []float64{1e6, 100e6, 100e6},
			[][3]int{{0, 1, 1e6}, {0, 2, 3e6}}, []time.Duration{sec(2), sec(4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runFlows(tc.caps, tc.flows)
			for i := range got {
				if !near(got[i], tc.want[i]) {
					t.Errorf("flow %d finished at %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// However flows come and go, no link carries more than its capacity.
func TestLinksNeverOvercommitted(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var n network
	const hosts = 30
	for range hosts {
		n.addLink(float64(1+rnd.IntN(10)) * 1e6) // uplink
		n.addLink(float64(1+rnd.IntN(10)) * 1e6) // downlink
	}
	now := time.Duration(0)
	for step := range 5000 {
		if len(n.heap) > 0 && (rnd.IntN(2) == 0 || len(n.heap) > 200) {
			f := n.heap[0]
			now = max(now, f.finish)
			n.stop(f, now)
		} else {
			a, b := rnd.IntN(hosts), rnd.IntN(hosts)
			n.start(&flow{up: int32(2 * a), down: int32(2*b + 1), bytes: int64(1 + rnd.IntN(4e6))}, now)
		}
		for i := range n.links {
			sum := 0.0
			for _, f := range n.links[i].flows {
				sum += f.rate
			}
			if l := n.links[i]; sum > l.cap*(1+1e-9) {
				t.Fatalf("step %d: link %d carries %.0f B/s, capacity %.0f", step, i, sum, l.cap)
			}
		}
	}
}
