// Package metainfo cuts a blob into pieces and describes them: the piece
// length, a deterministic function of the blob size, and the hash chain that
// checks each piece. Every origin computes the same metainfo for the same
// blob, so an agent can check a piece from any peer.
//
// The chain holds the state of the digest's own hash function at each piece
// boundary. A piece is checked by resuming the hash from the state before it
// and comparing the state after it (or, for the last piece, the finished
// digest). So every byte is hashed once, pieces can be checked in any order
// and in parallel, and pieces that all pass hash to the OCI digest by
// construction: a receiver needs no second, in-order pass over the blob, and
// a metainfo that lies can make good pieces fail but never bad ones pass.
// Per-piece SHA-256 plus an in-order whole-blob hash cost twice the hashing,
// and a read-back of pieces that arrived out of order (see DESIGN.md and the
// agent's Pull1GiB benchmark).
package metainfo

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// ErrInvalid is returned (wrapped) for metainfo that is inconsistent with
// itself: wrong chain length, bad piece length, bad digest.
var ErrInvalid = errors.New("invalid metainfo")

const (
	// MinPieceLength is the piece length of every blob up to
	// MinPieceLength*MaxPieces bytes (1 GiB). A piece is the unit that
	// hops from peer to peer, and a seeder shares its uplink among a few
	// pieces at once, so one hop takes a few piece-times: the piece
	// length sets how fast a new piece, and so a rollout's start, spreads
	// through a fleet. DESIGN.md chose 4 MiB for single-stream speed; 1 MiB
	// took a rollout of 25 agents × 25 Mbit × 128 MiB from 2.16 to 1.52 ×
	// the bound. 512 KiB took the simulated 200 agents × 25 Mbit from 1.43
	// to 1.33 (time to first byte 8.3 s → 4.2 s); 256 KiB reached the bulk
	// sooner still (p50 1.21) but left a tail (p99 1.46).
	MinPieceLength = 512 << 10
	// MaxPieces bounds the piece count (and so bitfields and chains):
	// beyond it pieces grow.
	MaxPieces = 2048
	// MaxPieceLength bounds what a peer or file may claim.
	MaxPieceLength = 1 << 30
)

// HTTPPath is where origins serve metainfo: GET HTTPPath + "<digest>"
// answers the protobuf shoal.v1.MetaInfo with ContentType. It is outside
// /v2 because it is not part of the OCI API and names no repository.
//
// With ?partial=1 an origin receiving the blob from an upstream answers
// what it knows so far (a chain prefix, see FromProtoPrefix) instead of
// 404, and says in CompleteHeader whether that is all of it.
const (
	HTTPPath       = "/shoal/v1/metainfo/"
	ContentType    = "application/vnd.shoal.metainfo.v1+protobuf"
	CompleteHeader = "Shoal-Metainfo-Complete"
)

// PieceLength returns the piece length for a blob of size bytes: the
// smallest power of two from MinPieceLength up that cuts it into at most
// MaxPieces pieces (512 KiB up to 1 GiB, 16 MiB at 20 GiB).
func PieceLength(size int64) int64 {
	per := (size + MaxPieces - 1) / MaxPieces
	if per <= MinPieceLength {
		return MinPieceLength
	}
	return int64(1) << bits.Len64(uint64(per-1))
}

// NumPieces returns how many pieces a blob of size bytes has at pieceLength.
func NumPieces(size, pieceLength int64) int {
	if size == 0 {
		return 0
	}
	return int((size + pieceLength - 1) / pieceLength)
}

// MetaInfo is a validated shoalpb.MetaInfo with helpers.
type MetaInfo struct {
	Digest      digest.Digest
	Size        int64
	PieceLength int64
	// Chain[i] is the hash state after pieces 0..i, for every piece but
	// the last (whose check is the digest itself).
	Chain [][]byte
}

// NumPieces is the number of pieces.
func (m *MetaInfo) NumPieces() int { return NumPieces(m.Size, m.PieceLength) }

// PieceSpan returns the offset and length of piece i.
func (m *MetaInfo) PieceSpan(i int) (off, length int64) {
	off = int64(i) * m.PieceLength
	return off, min(m.PieceLength, m.Size-off)
}

// VerifyPiece reports whether data is piece i. It hashes data once and
// is safe to call concurrently.
func (m *MetaInfo) VerifyPiece(i int, data []byte) bool {
	c, err := m.CheckPiece(i)
	if err != nil {
		return false
	}
	c.Write(data)
	return c.OK()
}

// PieceCheck verifies one piece written to it in any number of writes,
// so a piece held in a file can be checked through a small buffer instead
// of one as long as the piece.
type PieceCheck struct {
	m    *MetaInfo
	i    int
	want int64
	n    int64
	h    hash.Hash
}

// Complete reports whether the chain is whole. A metainfo made by
// FromProtoPrefix may hold only the states of a blob's first pieces: those
// of a blob still arriving at its origin (see pkg/growing).
func (m *MetaInfo) Complete() bool { return len(m.Chain) == max(m.NumPieces()-1, 0) }

