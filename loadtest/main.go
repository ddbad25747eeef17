// Command loadtest runs a Shoal fleet — tracker with embedded etcd, a
// seeding origin, N agents, all separate processes — pushes a generated
// image, has every agent pull it at the same moment the way containerd
// does, and reports completion times, origin egress and the distance to
// the bandwidth bound. With --baseline direct the same fleet then pulls
// straight from the origin with the same caps. --stagger, --churn and
// --kill-origin add staggered starts, agents killed and restarted mid-pull,
// and an origin killed mid-pull.
//
//	go run ./loadtest --agents 8 --image 256MiB --layers 4 --link 200Mbit
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// parseArgs reads the command line: the fleet's options, or (sim enabled)
// the simulator's.
func parseArgs(args []string) (o options, sim *simFlags, so simOptions, err error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	agents := fs.Int("agents", 8, "agent processes")
	image := fs.String("image", "256MiB", "total layer bytes (KiB, MiB, GiB suffixes)")
	layers := fs.Int("layers", 4, "layers in the image")
	link := fs.String("link", "200Mbit", "per-process uplink and downlink cap (Mbit, Gbit; 0: uncapped)")
	baseline := fs.String("baseline", "direct", "also run the fleet pulling straight from the origin: direct, or none")
	bin := fs.String("bin", "bin", "directory with shoal-tracker, shoal-origin, shoal-agent")
	out := fs.String("out", "", "report directory (default: a new temp dir)")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on one fleet's pull")
	origins := fs.Int("origins", 1, "origin processes (blobs replicated on two of them)")
	stagger := fs.Duration("stagger", 0, "spread the agents' starts over this window")
	churn := fs.Float64("churn", 0, "fraction of agents killed mid-pull and restarted on the same data")
	killOrigin := fs.Bool("kill-origin", false, "kill one origin mid-pull (needs --origins 2 or more)")
	logLevel := fs.String("log-level", "warn", "log level of the fleet's processes (logs are kept beside the report)")
	netns := fs.Bool("netns", false, "every process in its own network namespace, links capped by tc (root)")
	preheat := fs.Int("preheat", 0, "also run a rollout preceded by a preheat of K agents (shoal-tracker's Preheat), beside the cold one")
	cacheSize := fs.String("cache", "0", "agents' cache_bytes (KiB, MiB, GiB; 0: their default); the report gives the most any agent's data directory held during the pull")
	capabilities := fs.Bool("capabilities", false, "repository isolation on P2P: origins issue capabilities and every seeder checks them")
	upstream := fs.Bool("upstream", false, "the image lives only in an upstream registry (Debian's docker-registry, TLS + htpasswd) the origins pull through; agents pull it with ?ns=; the report gives the upstream's egress next to the origin's")
	upstreamRate := fs.String("upstream-rate", "0", "with --upstream, cap what the upstream registry sends (Mbit, Gbit; 0: uncapped): a remote registry's link")
	sim = addSimFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, nil, so, err
	}
	size, err := parseBytes(*image)
	if err != nil {
		return o, nil, so, err
	}
	bps, err := parseRate(*link)
	if err != nil {
		return o, nil, so, err
	}
	if sim.enabled() {
		return o, sim, simOptions{Agents: *agents, Image: size, Layers: *layers, LinkBps: bps,
			Stagger: *stagger, Churn: *churn, Out: *out}, nil
	}
	if *agents < 1 || *agents > 500 || *layers < 1 || *layers > 128 || *origins < 1 || *origins > 16 {
		return o, nil, so, errors.New("--agents must be 1..500, --layers 1..128, --origins 1..16")
	}
	if *churn < 0 || *churn > 1 || (*killOrigin && *origins < 2) {
		return o, nil, so, errors.New("--churn must be 0..1, and --kill-origin needs --origins 2 or more")
	}
	var cacheBytes int64 // 0: the agents' default
	if *cacheSize != "0" {
		if cacheBytes, err = parseBytes(*cacheSize); err != nil {
			return o, nil, so, fmt.Errorf("--cache: %w", err)
		}
	}
	if *preheat < 0 || *preheat > *agents {
		return o, nil, so, errors.New("--preheat must be 0..--agents")
	}
	if *upstream && (*netns || *preheat > 0) {
		// The registry and its counting relay live on this machine's
		// loopback, and a preheat would fetch from it before the
		// counts begin.
		return o, nil, so, errors.New("--upstream runs on loopback without --preheat: drop --netns and --preheat")
	}
	upstreamBps, err := parseRate(*upstreamRate)
	if err != nil {
		return o, nil, so, fmt.Errorf("--upstream-rate: %w", err)
	}
	if *baseline != "direct" && *baseline != "none" {
		return o, nil, so, fmt.Errorf("--baseline %q: want direct or none", *baseline)
	}
	o = options{Agents: *agents, Image: size, Layers: *layers, LinkBps: bps, Baseline: *baseline == "direct",
		Bin: *bin, Out: *out, Timeout: *timeout, Progress: os.Stderr,
		Origins: *origins, Stagger: *stagger, Churn: *churn, KillOrigin: *killOrigin, Netns: *netns, LogLevel: *logLevel, Capabilities: *capabilities, Preheat: *preheat, CacheBytes: cacheBytes, Upstream: *upstream, UpstreamBps: upstreamBps}
	return o, sim, so, nil
}

func run(args []string) error {
	o, sim, so, err := parseArgs(args)
	if err != nil {
		return err
	}
	if sim.enabled() {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return sim.run(ctx, os.Stdout, so)
	}
	if err := checkDisk(o); err != nil {
		return err
	}
	if o.Out == "" {
		if o.Out, err = os.MkdirTemp("", "shoal-report-"); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := fleetRun(ctx, o)
	if err != nil {
		return err
	}
	r.text(os.Stdout)
	return nil
}

// fleetRun runs the p2p phase and, if asked, the direct baseline, and
// writes the report.
func fleetRun(ctx context.Context, o options) (*report, error) {
	abs, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	o.Bin = abs
	modes := []string{"p2p"}
	if o.Preheat > 0 {
		// The same fleet, fresh, warmed by a preheat of K agents before
		// its rollout: next to the cold p2p rollout of the same run.
		modes = append(modes, "preheat")
	}
	if o.Baseline {
		modes = append(modes, "direct")
	}
	var phases []*phase
	for _, m := range modes {
		ph, err := runPhase(ctx, o, m)
		if err != nil {
			return nil, fmt.Errorf("%s phase: %w", m, err)
		}
		phases = append(phases, ph)
	}
	r := buildReport(o, phases)
	return r, r.write(o.Out)
}

// checkDisk refuses a fleet whose caches would not fit: every agent keeps
// a copy, the origin one, and with --upstream the upstream registry one.
func checkDisk(o options) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(os.TempDir(), &st); err != nil {
		return err
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	copies := int64(o.Agents) + 2
	if o.Upstream {
		copies++
	}
	need := copies * o.Image * 11 / 10
	if need > free {
		return fmt.Errorf("needs about %s free in %s for the fleet's caches, has %s", mib(need), os.TempDir(), mib(free))
	}
	return nil
}

func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("size %q", s)
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	return 0, fmt.Errorf("size %q: use a KiB, MiB or GiB suffix", s)
}

// parseRate turns "100Mbit" into bytes per second.
func parseRate(s string) (int64, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		bits   float64
	}{{"Gbit", 1e9}, {"Mbit", 1e6}, {"Kbit", 1e3}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("rate %q", s)
			}
			return int64(n * u.bits / 8), nil
		}
	}
	return 0, fmt.Errorf("rate %q: use Kbit, Mbit or Gbit", s)
}
