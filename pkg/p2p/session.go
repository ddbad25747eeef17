package p2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/uplink"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Blob is a blob a peer can serve pieces of: complete in its cache, or
// partly downloaded. If it is also an io.Closer, the seeder closes it when
// the stream ends; a blob that can go away while a stream is open is
// Leased instead.
type Blob interface {
	MetaInfo() *metainfo.MetaInfo
	// Bitfield is what is held (MSB first); complete means all of it.
	Bitfield() (bits []byte, complete bool)
	// ReadAt reads held bytes.
	ReadAt(p []byte, off int64) (int, error)
}

// Checked is a Blob whose bytes at rest are not known to be good — a
// cache that outlived the process that verified it, where a flipped bit
// would otherwise be seeded to the whole swarm. The seeder calls
// CheckPiece before it sends any byte of piece i and sends nothing of the
// piece unless it returns nil; the blob remembers what passed, so only a
// piece's first send after a restart pays for the read and the hash. buf
// is scratch space for reading the piece through, so checks cost no
// memory beyond the seeder's bounded send buffers.
type Checked interface {
	CheckPiece(i int, buf []byte) error
}

// ErrUnavailable: a blob this peer held when the stream opened is gone
// (a cache evicted it). The peer is told "unavailable" and asks others.
var ErrUnavailable = errors.New("p2p: blob no longer held")

// Leased is a Blob that holds its bytes only while a piece is read: a
// cache that must be free to evict a blob between two pieces of a stream.
// Holding a blob for as long as a stream is open would keep it for as
// long as the peer stays connected — in a rollout, every layer, for the
// whole rollout — and no size limit would hold.
//
// The seeder calls Lease before it checks or reads piece i, reads the
// piece through the lease alone, and closes the lease once the piece has
// been sent or refused. Lease fails, wrapping ErrUnavailable, when the
// blob has gone since the stream opened; the peer is then told
// "unavailable" and the stream ends.
type Leased interface {
	Blob
	Lease() (Lease, error)
}

// Lease is one piece's hold on a Leased blob's bytes. It may also be
// Checked, and then the seeder checks the piece through it.
type Lease interface {
	io.ReaderAt
	io.Closer
}

// Blobs finds what this peer can serve.
type Blobs interface {
	// Lookup returns the blob, or false if nothing of it is held.
	Lookup(d digest.Digest) (Blob, bool)
}

