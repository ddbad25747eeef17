// Command shoal-tracker runs a tracker: it coordinates the swarms of a Shoal
// cluster over gRPC. With no etcd endpoints it starts an embedded
// single-node etcd under its data dir, which the origins of a small cluster
// can use too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-project/shoal/pkg/config"
	"github.com/shoal-project/shoal/pkg/embedetcd"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
)

// fileConfig is the YAML file: the tracker's policy plus process settings.
type fileConfig struct {
	tracker.Config `yaml:",inline"`
	// GRPCAddr serves agents and other trackers; HTTPAddr serves /metrics
	// and health.
	GRPCAddr string `yaml:"grpc_addr"`
	HTTPAddr string `yaml:"http_addr"`
	// Advertise is the gRPC host:port other trackers forward to; default
	// the hostname with GRPCAddr's port.
	Advertise string `yaml:"advertise"`
	// DataDir holds the embedded etcd's data.
	DataDir string `yaml:"data_dir"`
	// Etcd is the cluster's etcd; no endpoints starts an embedded one.
	Etcd         membership.EtcdConfig `yaml:"etcd"`
	EmbeddedEtcd struct {
		ClientURL string `yaml:"client_url"`
		PeerURL   string `yaml:"peer_url"`
	} `yaml:"embedded_etcd"`
	// MemberTTL is how long a dead tracker stays on the ring.
	MemberTTL time.Duration `yaml:"member_ttl"`
	// Origins lists origin HTTP addresses for clusters whose origins do
	// not register in etcd; empty watches the origins' registrations.
	Origins []string `yaml:"origins"`
	// TLS secures gRPC with the cluster CA (both ways when a CA is set).
	TLS       tlsconfig.Files `yaml:"tls"`
	LogLevel  string          `yaml:"log_level"`
	LogFormat string          `yaml:"log_format"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-tracker:", err)
		os.Exit(1)
	}
}

func parse(args []string) (fileConfig, error) {
	fs := flag.NewFlagSet("shoal-tracker", flag.ContinueOnError)
	var (
		cfgPath   = fs.String("config", "", "YAML config file; flags override it")
		grpcAddr  = fs.String("grpc-addr", ":7000", "gRPC listen address for agents and trackers")
		httpAddr  = fs.String("http-addr", ":7001", "listen address for /metrics and health")
		advertise = fs.String("advertise", "", "gRPC host:port other trackers reach this one at (default hostname:grpc port)")
		id        = fs.String("id", "", "member ID on the tracker ring (default the hostname)")
		dataDir   = fs.String("data-dir", "", "directory for the embedded etcd")
		endpoints = fs.String("etcd-endpoints", "", "comma-separated etcd client URLs; empty starts an embedded etcd")
		clientURL = fs.String("embedded-etcd-client-url", "http://127.0.0.1:2379", "client URL of the embedded etcd")
		peerURL   = fs.String("embedded-etcd-peer-url", "http://127.0.0.1:2380", "peer URL of the embedded etcd")
		origins   = fs.String("origins", "", "comma-separated origin host:ports when origins do not register in etcd")
		peers     = fs.Int("peers", 30, "peers handed out per announce")
		interval  = fs.Duration("interval", 3*time.Second, "announce interval of downloading peers")
		certFile  = fs.String("tls-cert", "", "PEM certificate for gRPC")
		keyFile   = fs.String("tls-key", "", "PEM key for gRPC")
		caFile    = fs.String("tls-ca", "", "cluster CA: verify peers' certificates both ways")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text or json")
	)
	if err := fs.Parse(args); err != nil {
		return fileConfig{}, err
	}
	fc := fileConfig{GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, LogLevel: "info", LogFormat: "text"}
	fc.EmbeddedEtcd.ClientURL, fc.EmbeddedEtcd.PeerURL = *clientURL, *peerURL
	if err := config.Load(*cfgPath, &fc); err != nil {
		return fileConfig{}, err
	}
	for name := range config.Visited(fs) {
		switch name {
		case "grpc-addr":
			fc.GRPCAddr = *grpcAddr
		case "http-addr":
			fc.HTTPAddr = *httpAddr
		case "advertise":
			fc.Advertise = *advertise
		case "id":
			fc.ID = *id
		case "data-dir":
			fc.DataDir = *dataDir
		case "etcd-endpoints":
			fc.Etcd.Endpoints = config.SplitList(*endpoints)
		case "embedded-etcd-client-url":
			fc.EmbeddedEtcd.ClientURL = *clientURL
		case "embedded-etcd-peer-url":
			fc.EmbeddedEtcd.PeerURL = *peerURL
		case "origins":
			fc.Origins = config.SplitList(*origins)
		case "peers":
			fc.DefaultPeers = *peers
		case "interval":
			fc.Interval = *interval
		case "tls-cert":
			fc.TLS.CertFile = *certFile
		case "tls-key":
			fc.TLS.KeyFile = *keyFile
		case "tls-ca":
			fc.TLS.CAFile = *caFile
		case "log-level":
			fc.LogLevel = *logLevel
		case "log-format":
			fc.LogFormat = *logFormat
		}
	}
	if fc.ID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fileConfig{}, fmt.Errorf("no --id and no hostname: %w", err)
		}
		fc.ID = h
	}
	if len(fc.Etcd.Endpoints) == 0 && fc.DataDir == "" {
		return fileConfig{}, errors.New("the embedded etcd needs --data-dir (or give --etcd-endpoints)")
	}
	return fc, nil
}

func run(args []string) error {
	fc, err := parse(args)
	if err != nil {
		return err
	}
	log, err := config.NewLogger(fc.LogLevel, fc.LogFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var etcdDied <-chan error
	if len(fc.Etcd.Endpoints) == 0 {
		e, err := embedetcd.Start(ctx, embedetcd.Config{
			Dir:       filepath.Join(fc.DataDir, "etcd"),
			Name:      fc.ID,
			ClientURL: fc.EmbeddedEtcd.ClientURL,
			PeerURL:   fc.EmbeddedEtcd.PeerURL,
		})
		if err != nil {
			return err
		}
		defer e.Close()
		etcdDied = e.Err()
		fc.Etcd.Endpoints = e.Endpoints
		log.Info("embedded etcd serving", "endpoints", e.Endpoints, "dir", filepath.Join(fc.DataDir, "etcd"))
	}
	cli, err := membership.Dial(ctx, fc.Etcd)
	if err != nil {
		return err
	}
	defer cli.Close()

	grpcLn, err := net.Listen("tcp", fc.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", fc.GRPCAddr, err)
	}
	httpLn, err := net.Listen("tcp", fc.HTTPAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("listen %s: %w", fc.HTTPAddr, err)
	}
	advertise, err := membership.AdvertiseAddr(fc.Advertise, grpcLn.Addr())
	if err != nil {
		return err
	}

	opts := []tracker.Option{tracker.WithLogger(log)}
	var serverOpts []grpc.ServerOption
	if fc.TLS.Enabled() {
		sc, err := fc.TLS.Server()
		if err != nil {
			return err
		}
		cc, err := fc.TLS.Client()
		if err != nil {
			return err
		}
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(sc)))
		opts = append(opts, tracker.WithTransportCredentials(credentials.NewTLS(cc)))
	}

	trackers, err := membership.Join(ctx, cli, membership.Config{
		Prefix: membership.TrackerPrefix,
		Self:   &ring.Member{ID: fc.ID, Addr: advertise},
		TTL:    fc.MemberTTL,
		Logger: log,
	})
	if err != nil {
		return err
	}
	// Close revokes the lease, so the other trackers drop this one at once
	// rather than after the TTL.
	defer trackers.Close()
	opts = append(opts, tracker.WithTrackers(trackers))

	if len(fc.Origins) > 0 {
		ms := make([]ring.Member, len(fc.Origins))
		for i, a := range fc.Origins {
			ms[i] = ring.Member{ID: a, Addr: a}
		}
		opts = append(opts, tracker.WithOrigins(ring.New(ms)))
	} else {
		origins, err := membership.Join(ctx, cli, membership.Config{Prefix: membership.OriginPrefix, Logger: log})
		if err != nil {
			return err
		}
		defer origins.Close()
		opts = append(opts, tracker.WithOrigins(origins))
	}

	log.Info("tracker serving", "id", fc.ID, "grpc", grpcLn.Addr().String(), "http", httpLn.Addr().String(),
		"advertise", advertise, "etcd", fc.Etcd.Endpoints, "tls", fc.TLS.Enabled())
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case err := <-etcdDied:
			log.Error("embedded etcd failed; stopping", "err", err)
			cancel()
		case <-runCtx.Done():
		}
	}()
	err = tracker.New(fc.Config, opts...).Run(runCtx, grpcLn, httpLn, serverOpts...)
	log.Info("tracker stopped", "err", err)
	return err
}
