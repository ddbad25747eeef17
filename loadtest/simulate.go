package main

// --simulate runs the fleet as pkg/swarmsim's discrete-event model instead
// of processes, for fleets this machine cannot hold; --calibrate re-runs
// real load-test reports in the simulator and says how far apart they are.

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/swarmsim"
)

// calibrationLimit is how far the simulator's p99 ÷ bound may be from a
// real run's for the simulator to count as calibrated.
const calibrationLimit = 0.20

// simFlags are the flags only the simulator reads.
type simFlags struct {
	simulate  *bool
	calibrate *string
	seed      *uint64
	runs      *int
	latency   *time.Duration
	maxAgents int
}

func addSimFlags(fs *flag.FlagSet) *simFlags {
	return &simFlags{
		simulate: fs.Bool("simulate", false, "simulate the fleet (pkg/swarmsim) instead of running processes: --agents up to 100000"),
		calibrate: fs.String("calibrate", "", "comma-separated real load-test report directories (or report.json files): "+
			"re-run each in the simulator and compare p99 ÷ bound"),
		seed:      fs.Uint64("seed", 1, "simulator seed (runs use seed, seed+1, ...)"),
		runs:      fs.Int("sim-runs", 1, "simulator runs per configuration, averaged (--calibrate uses at least 3)"),
		latency:   fs.Duration("sim-latency", 0, "simulated access latency per host (default: swarmsim's)"),
		maxAgents: 100_000,
	}
}

func (f *simFlags) enabled() bool { return *f.simulate || *f.calibrate != "" }

// simOptions are the fleet's parameters as the simulator takes them.
type simOptions struct {
	Agents  int
	Image   int64
	Layers  int
	LinkBps int64
	Stagger time.Duration
	Churn   float64
	Out     string
}

// runSim is loadtest --simulate / --calibrate.
func (f *simFlags) run(ctx context.Context, w io.Writer, o simOptions) error {
	if *f.runs < 1 {
		return errors.New("--sim-runs must be at least 1")
	}
	if *f.calibrate != "" {
		return f.runCalibration(ctx, w, strings.Split(*f.calibrate, ","), o.Out)
	}
	if o.Agents < 1 || o.Agents > f.maxAgents || o.Layers < 1 || o.Layers > 128 {
		return fmt.Errorf("--agents must be 1..%d and --layers 1..128 with --simulate", f.maxAgents)
	}
	if o.LinkBps <= 0 {
		return errors.New("--simulate needs a capped --link")
	}
	if o.Churn < 0 || o.Churn > 1 {
		return errors.New("--churn must be 0..1")
	}
	row, err := f.simulateRow(ctx, o, *f.runs)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nShoal fleet simulation (pkg/swarmsim): %d agents pulling a %s image in %d layers, every link %s (bound: image ÷ link = %.1fs)",
		o.Agents, mib(o.Image), o.Layers, mbit(o.LinkBps), row.Bound)
	if o.Stagger > 0 || o.Churn > 0 {
		fmt.Fprintf(w, ", stagger %v, churn %.0f%%", o.Stagger, 100*o.Churn)
	}
	fmt.Fprintf(w, "; %d run(s) from seed %d\n\n", *f.runs, *f.seed)
	simTable(w, []simRow{row})
	if p := progressLine(row); p != "" {
		fmt.Fprintln(w, p)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, calibrationLine())
	for _, n := range row.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	if o.Out == "" {
		if o.Out, err = os.MkdirTemp("", "shoal-sim-"); err != nil {
			return err
		}
	}
	path, err := writeSimReport(o, row, *f.seed, *f.runs)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nJSON: %s\n", path)
	return nil
}

// simRow is one simulated configuration, averaged over runs.
type simRow struct {
	Agents int     `json:"agents"`
	Bound  float64 `json:"bound_seconds"`
	pullTimes
	// FirstByteFloorP50: swarmsim.FirstByteFloor, the best any schedule
	// could do.
	FirstByteFloorP50 float64   `json:"first_byte_floor_p50_seconds"`
	OriginEgress      int64     `json:"origin_egress_bytes"`
	OriginCopies      float64   `json:"origin_egress_copies"`
	PeerBytes         int64     `json:"peer_bytes"`
	DupShare          float64   `json:"duplicate_share"`
	Expired           int       `json:"requests_expired"`
	Busy              int       `json:"busy_received"`
	EndGame           int       `json:"end_game_requests"`
	TopUps            int       `json:"origin_top_ups"`
	Alone             int       `json:"alone_downloads"`
	Failed            int       `json:"failed_agents"`
	Wall              float64   `json:"sim_wall_seconds"`
	SimSeconds        float64   `json:"sim_seconds"`
	Events            int64     `json:"sim_events"`
	Runs              int       `json:"sim_runs"`
	P99OverBounds     []float64 `json:"p99_over_bound_per_run"`
	// Timeline is the first run's fleet every twentieth of the bound.
	Timeline []swarmsim.Sample `json:"timeline"`
	Notes    []string          `json:"notes,omitempty"`
}

