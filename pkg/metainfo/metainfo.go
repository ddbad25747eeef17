// Package metainfo cuts a blob into pieces and describes them: the piece
// length, a deterministic function of the blob size, and the SHA-256 of each
// piece. Every origin computes the same metainfo for the same blob, so an agent
// can check a piece from any peer.
package metainfo

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// ErrInvalid is returned (wrapped) for metainfo that is inconsistent with
// itself: wrong number of hashes, bad piece length, bad digest.
var ErrInvalid = errors.New("invalid metainfo")

const (
	// DefaultPieceLength is used up to LargeBlob bytes. DESIGN.md: 1 MiB
	// pieces were ~20% slower with 4 leechers; larger pieces delay the
	// first byte.
	DefaultPieceLength = 4 << 20
	// LargeBlob is the size above which pieces grow so a blob never has
	// more than MaxPieces pieces.
	LargeBlob = 8 << 30
	// MaxPieces bounds the piece count (and so bitfields and hash lists).
	MaxPieces = 2048
	// MaxPieceLength bounds what a peer or file may claim.
	MaxPieceLength = 1 << 30
)

// HTTPPath is where origins serve metainfo: GET HTTPPath + "<digest>"
// answers the protobuf shoal.v1.MetaInfo with ContentType. It is outside
// /v2 because it is not part of the OCI API and names no repository.
const (
	HTTPPath    = "/shoal/v1/metainfo/"
	ContentType = "application/vnd.shoal.metainfo.v1+protobuf"
)

// PieceLength returns the piece length for a blob of size bytes: 4 MiB up to
// 8 GiB, then the next power of two of size/2048.
func PieceLength(size int64) int64 {
	if size <= LargeBlob {
		return DefaultPieceLength
	}
	per := (size + MaxPieces - 1) / MaxPieces
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
	Pieces      [][sha256.Size]byte
}

// NumPieces is the number of pieces.
func (m *MetaInfo) NumPieces() int { return len(m.Pieces) }

// PieceSpan returns the offset and length of piece i.
func (m *MetaInfo) PieceSpan(i int) (off, length int64) {
	off = int64(i) * m.PieceLength
	return off, min(m.PieceLength, m.Size-off)
}

// VerifyPiece reports whether data is piece i.
func (m *MetaInfo) VerifyPiece(i int, data []byte) bool {
	if i < 0 || i >= len(m.Pieces) {
		return false
	}
	if _, n := m.PieceSpan(i); int64(len(data)) != n {
		return false
	}
	return sha256.Sum256(data) == m.Pieces[i]
}

// Proto converts to the wire message.
func (m *MetaInfo) Proto() *shoalpb.MetaInfo {
	hashes := make([][]byte, len(m.Pieces))
	for i := range m.Pieces {
		hashes[i] = m.Pieces[i][:]
	}
	return &shoalpb.MetaInfo{Digest: m.Digest.String(), Size: m.Size, PieceLength: m.PieceLength, PieceSha256: hashes}
}

// Marshal encodes m as protobuf.
func (m *MetaInfo) Marshal() ([]byte, error) { return proto.Marshal(m.Proto()) }

// FromProto validates a wire message: it may come from a peer or a file.
func FromProto(p *shoalpb.MetaInfo) (*MetaInfo, error) {
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
	if len(p.GetPieceSha256()) != n {
		return nil, fmt.Errorf("%w: %d piece hashes, want %d", ErrInvalid, len(p.GetPieceSha256()), n)
	}
	m := &MetaInfo{Digest: d, Size: size, PieceLength: pl, Pieces: make([][sha256.Size]byte, n)}
	for i, h := range p.GetPieceSha256() {
		if len(h) != sha256.Size {
			return nil, fmt.Errorf("%w: piece %d hash is %d bytes", ErrInvalid, i, len(h))
		}
		copy(m.Pieces[i][:], h)
	}
	return m, nil
}

// Unmarshal decodes and validates protobuf bytes.
func Unmarshal(b []byte) (*MetaInfo, error) {
	var p shoalpb.MetaInfo
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return FromProto(&p)
}

// Hasher computes piece hashes of a stream written to it, at a fixed piece
// length. Writes of any size are fine; it keeps no copy of the data.
type Hasher struct {
	pieceLength int64
	h           hash.Hash
	inPiece     int64
	pieces      [][sha256.Size]byte
	total       int64
}

// NewHasher hashes pieces of pieceLength bytes.
func NewHasher(pieceLength int64) *Hasher {
	return &Hasher{pieceLength: pieceLength, h: sha256.New()}
}

// Write hashes p; it never fails.
func (x *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(int64(len(p)), x.pieceLength-x.inPiece)
		x.h.Write(p[:take])
		x.inPiece += take
		p = p[take:]
		if x.inPiece == x.pieceLength {
			x.finishPiece()
		}
	}
	x.total += int64(n)
	return n, nil
}

func (x *Hasher) finishPiece() {
	var sum [sha256.Size]byte
	x.h.Sum(sum[:0])
	x.pieces = append(x.pieces, sum)
	x.h.Reset()
	x.inPiece = 0
}

// Size is the number of bytes hashed so far.
func (x *Hasher) Size() int64 { return x.total }

// PieceLength is the length the hasher cuts at.
func (x *Hasher) PieceLength() int64 { return x.pieceLength }

// MetaInfo finishes hashing and returns the metainfo for blob d. The hasher
// must not be written to afterwards.
func (x *Hasher) MetaInfo(d digest.Digest) *MetaInfo {
	if x.inPiece > 0 {
		x.finishPiece()
	}
	return &MetaInfo{Digest: d, Size: x.total, PieceLength: x.pieceLength, Pieces: x.pieces}
}

// Compute reads a whole blob of the given size and returns its metainfo.
func Compute(d digest.Digest, r io.Reader, size int64) (*MetaInfo, error) {
	x := NewHasher(PieceLength(size))
	n, err := io.Copy(x, r)
	if err != nil {
		return nil, fmt.Errorf("metainfo of %s: %w", d, err)
	}
	if n != size {
		return nil, fmt.Errorf("metainfo of %s: read %d bytes, want %d", d, n, size)
	}
	return x.MetaInfo(d), nil
}
