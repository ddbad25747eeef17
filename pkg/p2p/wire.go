// Package p2p is Shoal's piece wire: a libp2p host per agent and origin,
// and the /shoal/pieces/1 protocol that moves one blob's pieces between two
// peers on one stream.
package p2p

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Protocol is the libp2p protocol ID of the piece exchange.
const Protocol = "/shoal/pieces/1"

// Hard limits on what a peer may send. A header carries at most a digest,
// a hash and a bitfield of 2048 pieces (256 bytes); payloads are one piece.
const (
	maxHeader     = 4 << 10
	maxBitfield   = 1 << 10
	MaxPieceBytes = 64 << 20
	maxErrorText  = 1 << 10
)

// ErrProtocol marks a frame that breaks the protocol; the peer is dropped.
var ErrProtocol = errors.New("p2p: protocol violation")

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// FrameReader reads frames from a peer, enforcing the limits.
type FrameReader struct {
	r *bufio.Reader
	// pending is the payload length still to read after a Piece header.
	pending int
	// maxPayload and pieces bound Piece frames and indexes once the blob's
	// metainfo is known (SetBlob); before that no piece is accepted.
	maxPayload int
	pieces     int
	buf        []byte
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader { return newFrameReaderSize(r, 64<<10) }

// newFrameReaderSize reads through a buffer of size bytes: a seeder, which
// reads only small frames, keeps a small one per stream.
func newFrameReaderSize(r io.Reader, size int) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, size)}
}

// SetBlob bounds piece indexes to pieces and payloads to pieceLength.
func (f *FrameReader) SetBlob(pieces int, pieceLength int64) {
	f.pieces, f.maxPayload = pieces, int(min(pieceLength, MaxPieceBytes))
}

// Next reads the next header. After a Piece, the caller must call
// ReadPayload before Next again.
func (f *FrameReader) Next() (*shoalpb.PieceMessage, error) {
	if f.pending > 0 {
		return nil, errors.New("p2p: payload of the previous piece not read")
	}
	n, err := binary.ReadUvarint(f.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("p2p: frame length: %w", err)
	}
	if n == 0 || n > maxHeader {
		return nil, violation("header of %d bytes", n)
	}
	if cap(f.buf) < int(n) {
		f.buf = make([]byte, maxHeader)
	}
	b := f.buf[:n]
	if _, err := io.ReadFull(f.r, b); err != nil {
		return nil, fmt.Errorf("p2p: header: %w", noEOF(err))
	}
	m := &shoalpb.PieceMessage{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, violation("header: %v", err)
	}
	if err := f.check(m); err != nil {
		return nil, err
	}
	if p := m.GetPiece(); p != nil {
		f.pending = int(p.GetLength())
	}
	return m, nil
}

func (f *FrameReader) index(i uint32) error {
	if int64(i) >= int64(f.pieces) {
		return violation("piece %d of a blob with %d pieces", i, f.pieces)
	}
	return nil
}

func (f *FrameReader) check(m *shoalpb.PieceMessage) error {
	switch msg := m.GetMsg().(type) {
	case *shoalpb.PieceMessage_Handshake:
		h := msg.Handshake
		if _, err := digest.Parse(h.GetDigest()); err != nil {
			return violation("handshake digest: %v", err)
		}
		if len(h.GetMetainfoHash()) != 32 {
			return violation("metainfo hash of %d bytes", len(h.GetMetainfoHash()))
		}
		if len(h.GetBitfield()) > maxBitfield {
			return violation("bitfield of %d bytes", len(h.GetBitfield()))
		}
		if h.GetHave() == nil {
			return violation("handshake says neither bitfield nor complete")
		}
	case *shoalpb.PieceMessage_Have:
		return f.index(msg.Have.GetIndex())
	case *shoalpb.PieceMessage_Request:
		return f.index(msg.Request.GetIndex())
	case *shoalpb.PieceMessage_Cancel:
		return f.index(msg.Cancel.GetIndex())
	case *shoalpb.PieceMessage_Busy:
		return f.index(msg.Busy.GetIndex())
	case *shoalpb.PieceMessage_Piece:
		if err := f.index(msg.Piece.GetIndex()); err != nil {
			return err
		}
		if n := msg.Piece.GetLength(); n == 0 || int64(n) > int64(f.maxPayload) {
			return violation("piece of %d bytes (limit %d)", n, f.maxPayload)
		}
	case *shoalpb.PieceMessage_Error:
		if len(msg.Error.GetCode()) > 64 || len(msg.Error.GetMessage()) > maxErrorText {
			return violation("oversized error")
		}
	default:
		return violation("empty or unknown message")
	}
	return nil
}

