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
		{0, 512 << 10},
		{1, 512 << 10},
		{128 << 20, 512 << 10},
		{1 << 30, 512 << 10},
		{1<<30 + 1, 1 << 20},
		{2 << 30, 1 << 20},
		{2<<30 + 1, 2 << 20},
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
	b := make([]byte, 2*MinPieceLength+123)
	rand.Read(b)
	d := digest.FromBytes(b)
	// Odd write sizes straddle piece boundaries.
	x := NewHasher(digest.SHA256, MinPieceLength)
	for off := 0; off < len(b); {
		n := min(len(b)-off, 1+off%77777)
		x.Write(b[off : off+n])
		off += n
	}
	got, err := x.MetaInfo(d)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Compute(d, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got.NumPieces() != 3 || !got.Equal(want) || len(got.Chain) != 2 {
		t.Fatalf("got %d pieces, %d chain states; equal %v", got.NumPieces(), len(got.Chain), got.Equal(want))
	}
	if off, n := got.PieceSpan(2); off != 2*MinPieceLength || n != 123 {
		t.Fatalf("last piece span %d+%d", off, n)
	}
	if got.VerifyPiece(0, b[:MinPieceLength-1]) || got.VerifyPiece(3, nil) || !got.VerifyPiece(2, b[2*MinPieceLength:]) {
		t.Fatal("VerifyPiece wrong")
	}
	if _, err := x.MetaInfo(digest.FromBytes([]byte("other"))); err == nil {
		t.Fatal("MetaInfo under the wrong digest")
	}
}

// A chain recorded at the smallest grain yields the chain at any coarser
// length, as if the blob had been hashed at that length.
func TestMetaInfoAtCoarserLength(t *testing.T) {
	const grain = 4 << 10
	b := make([]byte, 37*grain+5)
	rand.Read(b)
	d := digest.FromBytes(b)
	x := NewHasher(digest.SHA256, grain)
	x.Write(b)
	for _, pl := range []int64{grain, 2 * grain, 8 * grain, 64 * grain} {
		got, err := x.MetaInfoAt(d, pl)
		if err != nil {
			t.Fatal(err)
		}
		y := NewHasher(digest.SHA256, pl)
		y.Write(b)
		want, _ := y.MetaInfo(d)
		if !got.Equal(want) {
			t.Errorf("piece length %d: chain differs from one hashed at that length", pl)
		}
		for i := range got.NumPieces() {
			off, n := got.PieceSpan(i)
			if !got.VerifyPiece(i, b[off:off+n]) {
				t.Errorf("piece length %d: piece %d does not verify", pl, i)
			}
		}
	}
	for _, pl := range []int64{0, -grain, grain + 1, grain / 2} {
		if _, err := x.MetaInfoAt(d, pl); err == nil {
			t.Errorf("piece length %d accepted", pl)
		}
	}
}

// The chain's promise: pieces are checked in any order, each once, and
// only the exact bytes pass — every piece of every size, with either
// algorithm, and a single flipped bit anywhere fails its piece.
func TestChainVerifiesEachPieceAlone(t *testing.T) {
	const pl = 1024
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		for _, size := range []int{1, 63, 64, pl - 1, pl, pl + 1, 3 * pl, 5*pl + 77} {
			b := make([]byte, size)
			rand.Read(b)
			h := alg.Hash()
			h.Write(b)
			d := digest.FromHash(alg, h)
			x := NewHasher(alg, pl)
			x.Write(b)
			m, err := x.MetaInfo(d)
			if err != nil {
				t.Fatalf("%s size %d: %v", alg, size, err)
			}
			if len(m.Chain) != m.NumPieces()-1 {
				t.Fatalf("%s size %d: %d states for %d pieces", alg, size, len(m.Chain), m.NumPieces())
			}
			for i := m.NumPieces() - 1; i >= 0; i-- { // backwards: order does not matter
				off, n := m.PieceSpan(i)
				p := bytes.Clone(b[off : off+n])
				if !m.VerifyPiece(i, p) {
					t.Fatalf("%s size %d: piece %d rejected", alg, size, i)
				}
				p[len(p)/2] ^= 0x10
				if m.VerifyPiece(i, p) {
					t.Fatalf("%s size %d: flipped piece %d accepted", alg, size, i)
				}
			}
		}
	}
}

