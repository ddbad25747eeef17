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

const (
	// firstAnnounceTries bounds the tries of the first announce before a
	// download gives up on the tracker and reads the origin.
	firstAnnounceTries = 3
	// maxTopUps is how many stalls in a row are bridged with one piece
	// from the origin before the rest of the blob comes from there.
	maxTopUps = 2
)

// Config tunes a download. Zero values take defaults.
type Config struct {
	Scheduler scheduler.Config
	// MaxConns bounds the peers one download talks to (default 16).
	MaxConns int
	// StallTimeout: no piece from the swarm for this long sends the rest
	// of the download to the origin (default 10s). A peer with requests
	// out and nothing delivered for half of it is replaced.
	StallTimeout time.Duration
	// DialTimeout bounds connecting to one peer (default 5s).
	DialTimeout time.Duration
	// AnnounceTimeout bounds one tracker call (default 3s).
	AnnounceTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 16
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.AnnounceTimeout <= 0 {
		c.AnnounceTimeout = 3 * time.Second
	}
	return c
}

// Stats say where a download's bytes came from. FromPeers counts piece
// bytes received from peers, end-game duplicates and bad pieces included.
type Stats struct {
	FromPeers, FromOrigin int64
	BadPieces             int
	Peers                 int
}

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
}

type event struct {
	peer  peer.ID
	conn  *p2p.Conn
	piece int
	ok    bool  // piece verified and stored
	err   error // connection over (dial failure or stream error)
	dial  bool  // the outcome of a dial
	have  bool  // the peer announced a new piece
	// topUp is the outcome of fetching piece from the origin while the
	// swarm stalled: ok, or err.
	topUp bool
}

type download struct {
	d      *Downloader
	cfg    Config
	mi     *metainfo.MetaInfo
	pf     *piecefile.File
	sched  *scheduler.Scheduler
	conns  map[peer.ID]*p2p.Conn
	tried  map[peer.ID]bool
	events chan event
	// received counts piece bytes from peers; readers add to it, since the
	// last pieces may land after the main loop has seen the blob complete.
	received        atomic.Int64
	fromOriginBytes atomic.Int64 // written by top-ups as well as the main loop
	// origins are the handed-out peers that are origins.
	origins map[peer.ID]bool
	// dialing counts dials in flight, against MaxConns.
	dialing int
	// toppingUp is set while one piece comes from the origin; stalls
	// counts stalls with no piece from peers in between.
	toppingUp bool
	stalls    int
	stats     Stats
	log       *slog.Logger
}

// Hints feed a running download; both channels may be nil.
type Hints struct {
	// Stream carries the piece a streaming client needs next.
	Stream <-chan int
	// Peers carries peers that contacted us about this blob: they are in
	// its swarm, so we may fetch from them too.
	Peers <-chan peer.AddrInfo
}

// Fetch downloads mi's blob into pf until it is complete, announcing as it
// goes.
func (d *Downloader) Fetch(ctx context.Context, mi *metainfo.MetaInfo, pf *piecefile.File, origin Origin, hints Hints) (Stats, error) {
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	dl := &download{
		d: d, cfg: d.Cfg.withDefaults(), mi: mi, pf: pf,
		sched:   scheduler.New(d.Cfg.Scheduler, mi.NumPieces(), mi.PieceLength, pf.Held(), rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))),
		conns:   map[peer.ID]*p2p.Conn{},
		tried:   map[peer.ID]bool{d.Host.ID(): true},
		origins: map[peer.ID]bool{},
		events:  make(chan event, 64),
		log:     log.With("digest", mi.Digest),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var err error
	if d.Tracker == nil {
		err = dl.fromOrigin(ctx, origin) // no tracker configured: a plain pull-through cache
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
		c.Close()
	}
	dl.stats.FromPeers = dl.received.Load()
	dl.stats.FromOrigin = dl.fromOriginBytes.Load()
	return dl.stats, err
}

