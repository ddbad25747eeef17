// Package peerproof proves to a tracker that an announce comes from the
// peer it names: the peer signs its ID, the time and its addresses with
// its libp2p key. Without it anyone who reaches the tracker could announce
// under another peer's ID and point the swarm at an address of its
// choosing.
//
// A proof is cheap to check but not free (an Ed25519 verification, about
// 50µs), so agents reuse one for a minute and the tracker remembers the
// proofs it has checked.
package peerproof

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/grpc"

	shoalpb "github.com/shoal-project/shoal/proto"
)

const (
	// Skew is how far a proof's time may be from the verifier's clock,
	// either way.
	Skew = 5 * time.Minute
	// reuse is how long a signer hands out the same proof; well inside
	// Skew so a proof never expires in flight.
	reuse = time.Minute
	// maxKeyLen bounds the public key a verifier unmarshals (Ed25519: 36
	// bytes; RSA 4096: about 550).
	maxKeyLen = 1024
	// maxSigLen bounds the signature (Ed25519: 64 bytes; RSA 4096: 512).
	maxSigLen = 1024
)

// ErrInvalid wraps every reason a proof is refused.
var ErrInvalid = errors.New("invalid peer proof")

// message is what a peer signs.
func message(id string, unix int64, addrs []string) []byte {
	sorted := slices.Clone(addrs)
	slices.Sort(sorted)
	var b strings.Builder
	b.WriteString("shoal-announce-v1\n")
	b.WriteString(id)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatInt(unix, 10))
	for _, a := range sorted {
		b.WriteByte('\n')
		b.WriteString(a)
	}
	return []byte(b.String())
}

// Sign proves that the holder of key announces addrs at now.
func Sign(key crypto.PrivKey, addrs []string, now time.Time) (*shoalpb.PeerProof, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("peer id: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sig, err := key.Sign(message(id.String(), now.Unix(), addrs))
	if err != nil {
		return nil, fmt.Errorf("sign announce: %w", err)
	}
	return &shoalpb.PeerProof{PublicKey: pub, UnixSeconds: now.Unix(), Signature: sig}, nil
}

// Verify checks that p proves peer id announcing addrs, at a time within
// Skew of now.
func Verify(p *shoalpb.PeerProof, id string, addrs []string, now time.Time) error {
	switch {
	case p == nil:
		return fmt.Errorf("%w: none given", ErrInvalid)
	case len(p.GetPublicKey()) > maxKeyLen || len(p.GetSignature()) > maxSigLen:
		return fmt.Errorf("%w: key or signature too long", ErrInvalid)
	}
	if !fresh(p, now) {
		at := time.Unix(p.GetUnixSeconds(), 0)
		return fmt.Errorf("%w: signed at %s, %s from now", ErrInvalid, at.UTC().Format(time.RFC3339), now.Sub(at).Round(time.Second))
	}
	pub, err := crypto.UnmarshalPublicKey(p.GetPublicKey())
	if err != nil {
		return fmt.Errorf("%w: public key: %w", ErrInvalid, err)
	}
	owner, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("%w: public key: %w", ErrInvalid, err)
	}
	if owner.String() != id {
		return fmt.Errorf("%w: key belongs to %s, not %.64q", ErrInvalid, owner, id)
	}
	ok, err := pub.Verify(message(id, p.GetUnixSeconds(), addrs), p.GetSignature())
	if err != nil || !ok {
		return fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	return nil
}

// fresh: p was made within Skew of now.
func fresh(p *shoalpb.PeerProof, now time.Time) bool {
	d := now.Sub(time.Unix(p.GetUnixSeconds(), 0))
	return d <= Skew && d >= -Skew
}

// Verifier checks proofs and remembers those it accepted until they
// expire, so an agent's proof, reused for a minute, costs one signature
// check. Its methods are safe for concurrent use.
type Verifier struct {
	max int
	mu  sync.Mutex
	ok  map[[32]byte]time.Time // proof digest → when it stops being accepted
}

// NewVerifier remembers at most max accepted proofs (the agents that
// announce within a few minutes: one each).
func NewVerifier(max int) *Verifier {
	return &Verifier{max: max, ok: map[[32]byte]time.Time{}}
}

// Verify is Verify, from memory when p was accepted before.
func (v *Verifier) Verify(p *shoalpb.PeerProof, id string, addrs []string, now time.Time) error {
	if p == nil || !fresh(p, now) {
		return Verify(p, id, addrs, now)
	}
	h := sha256.New()
	for _, b := range [][]byte{p.GetPublicKey(), message(id, p.GetUnixSeconds(), addrs), p.GetSignature()} {
		h.Write(binary.AppendUvarint(nil, uint64(len(b))))
		h.Write(b)
	}
	var key [32]byte
	h.Sum(key[:0])
	v.mu.Lock()
	_, seen := v.ok[key]
	v.mu.Unlock()
	if seen {
		return nil
	}
	if err := Verify(p, id, addrs, now); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.ok) >= v.max {
		for k, t := range v.ok {
			if !now.Before(t) {
				delete(v.ok, k)
			}
		}
		if len(v.ok) >= v.max {
			// Full of live proofs: forget them all rather than grow;
			// they are checked again on their next use.
			clear(v.ok)
		}
	}
	v.ok[key] = time.Unix(p.GetUnixSeconds(), 0).Add(Skew)
	return nil
}

