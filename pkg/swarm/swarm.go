// Package swarm downloads one blob from its swarm: it announces to the
// tracker, connects to the peers it hands out, lets the scheduler choose
// which piece to ask of whom, verifies every piece into a piecefile, and
// falls back to the origin when the swarm cannot deliver.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/piecefile"
	"github.com/shoal-project/shoal/pkg/scheduler"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Origin reads byte ranges of the blob from an origin, the fallback when
// the swarm cannot deliver.
type Origin interface {
	ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// BusyError is an origin refusing a read because its uplink already
// serves all the readers it can: ask again after RetryAfter (plus
// jitter), and meanwhile keep working the swarm.
type BusyError struct{ RetryAfter time.Duration }

func (e *BusyError) Error() string {
	return fmt.Sprintf("origin busy; retry after %s", e.RetryAfter)
}

// movingBytes is how much must arrive from a peer between two ticks for
// it to count as delivering (frames other than pieces are tens of bytes).
const movingBytes = 8 << 10

// Config tunes a download. Zero values take defaults.
type Config struct {
	Scheduler scheduler.Config `yaml:"scheduler"`
	// MaxConns bounds the peers one download talks to (default 32: in
	// pkg/swarmsim, 16 left 1,000 agents × 25 Mbit at 1.94 × the bound
	// and 32 at 1.54, too few neighbours holding what a node lacks while
	// the blob spreads).
	MaxConns int `yaml:"max_conns"`
	// StallTimeout: no piece, byte, have or busy answer from the swarm for
	// this long, and no request out within its deadline, and the download
	// takes pieces from the origin one at a time, while it keeps working
	// the swarm, until peers deliver again (default 20s: early in a
	// rollout on slow links a node may wait several piece-times before
	// any peer near it holds a piece).
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// DialTimeout bounds connecting to one peer (default 5s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// AnnounceTimeout bounds one tracker call (default 3s).
	AnnounceTimeout time.Duration `yaml:"announce_timeout"`
}

// WithDefaults fills the zero values with the defaults above.
func (c Config) WithDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 32
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 20 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.AnnounceTimeout <= 0 {
		// The download's loop waits on the call: short, and a failure
		// costs nothing but the next announce.
		c.AnnounceTimeout = 3 * time.Second
	}
	return c
}

// Stats say where a download's bytes came from. FromPeers counts piece
// bytes received from peers, end-game duplicates and bad pieces included.
type Stats struct {
	FromPeers, FromOrigin int64
	// Duplicates are piece bytes received for pieces already held.
	Duplicates int64
	BadPieces  int
	Peers      int
	Stalls     int
	scheduler.Counters
}

// Count names what a Downloader's Count hook is told of.
type Count int

const (
	CountDuplicateBytes Count = iota // piece bytes received again
	CountExpired                     // requests withdrawn past their deadline
	CountBusy                        // requests a peer refused: uplink full
	CountStall                       // swarm quiet past StallTimeout
	CountOriginOK                    // origin range reads that delivered
	CountOriginBusy                  // origin range reads refused: uplink full
	CountOriginError                 // origin range reads that failed
)

// Downloader fetches blobs for one node.
type Downloader struct {
	Host    host.Host
	Tracker shoalpb.TrackerClient
	// Self is this node as announced: addrs and labels; the ID is the
	// host's.
	Self *shoalpb.Peer
	Cfg  Config
	Log  *slog.Logger
	// Progress, if set, is told of piece bytes as they arrive, from peers
	// or the origin, for live metrics.
	Progress func(fromOrigin bool, n int)
	// Verified, if set, is told of every piece checked against its hash.
	Verified func(ok bool)
	// Limit, if set, bounds this node's download rate over all blobs:
	// readers wait for tokens before taking the next piece, so TCP pushes
	// back on the senders.
	Limit *rate.Limiter
	// Count, if set, is told of the transfer control's events as they
	// happen, for metrics.
	Count func(what Count, n int)
}

func (d *Downloader) count(what Count, n int) {
	if d.Count != nil && n > 0 {
		d.Count(what, n)
	}
}

type event struct {
	peer  peer.ID
	conn  *p2p.Conn
	piece int
	ok    bool  // piece verified and stored
	err   error // connection over (dial failure or stream error)
	dial  bool  // the outcome of a dial
	have  bool  // the peer announced a new piece
	// busy: the peer refused our request for piece; retry is its hint.
	busy  bool
	retry time.Duration
	// topUp is the outcome of fetching piece from the origin while the
	// swarm stalled: ok, or err.
	topUp bool
}