func TestRoundTripAndValidation(t *testing.T) {
	b := make([]byte, MinPieceLength+5)
	d := digest.FromBytes(b)
	m, err := Compute(d, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(enc)
	if err != nil || !back.Equal(m) {
		t.Fatalf("round trip: %v", err)
	}
	good := m.Proto()
	bad := []*shoalpb.MetaInfo{
		{Digest: "sha256:xyz", Size: good.Size, PieceLength: MinPieceLength, Chain: good.Chain},
		{Digest: good.Digest, Size: -1, PieceLength: MinPieceLength},
		{Digest: good.Digest, Size: good.Size, PieceLength: 1, Chain: good.Chain},
		{Digest: good.Digest, Size: good.Size, PieceLength: MinPieceLength},
		{Digest: good.Digest, Size: good.Size, PieceLength: MinPieceLength, Chain: [][]byte{{1, 2, 3}}},
		{Digest: good.Digest, Size: good.Size, PieceLength: MinPieceLength, Chain: append(good.Chain, good.Chain[0])},
		{Digest: good.Digest, Size: 1 << 40, PieceLength: PieceLength(1 << 40), Chain: good.Chain},
		// A sha512 digest needs 64-byte states.
		{Digest: digest.NewDigest(digest.SHA512, make([]byte, 64)).String(), Size: good.Size, PieceLength: MinPieceLength, Chain: good.Chain},
	}
	for i, p := range bad {
		if _, err := FromProto(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: FromProto = %v, want ErrInvalid", i, err)
		}
	}
	if _, err := Compute(digest.FromBytes([]byte("x")), bytes.NewReader(b), int64(len(b))); err == nil {
		t.Error("Compute accepted bytes that do not hash to the digest")
	}
}

func FuzzUnmarshal(f *testing.F) {
	b := make([]byte, MinPieceLength+1)
	m, _ := Compute(digest.FromBytes(b), bytes.NewReader(b), int64(len(b)))
	enc, _ := m.Marshal()
	f.Add(enc)
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Unmarshal(data)
		if err != nil {
			return
		}
		if len(m.Chain) != max(m.NumPieces()-1, 0) {
			t.Fatalf("accepted inconsistent metainfo")
		}
		m.VerifyPiece(0, nil) // never panics on accepted input
	})
}

// A piece checked in writes of any size passes exactly when its bytes, all
// of them and nothing more, were written.
func TestCheckPieceInChunks(t *testing.T) {
	b := make([]byte, 3*MinPieceLength+500)
	rand.Read(b)
	mi, err := Compute(digest.FromBytes(b), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	piece := func(i int) []byte { off, n := mi.PieceSpan(i); return append([]byte(nil), b[off:off+n]...) }
	flipped := piece(1)
	flipped[len(flipped)/2] ^= 1
	tests := []struct {
		name  string
		i     int
		data  []byte
		chunk int
		ok    bool
	}{
		{"first piece whole", 0, piece(0), MinPieceLength, true},
		{"middle piece in odd chunks", 2, piece(2), 9999, true},
		{"last piece", 3, piece(3), 7, true},
		{"flipped byte", 1, flipped, 4096, false},
		{"short", 1, piece(1)[:MinPieceLength-1], 4096, false},
		{"long", 3, append(piece(3), 0), 100, false},
		{"another piece's bytes", 1, piece(2), 4096, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := mi.CheckPiece(tt.i)
			if err != nil {
				t.Fatal(err)
			}
			for d := tt.data; len(d) > 0; {
				n := min(len(d), tt.chunk)
				c.Write(d[:n])
				d = d[n:]
			}
			if c.OK() != tt.ok {
				t.Fatalf("OK = %v, want %v", c.OK(), tt.ok)
			}
		})
	}
	if _, err := mi.CheckPiece(4); !errors.Is(err, ErrInvalid) {
		t.Fatalf("piece past the end: %v", err)
	}
}

// A prefix of the chain checks the pieces it covers and no others; the
// last piece needs every state before it. FromProto still wants it whole.
func TestPrefix(t *testing.T) {
	b := make([]byte, 3*MinPieceLength+77) // four pieces, three states
	rand.Read(b)
	d := digest.FromBytes(b)
	full, err := Compute(d, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	piece := func(i int) []byte {
		off, n := full.PieceSpan(i)
		return b[off : off+n]
	}
	for known := 0; known <= 3; known++ {
		p := full.Proto()
		p.Chain = p.Chain[:known]
		m, err := FromProtoPrefix(p)
		if err != nil {
			t.Fatalf("%d states: %v", known, err)
		}
		if _, err := FromProto(p); (err == nil) != (known == 3) {
			t.Errorf("%d states: FromProto err %v", known, err)
		}
		if m.Complete() != (known == 3) {
			t.Errorf("%d states: Complete %v", known, m.Complete())
		}
		for i := range 4 {
			want := i < known || (i == 3 && known == 3)
			if m.Verifiable(i) != want || m.VerifyPiece(i, piece(i)) != want {
				t.Errorf("%d states, piece %d: verifiable %v, verified %v, want %v", known, i, m.Verifiable(i), m.VerifyPiece(i, piece(i)), want)
			}
		}
	}
	p := full.Proto()
	p.Chain = append(p.Chain, p.Chain[0])
	if _, err := FromProtoPrefix(p); !errors.Is(err, ErrInvalid) {
		t.Errorf("a chain longer than the pieces: %v", err)
	}
}
