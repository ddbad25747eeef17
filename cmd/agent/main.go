// Command shoal-agent runs on every node: a registry mirror for the node's
// containerd that fetches layers from the swarm and seeds them.
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
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/config"
	"github.com/shoal-project/shoal/pkg/containerdcfg"
	"github.com/shoal-project/shoal/pkg/version"
)

type fileConfig struct {
	agent.Config   `yaml:",inline"`
	config.Logging `yaml:",inline"`
	// checkOnly: parse the configuration, say so, and exit.
	checkOnly bool
}

func main() {
	args := os.Args[1:]
	if version.Requested(args) {
		fmt.Println(version.String("shoal-agent"))
		return
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		if err := healthcheck(args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "shoal-agent healthcheck:", err)
			os.Exit(1)
		}
		return
	}
	if len(args) > 0 && args[0] == "containerd" {
		if err := containerdCmd(args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "shoal-agent containerd:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(args); err != nil {
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
	fs.StringVar(&fc.CapabilityPublicKeyFile, "capability-public-key-file", "", "the origins' capability public key (PKIX PEM or a certificate for it); empty: seed to any peer")
	fs.Int64Var(&fc.UploadRate, "upload-rate", 0, "seeding limit in bytes/s (0: unlimited)")
	fs.Int64Var(&fc.DownloadRate, "download-rate", 0, "download limit in bytes/s over all blobs (0: unlimited)")
	fs.StringVar(&fc.Zone, "zone", "", "topology zone")
	fs.StringVar(&fc.Rack, "rack", "", "topology rack")
	fs.StringVar(&fc.Node, "node", "", "node name")
	fc.Logging.Flags(fs)
	fs.Bool("version", false, "print the version and commit, and exit")
	fs.BoolVar(&fc.checkOnly, "check-config", false, "parse the configuration (file and flags), report, and exit")
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
	if fc.checkOnly {
		fmt.Println("configuration ok")
		return nil
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

// containerdCmd is "shoal-agent containerd configure|restore": point the
// node's containerd at this agent for every mirrored registry, or undo it.
// It runs as the DaemonSet's init container and preStop hook.
func containerdCmd(args []string) error {
	if len(args) == 0 || (args[0] != "configure" && args[0] != "restore") {
		return errors.New("usage: shoal-agent containerd configure|restore [--config agent.yaml] [--containerd-config FILE] [--hosts-dir DIR]")
	}
	verb := args[0]
	var fc fileConfig
	var containerdConfig, hostsDir, hostRoot string
	fs := flag.NewFlagSet("shoal-agent containerd "+verb, flag.ContinueOnError)
	fs.StringVar(&fc.Addr, "addr", "127.0.0.1:5080", "the agent's listen address")
	fs.StringVar(&containerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd's config.toml, for its registry config_path")
	fs.StringVar(&hostsDir, "hosts-dir", "", "write here instead of containerd's config_path")
	fs.StringVar(&hostRoot, "host-root", "", "where the node's root is mounted (in a pod: /host); prefixes both paths")
	if err := config.Parse(fs, args[1:], &fc); err != nil {
		return err
	}
	if hostsDir == "" {
		var err error
		if hostsDir, err = containerdcfg.ConfigPath(filepath.Join(hostRoot, containerdConfig)); err != nil {
			return err
		}
	}
	hostsDir = filepath.Join(hostRoot, hostsDir)
	var registries []string
	for r := range fc.Registries {
		if r != "" {
			registries = append(registries, r)
		}
	}
	slices.Sort(registries)
	if len(registries) == 0 {
		return errors.New("the agent config names no registries to mirror")
	}
	if verb == "restore" {
		return containerdcfg.Restore(hostsDir, registries)
	}
	host, port, err := net.SplitHostPort(fc.Addr)
	if err != nil {
		return fmt.Errorf("agent addr %q: %w", fc.Addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // containerd runs on this node
	}
	mirrors := make([]containerdcfg.Mirror, len(registries))
	for i, r := range registries {
		mirrors[i] = containerdcfg.Mirror{Registry: r, Agent: net.JoinHostPort(host, port)}
	}
	if err := containerdcfg.Configure(hostsDir, mirrors); err != nil {
		return err
	}
	fmt.Printf("containerd will ask %s first for %v (hosts.toml in %s)\n", net.JoinHostPort(host, port), registries, hostsDir)
	return nil
}

// healthcheck is "shoal-agent healthcheck [--url URL]": exit 0 if the
// agent answers ready. The DaemonSet's probes run it inside the pod,
// because the agent listens on the node's loopback only.
func healthcheck(args []string) error {
	fs := flag.NewFlagSet("shoal-agent healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:5080/readyz", "readiness URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(*url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", *url, resp.Status)
	}
	return nil
}