// dialState is what a download remembers of a peer it dialled.
type dialState struct {
	// next: not dialled again before; never: not at all (ourselves, a
	// liar, a protocol breaker).
	next  time.Time
	never bool
	fails int
}

type download struct {
	d     *Downloader
	cfg   Config
	mi    *metainfo.MetaInfo
	pf    *piecefile.File
	sched *scheduler.Scheduler
	conns map[peer.ID]*p2p.Conn
	// moved is each connection's byte count at the last tick; since is
	// when it was made.
	moved  map[peer.ID]int64
	since  map[peer.ID]time.Time
	tried  map[peer.ID]*dialState
	events chan event
	// received counts piece bytes from peers; readers add to it, since the
	// last pieces may land after the main loop has seen the blob complete.
	received        atomic.Int64
	fromOriginBytes atomic.Int64 // written by top-ups as well as the main loop
	// origins are the handed-out peers that are origins.
	origins map[peer.ID]bool
	// dialing counts dials in flight, against MaxConns.
	dialing int
	// toppingUp is set while one piece comes from the origin; the origin
	// is not asked again before originRetry (it said busy).
	toppingUp bool
	stalled   bool
	// alone: no tracker answer, or nobody else in the swarm; the origin
	// is read piece by piece at once, not after a stall timeout.
	alone bool
	// trackerFails counts announces failed in a row.
	trackerFails int
	busyHint     time.Duration // the longest wait a busy peer asked for
	originRetry  time.Time
	duplicates   atomic.Int64
	stats        Stats
	log          *slog.Logger
	// capability is Hints.Capability, or a func returning nil.
	capability func() *shoalpb.Capability
}

// Hints feed a running download; both channels may be nil.
type Hints struct {
	// Stream carries the piece a streaming client needs next.
	Stream <-chan int
	// Peers carries peers that contacted us about this blob: they are in
	// its swarm, so we may fetch from them too.
	Peers <-chan peer.AddrInfo
	// Capability, if set, returns the origin cluster's permission to
	// fetch this blob, presented to every peer dialled (see
	// pkg/capability); it is called per dial, so it can renew one that
	// is about to expire. Nil or a nil result presents none.
	Capability func() *shoalpb.Capability
	// Grow carries longer prefixes of the metainfo of a blob still
	// arriving at its origin, when Fetch was given a prefix (see
	// metainfo.FromProtoPrefix): only the pieces the chain covers are
	// asked for, of peers and of the origin, and the download completes
	// only once it is whole.
	Grow <-chan *metainfo.MetaInfo
}

// covered is how many pieces, from the first, mi can check.
func covered(mi *metainfo.MetaInfo) int {
	if mi.Complete() {
		return mi.NumPieces()
	}
	return len(mi.Chain)
}

// grow takes a longer prefix of the metainfo.
func (dl *download) grow(mi *metainfo.MetaInfo) {
	if err := dl.pf.Grow(mi); err != nil {
		dl.log.Warn("metainfo does not extend the one held; ignored", "err", err)
		return
	}
	dl.sched.SetLimit(covered(mi))
}

// Fetch downloads mi's blob into pf until it is complete, announcing as it
// goes.
func (d *Downloader) Fetch(ctx context.Context, mi *metainfo.MetaInfo, pf *piecefile.File, origin Origin, hints Hints) (Stats, error) {
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	dl := &download{
		d: d, cfg: d.Cfg.WithDefaults(), mi: mi, pf: pf,
		sched:   scheduler.New(d.Cfg.Scheduler, mi.NumPieces(), mi.PieceLength, pf.Held(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))),
		conns:   map[peer.ID]*p2p.Conn{},
		moved:   map[peer.ID]int64{},
		since:   map[peer.ID]time.Time{},
		tried:   map[peer.ID]*dialState{d.Host.ID(): {never: true}},
		origins: map[peer.ID]bool{},
		events:  make(chan event, 64),
		log:     log.With("digest", mi.Digest),
	}
	dl.sched.SetLimit(covered(pf.MetaInfo()))
	dl.capability = hints.Capability
	if dl.capability == nil {
		dl.capability = func() *shoalpb.Capability { return nil }
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var err error
	if d.Tracker == nil {
		err = dl.fromOrigin(ctx, origin, hints.Grow) // no tracker configured: a plain pull-through cache
	} else {
		err = dl.run(ctx, origin, hints)
	}
	if err == nil && d.Tracker != nil {
		// Seed from now on: the tracker hands this node out as complete.
		if _, aerr := dl.announce(ctx, true); aerr != nil {
			dl.log.Debug("announcing complete", "err", aerr)
		}
	}
	for _, c := range dl.conns {
		// Reset, not Close: a close is not seen by the seeder, which
		// would go on writing a piece we no longer want (an end-game
		// copy) until its stall deadline, holding an upload slot and
		// its hold on the blob, which a cache then cannot evict.
		c.Reset()
	}
	dl.stats.FromPeers = dl.received.Load()
	dl.stats.FromOrigin = dl.fromOriginBytes.Load()
	dl.stats.Duplicates = dl.duplicates.Load()
	dl.stats.Counters = dl.sched.Counters()
	return dl.stats, err
}

