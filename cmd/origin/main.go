// Command shoal-origin runs an origin: the authoritative OCI registry of a
// Shoal cluster.
package main

import (
	"cmp"
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

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/config"
	"github.com/shoal-project/shoal/pkg/gc"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/version"
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
	// P2P makes the origin a seeder in the swarms (off without listen
	// addresses); UploadRate caps what it sends, blob bodies and seeded
	// pieces together, in bytes per second.
	// GC collects garbage and applies retention (cluster mode only).
	GC             gc.Config      `yaml:"gc"`
	P2P            p2p.HostConfig `yaml:"p2p"`
	UploadRate     int64          `yaml:"upload_rate"`
	config.Logging `yaml:",inline"`
	// checkOnly: parse the configuration, say so, and exit.
	checkOnly bool
}

func main() {
	if version.Requested(os.Args[1:]) {
		fmt.Println(version.String("shoal-origin"))
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "gc" {
		if err := runGC(context.Background(), os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "shoal-origin gc:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-origin:", err)
		os.Exit(1)
	}
}

func parse(args []string) (fileConfig, error) {
	var fc fileConfig
	fs := flag.NewFlagSet("shoal-origin", flag.ContinueOnError)
	fs.StringVar(&fc.Addr, "addr", ":5000", "listen address for /v2, /metrics and health")
	fs.StringVar(&fc.DataDir, "data-dir", "", "directory for blobs, metainfo and the repository index")
	fs.StringVar(&fc.Auth.Mode, "auth-mode", "none", "push/pull auth: none, htpasswd or token")
	fs.StringVar(&fc.Auth.Htpasswd, "htpasswd", "", "bcrypt htpasswd file (htpasswd mode and the token issuer)")
	fs.BoolVar(&fc.Auth.AnonymousPull, "anonymous-pull", false, "allow pulls without credentials")
	fs.Int64Var(&fc.MaxBlobSize, "max-blob-size", 64<<30, "largest blob accepted, in bytes")
	fs.StringVar(&fc.ID, "id", "", "member ID on the origin ring (default the hostname)")
	fs.StringVar(&fc.Advertise, "advertise", "", "host:port other origins and trackers reach this one at")
	config.ListVar(fs, &fc.Etcd.Endpoints, "etcd-endpoints", "comma-separated etcd client URLs; empty runs the origin alone")
	fs.StringVar(&fc.Etcd.TLS.CertFile, "etcd-tls-cert", "", "PEM client certificate for an etcd with TLS")
	fs.StringVar(&fc.Etcd.TLS.KeyFile, "etcd-tls-key", "", "PEM key of --etcd-tls-cert")
	fs.StringVar(&fc.Etcd.TLS.CAFile, "etcd-tls-ca", "", "CA of etcd's server certificates")
	fs.IntVar(&fc.Cluster.Replicas, "replicas", 3, "origins that own each blob")
	fs.StringVar(&fc.Cluster.Replication, "replication", "sync", "sync: push returns after the owners have the blob; async: after this origin has it")
	fs.StringVar(&fc.Cluster.SecretFile, "cluster-secret-file", "", "file holding the token origins present to each other's internal endpoints (required with etcd)")
	fs.StringVar(&fc.CapabilityKeyFile, "capability-key-file", "", "Ed25519 key (PKCS #8 PEM) the origins sign piece capabilities with; empty: seeders serve any peer")
	fs.StringVar(&fc.TLS.CertFile, "tls-cert", "", "PEM certificate: serve HTTPS (reloaded when the file changes)")
	fs.StringVar(&fc.TLS.KeyFile, "tls-key", "", "PEM key of --tls-cert")
	config.ListVar(fs, &fc.TLS.ClientNames, "tls-client-names", "with --tls-client-ca: internal endpoints only for client certificates valid for one of these names")
	fs.StringVar(&fc.TLS.ClientCAFile, "tls-client-ca", "", "cluster CA: internal endpoints need a client certificate it signed; origins present theirs to each other")
	config.ListVar(fs, &fc.P2P.ListenAddrs, "p2p-listen", "libp2p multiaddrs to seed pieces on (empty: no seeding)")
	fs.Int64Var(&fc.UploadRate, "upload-rate", 0, "uplink budget for blob bodies and seeded pieces, bytes/s (0: unlimited)")
	fs.IntVar(&fc.BlobReaders, "blob-readers", 0, "most /v2 blob bodies sent at once, more get 429 + Retry-After (0: upload-rate ÷ 4 MiB/s, at least 2; 64 without upload-rate)")
	fs.DurationVar(&fc.GC.Interval, "gc-interval", 0, "run garbage collection and retention this often (0: only when asked by `shoal-origin gc`)")
	fs.DurationVar(&fc.GC.Grace, "gc-grace", time.Hour, "never collect what a push used within this long")
	fs.BoolVar(&fc.GC.DryRun, "gc-dry-run", false, "scheduled GC passes report and remove nothing")
	fc.Logging.Flags(fs)
	fs.Bool("version", false, "print the version and commit, and exit")
	fs.BoolVar(&fc.checkOnly, "check-config", false, "parse the configuration (file and flags), report, and exit")
	if err := config.Parse(fs, args, &fc); err != nil {
		return fileConfig{}, err
	}
	if err := fc.TLS.Validate(); err != nil {
		return fileConfig{}, err
	}
	if err := fc.GC.Validate(); err != nil {
		return fileConfig{}, err
	}
	// --check-config catches the missing setting; the file itself is read
	// at start, where the mounted secret exists.
	if len(fc.Etcd.Endpoints) > 0 && fc.Cluster.SecretFile == "" {
		return fileConfig{}, origin.ErrNoClusterSecret
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
	if len(fc.Etcd.Endpoints) > 0 {
		// Before anything joins etcd: a cluster member without the secret
		// would leave its internal endpoints open to anyone.
		if fc.Cluster, err = fc.Cluster.LoadSecret(); err != nil {
			return err
		}
	}
	log, err := fc.Logger()
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := []origin.Option{origin.WithLogger(log), origin.WithRegistry(reg)}
	var joined *clusterParts
	var h host.Host
	if len(fc.P2P.ListenAddrs) > 0 {
		if fc.P2P.KeyFile == "" && fc.DataDir != "" {
			fc.P2P.KeyFile = filepath.Join(fc.DataDir, "peer.key")
		}
		if h, err = p2p.NewHost(fc.P2P, nil); err != nil {
			return err
		}
		defer h.Close()
	}
	if len(fc.Etcd.Endpoints) > 0 {
		cp, err := joinCluster(ctx, fc, ln.Addr(), h, log)
		if err != nil {
			return err
		}
		// Leaving revokes the lease after the server has drained, so the
		// others stop sending here only once nothing is in flight.
		defer cp.leave()
		opts = append(opts, cp.opts...)
		joined = cp
	}
	// One budget for the origin's uplink: blob bodies on /v2 and pieces
	// seeded share it.
	egress := pace.NewLimiter(fc.UploadRate)
	if egress != nil {
		opts = append(opts, origin.WithEgressLimit(egress))
	}
	srv, err := origin.New(fc.Config, opts...)
	if err != nil {
		return err
	}
	if joined != nil {
		gcfg := fc.GC
		if gcfg.TempMaxAge == 0 {
			// Twice the idle timeout: the janitor has ended any session
			// whose file is that old.
			gcfg.TempMaxAge = 2 * cmp.Or(fc.UploadIdleTimeout, time.Hour)
		}
		col, err := gc.New(gcfg, joined.index, joined.store, srv.GCCluster(), reg, log)
		if err != nil {
			return err
		}
		srv.SetCollector(col)
	}
	if h != nil {
		seeder := p2p.NewSeeder(h, srv.Seedable(), egress, log)
		seeder.Uploaded = srv.CountSeeded
		seeder.Busy = srv.CountBusy
		if v := srv.Capabilities(); v != nil {
			// Assigned only when set: a nil *Verifier in the interface
			// would not be a nil interface.
			seeder.Capabilities = v
			seeder.Forbidden = srv.CountForbidden
		}
		seeder.EnableSuperSeeding()
		log.Info("origin seeding", "peer", h.ID(), "addrs", h.Addrs(), "upload_rate", fc.UploadRate)
	}
	return srv.Run(ctx, ln)
}

// clusterParts is what joining the cluster gives the origin: its options,
// the shared index and locked store GC works on, and how to leave.
type clusterParts struct {
	opts  []origin.Option
	index *repostore.Etcd
	store *gc.Store
	leave func()
}

// joinCluster registers the origin in etcd and returns the options that
// make it share blobs and the index with the other origins.
func joinCluster(ctx context.Context, fc fileConfig, bound net.Addr, h host.Host, log *slog.Logger) (*clusterParts, error) {
	if fc.ID == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("no --id and no hostname: %w", err)
		}
		fc.ID = h
	}
	if fc.DataDir == "" {
		return nil, errors.New("origin: data_dir is required")
	}
	advertise, err := membership.AdvertiseAddr(fc.Advertise, bound)
	if err != nil {
		return nil, err
	}
	cli, err := membership.Dial(ctx, fc.Etcd)
	if err != nil {
		return nil, err
	}
	group, err := membership.Join(ctx, cli, membership.Config{
		Prefix: membership.OriginPrefix,
		Self:   self(fc.ID, advertise, h),
		TTL:    fc.MemberTTL,
		Logger: log,
	})
	if err != nil {
		cli.Close()
		return nil, err
	}
	local, err := blobstore.NewLocal(filepath.Join(fc.DataDir, "blobstore"))
	if err != nil {
		group.Close()
		cli.Close()
		return nil, err
	}
	log.Info("origin joined cluster", "id", fc.ID, "advertise", advertise, "etcd", fc.Etcd.Endpoints,
		"origins", group.Ring().Len())
	leave := func() {
		if err := group.Close(); err != nil {
			log.Warn("leaving the origin ring", "err", err)
		}
		cli.Close()
	}
	// Commits, reads and GC deletes of one digest take turns (pkg/gc).
	blobs := gc.Lock(local, filepath.Join(fc.DataDir, "blobstore", "tmp"))
	index := repostore.NewEtcd(cli, repostore.EtcdConfig{})
	return &clusterParts{
		opts: []origin.Option{
			origin.WithStores(blobs, index),
			origin.WithCluster(origin.Peers{Members: group, Self: fc.ID}),
		},
		index: index, store: blobs, leave: leave,
	}, nil
}

// self is the origin's ring entry; with a p2p host, the tracker can hand
// it out as a seeder.
func self(id, addr string, h host.Host) *ring.Member {
	m := &ring.Member{ID: id, Addr: addr}
	if h != nil {
		m.PeerID, m.P2PAddrs = h.ID().String(), p2p.Addrs(h)
	}
	return m
}
