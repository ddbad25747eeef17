// Package embedetcd runs a single-node etcd inside the process, so a
// one-machine Shoal (the tracker with no --etcd-endpoints) needs no separate
// etcd. It is the real etcd server, not a stand-in: data is on disk under
// the given directory and survives restarts.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config says where the embedded etcd keeps data and listens.
type Config struct {
	// Dir holds the member's data (WAL and snapshots).
	Dir string
	// Name is the member name; default "shoal".
	Name string
	// ClientURL is where clients connect; default http://127.0.0.1:2379.
	ClientURL string
	// PeerURL is the raft listener; default http://127.0.0.1:2380. A single
	// node has no peers, but etcd always binds it.
	PeerURL string
	// StartTimeout bounds how long Start waits for the node to serve.
	StartTimeout time.Duration
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
	ec := embed.NewConfig()
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
		s.Endpoints = append(s.Endpoints, "http://"+l.Addr().String())
	}
	return s, nil
}

// Err reports a fatal server error after Start.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the node.
func (s *Server) Close() { s.etcd.Close() }