// MetaInfoHash identifies a blob's piece layout in handshakes, so two
// peers never exchange pieces cut differently: its digest, size and piece
// length. Not the chain: it is a function of the blob's bytes, a wrong
// one can only fail good pieces (never pass bad ones: the last check is
// the digest), and while a blob still arrives at its origin peers hold
// prefixes of it of different lengths (see pkg/growing).
func MetaInfoHash(mi *metainfo.MetaInfo) ([]byte, error) {
	shape := metainfo.MetaInfo{Digest: mi.Digest, Size: mi.Size, PieceLength: mi.PieceLength}
	b, err := shape.Marshal()
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

// CapabilityChecker decides whether a peer may fetch pieces of a blob,
// from the capability it presented in its handshake (nil if none); see
// pkg/capability. A non-nil error refuses the stream.
type CapabilityChecker interface {
	Verify(c *shoalpb.Capability, d digest.Digest, p peer.ID) error
}

// Seeder answers /shoal/pieces/1 streams from blobs, paced by an upload
// limiter shared by all streams.
type Seeder struct {
	blobs  Blobs
	upload *rate.Limiter // nil: unlimited
	log    *slog.Logger
	// Capabilities, if set, is asked about every stream before anything
	// is looked up or sent: a peer without a valid capability gets an
	// Error frame "forbidden" and nothing else, not even whether the blob
	// is held here.
	Capabilities CapabilityChecker
	// Forbidden, if set, is told of every stream refused so.
	Forbidden func()
	// IdleTimeout ends a stream with no request for this long.
	IdleTimeout time.Duration
	// Uploaded, if set, is told of every piece payload sent.
	Uploaded func(bytes int)
	// OnPeer, if set, is told of each peer that opens a stream for a
	// blob we hold: it is in that blob's swarm, and while we download the
	// blob too we can fetch from it over the same connection.
	OnPeer func(d digest.Digest, p peer.ID)

	// gate admits piece requests over all streams: a few sending, a few
	// waiting, busy beyond.
	gate *uplink.Gate
	// bufs holds the chunk buffers of pieces on the wire. A stream takes
	// one only while the gate lets it send, so there are never more than
	// the gate's slots of them, whatever peers open or ask.
	bufs chan []byte
	// grantMu guards grants and bumps: each stream's channels for the
	// tickets the gate starts, and for its waiting tickets another
	// requester took the place of (answered busy by the stream).
	grantMu sync.Mutex
	grants  map[uint64]chan uplink.Ticket
	bumps   map[uint64]chan uplink.Ticket
	owners  atomic.Uint64
	// Busy, if set, is told of every request refused because the uplink
	// was full.
	Busy func()

	// superSeed: see EnableSuperSeeding.
	superSeed bool
	servedMu  sync.Mutex
	served    map[digest.Digest]*handedOut
}

// handedOut is what a super-seeder has done with each piece of a blob,
// over all peers: sent, when last asked for, and offered.
type handedOut struct {
	sent, offers  []int
	last, offered []time.Time // last asked for, last offered
}

// EnableSuperSeeding makes the seeder advertise to each peer only a couple
// of pieces at a time, always those it has handed out least, and one more
// each time it sends one. Peers that start together then fetch different
// pieces and trade them among themselves, so each piece leaves this
// seeder about once. It is for origins, whose uplink is the scarce one.
func (s *Seeder) EnableSuperSeeding() {
	s.superSeed = true
	s.served = map[digest.Digest]*handedOut{}
}

// Memory a seeder holds, and reserves with libp2p's resource manager so
// that the host's limits bound it along with everything else: each stream
// has small frame buffers (it reads only requests and writes piece
// payloads past its buffer), and each piece on the wire one chunk buffer,
// however long the piece (32 MiB pieces once cost a piece-sized buffer per
// stream, and a few peers opening streams took an agent from 49 MB to
// 985 MB). A 256 KiB chunk is what stallWriter hands the stream at a time,
// so sending costs no more writes than from a whole piece in memory.
const (
	streamReadBuf  = 8 << 10
	streamWriteBuf = 8 << 10
	streamMemory   = streamReadBuf + streamWriteBuf + maxHeader
	sendChunk      = 256 << 10
)

// chunk takes a send buffer from the pool (or makes one: the gate bounds
// how many are out).
func (s *Seeder) chunk() []byte {
	select {
	case b := <-s.bufs:
		return b
	default:
		return make([]byte, sendChunk)
	}
}

func (s *Seeder) putChunk(b []byte) {
	select {
	case s.bufs <- b:
	default:
	}
}

// superSeedPatience is how long a super-seeder waits, with nothing asked
// of it, before offering a peer a piece already handed out: the peer is
// not getting it from the swarm.
const superSeedPatience = 2 * time.Second

// offer picks for this peer the piece of d sent least so far, and among
// those offered least, that the peer has not been offered yet; or -1.
// With firstPass it offers only pieces never sent to anyone: once every
// piece has left, the swarm should carry them, not the origin. Offers
// count only as a tie-break, not as pieces gone: a peer offered a piece
// may fetch something else (or nothing), and the piece must not be held
// back from the others for it. held is the pieces this seeder has (MSB
// first; nil: all of them): a blob still arriving has only some.
func (s *Seeder) offer(d digest.Digest, n int, offered []bool, firstPass bool, held []byte) int {
	s.servedMu.Lock()
	defer s.servedMu.Unlock()
	h := s.handed(d, n)
	best := -1
	for i := range n {
		if offered[i] || (held != nil && (i/8 >= len(held) || held[i/8]&(0x80>>(i%8)) == 0)) {
			continue
		}
		if best < 0 || h.sent[i] < h.sent[best] || (h.sent[i] == h.sent[best] && h.offers[i] < h.offers[best]) {
			best = i
		}
	}
	if best < 0 || (firstPass && h.sent[best] > 0) {
		return -1
	}
	if firstPass && h.offers[best] > 0 && time.Since(h.offered[best]) < superSeedPatience {
		// Offered to another peer a moment ago and not asked for yet:
		// two peers asking for it would take it twice. An offer left
		// untaken past the patience no longer holds the piece back.
		return -1
	}
	if !firstPass && h.sent[best] > 0 && time.Since(h.last[best]) < s.spreadTime() {
		// Its last copy has hardly landed: the receiver is about to
		// pass it on, and the peer will hear of it from the swarm.
		return -1
	}
	h.offers[best]++
	h.offered[best] = time.Now()
	offered[best] = true
	return best
}

// sentPiece records that piece i of d is going out.
func (s *Seeder) sentPiece(d digest.Digest, n, i int) {
	s.servedMu.Lock()
	defer s.servedMu.Unlock()
	h := s.handed(d, n)
	h.sent[i]++
	h.last[i] = time.Now()
}

// spreadTime is how long after a piece was asked of us it should be in
// the swarm: two piece-times at our measured pace (one to send it, one for
// its receiver to pass it on) plus the patience.
func (s *Seeder) spreadTime() time.Duration {
	return superSeedPatience + 2*s.gate.PieceTime()
}

func (s *Seeder) handed(d digest.Digest, n int) *handedOut {
	h := s.served[d]
	if h == nil || len(h.sent) != n {
		h = &handedOut{sent: make([]int, n), offers: make([]int, n), last: make([]time.Time, n), offered: make([]time.Time, n)}
		s.served[d] = h
	}
	return h
}

// heldBits is what a super-seeder may offer of blob: nil when complete
// (everything), else its bitfield.
func heldBits(blob Blob) []byte {
	bits, complete := blob.Bitfield()
	if complete {
		return nil
	}
	return bits
}

// offerAsItGrows offers a piece a growing blob gains to a peer that is
// not fetching from us (the first to see it takes it; the others are held
// off by the patience), so that every new piece leaves this seeder about
// once while the blob still arrives. A busy peer gets its next offer when
// its piece is sent, as with a complete blob.
func (s *Seeder) offerAsItGrows(ctx context.Context, sw *syncWriter, d digest.Digest, n int, offered []bool, g Growing, blob Blob, act *activity) {
	for {
		changed := g.Changed()
		held := heldBits(blob)
		if held == nil {
			return // complete: the usual offers carry on
		}
		if act.outstanding.Load() == 0 {
			sw.mu.Lock()
			next := s.offer(d, n, offered, true, held)
			sw.mu.Unlock()
			if next >= 0 && sw.send(haveMsg(next)) != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// offerWhenIdle offers more pieces to a peer that has been idle for the
// patience, until it has been offered everything.
func (s *Seeder) offerWhenIdle(ctx context.Context, sw *syncWriter, d digest.Digest, n int, offered []bool, act *activity, blob Blob) {
	t := time.NewTicker(superSeedPatience / 4)
	defer t.Stop()
	// Each idle spell doubles the offer: a peer alone with us (the others
	// gone, or never there) soon gets everything, while peers trading
	// among themselves rarely idle long enough to get more than one.
	batch := 1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !act.idleFor(superSeedPatience) {
			continue
		}
		act.touch()
		for range batch {
			sw.mu.Lock()
			next := s.offer(d, n, offered, false, heldBits(blob))
			all := !slices.Contains(offered, false)
			sw.mu.Unlock()
			if next >= 0 {
				s.log.Debug("super-seed idle offer", "offer", next)
				if sw.send(haveMsg(next)) != nil {
					return
				}
			}
			if all {
				return // offered everything
			}
			if next < 0 {
				break // what is left has just gone out: the swarm has it soon
			}
		}
		batch *= 2
	}
}

func haveMsg(i int) *shoalpb.PieceMessage {
	return &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Have{Have: &shoalpb.Have{Index: uint32(i)}}}
}

// NewSeeder serves blobs on h. upload bounds bytes per second over all
// streams (nil: unlimited).
func NewSeeder(h host.Host, blobs Blobs, upload *rate.Limiter, log *slog.Logger) *Seeder {
	if log == nil {
		log = slog.Default()
	}
	s := &Seeder{blobs: blobs, upload: upload, log: log, IdleTimeout: time.Minute,
		gate: uplink.New(0, 0), bufs: make(chan []byte, uplink.DefaultSlots), grants: map[uint64]chan uplink.Ticket{}, bumps: map[uint64]chan uplink.Ticket{}}
	h.SetStreamHandler(Protocol, s.handle)
	return s
}

func (s *Seeder) handle(st network.Stream) {
	remote := st.Conn().RemotePeer()
	if err := st.Scope().ReserveMemory(streamMemory, network.ReservationPriorityMedium); err != nil {
		// The host is short of memory: a stream more is refused, not
		// served at the cost of what is already running.
		s.log.Debug("piece stream refused", "peer", remote, "err", err)
		st.Reset()
		return
	}
	defer st.Scope().ReleaseMemory(streamMemory)
	err := s.serve(st)
	if errors.Is(err, errMidPiece) {
		st.Reset()
	} else {
		st.Close()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		s.log.Debug("piece stream ended", "peer", remote, "err", err)
		if errors.Is(err, ErrProtocol) {
			// A peer that breaks the protocol loses its connection, not
			// just the stream.
			st.Conn().Close()
		}
	}
}

func (s *Seeder) serve(st network.Stream) error {
	r, w := newFrameReaderSize(st, streamReadBuf), newFrameWriterSize(stallWriter{st}, streamWriteBuf)
	st.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	m, err := r.Next()
	if err != nil {
		return err
	}
	hs := m.GetHandshake()
	if hs == nil {
		return violation("first frame is not a handshake")
	}
	d := digest.Digest(hs.GetDigest())
	if s.Capabilities != nil {
		if err := s.Capabilities.Verify(hs.GetCapability(), d, st.Conn().RemotePeer()); err != nil {
			if s.Forbidden != nil {
				s.Forbidden()
			}
			return sendError(w, "forbidden", err.Error())
		}
	}
	blob, ok := s.blobs.Lookup(d)
	if !ok {
		return sendError(w, "not_found", fmt.Sprintf("%s not held", d))
	}
	if c, ok := blob.(io.Closer); ok {
		defer c.Close() // an open file, say, for the stream's life
	}
	mi := blob.MetaInfo()
	mih, err := MetaInfoHash(mi)
	if err != nil {
		return err
	}
	if string(mih) != string(hs.GetMetainfoHash()) {
		return sendError(w, "metainfo_mismatch", "different piece layout")
	}
	r.SetBlob(mi.NumPieces(), mi.PieceLength)
	if s.OnPeer != nil {
		s.OnPeer(d, st.Conn().RemotePeer())
	}
	hs0 := handshake(d, mih, blob, nil)
	sw := &syncWriter{w: w}
	var offered []bool // super-seeding: what this peer was offered
	act := &activity{}
	act.touch()
	_, complete := blob.Bitfield()
	g, growing := blob.(Growing)
	if s.superSeed && (complete || growing) {
		// A blob still arriving (an origin's, from its upstream) is
		// super-seeded too: each piece it gains is offered to one peer.
		offered = make([]bool, mi.NumPieces())
		bits := make([]byte, (mi.NumPieces()+7)/8)
		sw.mu.Lock()
		if i := s.offer(d, mi.NumPieces(), offered, true, heldBits(blob)); i >= 0 {
			bits[i/8] |= 0x80 >> (i % 8)
		}
		sw.mu.Unlock()
		hs0.GetHandshake().Have = &shoalpb.Handshake_Bitfield{Bitfield: bits}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.offerWhenIdle(ctx, sw, d, mi.NumPieces(), offered, act, blob)
		if !complete {
			go s.offerAsItGrows(ctx, sw, d, mi.NumPieces(), offered, g, blob, act)
		}
	}
	if err := sw.send(hs0); err != nil {
		return err
	}
	if bits := hs0.GetHandshake().GetBitfield(); bits != nil && offered == nil {
		// A partial blob grows while we serve it: tell the peer about
		// each new piece, or it would only ever ask for the first ones.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.sendHaves(ctx, sw, blob, bits)
	}
	return s.serveRequests(st, r, sw, blob, mi, d, offered, act)
}

// serveRequests answers the peer's requests until the stream ends. Frames
// are read on a goroutine of their own, so a request is admitted or
// refused (busy) the moment it arrives, and a cancel withdraws a waiting
// request even while another piece is on the wire; pieces go out when the
// uplink gate starts them.
func (s *Seeder) serveRequests(st network.Stream, r *FrameReader, sw *syncWriter, blob Blob, mi *metainfo.MetaInfo,
	d digest.Digest, offered []bool, act *activity) error {
	owner := s.owners.Add(1)
	grant := make(chan uplink.Ticket, 1)
	// The gate holds at most its queue's worth of waiting tickets, so
	// this never fills; if it did, the bumped request's deadline would
	// see to it.
	bumped := make(chan uplink.Ticket, uplink.DefaultQueue+2)
	s.grantMu.Lock()
	s.grants[owner] = grant
	s.bumps[owner] = bumped
	s.grantMu.Unlock()

	var mu sync.Mutex
	pending := map[uplink.Ticket]int{} // admitted requests of this stream
	cancelled := map[int]bool{}        // pieces withdrawn after they started
	defer func() {
		s.grantMu.Lock()
		delete(s.grants, owner)
		delete(s.bumps, owner)
		s.grantMu.Unlock()
		mu.Lock()
		for t := range pending {
			s.gate.Withdraw(t)
		}
		mu.Unlock()
		select {
		case <-grant: // started but never sent
			s.gate.Done(owner, 0)
		default:
		}
		s.dispatch()
	}()

	readErr := make(chan error, 1)
	go func() {
		for {
			st.SetReadDeadline(time.Now().Add(s.IdleTimeout))
			m, err := r.Next()
			if err != nil {
				readErr <- err
				return
			}
			switch {
			case m.GetRequest() != nil:
				i := int(m.GetRequest().GetIndex())
				held := uplink.Unknown
				if h := m.GetRequest().Held; h != nil {
					held = int(min(*h, uint32(mi.NumPieces()))) // a claim, and only an ordering one
				}
				t, bump, bumpOwner, ok := s.gate.AdmitFrom(owner, i, held)
				if bump != 0 {
					s.bump(bumpOwner, bump)
				}
				if !ok {
					if s.Busy != nil {
						s.Busy()
					}
					if err := sw.send(busyMsg(i, s.gate.RetryAfter())); err != nil {
						readErr <- err
						return
					}
					continue
				}
				act.add(1)
				if offered != nil {
					// Gone from the moment it is asked for: offering it
					// to others while it waits or is on the wire would
					// only send it twice.
					s.sentPiece(d, mi.NumPieces(), i)
				}
				mu.Lock()
				pending[t] = i
				delete(cancelled, i)
				mu.Unlock()
				s.dispatch()
			case m.GetCancel() != nil:
				i := int(m.GetCancel().GetIndex())
				mu.Lock()
				for t, p := range pending {
					if p == i {
						if s.gate.Withdraw(t) {
							delete(pending, t)
							act.add(-1)
						} else {
							cancelled[i] = true // started: skip it
						}
					}
				}
				mu.Unlock()
			}
		}
	}()

	for {
		var t uplink.Ticket
		select {
		case err := <-readErr:
			return err
		case b := <-bumped:
			mu.Lock()
			i, ok := pending[b]
			delete(pending, b)
			mu.Unlock()
			if !ok {
				continue // cancelled meanwhile
			}
			act.add(-1)
			if s.Busy != nil {
				s.Busy()
			}
			if err := sw.send(busyMsg(i, s.gate.RetryAfter())); err != nil {
				return err
			}
			continue
		case t = <-grant:
		}
		mu.Lock()
		i := pending[t]
		delete(pending, t)
		skip := cancelled[i]
		delete(cancelled, i)
		mu.Unlock()
		if skip {
			act.add(-1)
			s.gate.Done(owner, 0)
			s.dispatch()
			continue
		}
		start := time.Now()
		sent, err := s.send(st, sw, blob, mi, i)
		took := time.Since(start)
		if !sent {
			took = 0 // not a piece's time on the wire
		}
		s.gate.Done(owner, took)
		s.dispatch()
		act.add(-1) // a piece on the wire is activity until it is sent
		if err != nil {
			return err
		}
		if !sent {
			continue
		}
		_, n := mi.PieceSpan(i)
		if offered != nil {
			sw.mu.Lock()
			next := s.offer(d, mi.NumPieces(), offered, true, heldBits(blob))
			sw.mu.Unlock()
			s.log.Debug("super-seed offer", "peer", st.Conn().RemotePeer(), "sent", i, "offer", next)
			if next >= 0 {
				if err := sw.send(haveMsg(next)); err != nil {
					return err
				}
			}
		}
		if s.Uploaded != nil {
			s.Uploaded(int(n))
		}
	}
}

// activity tells a super-seeder whether a peer is idle: nothing asked of
// us and nothing sent for a while. A peer waiting for a piece on the wire
// or in the queue is not idle, however long that takes on a shared
// uplink: offering it more pieces then would only have it ask the origin
// for pieces other agents are already getting.
type activity struct {
	outstanding atomic.Int32
	last        atomic.Int64
}

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

func (a *activity) add(n int32) {
	a.outstanding.Add(n)
	a.touch()
}

func (a *activity) idleFor(d time.Duration) bool {
	return a.outstanding.Load() <= 0 && time.Since(time.Unix(0, a.last.Load())) >= d
}

// Load is the uplink's pieces on the wire and requests waiting for it.
func (s *Seeder) Load() (sending, waiting int) {
	sending, waiting, _ = s.gate.Load()
	return sending, waiting
}

// bump tells owner's stream that its waiting ticket t lost its place.
func (s *Seeder) bump(owner uint64, t uplink.Ticket) {
	s.grantMu.Lock()
	ch := s.bumps[owner]
	s.grantMu.Unlock()
	if ch == nil {
		return // its stream is gone, and its tickets with it
	}
	select {
	case ch <- t:
	default:
	}
}

// dispatch hands every request the gate can start now to its stream.
func (s *Seeder) dispatch() {
	s.grantMu.Lock()
	defer s.grantMu.Unlock()
	for {
		t, owner, ok := s.gate.Next()
		if !ok {
			return
		}
		if ch := s.grants[owner]; ch != nil {
			ch <- t // never blocks: an owner has one started ticket at a time
		} else {
			s.gate.Done(owner, 0) // its stream is gone
		}
	}
}

// send sends piece i of blob, paced by the upload limiter, streaming it
// from the blob a chunk at a time; sent is false if the peer was told busy
// instead. A piece that fails its check or cannot be read ends the stream
// with an error frame: the peer goes elsewhere, and nothing of a corrupt
// piece ever leaves.
func (s *Seeder) send(st network.Stream, sw *syncWriter, blob Blob, mi *metainfo.MetaInfo, i int) (sent bool, err error) {
	off, n := mi.PieceSpan(i)
	if err := st.Scope().ReserveMemory(sendChunk, network.ReservationPriorityHigh); err != nil {
		// Short of memory: as good as a full uplink, and the peer is
		// told so and asks elsewhere.
		if s.Busy != nil {
			s.Busy()
		}
		return false, sw.send(busyMsg(i, s.gate.RetryAfter()))
	}
	defer st.Scope().ReleaseMemory(sendChunk)
	buf := s.chunk()
	defer s.putChunk(buf)
	var src io.ReaderAt = blob
	if l, ok := blob.(Leased); ok {
		lease, err := l.Lease()
		if err != nil {
			sw.mu.Lock()
			defer sw.mu.Unlock()
			return false, sendError(sw.w, "unavailable", fmt.Sprintf("piece %d: %v", i, err))
		}
		defer lease.Close()
		src = lease
	}
	if c, ok := src.(Checked); ok {
		if err := c.CheckPiece(i, buf); err != nil {
			sw.mu.Lock()
			defer sw.mu.Unlock()
			return false, sendError(sw.w, "unavailable", fmt.Sprintf("piece %d: %v", i, err))
		}
	}
	// The first chunk is read before the stream is locked and anything is
	// written: a slow disk holds up this piece, not the stream's other
	// messages, and a piece that cannot be read is still answered.
	k := min(int(n), len(buf))
	if err := readFullAt(src, buf[:k], off); err != nil {
		sw.mu.Lock()
		defer sw.mu.Unlock()
		return false, sendError(sw.w, "unavailable", fmt.Sprintf("piece %d: %v", i, err))
	}
	if err := pace.Wait(context.Background(), s.upload, int(n)); err != nil {
		return false, err
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	err = sw.w.WritePieceFrom(uint32(i), src, off, int(n), buf, k)
	return err == nil, err
}

// writeStall is how long a receiver may take no bytes at all before its
// stream is reset, so it cannot hold an upload slot. It bounds silence,
// not the piece: a slow receiver that keeps reading is served however long
// the piece takes.
const writeStall = 20 * time.Second

// stallWriter arms the stream's write deadline before every chunk.
type stallWriter struct{ st network.Stream }

func (w stallWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k := min(len(b)-n, 256<<10)
		w.st.SetWriteDeadline(time.Now().Add(writeStall))
		m, err := w.st.Write(b[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func busyMsg(i int, after time.Duration) *shoalpb.PieceMessage {
	ms := uint32(min(max(after, time.Millisecond), maxRetryAfter) / time.Millisecond)
	return &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Busy{Busy: &shoalpb.Busy{Index: uint32(i), RetryAfterMs: ms}}}
}

// maxRetryAfter bounds a busy answer's hint, sent or believed.
const maxRetryAfter = 30 * time.Second

// Growing is a Blob that is still downloading: Changed is closed when it
// gains a piece (take it before reading the bitfield).
type Growing interface {
	Changed() <-chan struct{}
}

// haveInterval is how often a seeder of a partial blob that cannot say
// when it grows looks for new pieces to announce.
const haveInterval = 100 * time.Millisecond

// sendHaves tells the peer about each piece the blob gains, until it is
// complete. A growing blob wakes it per piece; others are polled.
func (s *Seeder) sendHaves(ctx context.Context, sw *syncWriter, blob Blob, sent []byte) {
	sent = append([]byte(nil), sent...)
	g, growing := blob.(Growing)
	var tick <-chan time.Time
	if !growing {
		t := time.NewTicker(haveInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		var changed <-chan struct{}
		if growing {
			changed = g.Changed()
		}
		now, complete := blob.Bitfield()
		for i := range len(sent) * 8 {
			bit := byte(0x80 >> (i % 8))
			has := complete || (i/8 < len(now) && now[i/8]&bit != 0)
			if has && sent[i/8]&bit == 0 {
				if i >= blob.MetaInfo().NumPieces() {
					break
				}
				sent[i/8] |= bit
				if sw.send(haveMsg(i)) != nil {
					return
				}
			}
		}
		if complete {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-changed:
		}
	}
}

// syncWriter lets the request loop and the have announcer share a stream.
type syncWriter struct {
	mu sync.Mutex
	w  *FrameWriter
}

func (s *syncWriter) send(m *shoalpb.PieceMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.w.Write(m); err != nil {
		return err
	}
	return s.w.Flush()
}

func handshake(d digest.Digest, mih []byte, b Blob, capability *shoalpb.Capability) *shoalpb.PieceMessage {
	hs := &shoalpb.Handshake{Digest: d.String(), MetainfoHash: mih, Capability: capability}
	if bits, complete := b.Bitfield(); complete {
		hs.Have = &shoalpb.Handshake_Complete{Complete: true}
	} else {
		hs.Have = &shoalpb.Handshake_Bitfield{Bitfield: bits}
	}
	return &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Handshake{Handshake: hs}}
}

func sendError(w *FrameWriter, code, msg string) error {
	w.Write(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Error{Error: &shoalpb.Error{Code: code, Message: msg}}})
	w.Flush()
	return fmt.Errorf("p2p: %s: %s", code, msg)
}

// Conn is the downloading side of one stream: requests go out, pieces and
// haves come back.
type Conn struct {
	Peer peer.ID
	// Bitfield and Complete are what the peer held at the handshake.
	Bitfield []byte
	Complete bool

	st    network.Stream
	r     *FrameReader
	wmu   sync.Mutex
	w     *FrameWriter
	moved atomic.Int64 // bytes read off the stream
}

// Moved is how many bytes have arrived on the stream so far: a download
// samples it to tell a slow peer from a silent one.
func (c *Conn) Moved() int64 { return c.moved.Load() }

// countingReader counts what the stream delivers, as it arrives.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// ErrRemote is an error frame from the peer.
var ErrRemote = errors.New("p2p: peer refused")

// DialOption adds to what Dial sends.
type DialOption func(*dialOptions)

type dialOptions struct {
	capability *shoalpb.Capability
}

// WithCapability presents c, the origin cluster's permission to fetch
// this blob, in the handshake (nil: none).
func WithCapability(c *shoalpb.Capability) DialOption {
	return func(o *dialOptions) { o.capability = c }
}

// Dial opens a piece stream to p for blob mi, announcing what we hold.
func Dial(ctx context.Context, h host.Host, p peer.AddrInfo, mi *metainfo.MetaInfo, have Blob, opts ...DialOption) (*Conn, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	if len(p.Addrs) > 0 {
		h.Peerstore().AddAddrs(p.ID, p.Addrs, time.Hour)
	}
	st, err := h.NewStream(ctx, p.ID, Protocol)
	if err != nil {
		return nil, fmt.Errorf("p2p: open stream to %s: %w", p.ID, err)
	}
	c := &Conn{Peer: p.ID, st: st, w: NewFrameWriter(st)}
	c.r = NewFrameReader(countingReader{st, &c.moved})
	if err := c.handshake(ctx, mi, have, o.capability); err != nil {
		st.Reset()
		return nil, err
	}
	return c, nil
}

func (c *Conn) handshake(ctx context.Context, mi *metainfo.MetaInfo, have Blob, capability *shoalpb.Capability) error {
	mih, err := MetaInfoHash(mi)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.st.SetDeadline(dl)
		defer c.st.SetDeadline(time.Time{})
	}
	if err := c.w.Write(handshake(mi.Digest, mih, have, capability)); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	c.r.SetBlob(mi.NumPieces(), mi.PieceLength)
	m, err := c.r.Next()
	if err != nil {
		return fmt.Errorf("p2p: handshake from %s: %w", c.Peer, err)
	}
	if e := m.GetError(); e != nil {
		return fmt.Errorf("%w: %s: %s", ErrRemote, e.GetCode(), e.GetMessage())
	}
	hs := m.GetHandshake()
	if hs == nil || hs.GetDigest() != mi.Digest.String() || string(hs.GetMetainfoHash()) != string(mih) {
		return violation("handshake for another blob")
	}
	c.Bitfield, c.Complete = hs.GetBitfield(), hs.GetComplete()
	return nil
}

func (c *Conn) send(m *shoalpb.PieceMessage) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.w.Write(m); err != nil {
		return err
	}
	return c.w.Flush()
}

// Request asks for piece i.
func (c *Conn) Request(i int) error {
	return c.send(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Request{Request: &shoalpb.Request{Index: uint32(i)}}})
}

// RequestHeld asks for piece i, saying we hold held pieces of the blob: a
// full seeder gives a requester further behind the place of one further
// along.
func (c *Conn) RequestHeld(i, held int) error {
	h := uint32(max(held, 0))
	return c.send(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Request{Request: &shoalpb.Request{Index: uint32(i), Held: &h}}})
}

