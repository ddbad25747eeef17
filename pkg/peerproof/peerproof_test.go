package peerproof_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/peerproof"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func key(t testing.TB, name string) (crypto.PrivKey, string) {
	seed := sha256.Sum256([]byte(name))
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id.String()
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	alice, aliceID := key(t, "alice")
	_, bobID := key(t, "bob")
	addrs := []string{"/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.1/udp/4001/quic-v1"}
	good, err := peerproof.Sign(alice, addrs, now)
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(p *shoalpb.PeerProof)) *shoalpb.PeerProof {
		p := proto.CloneOf(good)
		f(p)
		return p
	}
	tests := []struct {
		name  string
		proof *shoalpb.PeerProof
		id    string
		addrs []string
		at    time.Time
		ok    bool
	}{
		{"good", good, aliceID, addrs, now, true},
		{"addresses in another order", good, aliceID, []string{addrs[1], addrs[0]}, now, true},
		{"four minutes late", good, aliceID, addrs, now.Add(4 * time.Minute), true},
		{"six minutes late", good, aliceID, addrs, now.Add(6 * time.Minute), false},
		{"from the future", good, aliceID, addrs, now.Add(-6 * time.Minute), false},
		{"another peer's ID", good, bobID, addrs, now, false},
		{"other addresses", good, aliceID, addrs[:1], now, false},
		{"time changed", with(func(p *shoalpb.PeerProof) { p.UnixSeconds++ }), aliceID, addrs, now, false},
		{"signature flipped", with(func(p *shoalpb.PeerProof) { p.Signature[0] ^= 1 }), aliceID, addrs, now, false},
		{"no key", with(func(p *shoalpb.PeerProof) { p.PublicKey = nil }), aliceID, addrs, now, false},
		{"huge key", with(func(p *shoalpb.PeerProof) { p.PublicKey = make([]byte, 1<<20) }), aliceID, addrs, now, false},
		{"none", nil, aliceID, addrs, now, false},
	}
	v := peerproof.NewVerifier(2)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, verify := range []func(*shoalpb.PeerProof, string, []string, time.Time) error{peerproof.Verify, v.Verify} {
				err := verify(tt.proof, tt.id, tt.addrs, tt.at)
				if (err == nil) != tt.ok {
					t.Fatalf("err = %v, want ok=%v", err, tt.ok)
				}
				if err != nil && !errors.Is(err, peerproof.ErrInvalid) {
					t.Fatalf("err = %v, not ErrInvalid", err)
				}
			}
		})
	}
}

// A signer reuses its proof while the addresses stay, and signs anew when
// they change.
func TestSignerReuses(t *testing.T) {
	k, id := key(t, "agent")
	s := peerproof.NewSigner(k)
	a, _ := s.Proof([]string{"/ip4/10.0.0.1/tcp/1"})
	b, _ := s.Proof([]string{"/ip4/10.0.0.1/tcp/1"})
	c, _ := s.Proof([]string{"/ip4/10.0.0.2/tcp/1"})
	if a != b || a == c {
		t.Fatalf("reused %v, re-signed %v", a == b, a != c)
	}
	if err := peerproof.Verify(c, id, []string{"/ip4/10.0.0.2/tcp/1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkVerify(b *testing.B) {
	k, id := key(b, "agent")
	addrs := []string{"/ip4/10.0.0.1/tcp/4001"}
	p, _ := peerproof.Sign(k, addrs, time.Now())
	b.Run("cold", func(b *testing.B) {
		for range b.N {
			if err := peerproof.Verify(p, id, addrs, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("remembered", func(b *testing.B) {
		v := peerproof.NewVerifier(1024)
		for range b.N {
			if err := v.Verify(p, id, addrs, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Proofs come off the network: whatever their bytes, Verify answers
// without panicking, and accepts only what was signed.
func FuzzVerify(f *testing.F) {
	k, id := key(f, "agent")
	now := time.Unix(1_800_000_000, 0)
	p, _ := peerproof.Sign(k, []string{"/ip4/10.0.0.1/tcp/4001"}, now)
	raw, _ := proto.Marshal(p)
	f.Add(raw, "/ip4/10.0.0.1/tcp/4001")
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01}, "")
	f.Fuzz(func(t *testing.T, b []byte, addr string) {
		var q shoalpb.PeerProof
		if proto.Unmarshal(b, &q) != nil {
			return
		}
		err := peerproof.Verify(&q, id, []string{addr}, now)
		if err == nil && !(proto.Equal(&q, p) && addr == "/ip4/10.0.0.1/tcp/4001") {
			t.Fatalf("accepted a proof that was never signed: %v for %q", &q, addr)
		}
	})
}