func (dl *download) run(ctx context.Context, origin Origin, hints Hints) error {
	var nextAnnounce time.Time
	// lastSwarm is when peers last delivered a piece or moved bytes.
	lastSwarm := time.Now()
	// Often enough to see a quiet peer within a fraction of its deadline;
	// a fleet of agents waking faster spends its CPU on wakeups.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !dl.pf.Complete() {
		if err := dl.pf.Err(); err != nil {
			return err // closed under us
		}
		now := time.Now()
		if !now.Before(nextAnnounce) {
			first := nextAnnounce.IsZero()
			interval, err := dl.announce(ctx, false)
			if err != nil {
				dl.trackerFails++
			} else {
				dl.trackerFails = 0
			}
			switch {
			case err != nil && len(dl.conns) == 0 && origin == nil && dl.trackerFails >= 3:
				return fmt.Errorf("swarm: no tracker, no peers and no origin: %w", err)
			case err != nil && len(dl.conns) == 0 && origin == nil:
				interval = time.Duration(dl.trackerFails) * (250*time.Millisecond + rand.N(500*time.Millisecond))
			case err != nil && len(dl.conns) == 0:
				// No tracker and no peers (yet): read the origin one piece
				// at a time, within its admission, and keep asking the
				// tracker; a tracker slow under a rollout's load is not a
				// dead one, and a fleet reading whole blobs from the
				// origin at once is the failure Shoal exists to prevent.
				if !dl.alone {
					dl.log.Warn("tracker unreachable; origin pieces one at a time until it answers", "err", err)
				}
				dl.alone = true
				interval = time.Second + rand.N(time.Second)
			case err != nil:
				// Lost mid-download: keep the peers we have; a stall
				// takes pieces from the origin if they run dry.
				dl.log.Warn("tracker unreachable; carrying on with known peers", "err", err)
				interval = time.Second
			case first && len(dl.tried) == 1:
				// Nobody else has it yet: the first node of a rollout
				// reads the origin rather than wait for a swarm, and
				// joins it as soon as the tracker hands out peers.
				dl.log.Debug("no peers; origin pieces until peers come")
				dl.alone = true
			default:
				dl.alone = len(dl.conns) == 0 && dl.dialing == 0 && len(dl.tried) == 1
			}
			nextAnnounce = now.Add(interval)
		}
		// Quiet for StallTimeout, and no request out that a peer has
		// accepted and whose deadline (its measured pace) has not passed:
		// on a slow, shared uplink a queued request may wait several
		// piece-times, and that is waiting, not a stall.
		// StallTimeout is a floor: on a slow swarm the limit is a few of
		// its own piece-times, as measured (deadlines, busy hints).
		limit := max(dl.cfg.StallTimeout, 3*dl.sched.Slowest(), 3*dl.busyHint)
		if dl.received.Load() == 0 {
			// Nothing from peers yet: a rollout's swarm fills from the
			// origin outwards, one piece-time per hop, and the last
			// nodes to be reached wait longest. Give them three times
			// the floor before they load the origin.
			limit *= 3
		}
		quiet := (now.Sub(lastSwarm) > limit || (dl.alone && len(dl.conns) == 0)) && dl.sched.Inflight() == 0
		if origin != nil && quiet && !dl.toppingUp && !now.Before(dl.originRetry) {
			// The swarm is quiet: take the piece the stream needs from
			// the origin, one at a time, and keep working the peers.
			// Never the whole blob: a fleet whose swarm stalls at once
			// must not become a fleet of whole-blob origin reads.
			if i := dl.sched.Wanted(); i >= 0 {
				if !dl.stalled {
					dl.stalled = true
					dl.stats.Stalls++
					dl.d.count(CountStall, 1)
					dl.log.Info("swarm quiet; taking pieces from the origin one at a time", "piece", i, "peers", len(dl.conns))
				}
				dl.toppingUp = true
				go func() {
					buf := getPiece(dl.mi.PieceLength)
					err := dl.originPiece(ctx, origin, i, buf)
					putPiece(buf)
					dl.send(ctx, event{topUp: true, piece: i, ok: err == nil, err: err})
				}()
			}
		}
		for _, r := range dl.sched.Next(now) {
			if c := dl.conns[peer.ID(r.Peer)]; c == nil || c.RequestHeld(r.Piece, dl.sched.Held()) != nil {
				dl.sched.RemovePeer(r.Peer)
				continue
			}
			dl.log.Debug("request", "peer", peer.ID(r.Peer), "piece", r.Piece)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case pos := <-hints.Stream:
			dl.sched.SetStream(pos)
		case mi := <-hints.Grow:
			dl.grow(mi)
		case p := <-hints.Peers:
			if len(dl.conns)+dl.dialing < dl.cfg.MaxConns {
				dl.dialInfo(ctx, p, false)
			}
		case ev := <-dl.events:
			// A piece, news of one at a peer, or a busy answer (the peer
			// has what we want and will serve it when its uplink frees)
			// all say the swarm is alive, if congested: no reason to
			// load the origin, whose uplink is the most congested of all.
			// So is a new peer that holds pieces: early in a rollout the
			// swarm fills from the origin outwards, and a node that has
			// heard of no holder yet is not looking at a dead swarm.
			fresh := ev.conn != nil && (ev.conn.Complete || slices.ContainsFunc(ev.conn.Bitfield, func(b byte) bool { return b != 0 }))
			if landed := dl.handle(ev); (landed && !ev.topUp) || ev.have || ev.busy || fresh {
				lastSwarm = time.Now()
				dl.stalled = false
			}
		case <-dl.pf.Done():
		case <-tick.C:
			now := time.Now()
			for id, c := range dl.conns {
				// Piece bytes, not the odd have or busy frame: a peer
				// that only talks is not delivering.
				if m := c.Moved(); m-dl.moved[id] >= movingBytes {
					dl.moved[id] = m
					dl.sched.Moving(scheduler.PeerID(id), now)
					lastSwarm = now
				}
			}
			expired := dl.sched.Expire(now)
			for _, r := range expired {
				if c := dl.conns[peer.ID(r.Peer)]; c != nil {
					c.Cancel(r.Piece)
				}
			}
			dl.d.count(CountExpired, len(expired))
			for _, id := range dl.sched.Stalled() {
				dl.drop(peer.ID(id), "stalled")
			}
		}
	}
	return nil
}

