package tracker

import (
	"hash/maphash"
	"sync"
	"time"
)

// peerLimiter bounds announce RPCs per peer ID, so one misbehaving agent
// cannot take the tracker from the rest: a token bucket per peer, in
// sharded maps, forgotten once idle.
type peerLimiter struct {
	rate, burst float64
	seed        maphash.Seed
	shards      [shardCount]struct {
		mu sync.Mutex
		m  map[string]*bucket
	}
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newPeerLimiter(rate float64, burst int) *peerLimiter {
	l := &peerLimiter{rate: rate, burst: float64(burst), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[string]*bucket{}
	}
	return l
}

func (l *peerLimiter) allow(id string, now time.Time) bool {
	sh := &l.shards[maphash.String(l.seed, id)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[id]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		sh.m[id] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets peers whose bucket has refilled: they hold no state worth
// keeping.
func (l *peerLimiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for id, b := range sh.m {
			if now.Sub(b.last) > full {
				delete(sh.m, id)
			}
		}
		sh.mu.Unlock()
	}
}