// Verifiable reports whether piece i can be checked with this metainfo:
// every piece of a complete one; of a prefix, the pieces whose end state
// it holds (the last piece, checked against the digest, needs every state
// before it).
func (m *MetaInfo) Verifiable(i int) bool {
	n := m.NumPieces()
	return i >= 0 && i < n && len(m.Chain) <= max(n-1, 0) && (i < len(m.Chain) || (i == n-1 && m.Complete()))
}

// CheckPiece starts checking piece i: write its bytes, then ask OK. It
// fails for a piece that is not Verifiable.
func (m *MetaInfo) CheckPiece(i int) (*PieceCheck, error) {
	n := m.NumPieces()
	if !m.Verifiable(i) {
		return nil, fmt.Errorf("%w: piece %d of %d, %d states known", ErrInvalid, i, n, len(m.Chain))
	}
	h, err := m.stateBefore(i)
	if err != nil {
		return nil, err
	}
	_, l := m.PieceSpan(i)
	return &PieceCheck{m: m, i: i, want: l, h: h}, nil
}

// Write hashes p as the next bytes of the piece; it never fails.
func (c *PieceCheck) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.n <= c.want {
		c.h.Write(p)
	}
	return len(p), nil
}

// OK reports whether exactly the piece's bytes were written.
func (c *PieceCheck) OK() bool {
	if c.n != c.want {
		return false
	}
	if c.i == c.m.NumPieces()-1 {
		want, err := hex.DecodeString(c.m.Digest.Hex())
		return err == nil && bytes.Equal(c.h.Sum(nil), want)
	}
	got, err := midstate(c.h)
	return err == nil && bytes.Equal(got, c.m.Chain[c.i])
}

// stateBefore returns the digest's hash resumed at the start of piece i.
func (m *MetaInfo) stateBefore(i int) (hash.Hash, error) {
	h := m.Digest.Algorithm().Hash()
	if i == 0 {
		return h, nil
	}
	return h, resume(h, m.Chain[i-1], int64(i)*m.PieceLength)
}

// The standard library exposes a hash's state only through
// encoding.BinaryMarshaler: a 4-byte magic, the chaining words, the
// block buffer and the length hashed so far (big-endian), a layout kept
// stable across Go releases. Piece boundaries are multiples of the
// block size, so the buffer is always empty there.
const magicLen = 4

// stateLen is the size of the chaining state of a hash in the layout.
func stateLen(h hash.Hash) int { return h.Size() }

// midstate returns the chaining state of h, which must be at a block
// boundary.
func midstate(h hash.Hash) ([]byte, error) {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(b) != magicLen+stateLen(h)+h.BlockSize()+8 {
		return nil, fmt.Errorf("%w: unexpected hash state layout", ErrInvalid)
	}
	return b[magicLen : magicLen+stateLen(h)], nil
}

// resume sets h, a fresh hash, to chaining state st after length bytes.
func resume(h hash.Hash, st []byte, length int64) error {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(b) != magicLen+stateLen(h)+h.BlockSize()+8 || len(st) != stateLen(h) ||
		length%int64(h.BlockSize()) != 0 {
		return fmt.Errorf("%w: unexpected hash state layout", ErrInvalid)
	}
	copy(b[magicLen:], st)
	binary.BigEndian.PutUint64(b[len(b)-8:], uint64(length))
	return h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b)
}

// Equal reports whether m and o describe the same blob the same way.
func (m *MetaInfo) Equal(o *MetaInfo) bool {
	return m.Digest == o.Digest && m.Size == o.Size && m.PieceLength == o.PieceLength &&
		slices.EqualFunc(m.Chain, o.Chain, bytes.Equal)
}

// Proto converts to the wire message.
func (m *MetaInfo) Proto() *shoalpb.MetaInfo {
	return &shoalpb.MetaInfo{Digest: m.Digest.String(), Size: m.Size, PieceLength: m.PieceLength, Chain: m.Chain}
}

// Marshal encodes m as protobuf.
func (m *MetaInfo) Marshal() ([]byte, error) { return proto.Marshal(m.Proto()) }

// FromProto validates a wire message: it may come from a peer or a file.
// Its chain must be whole.
func FromProto(p *shoalpb.MetaInfo) (*MetaInfo, error) {
	m, err := FromProtoPrefix(p)
	if err == nil && !m.Complete() {
		return nil, fmt.Errorf("%w: chain of %d states, want %d", ErrInvalid, len(m.Chain), max(m.NumPieces()-1, 0))
	}
	return m, err
}

// FromProtoPrefix is FromProto for a metainfo whose chain may be a prefix
// (see Complete): what an origin knows of a blob still arriving.
func FromProtoPrefix(p *shoalpb.MetaInfo) (*MetaInfo, error) {
	d, err := digest.Parse(p.GetDigest())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	size, pl := p.GetSize(), p.GetPieceLength()
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrInvalid, size)
	}
	if pl != PieceLength(size) {
		return nil, fmt.Errorf("%w: piece length %d, want %d for size %d", ErrInvalid, pl, PieceLength(size), size)
	}
	n := NumPieces(size, pl)
	if most := max(n-1, 0); len(p.GetChain()) > most {
		return nil, fmt.Errorf("%w: chain of %d states, want at most %d", ErrInvalid, len(p.GetChain()), most)
	}
	sl := stateLen(d.Algorithm().Hash())
	for i, st := range p.GetChain() {
		if len(st) != sl {
			return nil, fmt.Errorf("%w: chain state %d is %d bytes, want %d", ErrInvalid, i, len(st), sl)
		}
	}
	m := &MetaInfo{Digest: d, Size: size, PieceLength: pl, Chain: p.GetChain()}
	return m, nil
}