// handle applies one event; it reports whether a new piece landed.
func (dl *download) handle(ev event) bool {
	id := scheduler.PeerID(ev.peer)
	if ev.dial {
		dl.dialing--
	}
	switch {
	case ev.topUp:
		dl.toppingUp = false
		if !ev.ok {
			var busy *BusyError
			if errors.As(ev.err, &busy) {
				// Jittered, so refused agents do not return together.
				dl.originRetry = time.Now().Add(busy.RetryAfter + rand.N(busy.RetryAfter/2+100*time.Millisecond))
				return false
			}
			dl.originRetry = time.Now().Add(time.Second + rand.N(time.Second))
			dl.log.Warn("origin piece failed", "piece", ev.piece, "err", ev.err)
			return false
		}
		for _, r := range dl.sched.Got(ev.piece) {
			if c := dl.conns[peer.ID(r.Peer)]; c != nil {
				c.Cancel(r.Piece)
			}
		}
		return true
	case ev.have:
		dl.sched.PeerHas(id, ev.piece)
	case ev.busy:
		dl.d.count(CountBusy, 1)
		wait := ev.retry + rand.N(ev.retry/2+50*time.Millisecond)
		dl.busyHint = max(dl.busyHint, ev.retry)
		dl.sched.Busy(id, ev.piece, time.Now().Add(wait))
		dl.log.Debug("busy", "peer", ev.peer, "piece", ev.piece, "wait", wait)
	case ev.conn != nil:
		dl.conns[ev.peer] = ev.conn
		dl.moved[ev.peer] = ev.conn.Moved()
		dl.since[ev.peer] = time.Now()
		dl.stats.Peers++
		dl.sched.AddPeer(id, ev.conn.Bitfield, ev.conn.Complete, time.Now())
		if dl.origins[ev.peer] {
			dl.sched.MarkOrigin(id)
		}
	case ev.err != nil:
		if c := dl.conns[ev.peer]; c != nil {
			c.Close()
			delete(dl.conns, ev.peer)
		}
		dl.sched.RemovePeer(id)
		if errors.Is(ev.err, p2p.ErrProtocol) {
			dl.never(ev.peer)
		} else {
			// It may be back: a refusal, a restart, a finished download.
			// The next hand-out may dial it again, after a backoff.
			dl.retryLater(ev.peer)
		}
	case !ev.ok:
		dl.stats.BadPieces++
		dl.sched.Received(id, ev.piece, false, time.Now())
		dl.drop(ev.peer, "bad piece")
		dl.never(ev.peer)
	default:
		dl.log.Debug("piece", "peer", ev.peer, "piece", ev.piece)
		if st := dl.tried[ev.peer]; st != nil {
			st.fails = 0
		}
		for _, r := range dl.sched.Received(id, ev.piece, true, time.Now()) {
			if c := dl.conns[peer.ID(r.Peer)]; c != nil {
				c.Cancel(r.Piece)
			}
		}
		return true
	}
	return false
}

