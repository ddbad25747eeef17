package p2p_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func newHost(t testing.TB, cfg p2p.HostConfig) host.Host { return p2ptest.NewHost(t, cfg) }

func connect(ctx context.Context, a, b host.Host) error {
	return a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()})
}

// serve answers requests on /shoal/pieces/1 from pieces.
func serve(h host.Host, pieces [][]byte) {
	h.SetStreamHandler(p2p.Protocol, func(s network.Stream) {
		defer s.Close()
		r, w := p2p.NewFrameReader(s), p2p.NewFrameWriter(s)
		r.SetBlob(len(pieces), int64(len(pieces[0])))
		for {
			m, err := r.Next()
			if err != nil {
				return
			}
			if req := m.GetRequest(); req != nil {
				if w.WritePiece(req.GetIndex(), pieces[req.GetIndex()]) != nil {
					return
				}
			}
		}
	})
}

// fetch asks for every piece on one stream and returns them; with reuse it
// reads every piece into one buffer, as an agent writing pieces to disk
// would, and returns nothing.
func fetch(ctx context.Context, t testing.TB, h host.Host, from peer.ID, n int, pieceLen int, reuse ...bool) [][]byte {
	t.Helper()
	s, err := h.NewStream(ctx, from, p2p.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, w := p2p.NewFrameReader(s), p2p.NewFrameWriter(s)
	r.SetBlob(n, int64(pieceLen))
	for i := range n {
		w.Write(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Request{Request: &shoalpb.Request{Index: uint32(i)}}})
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, n)
	scratch := make([]byte, pieceLen)
	for range n {
		m, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		buf := scratch[:r.PayloadLen()]
		if len(reuse) == 0 {
			buf = make([]byte, r.PayloadLen())
			out[m.GetPiece().GetIndex()] = buf
		}
		if err := r.ReadPayload(buf); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestPiecesOverTLS(t *testing.T) {
	seeder, leecher := newHost(t, p2p.HostConfig{}), newHost(t, p2p.HostConfig{})
	pieces := make([][]byte, 8)
	for i := range pieces {
		pieces[i] = bytes.Repeat([]byte{byte(i)}, 1<<16)
	}
	serve(seeder, pieces)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := connect(ctx, leecher, seeder); err != nil {
		t.Fatal(err)
	}
	got := fetch(ctx, t, leecher, seeder.ID(), len(pieces), 1<<16)
	for i := range pieces {
		if sha256.Sum256(got[i]) != sha256.Sum256(pieces[i]) {
			t.Fatalf("piece %d differs", i)
		}
	}
	// The connection is authenticated TLS 1.3: the remote key is the
	// peer ID we dialled.
	conns := leecher.Network().ConnsToPeer(seeder.ID())
	if len(conns) == 0 || conns[0].ConnState().Security != "/tls/1.0.0" {
		t.Fatalf("connection security %+v", conns)
	}
}

func TestPeerIDSurvivesRestart(t *testing.T) {
	key := filepath.Join(t.TempDir(), "keys", "peer.key")
	a := newHost(t, p2p.HostConfig{KeyFile: key})
	id := a.ID()
	a.Close()
	b := newHost(t, p2p.HostConfig{KeyFile: key})
	if b.ID() != id {
		t.Fatalf("peer ID changed across restart: %s → %s", id, b.ID())
	}
	if other := newHost(t, p2p.HostConfig{}); other.ID() == id {
		t.Fatal("two keys, one ID")
	}
}

// Only hosts with the cluster's private-network key can connect.
func TestPrivateNetwork(t *testing.T) {
	dir := t.TempDir()
	pskA, pskB := filepath.Join(dir, "a.psk"), filepath.Join(dir, "b.psk")
	if err := p2p.WritePSK(pskA); err != nil {
		t.Fatal(err)
	}
	if err := p2p.WritePSK(pskB); err != nil {
		t.Fatal(err)
	}
	member := newHost(t, p2p.HostConfig{PSKFile: pskA})
	tests := []struct {
		name string
		cfg  p2p.HostConfig
		ok   bool
	}{
		{"same key", p2p.HostConfig{PSKFile: pskA}, true},
		{"other key", p2p.HostConfig{PSKFile: pskB}, false},
		{"no key", p2p.HostConfig{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := connect(ctx, newHost(t, tt.cfg), member)
			if (err == nil) != tt.ok {
				t.Fatalf("connect: %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := p2p.NewHost(p2p.HostConfig{PSKFile: pskA, QUIC: true}, nil); err == nil {
		t.Fatal("QUIC with a private-network key accepted")
	}
	if _, err := p2p.NewHost(p2p.HostConfig{PSKFile: filepath.Join(dir, "missing")}, nil); err == nil {
		t.Fatal("missing PSK file accepted")
	}
}