func (r simRow) firstByteOverFloor() float64 {
	if r.FirstByteFloorP50 <= 0 {
		return 0
	}
	return r.FirstByteP50 / r.FirstByteFloorP50
}

func (r simRow) p99OverBound() float64 {
	if r.Bound <= 0 {
		return 0
	}
	return r.P99 / r.Bound
}

// progressLine says where a rollout's time went, from the first run's
// timeline: how long the swarm took to get going (a tenth of the bytes),
// how well it used the agents' uplinks once going, and how long the last
// tenth took; in bounds, so fleets of any link speed compare.
func progressLine(r simRow) string {
	if len(r.Timeline) == 0 || r.Bound <= 0 {
		return ""
	}
	at := func(frac float64) float64 {
		for _, s := range r.Timeline {
			if s.Done >= frac {
				return s.At.Seconds() / r.Bound
			}
		}
		return math.NaN()
	}
	var use float64
	n := 0
	for _, s := range r.Timeline {
		if s.Done >= 0.25 && s.Done <= 0.75 {
			use += s.UpUse
			n++
		}
	}
	if n > 0 {
		use /= float64(n)
	}
	return fmt.Sprintf("first run: 10%% of the fleet's bytes by %.2f × bound, 50%% by %.2f, 90%% by %.2f; agents' uplinks %.0f%% used from 25%% to 75%% (first run, sampled every bound ÷ 20)",
		at(0.10), at(0.50), at(0.90), 100*use)
}

// simulateRow runs o runs times (seeds seed, seed+1, ...) and averages.
// The runs are independent, so they go one per core: a 10,000-agent run
// is minutes of one core, and three seeds take the time of two.
func (f *simFlags) simulateRow(ctx context.Context, o simOptions, runs int) (simRow, error) {
	var row simRow
	results := make([]*swarmsim.Result, runs)
	errs := make([]error, runs)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for k := range runs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg := swarmsim.Config{
				Agents: o.Agents, BlobBytes: o.Image, Layers: o.Layers,
				UpBps: o.LinkBps, DownBps: o.LinkBps, OriginBps: o.LinkBps,
				Stagger: o.Stagger, Churn: o.Churn, Latency: *f.latency, Seed: *f.seed + uint64(k),
			}
			results[k], errs[k] = swarmsim.Run(ctx, cfg)
			if errs[k] != nil {
				errs[k] = fmt.Errorf("simulating %d agents, seed %d: %w", o.Agents, cfg.Seed, errs[k])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return row, err
	}
	for k, r := range results {
		sec := func(d time.Duration) float64 { return d.Seconds() / float64(runs) }
		row.Bound = r.Bound.Seconds()
		row.P50 += sec(r.Percentile(50))
		row.P90 += sec(r.Percentile(90))
		row.P99 += sec(r.Percentile(99))
		row.Max += sec(r.Percentile(100))
		row.FirstByteP50 += sec(r.FirstBytePercentile(50))
		row.FirstByteP99 += sec(r.FirstBytePercentile(99))
		if o.Stagger == 0 { // staggered agents find pieces already out
			tau := swarmsim.PieceTime(r.PieceLength, o.LinkBps)
			row.FirstByteFloorP50 = swarmsim.FirstByteFloor(o.Agents, 50, tau, 1).Seconds()
		}
		row.OriginEgress += r.OriginEgress / int64(runs)
		row.OriginCopies += r.OriginCopies / float64(runs)
		row.PeerBytes += r.PeerBytes / int64(runs)
		row.DupShare += float64(r.DuplicateBytes) / float64(int64(o.Agents)*o.Image) / float64(runs)
		row.Expired += r.Expired
		row.Busy += r.Busy
		row.EndGame += r.EndGame
		row.TopUps += r.TopUps
		row.Alone += r.Alone
		row.Failed += r.Failed
		row.Wall += r.Wall.Seconds()
		row.SimSeconds += sec(r.SimTime)
		row.Events += r.Events
		row.P99OverBounds = append(row.P99OverBounds, r.P99OverBound())
		if k == 0 {
			row.Timeline = r.Timeline
		}
		for _, n := range r.Notes {
			if !slices.Contains(row.Notes, n) {
				row.Notes = append(row.Notes, n)
			}
		}
	}
	row.Agents, row.Runs = o.Agents, runs
	// Counts are per run.
	row.Expired /= runs
	row.Busy /= runs
	row.EndGame /= runs
	row.TopUps /= runs
	row.Alone /= runs
	row.Failed /= runs
	row.Events /= int64(runs)
	return row, nil
}

