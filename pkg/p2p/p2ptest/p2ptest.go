// Package p2ptest has what tests of piece transfer need: real libp2p hosts
// on loopback and blobs held in memory.
package p2ptest

import (
	"context"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// NewHost starts a host on a loopback port, closed with the test.
func NewHost(t testing.TB, cfg p2p.HostConfig) host.Host {
	t.Helper()
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	h, err := p2p.NewHost(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Blob is a complete blob in memory. A Blob with Corrupt set serves
// every piece with one byte flipped, as a lying peer would.
type Blob struct {
	Data    []byte
	MI      *metainfo.MetaInfo
	Corrupt bool
}

// NewBlob returns size random bytes cut into pieces of pieceLen.
func NewBlob(size int, pieceLen int64) *Blob {
	b := make([]byte, size)
	// ChaCha8: random enough for test data, and gigabytes in a second.
	var seed [32]byte
	rand.Read(seed[:])
	mrand.NewChaCha8(seed).Read(b)
	x := metainfo.NewHasher(digest.SHA256, pieceLen)
	x.Write(b)
	mi, err := x.MetaInfo(digest.FromBytes(b))
	if err != nil {
		panic(err) // the hash state layout changed: metainfo's tests say how
	}
	return &Blob{Data: b, MI: mi}
}

// MetaInfo implements p2p.Blob.
func (b *Blob) MetaInfo() *metainfo.MetaInfo { return b.MI }

// Bitfield implements p2p.Blob: complete.
func (b *Blob) Bitfield() ([]byte, bool) { return nil, true }

// ReadAt implements p2p.Blob.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, b.Data[off:])
	if b.Corrupt && n > 0 {
		p[0] ^= 0xff
	}
	return n, nil
}

// Blobs is a set of blobs by digest.
type Blobs map[digest.Digest]p2p.Blob

// Lookup implements p2p.Blobs.
func (s Blobs) Lookup(d digest.Digest) (p2p.Blob, bool) { b, ok := s[d]; return b, ok }

// Empty is what a peer holding nothing of mi announces.
type Empty struct{ MI *metainfo.MetaInfo }

// MetaInfo implements p2p.Blob.
func (e Empty) MetaInfo() *metainfo.MetaInfo { return e.MI }

// Bitfield implements p2p.Blob.
func (e Empty) Bitfield() ([]byte, bool) { return make([]byte, (e.MI.NumPieces()+7)/8), false }

// ReadAt implements p2p.Blob.
func (e Empty) ReadAt([]byte, int64) (int, error) { return 0, errors.New("nothing held") }

// FetchPiece asks info for piece 0 of mi from h, presenting c: true if a
// piece came and verified. A piece that arrives and does not verify fails
// the test.
func FetchPiece(t testing.TB, h host.Host, info peer.AddrInfo, mi *metainfo.MetaInfo, c *shoalpb.Capability) (bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := p2p.Dial(ctx, h, info, mi, Empty{MI: mi}, p2p.WithCapability(c))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if err := conn.Request(0); err != nil {
		return false, err
	}
	buf := make([]byte, mi.PieceLength)
	for {
		ev, err := conn.Next(buf)
		if err != nil {
			return false, err
		}
		switch {
		case ev.Busy:
			time.Sleep(ev.RetryAfter)
			conn.Request(0)
		case ev.Have:
		case ev.Piece != 0:
			t.Fatalf("asked for piece 0, got %d", ev.Piece)
		case !mi.VerifyPiece(0, ev.Data):
			t.Fatal("piece 0 arrived corrupt")
		default:
			return true, nil
		}
	}
}