// Ready reports whether a whole header frame is already buffered, so Next
// will not block: a seeder drains what has arrived (cancels especially)
// before it starts sending a piece.
func (f *FrameReader) Ready() bool {
	if f.pending > 0 {
		return false
	}
	n := f.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := f.r.Peek(min(n, binary.MaxVarintLen64))
	l, k := binary.Uvarint(b)
	return k > 0 && uint64(n-k) >= l
}

// PayloadLen is the length of the piece payload to read next, or 0.
func (f *FrameReader) PayloadLen() int { return f.pending }

// ReadPayload reads the pending piece payload into dst, which must be
// exactly PayloadLen bytes: straight from the stream, no copy through
// protobuf.
func (f *FrameReader) ReadPayload(dst []byte) error {
	if len(dst) != f.pending {
		return fmt.Errorf("p2p: payload buffer of %d bytes for a %d byte piece", len(dst), f.pending)
	}
	f.pending = 0
	if _, err := io.ReadFull(f.r, dst); err != nil {
		return fmt.Errorf("p2p: piece payload: %w", noEOF(err))
	}
	return nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// FrameWriter writes frames to a peer. It is not safe for concurrent use.
type FrameWriter struct {
	w   *bufio.Writer
	buf []byte
}

// NewFrameWriter writes frames to w.
func NewFrameWriter(w io.Writer) *FrameWriter { return newFrameWriterSize(w, 64<<10) }

// newFrameWriterSize writes through a buffer of size bytes; payloads
// larger than it bypass it.
func newFrameWriterSize(w io.Writer, size int) *FrameWriter {
	return &FrameWriter{w: bufio.NewWriterSize(w, size)}
}

// Write buffers one message; Flush sends.
func (f *FrameWriter) Write(m *shoalpb.PieceMessage) error {
	b, err := proto.MarshalOptions{}.MarshalAppend(f.buf[:0], m)
	if err != nil {
		return fmt.Errorf("p2p: marshal: %w", err)
	}
	f.buf = b
	if len(b) > maxHeader {
		return fmt.Errorf("p2p: header of %d bytes over the limit", len(b))
	}
	var lb [binary.MaxVarintLen64]byte
	if _, err := f.w.Write(lb[:binary.PutUvarint(lb[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err = f.w.Write(b)
	return err
}

// WritePiece sends a Piece header and its payload and flushes. A payload
// larger than the buffer goes to the stream directly, not through it.
func (f *FrameWriter) WritePiece(index uint32, data []byte) error {
	if len(data) == 0 || len(data) > MaxPieceBytes {
		return fmt.Errorf("p2p: piece of %d bytes", len(data))
	}
	err := f.Write(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Piece{Piece: &shoalpb.Piece{Index: index, Length: uint32(len(data))}}})
	if err != nil {
		return err
	}
	if _, err := f.w.Write(data); err != nil {
		return err
	}
	return f.w.Flush()
}

// errMidPiece: a piece's payload broke off after its header went out; only
// a reset tells the peer, since the frames are out of step.
var errMidPiece = errors.New("p2p: piece broken off")

// WritePieceFrom sends a Piece header and the length bytes of src at off,
// through buf a chunk at a time: the sender needs no buffer as long as a
// piece, so what a seeder holds per piece on the wire does not grow with
// the piece length. buf[:filled] already holds the piece's first bytes:
// the caller reads them before anything is written, so a piece it cannot
// read at all can still be answered with an error frame. A read that fails
// later wraps errMidPiece.
func (f *FrameWriter) WritePieceFrom(index uint32, src io.ReaderAt, off int64, length int, buf []byte, filled int) error {
	if length <= 0 || length > MaxPieceBytes || len(buf) == 0 || filled < 0 || filled > min(length, len(buf)) {
		return fmt.Errorf("p2p: piece of %d bytes, %d of them in a %d byte buffer", length, filled, len(buf))
	}
	err := f.Write(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Piece{Piece: &shoalpb.Piece{Index: index, Length: uint32(length)}}})
	if err != nil {
		return err
	}
	for sent, k := 0, filled; ; k = 0 {
		if k == 0 {
			k = min(length-sent, len(buf))
			if err := readFullAt(src, buf[:k], off+int64(sent)); err != nil {
				return fmt.Errorf("%w: %w", errMidPiece, err)
			}
		}
		if _, err := f.w.Write(buf[:k]); err != nil {
			return fmt.Errorf("%w: %w", errMidPiece, err)
		}
		if sent += k; sent == length {
			return f.w.Flush()
		}
	}
}

// readFullAt fills b from src at off; EOF with b full is success, as
// ReaderAt allows at the end of the data.
func readFullAt(src io.ReaderAt, b []byte, off int64) error {
	n, err := src.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Flush sends what is buffered.
func (f *FrameWriter) Flush() error { return f.w.Flush() }
