package origin

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/recorder"
	"github.com/shoal-project/shoal/pkg/reference"
)

// defaultCapabilityTTL: long enough that a download renews its capability
// a few times at most, short enough that a node refused later loses the
// swarm within minutes.
const defaultCapabilityTTL = 10 * time.Minute

// loadCapabilities sets up the capability issuer when a key is configured.
func (s *Server) loadCapabilities() error {
	if s.cfg.CapabilityKeyFile == "" {
		return nil
	}
	key, err := capability.LoadPrivateKey(s.cfg.CapabilityKeyFile)
	if err != nil {
		return fmt.Errorf("origin: capability_key_file: %w", err)
	}
	s.caps = capability.NewIssuer(key)
	return nil
}

// Capabilities is what the origin's own seeder checks piece streams with:
// capabilities signed by this cluster's key. Nil when no key is
// configured (the swarm is then open to any peer).
func (s *Server) Capabilities() *capability.Verifier {
	if s.caps == nil {
		return nil
	}
	return capability.NewVerifier(s.caps.PublicKey())
}

// CountForbidden counts a piece stream refused for want of a valid
// capability; hand it to the seeder as its Forbidden hook.
func (s *Server) CountForbidden() { s.metrics.capabilities.WithLabelValues("stream_refused").Inc() }

// serveCapability issues a capability: GET capability.HTTPPath +
// <repository>/<digest>?peer=<peer ID>. It is authorized like a blob GET
// of the repository, and the repository must hold the digest: a node
// gets the right to fetch a blob from the swarm exactly when it could
// fetch it from here.
func (s *Server) serveCapability(w http.ResponseWriter, r *http.Request) {
	rw := recorder.New(w)
	if err := s.issueCapability(rw, r); err != nil {
		s.metrics.capabilities.WithLabelValues("not_issued").Inc()
		s.writeError(rw, r, err)
	}
}

func (s *Server) issueCapability(w http.ResponseWriter, r *http.Request) error {
	if s.caps == nil {
		return ocierr.New(ocierr.Unsupported, "this origin issues no capabilities").WithStatus(http.StatusNotFound)
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		return ocierr.New(ocierr.Unsupported, "method %s not allowed", r.Method)
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), capability.HTTPPath)
	i := strings.LastIndex(rest, "/")
	if i <= 0 {
		return ocierr.New(ocierr.NameInvalid, "want %s<repository>/<digest>", capability.HTTPPath)
	}
	name := rest[:i]
	if err := reference.ValidateName(name); err != nil {
		return ocierr.Wrap(ocierr.NameInvalid, err)
	}
	d, err := digest.Parse(rest[i+1:])
	if err != nil {
		return ocierr.Wrap(ocierr.DigestInvalid, err)
	}
	p, err := peer.Decode(r.URL.Query().Get("peer"))
	if err != nil {
		return ocierr.New(ocierr.Unsupported, "peer: %v", err).WithStatus(http.StatusBadRequest)
	}
	if _, err := s.authorize(w, r, auth.Access{Type: auth.TypeRepository, Name: name, Action: auth.Pull}); err != nil {
		return err
	}
	ok, err := s.repoHasContent(r.Context(), name, d)
	if err != nil {
		return err
	}
	if !ok {
		return ocierr.New(ocierr.BlobUnknown, "%s in %s", d, name)
	}
	ttl := s.cfg.CapabilityTTL
	if ttl <= 0 {
		ttl = defaultCapabilityTTL
	}
	b, err := proto.Marshal(s.caps.Issue(d, p, time.Now().Add(ttl)))
	if err != nil {
		return fmt.Errorf("capability: %w", err)
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	s.metrics.capabilities.WithLabelValues("issued").Inc()
	return nil
}
