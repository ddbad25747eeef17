package swarmsim

import (
	"errors"
	"math"
	"slices"
	"time"

	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/scheduler"
	"github.com/shoal-project/shoal/pkg/swarm"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/uplink"
)

// Config describes one simulated rollout. Zero values take the defaults
// given, which are those of the load test's fleet.
type Config struct {
	// Agents start pulling an image of BlobBytes in Layers layers (default
	// 1), ParallelLayers of them at a time (default 3, as containerd and
	// the load test do).
	Agents         int
	BlobBytes      int64
	Layers         int
	ParallelLayers int
	// UpBps and DownBps cap every agent's uplink and downlink, bytes per
	// second; OriginBps the origin's uplink (default UpBps).
	UpBps, DownBps int64
	OriginBps      int64
	// PayloadShare is the part of a link's rate that carries payload
	// (default TCPPayloadShare): a link cap such as tc's counts whole
	// frames, headers included, while the bound counts the blob alone.
	PayloadShare float64
	// Latency is every host's access latency: a message between two hosts
	// takes the sum of theirs (default 2ms: 4ms one way).
	Latency time.Duration
	// Stagger spreads the agents' starts evenly over this window.
	Stagger time.Duration
	// Churn is the fraction of agents (the first ones) that leave at
	// ChurnAt after their start (default half the bound, at least 1s, as
	// the load test) and come back ChurnDelay later (default 1s) with the
	// pieces they held.
	Churn      float64
	ChurnAt    time.Duration
	ChurnDelay time.Duration
	// Seed makes a run reproducible (0 is a seed like any other).
	Seed uint64
	// MaxSimTime bounds simulated time (default 20 bounds + 2 staggers +
	// 1 minute); agents not done by then fail. MaxEvents bounds the work
	// (default 4000 per agent-piece + 1M); reaching it is an error.
	MaxSimTime time.Duration
	MaxEvents  int64

	// The system's own settings, defaults as deployed by the load test.

	// Scheduler configures every agent's scheduler (its own defaults: 2
	// requests per peer, 6 in flight over all peers but an origin).
	Scheduler scheduler.Config
	// Tracker is the hand-out policy; Interval defaults to 1s, as the
	// load test runs its tracker.
	Tracker tracker.PolicyConfig
	// Slots and Queue size every agent's uplink gate, OriginSlots and
	// OriginQueue the origin's (pkg/uplink's defaults, 4 and 2, which
	// agents and cmd/origin both use).
	Slots, Queue             int
	OriginSlots, OriginQueue int
	// OriginReaders is how many /v2 blob bodies the origin serves at once
	// (default: OriginBps ÷ 4 MiB/s, at least 2, as the load test sets).
	OriginReaders int
	// MaxConns, StallTimeout: pkg/swarm's defaults (32, 20s). StallTimeout is the
	// floor of the quiet limit, which grows with the download's measured
	// deadlines and busy hints, and triples until a piece came from peers.
	MaxConns     int
	StallTimeout time.Duration
	// SeedInterval is how often an agent announces its complete blobs
	// (default 2s, the load test's agent config).
	SeedInterval time.Duration
	// Tick is how often a download notes bytes moving, expires requests
	// and looks for stalls (default 200ms, as pkg/swarm).
	Tick time.Duration
	// PieceLength overrides metainfo.PieceLength.
	PieceLength int64
}

