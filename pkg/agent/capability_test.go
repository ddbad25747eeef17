package agent_test

import (
	"bytes"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// capabilityKeys makes a cluster capability key pair and writes it as
// openssl would: the private key for origins, the public one for agents.
func capabilityKeys(t *testing.T) (priv ed25519.PrivateKey, keyFile, pubFile string) {
	t.Helper()
	dir := t.TempDir()
	keyFile, pubFile = filepath.Join(dir, "capability.key"), filepath.Join(dir, "capability.pub")
	priv, err := capability.WriteKeyPair(keyFile, pubFile)
	if err != nil {
		t.Fatal(err)
	}
	return priv, keyFile, pubFile
}

// TestPiecesNeedACapability (issue #13 row 7): with a capability key
// configured, a normal swarm download still works — the first agent from
// the origin's seeder, the second from the first — while a fresh libp2p
// identity gets "forbidden" and no piece from an agent or from the
// origin's seeder unless it presents a capability for itself, for that
// blob, unexpired and signed by the cluster.
func TestPiecesNeedACapability(t *testing.T) {
	priv, keyFile, pubFile := capabilityKeys(t)
	o := origintest.Start(t, origin.Config{CapabilityKeyFile: keyFile})
	oh := p2ptest.NewHost(t, p2p.HostConfig{})
	s := p2p.NewSeeder(oh, o.Server.Seedable(), nil, nil)
	s.Capabilities = o.Server.Capabilities()
	s.Forbidden = o.Server.CountForbidden
	s.EnableSuperSeeding()
	tr := trackertest.Start(t, nil, tracker.Config{Interval: time.Second}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host, PeerID: oh.ID().String(), P2PAddrs: p2p.Addrs(oh)}}))})
	layer := random(3<<20 + 7)
	image(t, o.URL, layer)
	mi, err := metainfo.Compute(digest.FromBytes(layer), bytes.NewReader(layer), int64(len(layer)))
	if err != nil {
		t.Fatal(err)
	}

	cfg := agent.Config{CapabilityPublicKeyFile: pubFile}
	first := startAgent(t, tr.Addr, o.URL, cfg)
	getAll(t, []string{first.url}, layer)
	if got := first.counter(t, "shoal_agent_peer_bytes_total"); got == 0 {
		t.Fatal("the first agent got nothing from the origin's seeder: its capability was not taken")
	}
	second := startAgent(t, tr.Addr, o.URL, cfg)
	getAll(t, []string{second.url}, layer)
	if got := second.counter(t, "shoal_agent_peer_bytes_total"); got < float64(len(layer)) {
		t.Fatalf("the second agent got %v bytes from peers, want the whole layer (%d)", got, len(layer))
	}

	intruder := p2ptest.NewHost(t, p2p.HostConfig{})
	cluster := capability.NewIssuer(priv)
	_, strangerKey, _ := ed25519.GenerateKey(nil)
	future := time.Now().Add(time.Hour)
	firstID, _ := peer.Decode(first.PeerID())
	tests := []struct {
		name string
		cap  *shoalpb.Capability
		ok   bool
	}{
		{"none", nil, false},
		{"issued to another peer", cluster.Issue(mi.Digest, firstID, future), false},
		{"for another blob", cluster.Issue(digest.FromBytes([]byte("another blob")), intruder.ID(), future), false},
		{"expired", cluster.Issue(mi.Digest, intruder.ID(), time.Now().Add(-time.Second)), false},
		{"signed by another key", capability.NewIssuer(strangerKey).Issue(mi.Digest, intruder.ID(), future), false},
		{"valid", cluster.Issue(mi.Digest, intruder.ID(), future), true},
	}
	seeders := []struct {
		name string
		info peer.AddrInfo
	}{
		{"agent", agentInfo(t, first)},
		{"origin", peer.AddrInfo{ID: oh.ID(), Addrs: oh.Addrs()}},
	}
	for _, sd := range seeders {
		for _, tt := range tests {
			t.Run(sd.name+"/"+tt.name, func(t *testing.T) {
				got, err := p2ptest.FetchPiece(t, intruder, sd.info, mi, tt.cap)
				if tt.ok && !got {
					t.Fatalf("a valid capability got no piece: %v", err)
				}
				if !tt.ok && (got || err == nil || !strings.Contains(err.Error(), "forbidden")) {
					t.Fatalf("got a piece: %v, err %v; want forbidden and nothing", got, err)
				}
			})
		}
	}
}

func agentInfo(t *testing.T, a testAgent) peer.AddrInfo {
	t.Helper()
	id, err := peer.Decode(a.PeerID())
	if err != nil {
		t.Fatal(err)
	}
	info := peer.AddrInfo{ID: id}
	for _, s := range a.Addrs() {
		info.Addrs = append(info.Addrs, ma.StringCast(s))
	}
	return info
}

// TestCapabilityIssuedLikeAPull: the origin issues a capability exactly
// to whom it would serve the blob from that repository.
func TestCapabilityIssuedLikeAPull(t *testing.T) {
	_, keyFile, pubFile := capabilityKeys(t)
	o := privateOrigin(t, auth.ModeHtpasswd, func(c *origin.Config) { c.CapabilityKeyFile = keyFile })
	layer := random(1000)
	imageAs(t, o.URL, "team/app", basicAuth("ci"), layer)
	imageAs(t, o.URL, "team/other", basicAuth("ci"), random(1000))
	pub, err := capability.LoadPublicKey(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	me := p2ptest.NewHost(t, p2p.HostConfig{}).ID()
	d := digest.Digest(sha(layer))
	tests := []struct {
		name, repo, user string
		status           int
	}{
		{"reader", "team/app", "reader", 200},
		{"no credentials", "team/app", "", 401},
		{"user without rights", "team/app", "outsider", 403},
		{"repository without the blob", "team/other", "reader", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.user != "" {
				hdr["Authorization"] = basicAuth(tt.user)
			}
			resp, body := do(t, "GET", o.URL+capability.HTTPPath+tt.repo+"/"+d.String()+"?peer="+me.String(), hdr, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d %.200q, want %d", resp.StatusCode, body, tt.status)
			}
			if tt.status != 200 {
				return
			}
			var c shoalpb.Capability
			if err := proto.Unmarshal(body, &c); err != nil {
				t.Fatal(err)
			}
			if err := capability.NewVerifier(pub).Verify(&c, d, me); err != nil {
				t.Fatalf("issued capability does not verify: %v", err)
			}
			if exp := time.Until(time.Unix(c.GetExpiresUnix(), 0)); exp < 5*time.Minute || exp > 11*time.Minute {
				t.Fatalf("capability lasts %s, want the default 10m", exp)
			}
		})
	}
}