// Signer signs a peer's announces, reusing a proof for a minute while the
// addresses stay the same. Its methods are safe for concurrent use.
type Signer struct {
	key   crypto.PrivKey
	mu    sync.Mutex
	addrs []string
	proof *shoalpb.PeerProof
	at    time.Time
}

// NewSigner signs with key.
func NewSigner(key crypto.PrivKey) *Signer { return &Signer{key: key} }

// Proof returns a proof for addrs, made at most a minute ago.
func (s *Signer) Proof(addrs []string) (*shoalpb.PeerProof, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proof != nil && now.Sub(s.at) < reuse && slices.Equal(s.addrs, addrs) {
		return s.proof, nil
	}
	p, err := Sign(s.key, addrs, now)
	if err != nil {
		return nil, err
	}
	s.proof, s.addrs, s.at = p, slices.Clone(addrs), now
	return p, nil
}

// Client signs the announces that pass through it. A batch gets one proof
// for all its announces, which must share the peer's addresses.
type Client struct {
	shoalpb.TrackerClient
	signer *Signer
}

// NewClient wraps c so that announces carry a proof made with key.
func NewClient(c shoalpb.TrackerClient, key crypto.PrivKey) *Client {
	return &Client{TrackerClient: c, signer: NewSigner(key)}
}

// Announce signs req and sends it.
func (c *Client) Announce(ctx context.Context, req *shoalpb.AnnounceRequest, opts ...grpc.CallOption) (*shoalpb.AnnounceResponse, error) {
	p, err := c.signer.Proof(req.GetPeer().GetAddrs())
	if err != nil {
		return nil, err
	}
	req.Proof = p
	return c.TrackerClient.Announce(ctx, req, opts...)
}

// AnnounceBatch signs req and sends it.
func (c *Client) AnnounceBatch(ctx context.Context, req *shoalpb.AnnounceBatchRequest, opts ...grpc.CallOption) (*shoalpb.AnnounceBatchResponse, error) {
	if len(req.GetAnnounces()) > 0 {
		p, err := c.signer.Proof(req.GetAnnounces()[0].GetPeer().GetAddrs())
		if err != nil {
			return nil, err
		}
		req.Proof = p
	}
	return c.TrackerClient.AnnounceBatch(ctx, req, opts...)
}

// PreheatPoll signs req and sends it: a poll proves who is asking for
// orders as an announce does.
func (c *Client) PreheatPoll(ctx context.Context, req *shoalpb.PreheatPollRequest, opts ...grpc.CallOption) (*shoalpb.PreheatPollResponse, error) {
	p, err := c.signer.Proof(req.GetPeer().GetAddrs())
	if err != nil {
		return nil, err
	}
	req.Proof = p
	return c.TrackerClient.PreheatPoll(ctx, req, opts...)
}
