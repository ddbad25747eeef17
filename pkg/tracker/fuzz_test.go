package tracker

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalpb "github.com/shoal-project/shoal/proto"
)

// FuzzAnnounce feeds arbitrary bytes to the announce path as gRPC would:
// decode, validate, record, select. Nothing may panic, and an accepted
// announce never hands the asker itself.
func FuzzAnnounce(f *testing.F) {
	seed := func(r *shoalpb.AnnounceRequest) {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	seed(&shoalpb.AnnounceRequest{Digest: "sha256:" + string(make([]byte, 0)), Peer: &shoalpb.Peer{Id: "a"}})
	seed(&shoalpb.AnnounceRequest{
		Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000001",
		Peer:   &shoalpb.Peer{Id: "a", Addrs: []string{"/ip4/1.2.3.4/tcp/1"}, Labels: &shoalpb.Labels{Zone: "z"}},
		Have:   &shoalpb.AnnounceRequest_Bitfield{Bitfield: []byte{0xff, 0x01}},
	})
	seed(&shoalpb.AnnounceRequest{
		Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000001",
		Peer:   &shoalpb.Peer{Id: "b", Origin: true},
		Have:   &shoalpb.AnnounceRequest_Complete{Complete: true}, MaxPeers: 1 << 30,
	})
	srv := New(Config{PeerAnnounceRate: 1e9, PeerAnnounceBurst: 1 << 30, MaxPeerEntries: 1 << 16})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req shoalpb.AnnounceRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		resp, err := srv.Announce(context.Background(), &req)
		if err != nil {
			return
		}
		for _, p := range resp.GetPeers() {
			if p.GetId() == req.GetPeer().GetId() {
				t.Fatalf("asker handed itself: %v", p)
			}
		}
		if len(resp.GetPeers()) > srv.cfg.MaxPeers {
			t.Fatalf("%d peers", len(resp.GetPeers()))
		}
	})
}
