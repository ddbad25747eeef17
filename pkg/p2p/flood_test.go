package p2p_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	"github.com/shoal-project/shoal/pkg/uplink"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// TestSeederMemoryBoundedUnderStreamFlood: fresh identities open many
// streams to a seeder of a blob cut in 8 MiB pieces, ask for pieces and
// never read them. The seeder's heap grows by less than its upload slots'
// worth of pieces however many streams there are, what it holds is
// reserved with libp2p's resource manager, and all of it is returned when
// the streams go.
func TestSeederMemoryBoundedUnderStreamFlood(t *testing.T) {
	const pieceLen = 8 << 20
	blob := p2ptest.NewBlob(8*pieceLen, pieceLen)
	seedHost := newHost(t, p2p.HostConfig{})
	s := p2p.NewSeeder(seedHost, p2ptest.Blobs{blob.MI.Digest: blob}, nil, nil)
	var busy atomic.Int64
	s.Busy = func() { busy.Add(1) }
	mih, err := p2p.MetaInfoHash(blob.MI)
	if err != nil {
		t.Fatal(err)
	}
	// The handshake and two requests, in one write, as a flooder sends.
	var hello []byte
	hello = appendFrame(hello, &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Handshake{Handshake: &shoalpb.Handshake{
		Digest: blob.MI.Digest.String(), MetainfoHash: mih, Have: &shoalpb.Handshake_Bitfield{Bitfield: make([]byte, 1)}}}})
	for i := range 2 {
		hello = appendFrame(hello, &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Request{Request: &shoalpb.Request{Index: uint32(i)}}})
	}
	// Slots' worth of whole pieces would be within bounds; the margin is
	// for what every stream costs whatever the piece length (goroutines,
	// frame buffers, yamux), both ends of it being in this process.
	const bound = uplink.DefaultSlots*pieceLen + 32<<20

	tests := []struct {
		name           string
		peers, streams int
	}{
		{"3 peers x 10 streams", 3, 10},
		{"3 peers x 40 streams", 3, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			peers := make([]host.Host, tt.peers)
			for i := range peers {
				peers[i] = newHost(t, p2p.HostConfig{}) // a fresh identity each
				if err := connect(ctx, peers[i], seedHost); err != nil {
					t.Fatal(err)
				}
			}
			before := heapInUse()
			busy0 := busy.Load()
			var streams []network.Stream
			for _, h := range peers {
				for range tt.streams {
					st, err := h.NewStream(ctx, seedHost.ID(), p2p.Protocol)
					if err != nil {
						t.Fatal(err)
					}
					streams = append(streams, st)
					if _, err := st.Write(hello); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Each stream's handshake is answered, and every request the
			// uplink has no room for is refused busy: the seeder has seen
			// them all.
			for _, st := range streams {
				if err := skipFrame(st); err != nil {
					t.Fatalf("handshake answer: %v", err)
				}
			}
			want := int64(2*len(streams) - uplink.DefaultSlots - uplink.DefaultQueue)
			for busy.Load()-busy0 < want {
				if ctx.Err() != nil {
					t.Fatalf("%d busy answers, want %d", busy.Load()-busy0, want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			grew := int64(heapInUse()) - int64(before)
			reserved := protocolMemory(t, seedHost)
			t.Logf("%d streams: heap grew %.1f MiB (bound %d MiB), %d KiB reserved with the resource manager",
				len(streams), float64(grew)/(1<<20), bound>>20, reserved>>10)
			if grew > bound {
				t.Fatalf("heap grew %d MiB with %d streams, bound %d MiB", grew>>20, len(streams), bound>>20)
			}
			if reserved <= 0 {
				t.Fatal("the seeder reserved nothing with the resource manager")
			}
			for _, st := range streams {
				st.Reset()
			}
			for protocolMemory(t, seedHost) != 0 {
				if ctx.Err() != nil {
					t.Fatalf("%d bytes still reserved after every stream ended", protocolMemory(t, seedHost))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// protocolMemory is what h's streams of the piece protocol hold reserved.
func protocolMemory(t *testing.T, h host.Host) int64 {
	t.Helper()
	var mem int64
	err := h.Network().ResourceManager().ViewProtocol(p2p.Protocol, func(s network.ProtocolScope) error {
		mem = s.Stat().Memory
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// appendFrame appends m as a frame; the flood writes raw frames so that
// its own side costs little next to the seeder's.
func appendFrame(b []byte, m *shoalpb.PieceMessage) []byte {
	h, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append(binary.AppendUvarint(b, uint64(len(h))), h...)
}

// skipFrame reads one header frame (no payload) through a small buffer.
func skipFrame(st network.Stream) error {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(st, 16)
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	_, err = io.CopyN(io.Discard, r, int64(n))
	return err
}
