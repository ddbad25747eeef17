package tracker

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	shoalpb "github.com/shoal-project/shoal/proto"
)

// What an announce may claim, and what the tracker checks, so that no one
// can speak for another peer or point the swarm at a host of their
// choosing:
//   - the peer ID: the announce carries a proof signed with the peer's
//     key (pkg/peerproof);
//   - the addresses: only those on the IP the announce came from are kept,
//     so a handed-out address is one the announcer can receive on;
//   - the origin flag: origins are found on the origin ring, never through
//     announces, so the flag is cleared;
//   - forwarding: only a tracker of the ring may forward, since the owner
//     takes the forwarder's word for the checks above.

// caller is who sent an announce RPC, once checked.
type caller struct {
	ip netip.Addr
	// forwarded: a tracker passed the announce on, having checked it.
	forwarded bool
}

// callerIP is the remote IP of a gRPC call.
func callerIP(ctx context.Context) (netip.Addr, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// authenticate checks the announces of one RPC, all from one peer, and
// rewrites them to what the tracker will hold: the peer's addresses on the
// caller's IP only, and no origin flag.
func (s *Server) authenticate(ctx context.Context, proof *shoalpb.PeerProof, reqs []*shoalpb.AnnounceRequest) (caller, error) {
	ip, ok := callerIP(ctx)
	if !ok {
		return caller{}, status.Error(codes.Unauthenticated, "no caller address")
	}
	if len(reqs) == 0 {
		return caller{ip: ip}, nil
	}
	first := reqs[0]
	fwd := first.GetForwarded()
	for i, r := range reqs {
		switch {
		case r.GetForwarded() != fwd:
			return caller{}, status.Errorf(codes.InvalidArgument, "announce %d: forwarded and direct announces in one batch", i)
		case r.GetPeer().GetId() != first.GetPeer().GetId():
			return caller{}, status.Errorf(codes.InvalidArgument, "announce %d: a batch comes from one peer", i)
		case !slices.Equal(r.GetPeer().GetAddrs(), first.GetPeer().GetAddrs()):
			return caller{}, status.Errorf(codes.InvalidArgument, "announce %d: a batch carries one set of addresses", i)
		}
	}
	if fwd {
		if !s.isTracker(ctx, ip) {
			s.metrics.refused.WithLabelValues("forged_forward").Inc()
			return caller{}, status.Error(codes.PermissionDenied, "only trackers of the ring forward announces")
		}
		return caller{ip: ip, forwarded: true}, nil
	}
	if proof == nil {
		proof = first.GetProof()
	}
	if err := s.proofs.Verify(proof, first.GetPeer().GetId(), first.GetPeer().GetAddrs(), time.Now()); err != nil {
		s.metrics.refused.WithLabelValues("bad_proof").Inc()
		return caller{}, status.Error(codes.Unauthenticated, err.Error())
	}
	addrs := addrsOn(first.GetPeer().GetAddrs(), ip)
	if len(addrs) < len(first.GetPeer().GetAddrs()) {
		s.metrics.refused.WithLabelValues("foreign_addr").Add(float64(len(first.GetPeer().GetAddrs()) - len(addrs)))
	}
	for _, r := range reqs {
		r.Peer.Addrs = addrs
		r.Peer.Origin = false
	}
	return caller{ip: ip}, nil
}

// addrsOn keeps the multiaddrs whose IP is ip: a peer may listen on many
// interfaces, but it proved only that it is reachable where it called from.
// Names (/dns4/...) go too: they could resolve anywhere.
func addrsOn(addrs []string, ip netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		if at, ok := hostIP(a); ok && at == ip {
			out = append(out, a)
		}
	}
	return out
}

// hostIP is the IP a multiaddr starts with.
func hostIP(a string) (netip.Addr, bool) {
	m, err := ma.NewMultiaddr(a)
	if err != nil || len(m) == 0 {
		return netip.Addr{}, false
	}
	if c := m[0].Protocol().Code; c != ma.P_IP4 && c != ma.P_IP6 {
		return netip.Addr{}, false
	}
	at, err := netip.ParseAddr(m[0].Value())
	if err != nil {
		return netip.Addr{}, false
	}
	return at.Unmap(), true
}

// entryIP is the IP an announce's entry is charged to: its caller's, or
// for a forwarded one the IP its checked addresses are on.
func entryIP(c caller, req *shoalpb.AnnounceRequest) string {
	if c.forwarded {
		for _, a := range req.GetPeer().GetAddrs() {
			if at, ok := hostIP(a); ok {
				return at.String()
			}
		}
	}
	return c.ip.String()
}

// trackerIPs caches the IPs of the tracker ring's members, resolved at
// most every trackerIPsTTL.
type trackerIPs struct {
	mu    sync.Mutex
	key   string // the member addresses resolved
	at    time.Time
	addrs map[netip.Addr]bool
}

const trackerIPsTTL = 30 * time.Second

// isTracker reports whether ip is a member of the tracker ring.
func (s *Server) isTracker(ctx context.Context, ip netip.Addr) bool {
	if s.trackers == nil {
		return false
	}
	var hosts []string
	for _, m := range s.trackers.Ring().Members() {
		if h, _, err := net.SplitHostPort(m.Addr); err == nil {
			hosts = append(hosts, h)
		}
	}
	key := strings.Join(hosts, ",")
	t := &s.trackerIPs
	t.mu.Lock()
	defer t.mu.Unlock()
	if key != t.key || time.Since(t.at) > trackerIPsTTL {
		t.addrs = map[netip.Addr]bool{}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, h := range hosts {
			if a, err := netip.ParseAddr(h); err == nil {
				t.addrs[a.Unmap()] = true
				continue
			}
			ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", h)
			if err != nil {
				s.log.Warn("resolve tracker", "host", h, "err", err)
				continue
			}
			for _, a := range ips {
				t.addrs[a.Unmap()] = true
			}
		}
		t.key, t.at = key, time.Now()
	}
	return t.addrs[ip]
}

// verifiedProofs bounds the proofs a tracker remembers: one per agent
// announcing within a few minutes.
const verifiedProofs = 1 << 17