func (c Config) withDefaults() Config {
	if c.Layers <= 0 {
		c.Layers = 1
	}
	if c.ParallelLayers <= 0 {
		c.ParallelLayers = 3
	}
	if c.DownBps <= 0 {
		c.DownBps = c.UpBps
	}
	if c.UpBps <= 0 {
		c.UpBps = c.DownBps
	}
	if c.OriginBps <= 0 {
		c.OriginBps = c.UpBps
	}
	if c.OriginSlots <= 0 {
		c.OriginSlots = uplink.DefaultSlots
	}
	if c.OriginQueue <= 0 {
		c.OriginQueue = uplink.DefaultQueue
	}
	if c.OriginReaders <= 0 {
		c.OriginReaders = int(max(2, c.OriginBps/(4<<20)))
	}
	if c.PayloadShare <= 0 || c.PayloadShare > 1 {
		c.PayloadShare = TCPPayloadShare
	}
	if c.Latency <= 0 {
		c.Latency = 2 * time.Millisecond
	}
	if c.ChurnDelay <= 0 {
		c.ChurnDelay = time.Second
	}
	if c.ChurnAt <= 0 {
		c.ChurnAt = max(time.Second, c.bound()/2)
	}
	if c.Tracker.Interval <= 0 {
		c.Tracker.Interval = time.Second
	}
	sw := swarm.Config{MaxConns: c.MaxConns, StallTimeout: c.StallTimeout}.WithDefaults()
	c.MaxConns, c.StallTimeout = sw.MaxConns, sw.StallTimeout
	if c.SeedInterval <= 0 {
		c.SeedInterval = 2 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = 200 * time.Millisecond
	}
	if c.MaxSimTime <= 0 {
		c.MaxSimTime = 20*c.bound() + 2*c.Stagger + time.Minute
	}
	if c.MaxEvents <= 0 {
		pieces := int64(0)
		for _, l := range c.layers() {
			pieces += int64(l.pieces)
		}
		c.MaxEvents = 4000*int64(c.Agents)*pieces + 1_000_000
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Agents < 1:
		return errors.New("swarmsim: Agents must be at least 1")
	case c.BlobBytes < 1:
		return errors.New("swarmsim: BlobBytes must be positive")
	case c.UpBps <= 0 && c.DownBps <= 0:
		return errors.New("swarmsim: UpBps or DownBps must be set")
	case c.Layers > 0 && int64(c.Layers) > c.BlobBytes:
		return errors.New("swarmsim: more layers than bytes")
	case c.Churn < 0 || c.Churn > 1:
		return errors.New("swarmsim: Churn must be 0..1")
	}
	return nil
}

// maxInflight is the agents' schedulers' bound on requests in flight
// over all peers but an origin.
func (c Config) maxInflight() int {
	if c.Scheduler.MaxInflight > 0 {
		return c.Scheduler.MaxInflight
	}
	return scheduler.DefaultMaxInflight
}

// bound is the physical floor: the image over an agent's downlink.
// TCPPayloadShare is a full-size TCP segment's payload over its Ethernet
// frame (1448 of 1514 bytes with IPv4 and TCP timestamps): what a shaped
// link delivers of a bulk transfer.
const TCPPayloadShare = 1448.0 / 1514

func (c Config) bound() time.Duration {
	down := c.DownBps
	if down <= 0 {
		down = c.UpBps
	}
	if down <= 0 {
		return 0
	}
	return time.Duration(float64(c.BlobBytes) / float64(down) * float64(time.Second))
}

type layerInfo struct {
	digest   string
	size     int64
	pieceLen int64
	pieces   int
}

func (l layerInfo) pieceBytes(i int) int64 {
	if i == l.pieces-1 {
		return l.size - int64(l.pieces-1)*l.pieceLen
	}
	return l.pieceLen
}

// layers cuts the image: equal layers, the last taking the remainder.
func (c Config) layers() []layerInfo {
	n := max(c.Layers, 1)
	out := make([]layerInfo, n)
	for i := range out {
		size := c.BlobBytes / int64(n)
		if i == n-1 {
			size = c.BlobBytes - size*int64(n-1)
		}
		pl := c.PieceLength
		if pl <= 0 {
			pl = metainfo.PieceLength(size)
		}
		out[i] = layerInfo{
			// A digest-shaped name: the tracker table keys swarms by it.
			digest: "sha256:" + hex64(uint64(i)+1),
			size:   size, pieceLen: pl, pieces: metainfo.NumPieces(size, pl),
		}
	}
	return out
}

func hex64(v uint64) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 64)
	for i := range b {
		b[i] = '0'
	}
	for i := 63; v > 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b)
}

// AgentResult is one agent's pull. Times are since the simulation began.
type AgentResult struct {
	Start     time.Duration
	FirstByte time.Duration // piece 0 of a layer held: what a streaming client waits for
	Done      time.Duration // every layer held
	Failed    bool          // not done by MaxSimTime
	// Received counts piece bytes that reached it (duplicates included);
	// Uploaded what it sent; FromOrigin what came from the origin.
	Received, Uploaded, FromOrigin int64
	Restarts                       int
}