// Cancel withdraws a request.
func (c *Conn) Cancel(i int) error {
	return c.send(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Cancel{Cancel: &shoalpb.Cancel{Index: uint32(i)}}})
}

// Have tells the peer we now hold piece i.
func (c *Conn) Have(i int) error {
	return c.send(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Have{Have: &shoalpb.Have{Index: uint32(i)}}})
}

// Event is what Next read: a piece (Data set, valid until the next call),
// a have, or a busy refusal of our request for Piece.
type Event struct {
	Piece int
	Data  []byte
	Have  bool
	Busy  bool
	// RetryAfter is the busy peer's hint (bounded).
	RetryAfter time.Duration
}

// Next reads the next piece or have, reading piece payloads into buf
// (which must hold a whole piece). Calls must not overlap.
func (c *Conn) Next(buf []byte) (Event, error) {
	for {
		m, err := c.r.Next()
		if err != nil {
			return Event{}, err
		}
		switch msg := m.GetMsg().(type) {
		case *shoalpb.PieceMessage_Piece:
			n := c.r.PayloadLen()
			if n > len(buf) {
				return Event{}, violation("piece of %d bytes for a %d byte buffer", n, len(buf))
			}
			if err := c.r.ReadPayload(buf[:n]); err != nil {
				return Event{}, err
			}
			return Event{Piece: int(msg.Piece.GetIndex()), Data: buf[:n]}, nil
		case *shoalpb.PieceMessage_Have:
			return Event{Piece: int(msg.Have.GetIndex()), Have: true}, nil
		case *shoalpb.PieceMessage_Busy:
			after := min(time.Duration(msg.Busy.GetRetryAfterMs())*time.Millisecond, maxRetryAfter)
			return Event{Piece: int(msg.Busy.GetIndex()), Busy: true, RetryAfter: after}, nil
		case *shoalpb.PieceMessage_Error:
			return Event{}, fmt.Errorf("%w: %s: %s", ErrRemote, msg.Error.GetCode(), msg.Error.GetMessage())
		case *shoalpb.PieceMessage_Handshake:
			return Event{}, violation("second handshake")
		}
	}
}

// Close ends the stream.
func (c *Conn) Close() error { return c.st.Close() }

// Reset aborts the stream (a peer that misbehaved).
func (c *Conn) Reset() error { return c.st.Reset() }
