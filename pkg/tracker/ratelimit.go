package tracker

import (
	"hash/maphash"
	"sync"
	"time"
)

// peerLimiter bounds announces per key (a peer ID, a caller IP), so one
// misbehaving agent or host cannot take the tracker from the rest: a token
// bucket per key, in sharded maps, forgotten once idle.
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

// allowN takes n tokens from id's bucket, or none if it holds fewer.
func (l *peerLimiter) allowN(id string, n int, now time.Time) bool {
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
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
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