// never rules a peer out for the rest of this download.
func (dl *download) never(id peer.ID) {
	dl.tried[id] = &dialState{never: true}
}

// retryLater lets a peer be dialled again after a backoff that doubles
// with each failure (1s to 30s).
func (dl *download) retryLater(id peer.ID) {
	st := dl.tried[id]
	if st == nil {
		st = &dialState{}
		dl.tried[id] = st
	}
	if st.never {
		return
	}
	st.fails++
	st.next = time.Now().Add(min(time.Second<<min(st.fails-1, 5), 30*time.Second))
}

func (dl *download) drop(id peer.ID, why string) {
	dl.log.Debug("dropping peer", "peer", id, "why", why)
	if c := dl.conns[id]; c != nil {
		c.Reset()
		delete(dl.conns, id)
	}
	dl.sched.RemovePeer(scheduler.PeerID(id))
	dl.retryLater(id)
}

// announce tells the tracker what we hold and connects to new peers.
func (dl *download) announce(ctx context.Context, complete bool) (time.Duration, error) {
	req := &shoalpb.AnnounceRequest{
		Digest: dl.mi.Digest.String(),
		Peer:   &shoalpb.Peer{Id: dl.d.Host.ID().String(), Addrs: dl.d.Self.GetAddrs(), Labels: dl.d.Self.GetLabels()},
	}
	if complete {
		req.Have = &shoalpb.AnnounceRequest_Complete{Complete: true}
	} else {
		req.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: dl.pf.Bitfield()}
	}
	actx, cancel := context.WithTimeout(ctx, dl.cfg.AnnounceTimeout)
	defer cancel()
	// Fail fast while the connection is down (the loop must not block on
	// it); the client re-makes it within seconds and a later announce
	// gets through.
	resp, err := dl.d.Tracker.Announce(actx, req)
	if err != nil {
		return 0, fmt.Errorf("announce: %w", err)
	}
	if !complete {
		for _, p := range resp.GetPeers() {
			id, err := peer.Decode(p.GetId())
			if err != nil || !dl.mayDial(id) {
				continue
			}
			if len(dl.conns)+dl.dialing >= dl.cfg.MaxConns && !dl.makeRoom() {
				break
			}
			dl.dial(ctx, p)
		}
	}
	return time.Duration(max(1, resp.GetIntervalSeconds())) * time.Second, nil
}

// mayDial: not connected, not ruled out, not waiting out a backoff.
func (dl *download) mayDial(id peer.ID) bool {
	st := dl.tried[id]
	return dl.conns[id] == nil && (st == nil || (!st.never && !time.Now().Before(st.next)))
}

