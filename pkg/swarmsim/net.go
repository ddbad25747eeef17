package swarmsim

import (
	"math"
	"time"
)

// The network: every host has an uplink and a downlink of fixed capacity,
// and a piece in flight is a flow from the sender's uplink to the
// receiver's downlink.
//
// Bandwidth sharing is max-min fair, computed locally. When a flow starts
// or ends on uplink u and downlink d, the flows on u and d are given their
// max-min fair rates (progressive filling: the tightest link's flows are
// frozen at its fair share, their share is taken off their other links,
// and so on) over u, d and the links at the far end of those flows, where
// the flows that touch neither u nor d keep their rates and take their
// part of those links' capacity first. Flows further away keep their
// rates. So a flow held back at one end leaves the rest of the other end
// to the flows that can use it, and no link ever carries more than its
// capacity; what it misses is that a flow two links away, sped up or held
// back by the change, adjusts only when its own links next see a flow
// start or end, which with pieces of a few seconds is soon. Global max-min
// on every change would cost a pass over tens of thousands of flows at
// 10,000 agents; this costs a few dozen. Each changed flow's completion is
// moved in an indexed heap.

// link is one direction of a host's access link.
type link struct {
	cap   float64 // bytes per second
	flows []*flow
	// Scratch for update.
	mark     uint64 // last update it was part of
	residual float64
	unfrozen int
}

// flow is one piece on its way.
type flow struct {
	serial    uint64
	up, down  int32 // link indices
	upPos     int   // index in the uplink's flows
	downPos   int
	bytes     int64
	start     time.Duration
	rate, rem float64 // bytes per second since last, when rem bytes were left
	last      time.Duration
	finish    time.Duration
	heapIdx   int
	mark      uint64 // last update that recomputed it
	frozen    bool
	newRate   float64

	// What it carries: a piece on a stream, or (st nil) a piece the
	// origin serves over HTTP to dl.
	st     *stream
	ticket uint64
	dl     *download
	piece  int
}

// sent is how many bytes of f have left by now.
func (f *flow) sent(now time.Duration) int64 {
	rem := f.rem - f.rate*(now-f.last).Seconds()
	return f.bytes - int64(math.Max(0, math.Ceil(rem)))
}

type network struct {
	links  []link
	heap   flowHeap
	gen    uint64
	serial uint64
	// scratch
	region []int32
	local  []*flow
}

// addLink adds a link of capacity bps (0 or less: unlimited) and returns
// its index.
func (n *network) addLink(bps float64) int32 {
	if bps <= 0 {
		bps = math.Inf(1)
	}
	n.links = append(n.links, link{cap: bps})
	return int32(len(n.links) - 1)
}

// start puts f on its links at now.
func (n *network) start(f *flow, now time.Duration) {
	n.serial++
	f.serial = n.serial
	f.start, f.last, f.rem = now, now, float64(f.bytes)
	f.rate, f.finish = 0, maxTime
	f.heapIdx = -1
	up, down := &n.links[f.up], &n.links[f.down]
	f.upPos, f.downPos = len(up.flows), len(down.flows)
	up.flows = append(up.flows, f)
	down.flows = append(down.flows, f)
	n.heap.push(f)
	n.update(now, f.up, f.down)
}

// stop takes f off its links (finished or aborted) at now.
func (n *network) stop(f *flow, now time.Duration) {
	if f.heapIdx >= 0 {
		n.heap.remove(f)
	}
	n.detach(&n.links[f.up], f, true)
	n.detach(&n.links[f.down], f, false)
	n.update(now, f.up, f.down)
}

func (n *network) detach(l *link, f *flow, up bool) {
	pos := f.downPos
	if up {
		pos = f.upPos
	}
	last := len(l.flows) - 1
	moved := l.flows[last]
	l.flows[pos] = moved
	if up {
		moved.upPos = pos
	} else {
		moved.downPos = pos
	}
	l.flows[last] = nil
	l.flows = l.flows[:last]
}

// update gives the flows on links u and d their max-min fair rates over
// u, d and their flows' far ends (see the comment at the top).
func (n *network) update(now time.Duration, u, d int32) {
	n.gen++
	n.region, n.local = n.region[:0], n.local[:0]
	add := func(i int32) {
		if l := &n.links[i]; l.mark != n.gen {
			l.mark = n.gen
			l.residual, l.unfrozen = l.cap, 0
			n.region = append(n.region, i)
		}
	}
	add(u)
	add(d)
	for _, i := range [2]int32{u, d} {
		for _, g := range n.links[i].flows {
			if g.mark != n.gen {
				g.mark, g.frozen = n.gen, false
				n.local = append(n.local, g)
				add(g.up)
				add(g.down)
			}
		}
	}
	for _, i := range n.region {
		l := &n.links[i]
		for _, g := range l.flows {
			if g.mark != n.gen {
				l.residual -= g.rate // a flow further away keeps its rate
			}
		}
	}
	for _, g := range n.local {
		n.links[g.up].unfrozen++
		n.links[g.down].unfrozen++
	}
	for left := len(n.local); left > 0; {
		tight, share := int32(-1), math.Inf(1)
		for _, i := range n.region {
			if l := &n.links[i]; l.unfrozen > 0 {
				if s := math.Max(0, l.residual) / float64(l.unfrozen); tight < 0 || s < share {
					tight, share = i, s
				}
			}
		}
		for _, g := range n.links[tight].flows {
			if g.mark != n.gen || g.frozen {
				continue
			}
			g.frozen, g.newRate = true, share
			for _, i := range [2]int32{g.up, g.down} {
				n.links[i].residual -= share
				n.links[i].unfrozen--
			}
			left--
		}
	}
	for _, g := range n.local {
		n.rerate(g, g.newRate, now)
	}
}

func (n *network) rerate(g *flow, r float64, now time.Duration) {
	if r == g.rate {
		return
	}
	g.rem = math.Max(0, g.rem-g.rate*(now-g.last).Seconds())
	g.last, g.rate = now, r
	switch {
	case math.IsInf(r, 1):
		g.finish = now
	case r > 0:
		g.finish = now + time.Duration(math.Ceil(g.rem/r*1e9))
	default:
		g.finish = maxTime
	}
	n.heap.fix(g)
}

const maxTime = time.Duration(math.MaxInt64)

// flowHeap orders flows by finish time, then by serial.
type flowHeap []*flow

func (h flowHeap) less(i, j int) bool {
	if h[i].finish != h[j].finish {
		return h[i].finish < h[j].finish
	}
	return h[i].serial < h[j].serial
}

func (h flowHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *flowHeap) push(f *flow) {
	f.heapIdx = len(*h)
	*h = append(*h, f)
	h.up(f.heapIdx)
}

func (h *flowHeap) remove(f *flow) {
	i := f.heapIdx
	last := len(*h) - 1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	f.heapIdx = -1
	if i != last {
		h.fixAt(i)
	}
}

func (h flowHeap) fix(f *flow) { h.fixAt(f.heapIdx) }

func (h flowHeap) fixAt(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h flowHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h flowHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && h.less(r, j) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