func (dl *download) run(ctx context.Context, origin Origin, hints Hints) error {
	var nextAnnounce time.Time
	lastPiece := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !dl.pf.Complete() {
		if err := dl.pf.Err(); err != nil {
			return err // closed under us
		}
		now := time.Now()
		if !now.Before(nextAnnounce) {
			first := nextAnnounce.IsZero()
			interval, err := dl.announce(ctx, false)
			for try := 1; err != nil && first && try < firstAnnounceTries; try++ {
				// A tracker slow under a rollout's load is not a dead
				// one: a whole fleet reading the origin at once is the
				// failure Shoal exists to prevent.
				if err := sleep(ctx, time.Duration(try)*(250*time.Millisecond+rand.N(500*time.Millisecond))); err != nil {
					return err
				}
				interval, err = dl.announce(ctx, false)
			}
			if err != nil && first {
				dl.log.Warn("tracker unreachable; fetching from the origin", "err", err)
				return dl.fromOrigin(ctx, origin)
			}
			if err != nil {
				// Lost mid-download: keep the peers we have; the stall
				// timeout sends us to the origin if they run dry.
				dl.log.Warn("tracker unreachable; carrying on with known peers", "err", err)
				interval = time.Second
			}
			if first && len(dl.tried) == 1 && origin != nil {
				// Nobody else has it yet: the first node of a rollout
				// reads the origin rather than wait for a swarm.
				dl.log.Debug("no peers; fetching from the origin")
				return dl.fromOrigin(ctx, origin)
			}
			nextAnnounce = now.Add(interval)
		}
		if now.Sub(lastPiece) > dl.cfg.StallTimeout && !dl.toppingUp {
			if dl.stalls >= maxTopUps || len(dl.conns) == 0 || origin == nil {
				dl.log.Warn("no progress from the swarm; fetching from the origin", "peers", len(dl.conns))
				return dl.fromOrigin(ctx, origin)
			}
			// A slow swarm is usually an overloaded one: take one piece
			// from the origin and give the peers another round, rather
			// than leave them for the origin with the rest of the blob.
			if i := dl.sched.Wanted(); i >= 0 {
				dl.stalls++
				dl.toppingUp = true
				dl.log.Info("swarm stalled; one piece from the origin", "piece", i, "peers", len(dl.conns))
				go func() {
					buf := getPiece(dl.mi.PieceLength)
					err := dl.originPiece(ctx, origin, i, buf)
					putPiece(buf)
					dl.send(ctx, event{topUp: true, piece: i, ok: err == nil, err: err})
				}()
			}
			lastPiece = now
		}
		for _, r := range dl.sched.Next(now) {
			if c := dl.conns[peer.ID(r.Peer)]; c == nil || c.Request(r.Piece) != nil {
				dl.sched.RemovePeer(r.Peer)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case pos := <-hints.Stream:
			dl.sched.SetStream(pos)
		case p := <-hints.Peers:
			if len(dl.conns)+dl.dialing < dl.cfg.MaxConns {
				dl.dialInfo(ctx, p, false)
			}
		case ev := <-dl.events:
			// New pieces here, or news of pieces at a peer, both mean
			// the swarm is moving: no reason to go to the origin.
			if dl.handle(ev) || ev.have {
				lastPiece = time.Now()
				if !ev.topUp {
					dl.stalls = 0
				}
			}
		case <-dl.pf.Done():
		case <-tick.C:
			for _, r := range dl.sched.Expire(now) {
				if c := dl.conns[peer.ID(r.Peer)]; c != nil {
					c.Cancel(r.Piece)
				}
			}
			// A peer is stalled only after it has let requests time out
			// twice over: on a slow, shared link a piece may take a while.
			for _, id := range dl.sched.Stalled(now, max(dl.cfg.StallTimeout/2, 2*dl.sched.RequestTimeout())) {
				dl.drop(peer.ID(id), "stalled")
				// It may recover; a later announce may hand it out again.
				delete(dl.tried, peer.ID(id))
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
	case ev.conn != nil:
		dl.conns[ev.peer] = ev.conn
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
	case !ev.ok:
		dl.stats.BadPieces++
		dl.sched.Received(id, ev.piece, false, time.Now())
		dl.drop(ev.peer, "bad piece")
	default:
		for _, r := range dl.sched.Received(id, ev.piece, true, time.Now()) {
			if c := dl.conns[peer.ID(r.Peer)]; c != nil {
				c.Cancel(r.Piece)
			}
		}
		return true
	}
	return false
}

func (dl *download) drop(id peer.ID, why string) {
	dl.log.Debug("dropping peer", "peer", id, "why", why)
	if c := dl.conns[id]; c != nil {
		c.Reset()
		delete(dl.conns, id)
	}
	dl.sched.RemovePeer(scheduler.PeerID(id))
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
	resp, err := dl.d.Tracker.Announce(actx, req)
	if err != nil {
		return 0, fmt.Errorf("announce: %w", err)
	}
	if !complete {
		for _, p := range resp.GetPeers() {
			if len(dl.conns)+dl.dialing >= dl.cfg.MaxConns {
				break
			}
			dl.dial(ctx, p)
		}
	}
	return time.Duration(max(1, resp.GetIntervalSeconds())) * time.Second, nil
}

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
	if dl.tried[id] {
		return
	}
	dl.tried[id] = true
	dl.origins[id] = origin
	dl.dialing++
	go func() {
		dctx, cancel := context.WithTimeout(ctx, dl.cfg.DialTimeout)
		c, err := p2p.Dial(dctx, dl.d.Host, info, dl.mi, Partial{File: dl.pf})
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
		if ev.Have {
			putPiece(buf)
			if !dl.send(ctx, event{peer: id, piece: ev.Piece, have: true}) {
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

// fromOrigin fetches every missing piece from the origin, in order.
func (dl *download) fromOrigin(ctx context.Context, origin Origin) error {
	if origin == nil {
		return errors.New("swarm: no progress and no origin to fall back to")
	}
	buf := make([]byte, dl.mi.PieceLength)
	for i := range dl.mi.NumPieces() {
		if dl.pf.Have(i) {
			continue
		}
		if err := dl.originPiece(ctx, origin, i, buf); err != nil {
			return err
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
	if err != nil {
		return fmt.Errorf("origin fallback: %w", err)
	}
	_, err = io.ReadFull(rc, buf[:n])
	rc.Close()
	if err != nil {
		return fmt.Errorf("origin fallback piece %d: %w", i, err)
	}
	if err := dl.pf.WritePiece(i, buf[:n]); err != nil {
		return fmt.Errorf("origin fallback piece %d: %w", i, err)
	}
	dl.fromOriginBytes.Add(n)
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