func simTable(w io.Writer, rows []simRow) {
	fmt.Fprintf(w, "%7s %7s %8s %8s %7s %7s %9s %7s %8s %6s %8s %8s %8s %7s %9s\n",
		"agents", "bound", "p50", "p99", "p50÷b", "p99÷b", "ttfb p50", "÷floor", "copies", "dup", "expired", "busy", "endgame", "failed", "sim wall")
	for _, r := range rows {
		fmt.Fprintf(w, "%7d %6.1fs %7.1fs %7.1fs %7.2f %7.2f %8.2fs %7.1f %7.2fx %5.1f%% %8d %8d %8d %7d %8.1fs\n",
			r.Agents, r.Bound, r.P50, r.P99, r.P50/r.Bound, r.p99OverBound(), r.FirstByteP50, r.firstByteOverFloor(), r.OriginCopies, 100*r.DupShare,
			r.Expired, r.Busy, r.EndGame, r.Failed, r.Wall)
	}
}

// realReport is the part of a load test's report.json that calibration
// reads.
type realReport struct {
	Agents       int     `json:"agents"`
	ImageBytes   int64   `json:"image_bytes"`
	Layers       int     `json:"layers"`
	LinkBps      int64   `json:"link_bytes_per_second"`
	BoundSeconds float64 `json:"bound_seconds"`
	// Present in newer reports only.
	Origins        int     `json:"origins"`
	StaggerSeconds float64 `json:"stagger_seconds"`
	Churn          float64 `json:"churn"`
	Netns          *bool   `json:"netns"`
	Simulated      bool    `json:"simulated"`
	Summaries      []struct {
		Mode         string  `json:"mode"`
		P99          float64 `json:"p99_seconds"`
		P99OverBound float64 `json:"p99_over_bound"`
		EgressCopies float64 `json:"origin_egress_copies"`
		Failed       int     `json:"failed_agents"`
		CPUShare     float64 `json:"cpu_busy_share"`
		CPULimited   bool    `json:"cpu_limited"`
	} `json:"summaries"`
	Phases []struct {
		Mode   string `json:"mode"`
		Agents []struct {
			Start float64 `json:"start_seconds"`
		} `json:"agents"`
	} `json:"phases"`
}

// startSpread is how far apart the p2p phase's agents started: a load
// test run with --stagger starts agent i of n at stagger × i ÷ (n-1), so
// the spread is the stagger (reports do not record it). Under a second
// counts as none: unstaggered agents start within milliseconds.
func (r *realReport) startSpread() time.Duration {
	for _, ph := range r.Phases {
		if ph.Mode != "p2p" || len(ph.Agents) < 2 {
			continue
		}
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, a := range ph.Agents {
			lo, hi = min(lo, a.Start), max(hi, a.Start)
		}
		if spread := hi - lo; spread >= 1 {
			return time.Duration(spread * float64(time.Second)).Round(100 * time.Millisecond)
		}
	}
	return 0
}

func readRealReport(path string) (*realReport, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "report.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r realReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case r.Simulated:
		return nil, fmt.Errorf("%s is a simulation, not a real run", path)
	case r.Agents < 1 || r.ImageBytes < 1 || r.LinkBps < 1 || len(r.Summaries) == 0 || r.Summaries[0].Mode != "p2p":
		return nil, fmt.Errorf("%s: not a capped p2p load-test report", path)
	}
	if r.Layers < 1 {
		r.Layers = 1
	}
	return &r, nil
}

