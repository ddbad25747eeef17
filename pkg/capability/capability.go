// Package capability is the origin cluster's permission for one peer to
// fetch one blob's pieces from the swarm.
//
// The origins already decide who may pull what. When a node has been
// allowed to pull a blob, an origin signs {digest, the node's libp2p peer
// ID, expiry} with the cluster's Ed25519 capability key; the node presents
// it in each piece stream's handshake, and every seeder — agents and the
// origins' own — checks it with the public key alone before it sends a
// byte. So a process that merely reaches a libp2p port, or knows a
// digest, gets nothing, and a compromised agent cannot mint capabilities
// for others: it holds no private key. The peer ID is the one libp2p's
// TLS handshake proved, so a capability stolen in transit is useless to
// anyone but its holder.
//
// The signed bytes are a fixed encoding (not the protobuf), so every
// implementation signs and checks the same thing:
//
//	"shoal-capability-v1\x00" digest "\x00" peer-id-bytes "\x00" expiry (unix seconds, 8 bytes big-endian)
package capability

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// HTTPPath is the origin endpoint that issues capabilities:
// GET HTTPPath + <repository> + "/" + <digest> + "?peer=" + <peer ID>,
// authorized like a blob GET of that repository; the answer is a
// serialized shoalpb.Capability.
const HTTPPath = "/capability/v1/"

// ErrForbidden is wrapped by every refusal of Verify.
var ErrForbidden = errors.New("no valid capability")

// ErrKey is wrapped by errors loading a key file.
var ErrKey = errors.New("capability key")

const domain = "shoal-capability-v1\x00"

// signed is the byte string a capability's signature covers.
func signed(d string, p []byte, expires int64) []byte {
	b := make([]byte, 0, len(domain)+len(d)+len(p)+10)
	b = append(b, domain...)
	b = append(b, d...)
	b = append(b, 0)
	b = append(b, p...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(expires))
}

// Issuer signs capabilities; it lives on the origins.
type Issuer struct {
	key ed25519.PrivateKey
}

// NewIssuer signs with key.
func NewIssuer(key ed25519.PrivateKey) *Issuer { return &Issuer{key: key} }

// Issue returns a capability for peer p to fetch pieces of d until expires.
func (i *Issuer) Issue(d digest.Digest, p peer.ID, expires time.Time) *shoalpb.Capability {
	exp := expires.Unix()
	return &shoalpb.Capability{
		Digest: d.String(), PeerId: []byte(p), ExpiresUnix: exp,
		Signature: ed25519.Sign(i.key, signed(d.String(), []byte(p), exp)),
	}
}

// PublicKey is what seeders verify with.
func (i *Issuer) PublicKey() ed25519.PublicKey { return i.key.Public().(ed25519.PublicKey) }

// Verifier checks capabilities against the cluster's public keys (more
// than one while a key is being rotated).
type Verifier struct {
	keys []ed25519.PublicKey
	now  func() time.Time
}

// NewVerifier accepts capabilities signed by any of keys.
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	return &Verifier{keys: keys, now: time.Now}
}

// Verify returns nil when c lets peer p fetch pieces of d now. Every
// refusal wraps ErrForbidden.
func (v *Verifier) Verify(c *shoalpb.Capability, d digest.Digest, p peer.ID) error {
	switch {
	case c == nil:
		return fmt.Errorf("%w: none presented", ErrForbidden)
	case c.GetDigest() != d.String():
		return fmt.Errorf("%w: issued for another blob", ErrForbidden)
	case string(c.GetPeerId()) != string(p):
		return fmt.Errorf("%w: issued to another peer", ErrForbidden)
	case !v.now().Before(time.Unix(c.GetExpiresUnix(), 0)):
		return fmt.Errorf("%w: expired at %s", ErrForbidden, time.Unix(c.GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
	}
	msg := signed(c.GetDigest(), c.GetPeerId(), c.GetExpiresUnix())
	for _, k := range v.keys {
		if ed25519.Verify(k, msg, c.GetSignature()) {
			return nil
		}
	}
	return fmt.Errorf("%w: not signed by the cluster", ErrForbidden)
}

// maxKeyFile bounds a key file; a PEM Ed25519 key is about 120 bytes.
const maxKeyFile = 64 << 10

// readPEM returns the first PEM block of path, which must be one of the
// types in want.
func readPEM(path string, want ...string) (*pem.Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, path, err)
	}
	blk, _ := pem.Decode(b)
	if blk != nil && slices.Contains(want, blk.Type) {
		return blk, nil
	}
	return nil, fmt.Errorf("%w: %s holds no PEM %s block", ErrKey, path, `"`+strings.Join(want, `" or "`)+`"`)
}

// LoadPrivateKey reads an Ed25519 private key in PKCS #8 PEM, as
// `openssl genpkey -algorithm ed25519` writes it.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	blk, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s is a %T, not an Ed25519 key", ErrKey, path, k)
	}
	return ek, nil
}

// LoadPublicKey reads an Ed25519 public key in PKIX PEM, as
// `openssl pkey -in key.pem -pubout` writes it, or takes it from a PEM
// certificate for that key. The certificate form exists for Helm, whose
// template functions cannot derive a public key from a private one but
// can put it into a self-signed certificate (genSelfSignedCertWithKey);
// only the key is used: neither the certificate's signature, names nor
// validity matter, as the file is trusted the way a public key file is.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	blk, err := readPEM(path, "PUBLIC KEY", "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	var k any
	if blk.Type == "CERTIFICATE" {
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			k = c.PublicKey
		}
	} else {
		k, err = x509.ParsePKIXPublicKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %T, not an Ed25519 key", ErrKey, path, k)
	}
	return ek, nil
}

// WriteKeyPair makes a cluster capability key pair and writes it as
// openssl would, readable by LoadPrivateKey and LoadPublicKey: the private
// key (PKCS #8, mode 0600) for the origins, the public one (PKIX) for the
// agents.
func WriteKeyPair(keyFile, pubFile string) (ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("capability key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("capability key: %w", err)
	}
	pder, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("capability key: %w", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("capability key: %w", err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644); err != nil {
		return nil, fmt.Errorf("capability key: %w", err)
	}
	return priv, nil
}
