package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func simFlagsFor(t *testing.T, args ...string) *simFlags {
	t.Helper()
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	f := addSimFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

// --simulate prints the table and its calibration, and writes a
// report.json shaped like a real one, marked simulated.
func TestSimulate(t *testing.T) {
	f := simFlagsFor(t, "--simulate", "--seed", "3")
	dir := t.TempDir()
	var out strings.Builder
	if err := f.run(context.Background(), &out, simOptions{Agents: 8, Image: 16 << 20, Layers: 2, LinkBps: 25e6 / 8, Out: dir}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99÷b", "copies", "calibration", "report.json"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	var r struct {
		Simulated bool `json:"simulated"`
		Agents    int  `json:"agents"`
		Summaries []struct {
			P99OverBound float64 `json:"p99_over_bound"`
			Failed       int     `json:"failed_agents"`
		} `json:"summaries"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Simulated || r.Agents != 8 || len(r.Summaries) != 1 || r.Summaries[0].P99OverBound < 1 || r.Summaries[0].Failed != 0 {
		t.Errorf("report.json: %+v", r)
	}
}

// --calibrate re-runs a real report in the simulator and says how far
// apart they are; a simulated report is not a calibration target.
func TestCalibrate(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "run10")
	os.MkdirAll(real, 0o755)
	os.WriteFile(filepath.Join(real, "report.json"), []byte(`{"agents": 8, "image_bytes": 16777216, "layers": 1,
		"link_bytes_per_second": 3125000, "bound_seconds": 5.37,
		"summaries": [{"mode": "p2p", "p99_seconds": 10.74, "p99_over_bound": 2.0, "origin_egress_copies": 1.1}]}`), 0o644)
	f := simFlagsFor(t, "--calibrate", real, "--sim-runs", "1")
	var out strings.Builder
	if err := f.run(context.Background(), &out, simOptions{Out: dir}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "calibration (") || !strings.Contains(out.String(), "real p99÷b") {
		t.Errorf("output:\n%s", out.String())
	}
	var c calibration
	b, err := os.ReadFile(filepath.Join(dir, "simcalibration.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Rows) != 1 || c.Runs != 3 || c.Rows[0].RealP99Bound != 2.0 || c.Rows[0].SimP99Bound < 1 {
		t.Fatalf("calibration: %+v", c)
	}
	r := c.Rows[0]
	if want := (r.SimP99Bound - 2) / 2; r.Error != want || r.Within != (want >= -0.2 && want <= 0.2) {
		t.Errorf("error %.3f within %v; want %.3f", r.Error, r.Within, want)
	}

	sim := filepath.Join(dir, "sim")
	simFlagsFor(t, "--simulate").run(context.Background(), &out, simOptions{Agents: 4, Image: 8 << 20, Layers: 1, LinkBps: 25e6 / 8, Out: sim})
	if err := simFlagsFor(t, "--calibrate", sim).run(context.Background(), &out, simOptions{}); err == nil {
		t.Error("a simulated report was taken as a real run")
	}
}

// The recorded calibration parses, and --simulate can quote it.
func TestRecordedCalibration(t *testing.T) {
	var c calibration
	if err := json.Unmarshal(recordedCalibration, &c); err != nil {
		t.Fatalf("loadtest/simcalibration.json: %v", err)
	}
	if line := calibrationLine(); !strings.HasPrefix(line, "calibration") {
		t.Errorf("calibrationLine() = %q", line)
	}
}

// Runs go side by side but are reported in seed order, each as it would
// be alone.
func TestSimulateRunsInSeedOrder(t *testing.T) {
	o := simOptions{Agents: 8, Image: 16 << 20, Layers: 1, LinkBps: 25e6 / 8}
	all, err := simFlagsFor(t, "--seed", "5").simulateRow(t.Context(), o, 3)
	if err != nil {
		t.Fatal(err)
	}
	for k, got := range all.P99OverBounds {
		one, err := simFlagsFor(t, "--seed", fmt.Sprint(5+k)).simulateRow(t.Context(), o, 1)
		if err != nil {
			t.Fatal(err)
		}
		if want := one.P99OverBounds[0]; got != want {
			t.Errorf("run %d of 3: p99 ÷ bound %v, alone with its seed %v", k, got, want)
		}
	}
}
