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
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Blob is a blob a peer can serve pieces of: complete in its cache, or
// partly downloaded. If it is also an io.Closer, the seeder closes it when
// the stream ends.
type Blob interface {
	MetaInfo() *metainfo.MetaInfo
	// Bitfield is what is held (MSB first); complete means all of it.
	Bitfield() (bits []byte, complete bool)
	// ReadAt reads held bytes.
	ReadAt(p []byte, off int64) (int, error)
}

// Blobs finds what this peer can serve.
type Blobs interface {
	// Lookup returns the blob, or false if nothing of it is held.
	Lookup(d digest.Digest) (Blob, bool)
}

// MetaInfoHash identifies a blob's piece layout in handshakes, so two
// peers never exchange pieces cut differently.
func MetaInfoHash(mi *metainfo.MetaInfo) ([]byte, error) {
	b, err := mi.Marshal()
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

// Seeder answers /shoal/pieces/1 streams from blobs, paced by an upload
// limiter shared by all streams.
type Seeder struct {
	blobs  Blobs
	upload *rate.Limiter // nil: unlimited
	log    *slog.Logger
	// IdleTimeout ends a stream with no request for this long.
	IdleTimeout time.Duration
	// Uploaded, if set, is told of every piece payload sent.
	Uploaded func(bytes int)
	// OnPeer, if set, is told of each peer that opens a stream for a
	// blob we hold: it is in that blob's swarm, and while we download the
	// blob too we can fetch from it over the same connection.
	OnPeer func(d digest.Digest, p peer.ID)

	// slots admits uploadSlots pieces at a time over all streams.
	slots *slots

	// superSeed: see EnableSuperSeeding.
	superSeed bool
	servedMu  sync.Mutex
	served    map[digest.Digest][]int // pieces advertised, per blob, over all peers
}

// EnableSuperSeeding makes the seeder advertise to each peer only a couple
// of pieces at a time, always those it has handed out least, and one more
// each time it sends one. Peers that start together then fetch different
// pieces and trade them among themselves, so each piece leaves this
// seeder about once. It is for origins, whose uplink is the scarce one.
func (s *Seeder) EnableSuperSeeding() {
	s.superSeed = true
	s.served = map[digest.Digest][]int{}
}

// superSeedPatience is how long a super-seeder waits, with nothing asked
// of it, before offering a peer a piece already handed out: the peer is
// not getting it from the swarm.
const superSeedPatience = 2 * time.Second

// offer picks the piece of d least handed out so far that this peer has
// not been offered yet, or -1. With firstPass it offers only pieces never
// handed out to anyone: once every piece has left, the swarm should carry
// them, not the origin.
func (s *Seeder) offer(d digest.Digest, n int, offered []bool, firstPass bool) int {
	s.servedMu.Lock()
	defer s.servedMu.Unlock()
	counts := s.served[d]
	if len(counts) != n {
		counts = make([]int, n)
		s.served[d] = counts
	}
	best := -1
	for i := range n {
		if !offered[i] && (best < 0 || counts[i] < counts[best]) {
			best = i
		}
	}
	if best < 0 || (firstPass && counts[best] > 0) {
		return -1
	}
	counts[best]++
	offered[best] = true
	return best
}

// offerWhenIdle offers more pieces to a peer that has been idle for the
// patience, until it has been offered everything.
func (s *Seeder) offerWhenIdle(ctx context.Context, sw *syncWriter, d digest.Digest, n int, offered []bool, lastBusy *atomic.Int64) {
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
		if time.Since(time.Unix(0, lastBusy.Load())) < superSeedPatience {
			continue
		}
		lastBusy.Store(time.Now().UnixNano())
		for range batch {
			sw.mu.Lock()
			next := s.offer(d, n, offered, false)
			sw.mu.Unlock()
			if next < 0 {
				return
			}
			if sw.send(haveMsg(next)) != nil {
				return
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
	s := &Seeder{blobs: blobs, upload: upload, log: log, IdleTimeout: time.Minute, slots: newSlots(uploadSlots)}
	h.SetStreamHandler(Protocol, s.handle)
	return s
}

func (s *Seeder) handle(st network.Stream) {
	defer st.Close()
	remote := st.Conn().RemotePeer()
	if err := s.serve(st); err != nil && !errors.Is(err, io.EOF) {
		s.log.Debug("piece stream ended", "peer", remote, "err", err)
		if errors.Is(err, ErrProtocol) {
			// A peer that breaks the protocol loses its connection, not
			// just the stream.
			st.Conn().Close()
		}
	}
}

func (s *Seeder) serve(st network.Stream) error {
	r, w := NewFrameReader(st), NewFrameWriter(st)
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
	blob, ok := s.blobs.Lookup(d)
	if !ok {
		return sendError(w, "not_found", fmt.Sprintf("%s not held", d))
	}
	if c, ok := blob.(io.Closer); ok {
		defer c.Close() // a cached blob stays pinned while it is served
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
	hs0 := handshake(d, mih, blob)
	sw := &syncWriter{w: w}
	var offered []bool // super-seeding: what this peer was offered
	var lastBusy atomic.Int64
	lastBusy.Store(time.Now().UnixNano())
	if _, complete := blob.Bitfield(); complete && s.superSeed {
		offered = make([]bool, mi.NumPieces())
		bits := make([]byte, (mi.NumPieces()+7)/8)
		sw.mu.Lock()
		if i := s.offer(d, mi.NumPieces(), offered, true); i >= 0 {
			bits[i/8] |= 0x80 >> (i % 8)
		}
		sw.mu.Unlock()
		hs0.GetHandshake().Have = &shoalpb.Handshake_Bitfield{Bitfield: bits}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.offerWhenIdle(ctx, sw, d, mi.NumPieces(), offered, &lastBusy)
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
	buf := make([]byte, mi.PieceLength)
	var queue []int // requested pieces, oldest first
	// take reads one frame: a request joins the queue, a cancel withdraws
	// its request if it has not gone out yet (end game, expired requests).
	take := func() error {
		st.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		m, err := r.Next()
		if err != nil {
			return err
		}
		if req := m.GetRequest(); req != nil && len(queue) < maxQueued {
			queue = append(queue, int(req.GetIndex()))
		} else if c := m.GetCancel(); c != nil {
			queue = slices.DeleteFunc(queue, func(q int) bool { return q == int(c.GetIndex()) })
		}
		return nil
	}
	for {
		// Take every frame that has arrived, waiting only when nothing is
		// queued.
		for len(queue) == 0 || r.Ready() {
			if err := take(); err != nil {
				return err
			}
		}
		// Wait for an upload slot, then for the frames that came in
		// meanwhile: the request may have been cancelled.
		s.slots.acquire(queue[0])
		for r.Ready() {
			if err := take(); err != nil {
				s.slots.release()
				return err
			}
		}
		if len(queue) == 0 {
			s.slots.release()
			continue
		}
		i := queue[0]
		queue = queue[1:]
		err := s.send(st, sw, blob, mi, i, buf)
		s.slots.release()
		if err != nil {
			return err
		}
		_, n := mi.PieceSpan(i)
		lastBusy.Store(time.Now().UnixNano())
		if offered != nil {
			sw.mu.Lock()
			next := s.offer(d, mi.NumPieces(), offered, true)
			sw.mu.Unlock()
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

// send reads piece i of blob and sends it, paced by the upload limiter. A
// peer that does not take it within twice a receiver's request timeout
// loses the stream, so it cannot hold an upload slot.
func (s *Seeder) send(st network.Stream, sw *syncWriter, blob Blob, mi *metainfo.MetaInfo, i int, buf []byte) error {
	off, n := mi.PieceSpan(i)
	p := buf[:n]
	if _, err := blob.ReadAt(p, off); err != nil && !errors.Is(err, io.EOF) {
		sw.mu.Lock()
		defer sw.mu.Unlock()
		return sendError(sw.w, "unavailable", fmt.Sprintf("piece %d: %v", i, err))
	}
	if err := pace.Wait(context.Background(), s.upload, int(n)); err != nil {
		return err
	}
	st.SetWriteDeadline(time.Now().Add(2 * (2*time.Second + time.Duration(n)*time.Microsecond)))
	defer st.SetWriteDeadline(time.Time{})
	return sw.piece(uint32(i), p)
}

// uploadSlots is how many pieces a seeder sends at once over all its
// streams. On a saturated uplink, forty pieces sent side by side all land
// at the end, while four at a time land one after another and their
// receivers can pass them on meanwhile (BitTorrent's unchoke slots serve
// the same end).
const uploadSlots = 4

// slots hands out upload slots lowest piece index first: the first pieces
// of every blob are what streaming clients wait on, so a rollout's first
// bytes come after a few pieces' time, not after the whole backlog's.
type slots struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiters []slotWaiter
}

type slotWaiter struct {
	piece int
	seq   uint64 // arrival order among equal pieces
	ready chan struct{}
}

func newSlots(n int) *slots { return &slots{free: n} }

func (q *slots) acquire(piece int) {
	q.mu.Lock()
	if q.free > 0 && len(q.waiters) == 0 {
		q.free--
		q.mu.Unlock()
		return
	}
	q.seq++
	w := slotWaiter{piece: piece, seq: q.seq, ready: make(chan struct{})}
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	<-w.ready
}

func (q *slots) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiters) == 0 {
		q.free++
		return
	}
	// A linear scan: waiters are bounded by the streams, tens at most.
	best := 0
	for k, w := range q.waiters[1:] {
		if w.piece < q.waiters[best].piece || (w.piece == q.waiters[best].piece && w.seq < q.waiters[best].seq) {
			best = k + 1
		}
	}
	close(q.waiters[best].ready)
	q.waiters = slices.Delete(q.waiters, best, best+1)
}

// maxQueued bounds the requests a seeder holds for one stream; more are
// dropped, and the peer's request timeout asks again.
const maxQueued = 64

// haveInterval is how often a seeder of a partial blob looks for new
// pieces to announce.
const haveInterval = 100 * time.Millisecond

func (s *Seeder) sendHaves(ctx context.Context, sw *syncWriter, blob Blob, sent []byte) {
	sent = append([]byte(nil), sent...)
	t := time.NewTicker(haveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
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

func (s *syncWriter) piece(i uint32, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.WritePiece(i, data)
}

func handshake(d digest.Digest, mih []byte, b Blob) *shoalpb.PieceMessage {
	hs := &shoalpb.Handshake{Digest: d.String(), MetainfoHash: mih}
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

	st  network.Stream
	r   *FrameReader
	wmu sync.Mutex
	w   *FrameWriter
}

// ErrRemote is an error frame from the peer.
var ErrRemote = errors.New("p2p: peer refused")

// Dial opens a piece stream to p for blob mi, announcing what we hold.
func Dial(ctx context.Context, h host.Host, p peer.AddrInfo, mi *metainfo.MetaInfo, have Blob) (*Conn, error) {
	if len(p.Addrs) > 0 {
		h.Peerstore().AddAddrs(p.ID, p.Addrs, time.Hour)
	}
	st, err := h.NewStream(ctx, p.ID, Protocol)
	if err != nil {
		return nil, fmt.Errorf("p2p: open stream to %s: %w", p.ID, err)
	}
	c := &Conn{Peer: p.ID, st: st, r: NewFrameReader(st), w: NewFrameWriter(st)}
	if err := c.handshake(ctx, mi, have); err != nil {
		st.Reset()
		return nil, err
	}
	return c, nil
}

func (c *Conn) handshake(ctx context.Context, mi *metainfo.MetaInfo, have Blob) error {
	mih, err := MetaInfoHash(mi)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.st.SetDeadline(dl)
		defer c.st.SetDeadline(time.Time{})
	}
	if err := c.w.Write(handshake(mi.Digest, mih, have)); err != nil {
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

// Cancel withdraws a request.
func (c *Conn) Cancel(i int) error {
	return c.send(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Cancel{Cancel: &shoalpb.Cancel{Index: uint32(i)}}})
}

// Have tells the peer we now hold piece i.
func (c *Conn) Have(i int) error {
	return c.send(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Have{Have: &shoalpb.Have{Index: uint32(i)}}})
}

// Event is what Next read: a piece (Data set, valid until the next call),
// or a have.
type Event struct {
	Piece int
	Data  []byte
	Have  bool
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
