// Package embedetcd runs a single-node etcd inside the process, so a
// one-machine Shoal (the tracker with no --etcd-endpoints) needs no separate
// etcd. It is the real etcd server, not a stand-in: data is on disk under
// the given directory and survives restarts.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// Config says where the embedded etcd keeps data and listens.
type Config struct {
	// Dir holds the member's data (WAL and snapshots).
	Dir string
	// Name is the member name; default "shoal".
	Name string
	// ClientURL is where clients connect; default http://127.0.0.1:2379.
	// Beyond loopback it must be https:// with TLS (see Plaintext).
	ClientURL string
	// PeerURL is the raft listener; default http://127.0.0.1:2380. A single
	// node has no peers, but etcd always binds it.
	PeerURL string
	// StartTimeout bounds how long Start waits for the node to serve.
	StartTimeout time.Duration
	// TLS is the node's certificate and the CA its clients' certificates
	// must chain to: set, https:// URLs serve TLS and require a client
	// certificate (peers too, on an https:// PeerURL). All three files
	// are needed.
	TLS tlsconfig.Files
	// Plaintext allows http:// URLs beyond loopback. Anyone who reaches
	// such an etcd can rewrite the rings and tags, so it is for test
	// fleets on a private bridge only.
	Plaintext bool
}

// ErrPlaintextBeyondLoopback: an embedded etcd was asked to serve plain
// HTTP on an address other hosts can reach.
var ErrPlaintextBeyondLoopback = errors.New("embedetcd: plain http beyond loopback: give TLS files and https:// URLs")

// tlsFor checks u against the config and returns the TLS etcd serves it
// with (empty for plain HTTP).
func (c Config) tlsFor(u *url.URL) (transport.TLSInfo, error) {
	switch u.Scheme {
	case "https":
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" || c.TLS.CAFile == "" {
			return transport.TLSInfo{}, fmt.Errorf("embedetcd: %s needs tls cert_file, key_file and ca_file", u.Redacted())
		}
		return transport.TLSInfo{
			CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.CAFile, ClientCertAuth: true,
		}, nil
	case "http":
		if c.TLS.Enabled() {
			return transport.TLSInfo{}, fmt.Errorf("embedetcd: TLS files are set: use https:// for %s", u.Redacted())
		}
		if !c.Plaintext && !loopback(u.Hostname()) {
			return transport.TLSInfo{}, fmt.Errorf("%w (%s)", ErrPlaintextBeyondLoopback, u.Redacted())
		}
		return transport.TLSInfo{}, nil
	}
	return transport.TLSInfo{}, fmt.Errorf("embedetcd: URL %s: want http or https", u.Redacted())
}

// loopback reports whether host only this machine reaches; a name other
// than localhost could resolve anywhere.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	// Endpoints are the client URLs, for clientv3.Config.
	Endpoints []string
}

// Start runs the node and returns once it serves clients.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedetcd: Dir is required")
	}
	if cfg.Name == "" {
		cfg.Name = "shoal"
	}
	if cfg.ClientURL == "" {
		cfg.ClientURL = "http://127.0.0.1:2379"
	}
	if cfg.PeerURL == "" {
		cfg.PeerURL = "http://127.0.0.1:2380"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = time.Minute
	}
	cu, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: client URL: %w", err)
	}
	pu, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: peer URL: %w", err)
	}
	clientTLS, err := cfg.tlsFor(cu)
	if err != nil {
		return nil, err
	}
	peerTLS, err := cfg.tlsFor(pu)
	if err != nil {
		return nil, err
	}
	ec := embed.NewConfig()
	ec.ClientTLSInfo, ec.PeerTLSInfo = clientTLS, peerTLS
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	// etcd logs through zap at info by default; Shoal's own logs say what
	// matters, so keep etcd to errors.
	ec.Logger = "zap"
	ec.LogLevel = "error"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start: %w", err)
	}
	t := time.NewTimer(cfg.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedetcd: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("embedetcd: not ready after %s", cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	s := &Server{etcd: e}
	for _, l := range e.Clients {
		s.Endpoints = append(s.Endpoints, cu.Scheme+"://"+l.Addr().String())
	}
	return s, nil
}

// Err reports a fatal server error after Start.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the node.
func (s *Server) Close() { s.etcd.Close() }