// Unmarshal decodes and validates protobuf bytes of a whole metainfo.
func Unmarshal(b []byte) (*MetaInfo, error) {
	var p shoalpb.MetaInfo
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return FromProto(&p)
}

// UnmarshalPrefix is Unmarshal for a metainfo whose chain may be a prefix.
func UnmarshalPrefix(b []byte) (*MetaInfo, error) {
	var p shoalpb.MetaInfo
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return FromProtoPrefix(&p)
}

// Hasher hashes a stream written to it and records the chain at a fixed
// piece length, its grain. Writes of any size are fine; it keeps no copy
// of the data.
type Hasher struct {
	alg         digest.Algorithm
	pieceLength int64
	h           hash.Hash
	inPiece     int64
	chain       [][]byte
	total       int64
	err         error
}

// NewHasher hashes with algorithm a and cuts pieces of pieceLength bytes,
// which must be a multiple of the hash's block size (powers of two from
// 128 bytes up are).
func NewHasher(a digest.Algorithm, pieceLength int64) *Hasher {
	return &Hasher{alg: a, pieceLength: pieceLength, h: a.Hash()}
}

// Write hashes p; it never fails (a broken state layout is reported by
// MetaInfo).
func (x *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		// A state is recorded when the next piece starts, so the last
		// piece never gets one.
		if x.inPiece == x.pieceLength {
			st, err := midstate(x.h)
			if err != nil && x.err == nil {
				x.err = err
			}
			x.chain = append(x.chain, st)
			x.inPiece = 0
		}
		take := min(int64(len(p)), x.pieceLength-x.inPiece)
		x.h.Write(p[:take])
		x.inPiece += take
		p = p[take:]
	}
	x.total += int64(n)
	return n, nil
}

// Size is the number of bytes hashed so far.
func (x *Hasher) Size() int64 { return x.total }

// Chain is the states recorded so far: one per piece that is whole and
// followed by at least one byte (a piece's end state is taken when the
// next piece begins, so the last piece never has one). Callers must not
// modify it; later writes only append.
func (x *Hasher) Chain() [][]byte { return x.chain[:len(x.chain):len(x.chain)] }

// PieceLength is the length the hasher cuts at.
func (x *Hasher) PieceLength() int64 { return x.pieceLength }

// Digest is the digest of the bytes hashed so far.
func (x *Hasher) Digest() digest.Digest { return digest.FromHash(x.alg, x.h) }

// MetaInfo returns the metainfo of what was hashed, as blob d; it fails
// if d is not the digest of those bytes.
func (x *Hasher) MetaInfo(d digest.Digest) (*MetaInfo, error) {
	if x.err != nil {
		return nil, x.err
	}
	if got := x.Digest(); got != d {
		return nil, fmt.Errorf("metainfo of %s: content hashes to %s", d, got)
	}
	return &MetaInfo{Digest: d, Size: x.total, PieceLength: x.pieceLength, Chain: x.chain}, nil
}

// MetaInfoAt is MetaInfo at pieceLength, a multiple of the hasher's
// grain: a chain at a coarser length is every k-th state of the fine one,
// so a hasher at MinPieceLength serves a blob of any size in one pass
// without knowing the size in advance.
func (x *Hasher) MetaInfoAt(d digest.Digest, pieceLength int64) (*MetaInfo, error) {
	if pieceLength <= 0 || pieceLength%x.pieceLength != 0 {
		return nil, fmt.Errorf("metainfo of %s: piece length %d is not a multiple of %d", d, pieceLength, x.pieceLength)
	}
	m, err := x.MetaInfo(d)
	if err != nil || pieceLength == x.pieceLength {
		return m, err
	}
	k := int(pieceLength / x.pieceLength)
	chain := make([][]byte, max(NumPieces(m.Size, pieceLength)-1, 0))
	for i := range chain {
		chain[i] = m.Chain[(i+1)*k-1]
	}
	return &MetaInfo{Digest: d, Size: m.Size, PieceLength: pieceLength, Chain: chain}, nil
}

// Compute reads a whole blob of the given size and returns its metainfo;
// it fails if the bytes do not hash to d.
func Compute(d digest.Digest, r io.Reader, size int64) (*MetaInfo, error) {
	x := NewHasher(d.Algorithm(), PieceLength(size))
	n, err := io.Copy(x, r)
	if err != nil {
		return nil, fmt.Errorf("metainfo of %s: %w", d, err)
	}
	if n != size {
		return nil, fmt.Errorf("metainfo of %s: read %d bytes, want %d", d, n, size)
	}
	return x.MetaInfo(d)
}
