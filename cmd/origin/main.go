// Command shoal-origin runs an origin: the authoritative OCI registry of a
// Shoal cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/config"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/ring"
)

// fileConfig is the YAML file: the origin's config plus process settings.
type fileConfig struct {
	origin.Config `yaml:",inline"`
	// ID names this origin on the ring (default the hostname); Advertise
	// is the host:port other origins and trackers reach it at (default
	// the hostname with Addr's port).
	ID        string `yaml:"id"`
	Advertise string `yaml:"advertise"`
	// Etcd makes the origin one of a cluster; no endpoints runs it alone.
	Etcd membership.EtcdConfig `yaml:"etcd"`
	// MemberTTL is how long a crashed origin stays on the ring.
	MemberTTL time.Duration `yaml:"member_ttl"`
	LogLevel  string        `yaml:"log_level"`
	LogFormat string        `yaml:"log_format"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-origin:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("shoal-origin", flag.ContinueOnError)
	var (
		cfgPath   = fs.String("config", "", "YAML config file; flags override it")
		addr      = fs.String("addr", ":5000", "listen address for /v2, /metrics and health")
		dataDir   = fs.String("data-dir", "", "directory for blobs, metainfo and the repository index")
		authMode  = fs.String("auth-mode", "none", "push/pull auth: none, htpasswd or token")
		htpasswd  = fs.String("htpasswd", "", "bcrypt htpasswd file (htpasswd mode and the token issuer)")
		anonPull  = fs.Bool("anonymous-pull", false, "allow pulls without credentials")
		maxBlob   = fs.Int64("max-blob-size", 64<<30, "largest blob accepted, in bytes")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text or json")
		id        = fs.String("id", "", "member ID on the origin ring (default the hostname)")
		advertise = fs.String("advertise", "", "host:port other origins and trackers reach this one at")
		endpoints = fs.String("etcd-endpoints", "", "comma-separated etcd client URLs; empty runs the origin alone")
		replicas  = fs.Int("replicas", 3, "origins that own each blob")
		mode      = fs.String("replication", "sync", "sync: push returns after the owners have the blob; async: after this origin has it")
		secret    = fs.String("cluster-secret", "", "bearer token origins present to each other's internal endpoints")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fc := fileConfig{LogLevel: "info", LogFormat: "text"}
	if err := config.Load(*cfgPath, &fc); err != nil {
		return err
	}
	for name := range config.Visited(fs) {
		switch name {
		case "addr":
			fc.Addr = *addr
		case "data-dir":
			fc.DataDir = *dataDir
		case "auth-mode":
			fc.Auth.Mode = *authMode
		case "htpasswd":
			fc.Auth.Htpasswd = *htpasswd
		case "anonymous-pull":
			fc.Auth.AnonymousPull = *anonPull
		case "max-blob-size":
			fc.MaxBlobSize = *maxBlob
		case "log-level":
			fc.LogLevel = *logLevel
		case "log-format":
			fc.LogFormat = *logFormat
		case "id":
			fc.ID = *id
		case "advertise":
			fc.Advertise = *advertise
		case "etcd-endpoints":
			fc.Etcd.Endpoints = config.SplitList(*endpoints)
		case "replicas":
			fc.Cluster.Replicas = *replicas
		case "replication":
			fc.Cluster.Replication = *mode
		case "cluster-secret":
			fc.Cluster.Secret = *secret
		}
	}
	if fc.Addr == "" {
		fc.Addr = *addr
	}
	log, err := config.NewLogger(fc.LogLevel, fc.LogFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", fc.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", fc.Addr, err)
	}
	defer ln.Close()
	opts := []origin.Option{origin.WithLogger(log)}
	if len(fc.Etcd.Endpoints) > 0 {
		leave, clusterOpts, err := joinCluster(ctx, fc, ln.Addr(), log)
		if err != nil {
			return err
		}
		// Leaving revokes the lease after the server has drained, so the
		// others stop sending here only once nothing is in flight.
		defer leave()
		opts = append(opts, clusterOpts...)
	}
	srv, err := origin.New(fc.Config, opts...)
	if err != nil {
		return err
	}
	return srv.Run(ctx, ln)
}

// joinCluster registers the origin in etcd and returns the options that
// make it share blobs and the index with the other origins.
func joinCluster(ctx context.Context, fc fileConfig, bound net.Addr, log *slog.Logger) (func(), []origin.Option, error) {
	if fc.ID == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, nil, fmt.Errorf("no --id and no hostname: %w", err)
		}
		fc.ID = h
	}
	if fc.DataDir == "" {
		return nil, nil, errors.New("origin: data_dir is required")
	}
	advertise, err := membership.AdvertiseAddr(fc.Advertise, bound)
	if err != nil {
		return nil, nil, err
	}
	cli, err := membership.Dial(ctx, fc.Etcd)
	if err != nil {
		return nil, nil, err
	}
	group, err := membership.Join(ctx, cli, membership.Config{
		Prefix: membership.OriginPrefix,
		Self:   &ring.Member{ID: fc.ID, Addr: advertise},
		TTL:    fc.MemberTTL,
		Logger: log,
	})
	if err != nil {
		cli.Close()
		return nil, nil, err
	}
	blobs, err := blobstore.NewLocal(filepath.Join(fc.DataDir, "blobstore"))
	if err != nil {
		group.Close()
		cli.Close()
		return nil, nil, err
	}
	log.Info("origin joined cluster", "id", fc.ID, "advertise", advertise, "etcd", fc.Etcd.Endpoints,
		"origins", group.Ring().Len())
	leave := func() {
		if err := group.Close(); err != nil {
			log.Warn("leaving the origin ring", "err", err)
		}
		cli.Close()
	}
	return leave, []origin.Option{
		origin.WithStores(blobs, repostore.NewEtcd(cli, repostore.EtcdConfig{})),
		origin.WithCluster(origin.Peers{Members: group, Self: fc.ID}),
	}, nil
}
