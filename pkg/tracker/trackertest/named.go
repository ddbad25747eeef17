package trackertest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/peerproof"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// NamedClient lets tests name peers ("a", "seed") while the tracker sees
// real ones: each name gets an Ed25519 key derived from it, announces go
// out under that key's peer ID with a proof, and the peers in responses
// come back under their names. A name that cannot be a peer ID (empty,
// too long) is sent as it is, unsigned, for the tracker to refuse; a
// request already signed (peerproof.Client) is sent as it is.
type NamedClient struct {
	shoalpb.TrackerClient
}

// Named wraps c.
func Named(c shoalpb.TrackerClient) *NamedClient { return &NamedClient{TrackerClient: c} }

// The names given so far, shared by every client so that one tracker's
// answer names the peers another client announced.
var (
	mu      sync.Mutex
	keys    = map[string]crypto.PrivKey{}
	signers = map[string]*peerproof.Signer{} // by name: proofs reused, as agents do
	names   = map[string]string{}            // peer ID → name
)

// Key is name's key.
func (n *NamedClient) Key(name string) crypto.PrivKey {
	mu.Lock()
	defer mu.Unlock()
	if k, ok := keys[name]; ok {
		return k
	}
	seed := sha256.Sum256([]byte(name))
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		panic(err) // a 64-byte Ed25519 key always unmarshals
	}
	id, _ := peer.IDFromPrivateKey(k)
	keys[name], signers[name], names[id.String()] = k, peerproof.NewSigner(k), name
	return k
}

// proof signs addrs as name.
func proof(name string, addrs []string) (*shoalpb.PeerProof, error) {
	mu.Lock()
	s := signers[name]
	mu.Unlock()
	return s.Proof(addrs)
}

// ID is the peer ID the tracker knows name by.
func (n *NamedClient) ID(name string) string {
	id, _ := peer.IDFromPrivateKey(n.Key(name))
	return id.String()
}

func signable(name string) bool { return name != "" && len(name) <= 64 }

// real turns a request of a named peer into one of a real peer; ok false
// if the name cannot be one.
func (n *NamedClient) real(req *shoalpb.AnnounceRequest) (out *shoalpb.AnnounceRequest, ok bool) {
	name := req.GetPeer().GetId()
	if !signable(name) {
		return req, false
	}
	out = proto.CloneOf(req)
	out.Peer.Id = n.ID(name)
	return out, true
}

// named renames the peers of resp back to their names.
func (n *NamedClient) named(resp *shoalpb.AnnounceResponse) {
	mu.Lock()
	defer mu.Unlock()
	for _, p := range resp.GetPeers() {
		if name, ok := names[p.GetId()]; ok {
			p.Id = name
		}
	}
}

// Announce sends req as its named peer.
func (n *NamedClient) Announce(ctx context.Context, req *shoalpb.AnnounceRequest, opts ...grpc.CallOption) (*shoalpb.AnnounceResponse, error) {
	if req.GetProof() != nil { // signed by a real peer (peerproof.Client)
		return n.TrackerClient.Announce(ctx, req, opts...)
	}
	out, ok := n.real(req)
	if ok {
		p, err := proof(req.GetPeer().GetId(), out.GetPeer().GetAddrs())
		if err != nil {
			return nil, err
		}
		out.Proof = p
	}
	resp, err := n.TrackerClient.Announce(ctx, out, opts...)
	n.named(resp)
	return resp, err
}

// AnnounceBatch sends req, signed as the peer its first announce names.
func (n *NamedClient) AnnounceBatch(ctx context.Context, req *shoalpb.AnnounceBatchRequest, opts ...grpc.CallOption) (*shoalpb.AnnounceBatchResponse, error) {
	if req.GetProof() != nil {
		return n.TrackerClient.AnnounceBatch(ctx, req, opts...)
	}
	out := &shoalpb.AnnounceBatchRequest{}
	sign := false
	for i, a := range req.GetAnnounces() {
		r, ok := n.real(a)
		if i == 0 {
			sign = ok
		}
		out.Announces = append(out.Announces, r)
	}
	if sign {
		p, err := proof(req.GetAnnounces()[0].GetPeer().GetId(), out.Announces[0].GetPeer().GetAddrs())
		if err != nil {
			return nil, err
		}
		out.Proof = p
	}
	resp, err := n.TrackerClient.AnnounceBatch(ctx, out, opts...)
	for _, r := range resp.GetResponses() {
		n.named(r)
	}
	return resp, err
}
