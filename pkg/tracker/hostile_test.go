package tracker_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-project/shoal/pkg/peerproof"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// dialFrom connects to a tracker from a given loopback IP (all of
// 127.0.0.0/8 is this host on Linux), so tests can play several hosts.
func dialFrom(t *testing.T, addr, ip string) *trackertest.NamedClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return trackertest.Named(shoalpb.NewTrackerClient(conn))
}

// peerOf finds id among the peers of r.
func peerOf(r *shoalpb.AnnounceResponse, id string) *shoalpb.Peer {
	for _, p := range r.GetPeers() {
		if p.GetId() == id {
			return p
		}
	}
	return nil
}

// No one speaks for another peer: an announce must be signed with the key
// of the peer it names, and a forged one changes nothing.
func TestAnnounceNeedsThePeersKey(t *testing.T) {
	tr := trackertest.Start(t, nil, tracker.Config{}, nil)
	raw := tr.Client.TrackerClient
	d := dgst(1)
	victim := tr.Client.ID("victim")
	mustAnnounce(t, tr.Client, announce(d, "victim", true))

	forged := func(mutate func(*shoalpb.AnnounceRequest)) *shoalpb.AnnounceRequest {
		r := &shoalpb.AnnounceRequest{Digest: d, Peer: &shoalpb.Peer{Id: victim, Addrs: []string{"/ip4/127.0.0.1/tcp/6666"}},
			Have: &shoalpb.AnnounceRequest_Complete{Complete: true}}
		mutate(r)
		return r
	}
	mallory := tr.Client.Key("mallory")
	sign := func(r *shoalpb.AnnounceRequest, at time.Time) {
		p, err := peerproof.Sign(mallory, r.Peer.Addrs, at)
		if err != nil {
			t.Fatal(err)
		}
		r.Proof = p
	}
	victimProof, err := peerproof.Sign(tr.Client.Key("victim"), []string{"/ip4/127.0.0.1/tcp/4001"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *shoalpb.AnnounceRequest
	}{
		{"unsigned", forged(func(*shoalpb.AnnounceRequest) {})},
		{"signed by another key", forged(func(r *shoalpb.AnnounceRequest) { sign(r, time.Now()) })},
		{"victim's proof replayed with other addresses", forged(func(r *shoalpb.AnnounceRequest) { r.Proof = victimProof })},
		{"stale", forged(func(r *shoalpb.AnnounceRequest) {
			r.Proof, _ = peerproof.Sign(tr.Client.Key("victim"), r.Peer.Addrs, time.Now().Add(-time.Hour))
		})},
		{"garbage key", forged(func(r *shoalpb.AnnounceRequest) {
			r.Proof = &shoalpb.PeerProof{PublicKey: []byte("not a key"), UnixSeconds: time.Now().Unix(), Signature: []byte("x")}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := raw.Announce(context.Background(), tt.req)
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("err = %v, want Unauthenticated", err)
			}
			batch := &shoalpb.AnnounceBatchRequest{Announces: []*shoalpb.AnnounceRequest{tt.req}, Proof: tt.req.Proof}
			if _, err := raw.AnnounceBatch(context.Background(), batch); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("batch: err = %v, want Unauthenticated", err)
			}
		})
	}
	// A batch signed by mallory cannot carry an announce for the victim.
	mine := announce(d, "mallory", false)
	mine.Peer.Id = tr.Client.ID("mallory")
	theirs := forged(func(*shoalpb.AnnounceRequest) {})
	batch := &shoalpb.AnnounceBatchRequest{Announces: []*shoalpb.AnnounceRequest{mine, theirs}}
	batch.Proof, _ = peerproof.Sign(mallory, mine.Peer.Addrs, time.Now())
	if _, err := raw.AnnounceBatch(context.Background(), batch); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mixed batch: err = %v, want InvalidArgument", err)
	}

	r := mustAnnounce(t, tr.Client, announce(d, "observer", false))
	p := peerOf(r, "victim")
	if p == nil || !slices.Equal(p.GetAddrs(), []string{"/ip4/127.0.0.1/tcp/4001"}) {
		t.Fatalf("victim handed out as %v, want its own address", p)
	}
	if n := counter(t, tr.Registry, "shoal_tracker_announce_refusals_total", map[string]string{"reason": "bad_proof"}); n < float64(2*len(tests)) {
		t.Fatalf("bad_proof refusals counted %v, want at least %d", n, 2*len(tests))
	}
}

