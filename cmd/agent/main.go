// Command shoal-agent runs on every node: a registry mirror for the node's
// containerd that fetches layers from the swarm and seeds them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/config"
)

type fileConfig struct {
	agent.Config   `yaml:",inline"`
	config.Logging `yaml:",inline"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-agent:", err)
		os.Exit(1)
	}
}

func parse(args []string) (fileConfig, error) {
	var fc fileConfig
	var origins []string
	fs := flag.NewFlagSet("shoal-agent", flag.ContinueOnError)
	fs.StringVar(&fc.Addr, "addr", "127.0.0.1:5080", "listen address for containerd's /v2, /metrics and health")
	fs.StringVar(&fc.DataDir, "data-dir", "", "directory for the cache, downloads and the peer key")
	fs.Int64Var(&fc.CacheBytes, "cache-bytes", 20<<30, "blob cache size limit")
	fs.StringVar(&fc.Tracker, "tracker", "", "tracker gRPC host:port (empty: plain pull-through cache)")
	config.ListVar(fs, &origins, "origins", "comma-separated origin base URLs for the default registry (no ?ns=)")
	config.ListVar(fs, &fc.P2P.ListenAddrs, "p2p-listen", "libp2p listen multiaddrs (default /ip4/0.0.0.0/tcp/4001)")
	fs.StringVar(&fc.P2P.PSKFile, "p2p-psk", "", "private-network key file")
	fs.Int64Var(&fc.UploadRate, "upload-rate", 0, "seeding limit in bytes/s (0: unlimited)")
	fs.Int64Var(&fc.DownloadRate, "download-rate", 0, "download limit in bytes/s over all blobs (0: unlimited)")
	fs.StringVar(&fc.Zone, "zone", "", "topology zone")
	fs.StringVar(&fc.Rack, "rack", "", "topology rack")
	fs.StringVar(&fc.Node, "node", "", "node name")
	fc.Logging.Flags(fs)
	if err := config.Parse(fs, args, &fc); err != nil {
		return fileConfig{}, err
	}
	if len(origins) > 0 {
		if fc.Registries == nil {
			fc.Registries = map[string]agent.Upstream{}
		}
		fc.Registries[""] = agent.Upstream{Origins: origins}
	}
	return fc, nil
}

func run(args []string) error {
	fc, err := parse(args)
	if err != nil {
		return err
	}
	log, err := fc.Logger()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := agent.New(fc.Config, log, reg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx, nil)
}
