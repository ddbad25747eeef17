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
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/config"
	"github.com/shoal-project/shoal/pkg/embedetcd"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/version"
)

// fileConfig is the YAML file: the tracker's policy plus process settings.
type fileConfig struct {
	tracker.Config `yaml:",inline"`
	// GRPCAddr serves agents and other trackers; HTTPAddr serves /metrics
	// and health.
	GRPCAddr string `yaml:"grpc_addr"`
	HTTPAddr string `yaml:"http_addr"`
	// DebugAddr serves /debug/pprof; empty serves no profiles. Profiles
	// show what the process holds, so keep it on loopback.
	DebugAddr string `yaml:"debug_addr"`
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
		// TLS: the embedded etcd serves https:// URLs with this
		// certificate and requires client certificates from this CA.
		// Beyond loopback it is required unless Plaintext.
		TLS       tlsconfig.Files `yaml:"tls"`
		Plaintext bool            `yaml:"plaintext"`
	} `yaml:"embedded_etcd"`
	// MemberTTL is how long a dead tracker stays on the ring.
	MemberTTL time.Duration `yaml:"member_ttl"`
	// Origins lists origin HTTP addresses for clusters whose origins do
	// not register in etcd; empty watches the origins' registrations.
	Origins []string `yaml:"origins"`
	// TLS secures gRPC with the cluster CA (both ways when a CA is set).
	TLS tlsconfig.Files `yaml:"tls"`
	// OriginAuth is the tracker's own origin user, for metainfo from
	// origins without anonymous pull; empty asks anonymously.
	OriginAuth auth.ClientConfig `yaml:"origin_auth"`
	// PreheatTokenFile holds the token Preheat callers present (16 bytes
	// or more); without it preheats can only come from tag rules.
	PreheatTokenFile string `yaml:"preheat_token_file"`
	// OriginTLS, when set, makes metainfo requests to origins use https:
	// ca_file is the CA their certificates chain to (default: the system
	// roots).
	OriginTLS      tlsconfig.Files `yaml:"origin_tls"`
	config.Logging `yaml:",inline"`
	// checkOnly: parse the configuration, say so, and exit.
	checkOnly bool
	// originCreds is OriginAuth loaded.
	originCreds auth.Credentials
	// preheatToken is PreheatTokenFile read.
	preheatToken string
}

func main() {
	if version.Requested(os.Args[1:]) {
		fmt.Println(version.String("shoal-tracker"))
		return
	}
	run := run
	if len(os.Args) > 1 && os.Args[1] == "preheat" {
		run, os.Args = runPreheat, os.Args[1:]
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-tracker:", err)
		os.Exit(1)
	}
}