// calibrationRow compares one real run with the simulator on it.
type calibrationRow struct {
	Report       string  `json:"report"`
	Agents       int     `json:"agents"`
	ImageBytes   int64   `json:"image_bytes"`
	Layers       int     `json:"layers"`
	LinkBps      int64   `json:"link_bytes_per_second"`
	Netns        string  `json:"netns"` // yes, no, or ? (not in the report)
	Stagger      float64 `json:"stagger_seconds,omitempty"`
	CPUShare     float64 `json:"real_cpu_share"`
	CPULimited   bool    `json:"real_cpu_limited"`
	RealP99Bound float64 `json:"real_p99_over_bound"`
	RealCopies   float64 `json:"real_origin_copies"`
	RealFailed   int     `json:"real_failed_agents"`
	SimP99Bound  float64 `json:"sim_p99_over_bound"`
	SimCopies    float64 `json:"sim_origin_copies"`
	SimFailed    int     `json:"sim_failed_agents"`
	Error        float64 `json:"error"` // (sim - real) ÷ real
	Within       bool    `json:"within_limit"`
}

// calibration is what --calibrate found; simcalibration.json holds the
// last one recorded, which --simulate quotes.
type calibration struct {
	Date  string           `json:"date"`
	Limit float64          `json:"limit"`
	Seed  uint64           `json:"seed"`
	Runs  int              `json:"sim_runs_each"`
	Rows  []calibrationRow `json:"runs"`
}

//go:embed simcalibration.json
var recordedCalibration []byte

func (f *simFlags) runCalibration(ctx context.Context, w io.Writer, paths []string, out string) error {
	runs := max(*f.runs, 3)
	c := calibration{Date: time.Now().UTC().Format("2006-01-02"), Limit: calibrationLimit, Seed: *f.seed, Runs: runs}
	for _, p := range paths {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		rr, err := readRealReport(p)
		if err != nil {
			return err
		}
		s := rr.Summaries[0]
		if rr.Origins > 1 {
			fmt.Fprintf(w, "note: %s ran %d origins; the simulator has one\n", p, rr.Origins)
		}
		stagger := time.Duration(rr.StaggerSeconds * float64(time.Second))
		if stagger == 0 {
			stagger = rr.startSpread()
		}
		row, err := f.simulateRow(ctx, simOptions{Agents: rr.Agents, Image: rr.ImageBytes, Layers: rr.Layers, LinkBps: rr.LinkBps,
			Stagger: stagger, Churn: rr.Churn}, runs)
		if err != nil {
			return err
		}
		real := s.P99OverBound
		if real == 0 && rr.BoundSeconds > 0 {
			real = s.P99 / rr.BoundSeconds
		}
		cr := calibrationRow{Report: p, Agents: rr.Agents, ImageBytes: rr.ImageBytes, Layers: rr.Layers, LinkBps: rr.LinkBps,
			Netns: yesNo(rr.Netns), Stagger: stagger.Seconds(), CPUShare: s.CPUShare, CPULimited: s.CPULimited, RealP99Bound: real, RealCopies: s.EgressCopies, RealFailed: s.Failed,
			SimP99Bound: row.p99OverBound(), SimCopies: row.OriginCopies, SimFailed: row.Failed}
		if real > 0 {
			cr.Error = (cr.SimP99Bound - real) / real
		}
		cr.Within = real > 0 && math.Abs(cr.Error) <= calibrationLimit && s.Failed == 0
		c.Rows = append(c.Rows, cr)
	}
	if len(c.Rows) == 0 {
		return errors.New("--calibrate: no reports given")
	}
	slices.SortStableFunc(c.Rows, func(a, b calibrationRow) int { return a.Agents - b.Agents })
	fmt.Fprintf(w, "\nCalibration: the simulator (%d runs each, seeds from %d) against real load-test runs; within %.0f%% of the real p99 ÷ bound counts\n\n",
		runs, *f.seed, 100*calibrationLimit)
	fmt.Fprintf(w, "%7s %8s %7s %12s %8s %6s %5s %10s %10s %8s %7s %11s %10s  %s\n",
		"agents", "image", "layers", "link", "stagger", "netns", "cpu", "real p99÷b", "sim p99÷b", "error", "within", "real copies", "sim copies", "report")
	for _, r := range c.Rows {
		yes := "no"
		if r.Within {
			yes = "yes"
		}
		if r.RealFailed > 0 {
			yes = fmt.Sprintf("no (%d failed)", r.RealFailed)
		}
		cpu := fmt.Sprintf("%.0f%%", 100*r.CPUShare)
		if r.CPULimited {
			cpu += "!"
		}
		fmt.Fprintf(w, "%7d %8s %7d %12s %7.1fs %6s %5s %10.2f %10.2f %+7.0f%% %7s %10.2fx %9.2fx  %s\n",
			r.Agents, mib(r.ImageBytes), r.Layers, mbit(r.LinkBps), r.Stagger, r.Netns, cpu, r.RealP99Bound, r.SimP99Bound, 100*r.Error, yes,
			r.RealCopies, r.SimCopies, r.Report)
	}
	fmt.Fprintln(w)
	for _, r := range c.Rows {
		if r.CPULimited {
			fmt.Fprintln(w, "cpu !: the real run's machine was CPU-bound, which the simulator does not model; its times are not the links' alone")
			break
		}
	}
	fmt.Fprintln(w, "cpu: the real run's busy share of the machine's cores (the simulator models links only, no CPU); stagger: the spread of the real agents' starts, simulated alike")
	fmt.Fprintln(w, c.summary())
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(out, "simcalibration.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nJSON: %s (copy it to loadtest/simcalibration.json to have --simulate quote it)\n", path)
	return nil
}