// makeRoom drops one connection to a peer that holds nothing we lack, so
// a fresh peer from the tracker can take its place: with a fixed number of
// connections, peers that cannot help would otherwise hold the places of
// those that can (the tracker ranks holders first). Only one per call, and
// only a peer connected for a while: an empty peer early in a rollout is
// about to receive pieces.
func (dl *download) makeRoom() bool {
	for id, c := range dl.conns {
		if dl.origins[id] || time.Since(dl.since[id]) < uselessAfter || dl.sched.Useful(scheduler.PeerID(id)) {
			continue
		}
		dl.log.Debug("dropping peer", "peer", id, "why", "nothing we lack")
		c.Close()
		delete(dl.conns, id)
		dl.sched.RemovePeer(scheduler.PeerID(id))
		dl.retryLater(id)
		return true
	}
	return false
}

// uselessAfter is how long a connected peer may hold nothing we lack
// before its place may go to another.
const uselessAfter = 5 * time.Second

func (dl *download) dial(ctx context.Context, p *shoalpb.Peer) {
	id, err := peer.Decode(p.GetId())
	if err != nil {
		return
	}
	var addrs []ma.Multiaddr
	for _, a := range p.GetAddrs() {
		if m, err := ma.NewMultiaddr(a); err == nil {
			addrs = append(addrs, m)
		}
	}
	dl.dialInfo(ctx, peer.AddrInfo{ID: id, Addrs: addrs}, p.GetOrigin())
}

func (dl *download) dialInfo(ctx context.Context, info peer.AddrInfo, origin bool) {
	id := info.ID
	if !dl.mayDial(id) {
		return
	}
	if dl.tried[id] == nil {
		dl.tried[id] = &dialState{}
	}
	// Not again while this dial or its connection lasts; the outcome
	// sets the next chance.
	dl.tried[id].next = time.Now().Add(time.Hour)
	dl.origins[id] = origin
	dl.dialing++
	go func() {
		capability := dl.capability() // before the dial's timeout starts: a renewal asks the origin
		dctx, cancel := context.WithTimeout(ctx, dl.cfg.DialTimeout)
		c, err := p2p.Dial(dctx, dl.d.Host, info, dl.mi, Partial{File: dl.pf}, p2p.WithCapability(capability))
		cancel()
		if err != nil {
			dl.send(ctx, event{peer: id, err: err, dial: true})
			return
		}
		if !dl.send(ctx, event{peer: id, conn: c, dial: true}) {
			c.Close()
			return
		}
		dl.read(ctx, id, c)
	}()
}