func parse(args []string) (fileConfig, error) {
	var fc fileConfig
	fs := flag.NewFlagSet("shoal-tracker", flag.ContinueOnError)
	fs.StringVar(&fc.GRPCAddr, "grpc-addr", ":7000", "gRPC listen address for agents and trackers")
	fs.StringVar(&fc.HTTPAddr, "http-addr", ":7001", "listen address for /metrics and health")
	fs.StringVar(&fc.DebugAddr, "debug-addr", "", "listen address for /debug/pprof, e.g. 127.0.0.1:7002 (empty: no profiles)")
	fs.StringVar(&fc.Advertise, "advertise", "", "gRPC host:port other trackers reach this one at (default hostname:grpc port)")
	fs.StringVar(&fc.ID, "id", "", "member ID on the tracker ring (default the hostname)")
	fs.StringVar(&fc.DataDir, "data-dir", "", "directory for the embedded etcd")
	config.ListVar(fs, &fc.Etcd.Endpoints, "etcd-endpoints", "comma-separated etcd client URLs; empty starts an embedded etcd")
	fs.StringVar(&fc.Etcd.TLS.CertFile, "etcd-tls-cert", "", "PEM client certificate for an etcd with TLS")
	fs.StringVar(&fc.Etcd.TLS.KeyFile, "etcd-tls-key", "", "PEM key of --etcd-tls-cert")
	fs.StringVar(&fc.Etcd.TLS.CAFile, "etcd-tls-ca", "", "CA of etcd's server certificates")
	fs.StringVar(&fc.EmbeddedEtcd.ClientURL, "embedded-etcd-client-url", "http://127.0.0.1:2379", "client URL of the embedded etcd")
	fs.StringVar(&fc.EmbeddedEtcd.PeerURL, "embedded-etcd-peer-url", "http://127.0.0.1:2380", "peer URL of the embedded etcd")
	fs.StringVar(&fc.EmbeddedEtcd.TLS.CertFile, "embedded-etcd-tls-cert", "", "PEM certificate the embedded etcd serves https:// URLs with")
	fs.StringVar(&fc.EmbeddedEtcd.TLS.KeyFile, "embedded-etcd-tls-key", "", "PEM key of --embedded-etcd-tls-cert")
	fs.StringVar(&fc.EmbeddedEtcd.TLS.CAFile, "embedded-etcd-tls-ca", "", "CA the embedded etcd's clients must present certificates from")
	fs.BoolVar(&fc.EmbeddedEtcd.Plaintext, "embedded-etcd-plaintext", false, "allow the embedded etcd on plain http beyond loopback (private test networks only)")
	config.ListVar(fs, &fc.Origins, "origins", "comma-separated origin host:ports when origins do not register in etcd")
	fs.IntVar(&fc.DefaultPeers, "peers", 30, "peers handed out per announce")
	fs.DurationVar(&fc.Interval, "interval", 3*time.Second, "announce interval of downloading peers")
	fs.StringVar(&fc.TLS.CertFile, "tls-cert", "", "PEM certificate for gRPC")
	fs.StringVar(&fc.TLS.KeyFile, "tls-key", "", "PEM key for gRPC")
	fs.StringVar(&fc.TLS.CAFile, "tls-ca", "", "cluster CA: verify peers' certificates both ways")
	fs.StringVar(&fc.OriginTLS.CAFile, "origin-tls-ca", "", "CA of the origins' HTTPS certificates: reach origins over https")
	fs.StringVar(&fc.OriginAuth.Username, "origin-username", "", "origin user the tracker fetches metainfo as (empty: anonymous)")
	fs.StringVar(&fc.OriginAuth.PasswordFile, "origin-password-file", "", "file holding that user's password")
	fs.StringVar(&fc.PreheatTokenFile, "preheat-token-file", "", "file holding the token preheat callers present (empty: the Preheat API is off)")
	fc.Logging.Flags(fs)
	fs.Bool("version", false, "print the version and commit, and exit")
	fs.BoolVar(&fc.checkOnly, "check-config", false, "parse the configuration (file and flags), report, and exit")
	if err := config.Parse(fs, args, &fc); err != nil {
		return fileConfig{}, err
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
	creds, err := fc.OriginAuth.Load()
	if err != nil {
		return fileConfig{}, fmt.Errorf("origin_auth: %w", err)
	}
	fc.originCreds = creds
	if err := fc.Preheat.Validate(); err != nil {
		return fileConfig{}, err
	}
	if fc.PreheatTokenFile != "" {
		b, err := os.ReadFile(fc.PreheatTokenFile)
		if err != nil {
			return fileConfig{}, fmt.Errorf("preheat_token_file: %w", err)
		}
		if fc.preheatToken = strings.TrimSpace(string(b)); len(fc.preheatToken) < 16 {
			return fileConfig{}, errors.New("preheat_token_file: the token must be at least 16 bytes (openssl rand -hex 32)")
		}
	}
	return fc, nil
}

func run(args []string) error {
	fc, err := parse(args)
	if err != nil {
		return err
	}
	if fc.checkOnly {
		fmt.Println("configuration ok")
		return nil
	}
	log, err := fc.Logger()
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
			TLS:       fc.EmbeddedEtcd.TLS,
			Plaintext: fc.EmbeddedEtcd.Plaintext,
		})
		if err != nil {
			return err
		}
		defer e.Close()
		etcdDied = e.Err()
		fc.Etcd.Endpoints = e.Endpoints
		if !fc.Etcd.TLS.Enabled() {
			// The tracker is its own etcd's first client: its certificate
			// is signed by the CA the etcd trusts.
			fc.Etcd.TLS = fc.EmbeddedEtcd.TLS
		}
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

	var originTransport http.RoundTripper
	if fc.OriginTLS.Enabled() {
		tc, err := fc.OriginTLS.Client()
		if err != nil {
			return fmt.Errorf("origin_tls: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		originTransport = tr
	}
	opts := []tracker.Option{tracker.WithLogger(log), tracker.WithPreheatToken(fc.preheatToken),
		tracker.WithHTTPClient(&http.Client{Transport: fc.originCreds.Transport(originTransport)})}
	if fc.OriginTLS.Enabled() {
		opts = append(opts, tracker.WithOriginHTTPS())
	}
	if fc.DebugAddr != "" {
		debugLn, err := net.Listen("tcp", fc.DebugAddr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", fc.DebugAddr, err)
		}
		if ip := debugLn.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			log.Warn("profiles are served beyond loopback", "debug_addr", debugLn.Addr().String())
		}
		opts = append(opts, tracker.WithDebugListener(debugLn))
	}
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
	if len(fc.Preheat.Rules) > 0 {
		// Tag pushes land in etcd (the origins' shared index); the rules
		// preheat the ones they match.
		opts = append(opts, tracker.WithTagEvents(repostore.NewEtcd(cli, repostore.EtcdConfig{}).WatchTags(ctx)))
	}

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
		"advertise", advertise, "etcd", fc.Etcd.Endpoints, "tls", fc.TLS.Enabled(), "origin_user", fc.originCreds.Username())
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
