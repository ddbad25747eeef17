package metainfo

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func TestPieceLength(t *testing.T) {
	tests := []struct {
		size int64
		want int64
	}{
		{0, 4 << 20},
		{1, 4 << 20},
		{1 << 30, 4 << 20},
		{8 << 30, 4 << 20},
		{8<<30 + 1, 8 << 20},
		{20 << 30, 16 << 20},
		{32 << 30, 16 << 20},
		{32<<30 + 1, 32 << 20},
	}
	for _, tt := range tests {
		if got := PieceLength(tt.size); got != tt.want {
			t.Errorf("PieceLength(%d) = %d, want %d", tt.size, got, tt.want)
		}
		if n := NumPieces(tt.size, PieceLength(tt.size)); n > MaxPieces {
			t.Errorf("size %d has %d pieces", tt.size, n)
		}
	}
}

func TestHasherMatchesCompute(t *testing.T) {
	b := make([]byte, 2*DefaultPieceLength+123)
	rand.Read(b)
	d := digest.FromBytes(b)
	// Odd write sizes straddle piece boundaries.
	x := NewHasher(DefaultPieceLength)
	for off := 0; off < len(b); {
		n := min(len(b)-off, 1+off%77777)
		x.Write(b[off : off+n])
		off += n
	}
	got := x.MetaInfo(d)
	want, err := Compute(d, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got.NumPieces() != 3 || got.Size != want.Size {
		t.Fatalf("got %d pieces size %d", got.NumPieces(), got.Size)
	}
	for i := range want.Pieces {
		if got.Pieces[i] != want.Pieces[i] {
			t.Fatalf("piece %d differs", i)
		}
	}
	if off, n := got.PieceSpan(2); off != 2*DefaultPieceLength || n != 123 {
		t.Fatalf("last piece span %d+%d", off, n)
	}
	if got.VerifyPiece(0, b[:DefaultPieceLength-1]) || got.VerifyPiece(3, nil) || !got.VerifyPiece(2, b[2*DefaultPieceLength:]) {
		t.Fatal("VerifyPiece wrong")
	}
}

func TestRoundTripAndValidation(t *testing.T) {
	b := []byte("hello pieces")
	d := digest.FromBytes(b)
	m, _ := Compute(d, bytes.NewReader(b), int64(len(b)))
	enc, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(enc)
	if err != nil || back.Digest != d || back.Pieces[0] != m.Pieces[0] {
		t.Fatalf("round trip: %v", err)
	}
	good := m.Proto()
	bad := []*shoalpb.MetaInfo{
		{Digest: "sha256:xyz", Size: 1, PieceLength: DefaultPieceLength, PieceSha256: good.PieceSha256},
		{Digest: good.Digest, Size: -1, PieceLength: DefaultPieceLength},
		{Digest: good.Digest, Size: good.Size, PieceLength: 1, PieceSha256: good.PieceSha256},
		{Digest: good.Digest, Size: good.Size, PieceLength: DefaultPieceLength},
		{Digest: good.Digest, Size: good.Size, PieceLength: DefaultPieceLength, PieceSha256: [][]byte{{1, 2, 3}}},
		{Digest: good.Digest, Size: 1 << 40, PieceLength: PieceLength(1 << 40), PieceSha256: good.PieceSha256},
	}
	for i, p := range bad {
		if _, err := FromProto(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: FromProto = %v, want ErrInvalid", i, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	b := []byte("seed")
	m, _ := Compute(digest.FromBytes(b), bytes.NewReader(b), int64(len(b)))
	enc, _ := m.Marshal()
	f.Add(enc)
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Unmarshal(data)
		if err != nil {
			return
		}
		if m.NumPieces() != NumPieces(m.Size, m.PieceLength) {
			t.Fatalf("accepted inconsistent metainfo")
		}
	})
}