// summary is one line: how well the simulator matched the real runs.
func (c calibration) summary() string {
	if len(c.Rows) == 0 {
		return "calibration: none recorded: run --calibrate against real --netns load-test reports"
	}
	var agents []string
	worst, within, cpu := 0.0, 0, 0
	for _, r := range c.Rows {
		agents = append(agents, fmt.Sprint(r.Agents))
		if math.Abs(r.Error) > math.Abs(worst) {
			worst = r.Error
		}
		if r.Within {
			within++
		}
		if r.CPULimited {
			cpu++
		}
	}
	verdict := "calibrated"
	if within < len(c.Rows) {
		verdict = "NOT calibrated"
	}
	return fmt.Sprintf("calibration (%s): %s: simulated p99 ÷ bound within %.0f%% of the real one in %d of %d real runs (%s agents; worst error %+.0f%%; %d of them CPU-bound)",
		c.Date, verdict, 100*c.Limit, within, len(c.Rows), strings.Join(agents, ", "), 100*worst, cpu)
}

// calibrationLine quotes the recorded calibration.
func calibrationLine() string {
	var c calibration
	if err := json.Unmarshal(recordedCalibration, &c); err != nil {
		return "calibration: none recorded (loadtest/simcalibration.json: " + err.Error() + ")"
	}
	return c.summary()
}

// simReport has the shape of the load test's report.json, marked
// simulated.
type simReport struct {
	Simulated      bool      `json:"simulated"`
	Agents         int       `json:"agents"`
	ImageBytes     int64     `json:"image_bytes"`
	Layers         int       `json:"layers"`
	LinkBps        int64     `json:"link_bytes_per_second"`
	BoundSeconds   float64   `json:"bound_seconds"`
	StaggerSeconds float64   `json:"stagger_seconds"`
	Churn          float64   `json:"churn"`
	Seed           uint64    `json:"seed"`
	Summaries      []simSumm `json:"summaries"`
	Calibration    string    `json:"calibration"`
	Sim            simRow    `json:"simulation"`
}

type simSumm struct {
	Mode string `json:"mode"`
	pullTimes
	OriginEgress int64   `json:"origin_egress_bytes"`
	EgressCopies float64 `json:"origin_egress_copies"`
	PeerBytes    int64   `json:"peer_bytes"`
	P99OverBound float64 `json:"p99_over_bound,omitempty"`
	Failed       int     `json:"failed_agents"`
	DupShare     float64 `json:"duplicate_share"`
	Expired      int     `json:"requests_expired"`
	Busy         int     `json:"busy_received"`
}

func writeSimReport(o simOptions, row simRow, seed uint64, runs int) (string, error) {
	r := simReport{
		Simulated: true, Agents: o.Agents, ImageBytes: o.Image, Layers: o.Layers, LinkBps: o.LinkBps, BoundSeconds: row.Bound,
		StaggerSeconds: o.Stagger.Seconds(), Churn: o.Churn, Seed: seed, Calibration: calibrationLine(), Sim: row,
		Summaries: []simSumm{{
			Mode: "sim", pullTimes: row.pullTimes,
			OriginEgress: row.OriginEgress, EgressCopies: row.OriginCopies, PeerBytes: row.PeerBytes, P99OverBound: row.p99OverBound(),
			Failed: row.Failed, DupShare: row.DupShare, Expired: row.Expired, Busy: row.Busy,
		}},
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(o.Out, "report.json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

func yesNo(b *bool) string {
	switch {
	case b == nil:
		return "?"
	case *b:
		return "yes"
	}
	return "no"
}

func mbit(bps int64) string { return fmt.Sprintf("%.0f Mbit/s", float64(bps)*8/1e6) }