func (dl *download) send(ctx context.Context, ev event) bool {
	select {
	case dl.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// read takes every piece c delivers off the stream and hands it to store,
// until either fails. Two stages, so the next piece is decrypted off the
// stream while the last one is hashed and written: on one stream that is
// 1.3-1.5x the throughput of doing both in turn (Pull1GiB benchmark).
func (dl *download) read(ctx context.Context, id peer.ID, c *p2p.Conn) {
	full := make(chan p2p.Event, 1)
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		dl.store(ctx, id, full)
	}()
	defer func() {
		close(full)
		<-stored
	}()
	for {
		buf := getPiece(dl.mi.PieceLength)
		ev, err := c.Next(buf)
		if err != nil {
			putPiece(buf)
			dl.send(ctx, event{peer: id, err: err})
			return
		}
		if ev.Have || ev.Busy {
			putPiece(buf)
			if !dl.send(ctx, event{peer: id, piece: ev.Piece, have: ev.Have, busy: ev.Busy, retry: ev.RetryAfter}) {
				return
			}
			continue
		}
		if err := pace.Wait(ctx, dl.d.Limit, len(ev.Data)); err != nil {
			putPiece(buf)
			return
		}
		dl.received.Add(int64(len(ev.Data)))
		if dl.d.Progress != nil {
			dl.d.Progress(false, len(ev.Data))
		}
		select {
		case full <- ev:
		case <-stored: // it stopped on a bad piece or a failed write
			putPiece(buf)
			return
		}
	}
}

// store verifies and writes the pieces read hands it, until one is bad or
// cannot be written.
func (dl *download) store(ctx context.Context, id peer.ID, full <-chan p2p.Event) {
	for ev := range full {
		if dl.pf.Have(ev.Piece) {
			// Asked twice (end game, or expired and asked again) and
			// both came: the second copy's bytes were spent for nothing.
			dl.duplicates.Add(int64(len(ev.Data)))
			dl.d.count(CountDuplicateBytes, len(ev.Data))
		}
		werr := dl.pf.WritePiece(ev.Piece, ev.Data)
		putPiece(ev.Data)
		if dl.d.Verified != nil && (werr == nil || errors.Is(werr, piecefile.ErrBadPiece)) {
			dl.d.Verified(werr == nil)
		}
		if werr != nil && !errors.Is(werr, piecefile.ErrBadPiece) {
			dl.send(ctx, event{peer: id, err: werr})
			return
		}
		if !dl.send(ctx, event{peer: id, piece: ev.Piece, ok: werr == nil}) || werr != nil {
			return
		}
	}
}

// pieceBufs recycles piece buffers across streams and downloads: a stream
// holds one only while a piece is on its way, so idle connections cost no
// piece-sized memory.
var pieceBufs sync.Pool

func getPiece(n int64) []byte {
	if b, ok := pieceBufs.Get().(*[]byte); ok && int64(cap(*b)) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func putPiece(b []byte) { pieceBufs.Put(&b) }

// fromOrigin fetches every missing piece from the origin, in order: for
// a download with no swarm at all (no tracker, or nobody else holds the
// blob). An origin that says busy is waited for, as it asks.
func (dl *download) fromOrigin(ctx context.Context, origin Origin, grow <-chan *metainfo.MetaInfo) error {
	if origin == nil {
		return errors.New("swarm: no peers and no origin to fall back to")
	}
	buf := make([]byte, dl.mi.PieceLength)
	for i := range dl.mi.NumPieces() {
		for !dl.pf.MetaInfo().Verifiable(i) {
			select {
			case mi := <-grow:
				dl.grow(mi)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for !dl.pf.Have(i) {
			err := dl.originPiece(ctx, origin, i, buf)
			var busy *BusyError
			if errors.As(err, &busy) {
				if err := sleep(ctx, busy.RetryAfter+rand.N(busy.RetryAfter/2+100*time.Millisecond)); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
		}
	}
	select {
	case <-dl.pf.Done():
		return dl.pf.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// originPiece fetches piece i from the origin into buf, verifies and
// stores it.
func (dl *download) originPiece(ctx context.Context, origin Origin, i int, buf []byte) error {
	off, n := dl.mi.PieceSpan(i)
	if err := pace.Wait(ctx, dl.d.Limit, int(n)); err != nil {
		return err
	}
	rc, err := origin.ReadRange(ctx, off, n)
	var busy *BusyError
	switch {
	case errors.As(err, &busy):
		dl.d.count(CountOriginBusy, 1)
		return err
	case err != nil:
		dl.d.count(CountOriginError, 1)
		return fmt.Errorf("origin fallback: %w", err)
	}
	_, err = io.ReadFull(rc, buf[:n])
	rc.Close()
	if err != nil {
		dl.d.count(CountOriginError, 1)
		return fmt.Errorf("origin fallback piece %d: %w", i, err)
	}
	dl.d.count(CountOriginOK, 1)
	// Counted when received, before the write that may complete the
	// download and end Fetch, which reads the count.
	dl.fromOriginBytes.Add(n)
	if err := dl.pf.WritePiece(i, buf[:n]); err != nil {
		return fmt.Errorf("origin fallback piece %d: %w", i, err)
	}
	if dl.d.Progress != nil {
		dl.d.Progress(true, int(n))
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Partial is a download as the piece protocol sees it: the pieces held so
// far, announced in handshakes and served to peers while it grows. The
// file is a field, not embedded: a seeder closes blobs that are
// io.Closers, and this one belongs to the download.
type Partial struct{ File *piecefile.File }

// MetaInfo implements p2p.Blob.
func (p Partial) MetaInfo() *metainfo.MetaInfo { return p.File.MetaInfo() }

// Bitfield implements p2p.Blob.
func (p Partial) Bitfield() ([]byte, bool) { return p.File.Bitfield(), p.File.Complete() }

// ReadAt implements p2p.Blob.
func (p Partial) ReadAt(b []byte, off int64) (int, error) { return p.File.ReadAt(b, off) }

// Changed implements p2p.Growing.
func (p Partial) Changed() <-chan struct{} { return p.File.Changed() }
