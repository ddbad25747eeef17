package swarmsim

import (
	"testing"
	"time"
)

func TestFirstByteFloor(t *testing.T) {
	const tau = 100 * time.Millisecond
	for _, tt := range []struct {
		name   string
		n      int
		p      float64
		fanout float64
		want   time.Duration
	}{
		{"one agent", 1, 50, 1, 1 * tau},
		{"the first three need two piece times", 3, 100, 1, 2 * tau},
		{"the fourth a third", 4, 100, 1, 3 * tau},
		{"median of 25", 25, 50, 1, 4 * tau},
		{"p99 of 25", 25, 99, 1, 5 * tau},
		{"median of 1000", 1000, 50, 1, 9 * tau},
		{"p99 of 10000", 10000, 99, 1, 14 * tau},
		{"an origin four times as fast", 25, 50, 4, 3 * tau},
		{"fanout below one counts as one", 25, 50, 0.5, 4 * tau},
		{"no agents", 0, 50, 1, 0},
		{"no piece time", 25, 50, 1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pt := tau
			if tt.name == "no piece time" {
				pt = 0
			}
			if got := FirstByteFloor(tt.n, tt.p, pt, tt.fanout); got != tt.want {
				t.Errorf("FirstByteFloor(%d, %v, %v, %v) = %v, want %v", tt.n, tt.p, pt, tt.fanout, got, tt.want)
			}
		})
	}
}

// The simulated fleet never beats the floor: a check of the model as much
// as of the floor.
func TestFirstByteAboveFloor(t *testing.T) {
	for _, n := range []int{3, 25, 60} {
		r, err := Run(t.Context(), Config{Agents: n, BlobBytes: 16 << 20, UpBps: 25 * mbit, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		tau := PieceTime(r.PieceLength, 25*mbit)
		for _, p := range []float64{50, 99} {
			if got, floor := r.FirstBytePercentile(p), FirstByteFloor(n, p, tau, 1); got < floor {
				t.Errorf("%d agents: first byte p%v %v, under the floor %v", n, p, got, floor)
			}
		}
	}
}
