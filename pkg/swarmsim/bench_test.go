package swarmsim

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkFleet runs whole rollouts of a 128 MiB image over 25 Mbit/s
// links, reporting what they did beside what they cost:
//
//	go test -run - -bench 'Fleet/1000$' -benchtime 1x ./pkg/swarmsim
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var r *Result
			for k := 0; b.Loop(); k++ {
				var err error
				r, err = Run(context.Background(), Config{Agents: n, BlobBytes: 128 << 20, UpBps: 25 * mbit, Seed: uint64(k + 1)})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(r.P99OverBound(), "p99/bound")
			b.ReportMetric(r.OriginCopies, "copies")
			b.ReportMetric(float64(r.Events), "events")
			b.ReportMetric(float64(r.Failed), "failed")
		})
	}
}
