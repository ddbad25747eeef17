package origin

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// readerRate is the least uplink share a /v2 blob reader should get: a
// 4 MiB piece in about a second. Readers beyond uplink ÷ readerRate are
// turned away with 429 and a Retry-After instead of slowing every body
// down: fallback readers are agents that can keep working the swarm
// meanwhile, and a fleet of them sharing one uplink is a fleet whose every
// read times out.
const readerRate = 4 << 20

// readerGate admits /v2 blob bodies within the origin's uplink.
type readerGate struct {
	mu   sync.Mutex
	max  int
	busy int
	// took is a smoothed body duration, for the Retry-After hint.
	took time.Duration
}

// newReaderGate admits max readers at once; with max 0, as many as the
// uplink budget gives readerRate each (64 with no budget).
func newReaderGate(max int, egress *rate.Limiter) *readerGate {
	if max <= 0 {
		max = 64
		if egress != nil && egress.Limit() != rate.Inf {
			max = int(math.Max(2, float64(egress.Limit())/readerRate))
		}
	}
	return &readerGate{max: max}
}

// admit takes a reader's place, or says how long to wait for one.
func (g *readerGate) admit() (release func(), retryAfter time.Duration, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy >= g.max {
		// About when the next place frees: one body's time spread over
		// the readers; at least a second (Retry-After counts seconds).
		return nil, max(time.Second, min(10*time.Second, g.took/time.Duration(g.max))), false
	}
	g.busy++
	start := time.Now()
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.busy--
		d := time.Since(start)
		if g.took == 0 {
			g.took = d
		} else {
			g.took += (d - g.took) / 8
		}
	}, 0, true
}
