package p2p_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/piecefile"
)

// memBlob is a complete blob in memory.
type memBlob struct {
	data []byte
	mi   *metainfo.MetaInfo
}

func newMemBlob(t testing.TB, size int, pieceLen int64) *memBlob {
	b := make([]byte, size)
	rand.Read(b)
	mi := &metainfo.MetaInfo{Digest: digest.FromBytes(b), Size: int64(size), PieceLength: pieceLen}
	for off := int64(0); off < int64(size); off += pieceLen {
		mi.Pieces = append(mi.Pieces, sha256.Sum256(b[off:min(off+pieceLen, int64(size))]))
	}
	return &memBlob{b, mi}
}

func (m *memBlob) MetaInfo() *metainfo.MetaInfo            { return m.mi }
func (m *memBlob) Bitfield() ([]byte, bool)                { return nil, true }
func (m *memBlob) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.data[off:]), nil }

type blobSet map[digest.Digest]p2p.Blob

func (s blobSet) Lookup(d digest.Digest) (p2p.Blob, bool) { b, ok := s[d]; return b, ok }

// empty is what a leecher with nothing yet announces.
type empty struct{ mi *metainfo.MetaInfo }

func (e empty) MetaInfo() *metainfo.MetaInfo      { return e.mi }
func (e empty) Bitfield() ([]byte, bool)          { return make([]byte, (e.mi.NumPieces()+7)/8), false }
func (e empty) ReadAt([]byte, int64) (int, error) { return 0, errors.New("nothing held") }

func seederAndLeecher(t *testing.T, blobs blobSet, upload *rate.Limiter) (*p2p.Seeder, peer.AddrInfo, func(context.Context, *metainfo.MetaInfo) (*p2p.Conn, error)) {
	seedHost, leechHost := newHost(t, p2p.HostConfig{}), newHost(t, p2p.HostConfig{})
	s := p2p.NewSeeder(seedHost, blobs, upload, nil)
	info := peer.AddrInfo{ID: seedHost.ID(), Addrs: seedHost.Addrs()}
	return s, info, func(ctx context.Context, mi *metainfo.MetaInfo) (*p2p.Conn, error) {
		return p2p.Dial(ctx, leechHost, info, mi, empty{mi})
	}
}

func TestDownloadOverSession(t *testing.T) {
	blob := newMemBlob(t, 1<<20+123, 64<<10)
	_, _, dial := seederAndLeecher(t, blobSet{blob.mi.Digest: blob}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dial(ctx, blob.mi)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Complete {
		t.Fatal("seeder did not say complete")
	}
	pf, err := piecefile.Open(t.TempDir(), blob.mi)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	for i := range blob.mi.NumPieces() {
		if err := c.Request(i); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, blob.mi.PieceLength)
	for range blob.mi.NumPieces() {
		ev, err := c.Next(buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := pf.WritePiece(ev.Piece, ev.Data); err != nil {
			t.Fatal(err)
		}
	}
	if !pf.Complete() {
		t.Fatal("download incomplete")
	}
}

func TestSessionRefusals(t *testing.T) {
	blob := newMemBlob(t, 300_000, 64<<10)
	_, _, dial := seederAndLeecher(t, blobSet{blob.mi.Digest: blob}, nil)
	other := newMemBlob(t, 1000, 64<<10)
	relaid := *blob.mi
	relaid.PieceLength = 32 << 10 // same blob, different cut
	tests := []struct {
		name string
		mi   *metainfo.MetaInfo
		code string
	}{
		{"blob not held", other.mi, "not_found"},
		{"different piece layout", &relaid, "metainfo_mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := dial(ctx, tt.mi)
			if !errors.Is(err, p2p.ErrRemote) || !bytes.Contains([]byte(err.Error()), []byte(tt.code)) {
				t.Fatalf("err = %v, want %s", err, tt.code)
			}
		})
	}
	// The seeder still serves after refusing.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx, blob.mi)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// The upload limiter paces a seeder: 1 MiB at 4 MiB/s takes at least
// about a quarter second (less what refills while the stream opens).
func TestUploadPaced(t *testing.T) {
	blob := newMemBlob(t, 2<<20, 256<<10)
	lim := rate.NewLimiter(4<<20, 1<<20)
	lim.WaitN(context.Background(), 1<<20) // spend the burst
	var sent atomic.Int64
	s, _, dial := seederAndLeecher(t, blobSet{blob.mi.Digest: blob}, lim)
	s.Uploaded = func(n int) { sent.Add(int64(n)) }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dial(ctx, blob.mi)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	for i := range 4 {
		c.Request(i)
	}
	buf := make([]byte, blob.mi.PieceLength)
	for range 4 {
		if _, err := c.Next(buf); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("1 MiB at 4 MiB/s took %s", d)
	}
	if sent.Load() != 1<<20 {
		t.Fatalf("Uploaded counted %d bytes", sent.Load())
	}
}

// A peer that breaks the protocol loses its connection.
func TestSeederDropsViolators(t *testing.T) {
	blob := newMemBlob(t, 100_000, 64<<10)
	seedHost, rogue := newHost(t, p2p.HostConfig{}), newHost(t, p2p.HostConfig{})
	p2p.NewSeeder(seedHost, blobSet{blob.mi.Digest: blob}, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := connect(ctx, rogue, seedHost); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		send []byte
	}{
		{"zero-length header", []byte{0}},
		{"oversized header", []byte{0xff, 0xff, 0x03}},
		{"request before handshake", []byte{2, 0x1a, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := rogue.NewStream(ctx, seedHost.ID(), p2p.Protocol)
			if err != nil {
				t.Fatal(err)
			}
			st.Write(tt.send)
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := st.Read(make([]byte, 100)); err == nil {
				t.Fatalf("seeder answered %d bytes", n)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(rogue.Network().ConnsToPeer(seedHost.ID())) > 0 && tt.name != "request before handshake" {
				if time.Now().After(deadline) {
					t.Fatal("connection kept after a protocol violation")
				}
				time.Sleep(10 * time.Millisecond)
			}
			connect(ctx, rogue, seedHost)
		})
	}
}
