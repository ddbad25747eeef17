package capability

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func TestVerify(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	iss := NewIssuer(key)
	v := NewVerifier(iss.PublicKey())
	v.now = func() time.Time { return t0 }
	d := digest.FromBytes([]byte("blob"))
	p, q := peer.ID("peer-a"), peer.ID("peer-b")
	later := t0.Add(10 * time.Minute)
	tampered := func(c *shoalpb.Capability, f func(*shoalpb.Capability)) *shoalpb.Capability {
		c = proto.Clone(c).(*shoalpb.Capability)
		f(c)
		return c
	}
	good := iss.Issue(d, p, later)
	tests := []struct {
		name string
		c    *shoalpb.Capability
		ok   bool
	}{
		{"valid", good, true},
		{"none", nil, false},
		{"another peer", iss.Issue(d, q, later), false},
		{"another blob", iss.Issue(digest.FromBytes([]byte("other")), p, later), false},
		{"expired", iss.Issue(d, p, t0.Add(-time.Second)), false},
		{"expiring now", iss.Issue(d, p, t0), false},
		{"another key", NewIssuer(other).Issue(d, p, later), false},
		{"expiry pushed out", tampered(good, func(c *shoalpb.Capability) { c.ExpiresUnix += 3600 }), false},
		{"signature cut", tampered(good, func(c *shoalpb.Capability) { c.Signature = c.Signature[:10] }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.c, d, p)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrForbidden)) {
				t.Fatalf("Verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestLoadKeys(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pder, _ := x509.MarshalPKIXPublicKey(pub)
	dir := t.TempDir()
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile, pubFile := write("key", "PRIVATE KEY", der), write("pub", "PUBLIC KEY", pder)
	k, err := LoadPrivateKey(keyFile)
	if err != nil || !k.Equal(priv) {
		t.Fatalf("private key: %v", err)
	}
	pk, err := LoadPublicKey(pubFile)
	if err != nil || !pk.Equal(pub) {
		t.Fatalf("public key: %v", err)
	}
	for _, tt := range []struct {
		name string
		load func(string) error
		path string
	}{
		{"public file as private", func(p string) error { _, err := LoadPrivateKey(p); return err }, pubFile},
		{"private file as public", func(p string) error { _, err := LoadPublicKey(p); return err }, keyFile},
		{"missing", func(p string) error { _, err := LoadPrivateKey(p); return err }, filepath.Join(dir, "none")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.load(tt.path); !errors.Is(err, ErrKey) {
				t.Fatalf("error %v, want ErrKey", err)
			}
		})
	}
}

// selfSigned is a PEM certificate for pub, signed by priv, as Helm's
// genSelfSignedCertWithKey makes one.
func selfSigned(t *testing.T, pub, priv any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestLoadPublicKeyForms: the agents' public key file is a PKIX public
// key or a certificate carrying the key (what the Helm chart can make);
// any key but Ed25519, or another PEM block, is refused with an error
// that says what the file holds.
func TestLoadPublicKeyForms(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	edDER, _ := x509.MarshalPKIXPublicKey(pub)
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	expired := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: t0.Add(-48 * time.Hour), NotAfter: t0.Add(-24 * time.Hour)}
	expiredDER, _ := x509.CreateCertificate(rand.Reader, expired, expired, pub, priv)
	tests := []struct {
		name    string
		content []byte
		wantErr string // "" = loads pub
	}{
		{"PKIX public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: edDER}), ""},
		{"self-signed certificate", selfSigned(t, pub, priv), ""},
		// Only the key counts: the file is trusted as a key file is.
		{"expired certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: expiredDER}), ""},
		{"certificate for an ECDSA key", selfSigned(t, &ec.PublicKey, ec), "*ecdsa.PublicKey, not an Ed25519 key"},
		{"ECDSA public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}), "*ecdsa.PublicKey, not an Ed25519 key"},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), `no PEM "PUBLIC KEY" or "CERTIFICATE" block`},
		{"garbled certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}), "x509"},
		{"not PEM", []byte("hello"), "no PEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "capability.pub")
			if err := os.WriteFile(p, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			k, err := LoadPublicKey(p)
			if tt.wantErr == "" {
				if err != nil || !k.Equal(pub) {
					t.Fatalf("LoadPublicKey: %v, key equal %v", err, k.Equal(pub))
				}
				return
			}
			if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadPublicKey: %v, want ErrKey with %q", err, tt.wantErr)
			}
		})
	}
}