// Took is the agent's pull time.
func (a AgentResult) Took() time.Duration { return a.Done - a.Start }

// Sample is the fleet at one moment.
type Sample struct {
	At time.Duration `json:"at"`
	// Done is the first copies of pieces received over all the agents
	// need; Finished the agents done.
	Done     float64 `json:"done"`
	Finished int     `json:"finished"`
	// UpUse and DownUse are the agents' uplinks' and downlinks' use (rate
	// over capacity, averaged over agents not done); Flows the pieces on
	// the wire.
	UpUse   float64 `json:"up_use"`
	DownUse float64 `json:"down_use"`
	Flows   int     `json:"flows"`
	// OriginUse is the origin's uplink's use: the whole image leaves it
	// at least once, so a rollout cannot end before it has sent that
	// much at this rate.
	OriginUse float64 `json:"origin_use"`
}

// Result is what a simulated rollout did.
type Result struct {
	// Config is the configuration run, defaults filled in.
	Config Config
	// PieceLength of the (first) layer, and Pieces over all layers.
	PieceLength int64
	Pieces      int
	// Bound is the image over an agent's downlink.
	Bound  time.Duration
	Agents []AgentResult
	Failed int
	// OriginEgress is what the origin sent (seeding and /v2 top-ups);
	// OriginCopies that over the image.
	OriginEgress int64
	OriginCopies float64
	// PeerBytes is what agents sent each other; ReceivedBytes what agents
	// received, DuplicateBytes the part they already held (end-game
	// losers, pieces landing after a download ended), AbortedBytes the
	// part of pieces cut off (churn, dropped peers).
	PeerBytes, ReceivedBytes, DuplicateBytes, AbortedBytes int64
	// Expired, Busy and EndGame sum the agents' scheduler counters
	// (scheduler.Counters); Refused counts the requests seeders' gates
	// refused; PeersDropped the peers dropped as stalled, PeersReplaced
	// the connections closed to make room (holding nothing the download
	// lacked) for a peer from the tracker; Stalls the times
	// a download's swarm went quiet, TopUps the pieces then read from the
	// origin one at a time, OriginBusy the reads it refused (429), and
	// Alone the downloads that found nobody else in the swarm at their
	// first announce, and so read the origin piece by piece until the
	// tracker handed out peers.
	// Requests counts piece requests sent to peers.
	Requests                                      int
	Expired, Busy, EndGame, Refused, PeersDropped int
	PeersReplaced                                 int
	Stalls, TopUps, OriginBusy, Alone             int
	// Events processed, simulated time at the end, and the wall-clock time
	// the simulation took.
	Events  int64
	SimTime time.Duration
	Wall    time.Duration
	// Timeline samples the fleet every twentieth of the bound, so a slow
	// rollout shows where it lost time: a slow start, links idle in the
	// middle, or a long tail.
	Timeline []Sample
	// Notes says where the model departs from the code it drives.
	Notes []string
}

// Percentile of the finished agents' pull times (nearest rank, as the
// load test reports).
func (r *Result) Percentile(p float64) time.Duration {
	return percentile(r.collect(AgentResult.Took), p)
}

// FirstBytePercentile of the finished agents' time to first byte.
func (r *Result) FirstBytePercentile(p float64) time.Duration {
	return percentile(r.collect(func(a AgentResult) time.Duration { return a.FirstByte - a.Start }), p)
}

// P99OverBound is the 99th percentile pull time over the bound.
func (r *Result) P99OverBound() float64 {
	if r.Bound <= 0 {
		return 0
	}
	return float64(r.Percentile(99)) / float64(r.Bound)
}

// DuplicateFraction is DuplicateBytes over ReceivedBytes.
func (r *Result) DuplicateFraction() float64 {
	if r.ReceivedBytes == 0 {
		return 0
	}
	return float64(r.DuplicateBytes) / float64(r.ReceivedBytes)
}

func (r *Result) collect(f func(AgentResult) time.Duration) []time.Duration {
	var xs []time.Duration
	for _, a := range r.Agents {
		if !a.Failed {
			xs = append(xs, f(a))
		}
	}
	slices.Sort(xs)
	return xs
}

func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}