// A peer is handed out only at addresses on the IP it announced from, and
// never as an origin: the tracker cannot be made to send agents to a host
// of an attacker's choosing.
func TestAnnouncedAddressesAreTheCallers(t *testing.T) {
	tr := trackertest.Start(t, nil, tracker.Config{}, nil)
	d := dgst(2)
	req := announce(d, "liar", true)
	req.Peer.Origin = true
	req.Peer.Addrs = []string{"/dns4/victim.example.com/tcp/443", "/ip4/10.9.9.9/tcp/443", "/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001", "garbage"}
	mustAnnounce(t, tr.Client, req)
	// The same peer calling from another IP keeps only that IP's address.
	moved := announce(d, "mover", true)
	moved.Peer.Addrs = []string{"/ip4/127.0.0.1/tcp/4002", "/ip4/127.0.0.3/tcp/4002"}
	mustAnnounce(t, dialFrom(t, tr.Addr, "127.0.0.3"), moved)

	r := mustAnnounce(t, tr.Client, announce(d, "asker", false))
	liar := peerOf(r, "liar")
	if liar == nil || liar.GetOrigin() || !slices.Equal(liar.GetAddrs(), []string{"/ip4/127.0.0.1/tcp/4001"}) {
		t.Fatalf("liar handed out as %v, want only /ip4/127.0.0.1/tcp/4001 and no origin flag", liar)
	}
	if m := peerOf(r, "mover"); m == nil || !slices.Equal(m.GetAddrs(), []string{"/ip4/127.0.0.3/tcp/4002"}) {
		t.Fatalf("mover handed out as %v, want only its caller's address", m)
	}
	if n := counter(t, tr.Registry, "shoal_tracker_announce_refusals_total", map[string]string{"reason": "foreign_addr"}); n != 5 {
		t.Fatalf("foreign addresses dropped: %v, want 5", n)
	}
}

// Limits are charged per blob announced and per caller IP: new peer IDs
// (a key each, free to make) and big batches buy no more than one peer
// gets, and a host that floods cannot lock the others out of the table.
func TestAnnounceFloodsAreBounded(t *testing.T) {
	cfg := tracker.Config{
		PeerAnnounceRate: 10, PeerAnnounceBurst: 200,
		IPAnnounceRate: 20, IPAnnounceBurst: 400,
		MaxEntriesPerIP: 300,
	}
	batch := func(name string, first, n int) *shoalpb.AnnounceBatchRequest {
		b := &shoalpb.AnnounceBatchRequest{}
		for i := range n {
			b.Announces = append(b.Announces, announce(dgst(first+i), name, false))
		}
		return b
	}
	accepted := func(c shoalpb.TrackerClient, b *shoalpb.AnnounceBatchRequest) int {
		_, err := c.AnnounceBatch(context.Background(), b)
		switch status.Code(err) {
		case codes.OK:
			return len(b.Announces)
		case codes.ResourceExhausted:
			return 0
		}
		t.Fatalf("batch: %v", err)
		return 0
	}

	t.Run("one ID batching", func(t *testing.T) {
		tr := trackertest.Start(t, nil, cfg, nil)
		start, got := time.Now(), 0
		for i := range 1000 { // 100,000 announces in a few seconds
			got += accepted(tr.Client, batch("batcher", i*100, 100))
		}
		if limit := 200 + int(10*time.Since(start).Seconds()) + 10; got > limit {
			t.Fatalf("one peer got %d announces through, limit %d", got, limit)
		}
	})
	t.Run("rotating IDs from one IP", func(t *testing.T) {
		tr := trackertest.Start(t, nil, cfg, nil)
		start, got := time.Now(), 0
		for i := range 200 {
			got += accepted(tr.Client, batch(fmt.Sprintf("rotor-%d", i), i*10, 10))
		}
		if limit := 400 + int(20*time.Since(start).Seconds()) + 20; got > limit {
			t.Fatalf("200 IDs on one IP got %d announces through, limit %d", got, limit)
		}
		// Another host is not held back by the flood.
		mustAnnounce(t, dialFrom(t, tr.Addr, "127.0.0.2"), announce(dgst(1), "honest", false))
	})
	t.Run("a host filling the table", func(t *testing.T) {
		c := cfg
		c.IPAnnounceRate, c.IPAnnounceBurst = 1e6, 1e6
		c.PeerAnnounceRate, c.PeerAnnounceBurst = 1e6, 1e6
		tr := trackertest.Start(t, nil, c, nil)
		got := 0
		for i := range 10 {
			got += accepted(tr.Client, batch(fmt.Sprintf("filler-%d", i), 0, 100))
		}
		if got > 300 {
			t.Fatalf("one IP holds %d entries, its share is 300", got)
		}
		honest := announce(dgst(5), "honest", false)
		honest.Peer.Addrs = []string{"/ip4/127.0.0.2/tcp/4001"}
		mustAnnounce(t, dialFrom(t, tr.Addr, "127.0.0.2"), honest)
		if n := counter(t, tr.Registry, "shoal_tracker_announce_refusals_total", map[string]string{"reason": "ip_entries"}); n == 0 {
			t.Fatal("no ip_entries refusal counted")
		}
	})
}
