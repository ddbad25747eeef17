package tracker

import (
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// PolicyConfig is the hand-out policy of a Table: the Config fields of the
// same names (zero values take the same defaults), and a seed.
type PolicyConfig struct {
	Interval       time.Duration
	SeederInterval time.Duration
	DefaultPeers   int
	MaxPeers       int
	OriginFanout   int
	SeederTarget   int
	// Seed, if not zero, makes the table's random choices (sampling, tie
	// breaks, interval jitter) the same on every run with the same
	// announces.
	Seed uint64
}

// DefaultPolicy is the policy a tracker runs with when its Config leaves
// the hand-out settings zero.
func DefaultPolicy() PolicyConfig { return PolicyConfig{}.withDefaults() }

func (c PolicyConfig) withDefaults() PolicyConfig {
	d := Config{
		Interval: c.Interval, SeederInterval: c.SeederInterval,
		DefaultPeers: c.DefaultPeers, MaxPeers: c.MaxPeers,
		OriginFanout: c.OriginFanout, SeederTarget: c.SeederTarget,
	}.withDefaults()
	return PolicyConfig{
		Interval: d.Interval, SeederInterval: d.SeederInterval,
		DefaultPeers: d.DefaultPeers, MaxPeers: d.MaxPeers,
		OriginFanout: d.OriginFanout, SeederTarget: d.SeederTarget, Seed: c.Seed,
	}
}

// Table is the tracker's swarm table and hand-out policy without the
// server around it: no gRPC, no rate limits, no forwarding, time passed
// in. The fleet simulator drives it. It is not safe for concurrent use.
type Table struct {
	cfg    PolicyConfig
	policy policy
	// One table per digest, so a seeded table's draws do not depend on
	// which digests share a shard.
	swarms map[string]*swarms
}

// NewTable returns an empty table with the given policy.
func NewTable(cfg PolicyConfig) *Table {
	cfg = cfg.withDefaults()
	return &Table{
		cfg: cfg,
		policy: Config{
			Interval: cfg.Interval, SeederInterval: cfg.SeederInterval,
			DefaultPeers: cfg.DefaultPeers, MaxPeers: cfg.MaxPeers,
			OriginFanout: cfg.OriginFanout, SeederTarget: cfg.SeederTarget,
		}.withDefaults().policy(),
		swarms: map[string]*swarms{},
	}
}

// Policy is the table's policy with defaults applied.
func (t *Table) Policy() PolicyConfig { return t.cfg }

// Announce records what the asker holds of digest and returns peers for
// it, exactly as the tracker's Announce does for a digest it owns.
// origins are the blob's owning origins that seed.
func (t *Table) Announce(digest string, req *shoalpb.AnnounceRequest, origins []ring.Member, now time.Time) (*shoalpb.AnnounceResponse, error) {
	sw := t.swarms[digest]
	if sw == nil {
		sw = newSwarms(Config{}.withDefaults().MaxPeerEntries, 0)
		if t.cfg.Seed != 0 {
			h := fnv.New64a()
			h.Write([]byte(digest))
			for i := range sw.shards {
				sw.shards[i].rnd = rand.New(rand.NewPCG(t.cfg.Seed, h.Sum64()))
			}
		}
		t.swarms[digest] = sw
	}
	return sw.announce(digest, req, "", origins, t.policy, now)
}
