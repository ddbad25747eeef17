package main

import (
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// binDir is where shoal-{tracker,origin,agent} are: $SHOAL_BIN from
// `make test`, or a fresh build.
func binDir(t *testing.T) string {
	if d := os.Getenv("SHOAL_BIN"); d != "" {
		return d
	}
	d := t.TempDir()
	for _, c := range []string{"tracker", "origin", "agent"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(d, "shoal-"+c), "github.com/shoal-project/shoal/cmd/"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	return d
}

// A tiny fleet through the harness: the report's numbers must agree with
// the processes' own counters — every byte an agent received came from
// the origin or another agent.
func TestTinyFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet of processes")
	}
	o := options{Agents: 4, Image: 24 << 20, Layers: 3, LinkBps: 50 << 20, Baseline: true,
		Bin: binDir(t), Out: t.TempDir(), Timeout: 2 * time.Minute}
	r := runFleet(t, o)
	if len(r.Phases) != 2 || len(r.Summaries) != 2 {
		t.Fatalf("phases %d, summaries %d", len(r.Phases), len(r.Summaries))
	}
	for _, ph := range r.Phases {
		var got, uploaded int64
		for _, a := range ph.Agents {
			if a.Error != "" || a.ReceivedAll != o.Image {
				t.Fatalf("%s %s: received %d of %d: %s", ph.Mode, a.Name, a.ReceivedAll, o.Image, a.Error)
			}
			if a.Done < a.FirstByte || a.FirstByte < a.Start {
				t.Fatalf("%s %s: start %.3f first byte %.3f done %.3f", ph.Mode, a.Name, a.Start, a.FirstByte, a.Done)
			}
			got += a.FromPeers + a.FromOrigin
			uploaded += a.Uploaded
		}
		all := int64(o.Agents) * o.Image
		if got < all {
			t.Fatalf("%s: agents' counters say %d bytes fetched, they served %d", ph.Mode, got, all)
		}
		// Sources: the origin's egress and what agents uploaded (plus
		// manifests and configs, a few KiB).
		if got > ph.OriginEgress+uploaded {
			t.Fatalf("%s: agents received %d bytes, origin sent %d and agents %d", ph.Mode, got, ph.OriginEgress, uploaded)
		}
	}
	p2p, direct := r.Summaries[0], r.Summaries[1]
	if direct.EgressCopies < float64(o.Agents)*0.99 || direct.PeerBytes != 0 {
		t.Fatalf("direct baseline: %.2f copies from the origin, %d from peers", direct.EgressCopies, direct.PeerBytes)
	}
	if p2p.EgressCopies >= 2 {
		t.Fatalf("p2p: origin sent %.2f copies", p2p.EgressCopies)
	}
	for _, f := range r.Files {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Fatalf("report file %s: %v", f, err)
		}
	}
	html, _ := os.ReadFile(r.Files[1])
	if !strings.Contains(string(html), "<polyline") || strings.Count(string(html), "<rect") != 2*o.Agents {
		t.Fatal("HTML report lacks the CDF or the timeline")
	}
	if !strings.Contains(string(html), `<table id="counters">`) || !strings.Contains(string(html), "duplicate bytes") {
		t.Fatal("HTML report lacks the table of counters")
	}
	// The origin's egress splits into its two paths; the direct fleet
	// takes everything over /v2.
	for _, ph := range r.Phases {
		if ph.OriginEgress != ph.OriginP2P+ph.OriginV2 {
			t.Fatalf("%s: egress %d ≠ p2p %d + /v2 %d", ph.Mode, ph.OriginEgress, ph.OriginP2P, ph.OriginV2)
		}
		if c := ph.CPU; c.Cores != runtime.NumCPU() || c.Busy <= 0 || c.Busy > 1 || c.Max < c.Busy || c.Max > 1 {
			t.Fatalf("%s: CPU %+v", ph.Mode, c)
		}
	}
	if ph := r.Phases[1]; ph.OriginP2P != 0 || ph.OriginV2 < int64(o.Agents)*o.Image {
		t.Fatalf("direct: origin seeded %d bytes, sent %d over /v2", ph.OriginP2P, ph.OriginV2)
	}
	if j, _ := os.ReadFile(r.Files[0]); !strings.Contains(string(j), `"duplicate_bytes"`) || !strings.Contains(string(j), `"cpu_busy_share"`) {
		t.Fatal("JSON report lacks the counters or the CPU share")
	}
}

// The scrape keeps labelled series apart as well as summing them per
// name, so one label's count (fallback GETs by result) is at hand.
func TestParseMetrics(t *testing.T) {
	m := parseMetrics(`# HELP shoal_agent_origin_requests_total Fallback GETs.
# TYPE shoal_agent_origin_requests_total counter
shoal_agent_origin_requests_total{result="ok"} 7
shoal_agent_origin_requests_total{result="busy"} 2
shoal_agent_origin_requests_total{origin="b",result="ok"} 1
shoal_agent_peer_bytes_total 4.194304e+06
odd{path="/a b,c=\"d\"}",result="ok"} 3 1700000000000
shoal_agent_blob_first_byte_seconds_bucket{le="+Inf"} 4
broken{result="ok" 9
`)
	const req = "shoal_agent_origin_requests_total"
	for _, tt := range []struct {
		got, want float64
	}{
		{m[req], 10}, {labelled(m, req, "result", "ok"), 8}, {labelled(m, req, "result", "busy"), 2},
		{labelled(m, req, "result", "error"), 0}, {m["shoal_agent_peer_bytes_total"], 4 << 20},
		{m["odd"], 3}, {labelled(m, "odd", "result", "ok"), 3}, {m["shoal_agent_blob_first_byte_seconds_bucket"], 4},
		{m["broken"], 0}, {m["shoal_agent_stalls_total"], 0},
	} {
		if tt.got != tt.want {
			t.Errorf("got %v, want %v (%v)", tt.got, tt.want, m)
		}
	}
	c := agentCountersOf(m)
	if c.OriginOK != 8 || c.OriginBusy != 2 || c.OriginError != 0 {
		t.Errorf("agent counters %+v", c)
	}
}

// Faults through the harness: two origins, one killed mid-pull; half the
// agents killed and restarted mid-pull; staggered starts. Every agent
// still ends with the right bytes, and the counters still add up.
func TestFleetWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet of processes")
	}
	o := options{Agents: 4, Image: 32 << 20, Layers: 2, LinkBps: 16 << 20, Bin: binDir(t), Out: t.TempDir(),
		Timeout: 2 * time.Minute, Origins: 2, Stagger: 500 * time.Millisecond, Churn: 0.5, KillOrigin: true}
	r := runFleet(t, o)
	ph := r.Phases[0]
	var got, uploaded int64
	for _, a := range ph.Agents {
		if a.Error != "" || a.ReceivedAll != o.Image {
			t.Fatalf("%s: received %d of %d: %s", a.Name, a.ReceivedAll, o.Image, a.Error)
		}
		got += a.FromPeers + a.FromOrigin
		uploaded += a.Uploaded
	}
	// A killed process's last counts, between its final scrape and the
	// kill, are lost: allow two pieces for each of the three killed.
	if slack := int64(3 * 2 * 4 << 20); got > ph.OriginEgress+uploaded+slack {
		t.Fatalf("agents received %d bytes, origins sent %d and agents %d", got, ph.OriginEgress, uploaded)
	}
	if ph.Agents[3].Start < 0.4 {
		t.Fatalf("the last agent started at %.2fs despite a 0.5s stagger", ph.Agents[3].Start)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		rate bool
		bad  bool
	}{
		{"256MiB", 256 << 20, false, false}, {"1GiB", 1 << 30, false, false}, {"1.5KiB", 1536, false, false},
		{"12", 0, false, true}, {"-1MiB", 0, false, true},
		{"100Mbit", 12_500_000, true, false}, {"1Gbit", 125_000_000, true, false}, {"0", 0, true, false}, {"100mb", 0, true, true},
	} {
		var got int64
		var err error
		if tt.rate {
			got, err = parseRate(tt.in)
		} else {
			got, err = parseBytes(tt.in)
		}
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("%q: %d, %v", tt.in, got, err)
		}
	}
}

// The command lines the README and the Makefile give parse as they are,
// defaults included (a default that failed its own parser once stopped
// every run that did not set it).
func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		check func(options) bool
		sim   bool
		bad   bool
	}{
		{args: nil, check: func(o options) bool { return o.Agents == 8 && o.CacheBytes == 0 && o.Baseline }},
		{args: strings.Fields("--agents 8 --image 128MiB --layers 4 --link 400Mbit --bin bin"), // make demo
			check: func(o options) bool { return o.Image == 128<<20 && o.Layers == 4 && o.LinkBps == 50_000_000 }},
		{args: strings.Fields("--netns --layers 1 --baseline none"), check: func(o options) bool { return o.Netns && !o.Baseline }},
		{args: strings.Fields("--cache 48MiB --preheat 2"), check: func(o options) bool { return o.CacheBytes == 48<<20 && o.Preheat == 2 }},
		{args: strings.Fields("--simulate --agents 1000 --link 25Mbit"), sim: true},
		{args: strings.Fields("--cache 48"), bad: true},
		{args: strings.Fields("--baseline sometimes"), bad: true},
		{args: strings.Fields("--agents 0"), bad: true},
	} {
		o, sim, _, err := parseArgs(tt.args)
		switch {
		case (err != nil) != tt.bad:
			t.Errorf("%q: err %v", tt.args, err)
		case err != nil:
		case sim.enabled() != tt.sim:
			t.Errorf("%q: simulate %v", tt.args, sim.enabled())
		case tt.check != nil && !tt.check(o):
			t.Errorf("%q: options %+v", tt.args, o)
		}
	}
}

// The counters reach the summary, the terminal table and the HTML table:
// shares of the bytes needed, and a CPU-bound phase is called out.
func TestReportCounters(t *testing.T) {
	o := options{Agents: 2, Image: 8 << 20, Layers: 1, LinkBps: 1 << 20, Origins: 2, Churn: 0.3, Netns: true}
	ph := &phase{Mode: "p2p", PeerBytes: 14 << 20, AgentOriginBytes: 4 << 20, OriginEgress: 5 << 20,
		originCounters: originCounters{OriginP2P: 4 << 20, OriginV2: 1 << 20, OriginRefused: 3, OriginBusySent: 5},
		agentCounters:  agentCounters{DuplicateBytes: 2 << 20, Expired: 7, BusyReceived: 11, BusySent: 6, Stalls: 1, OriginOK: 4, OriginBusy: 3},
		CPU:            cpuUse{Busy: 0.9, Max: 1, Cores: 2}}
	for i := range o.Agents {
		ph.Agents = append(ph.Agents, agentResult{Name: fmt.Sprint(i), Done: 9, FirstByte: 1, ReceivedAll: o.Image})
	}
	r := buildReport(o, []*phase{ph})
	s := r.Summaries[0]
	if s.NeededBytes != 16<<20 || s.ReceivedOverNeeded != 18.0/16 || s.DuplicateShare != 2.0/16 || !s.CPULimited ||
		s.BusyReceived != 11 || s.OriginBusySent != 5 || s.OriginOK != 4 {
		t.Fatalf("summary %+v", s)
	}
	var sb strings.Builder
	r.text(&sb)
	// 512 KiB pieces at 1 MiB/s: the first of two agents can have one
	// after a piece time, 0.5 s; it had its first byte at 1 s.
	for _, want := range []string{"90%/100%", "1.12x", "2.0 MiB 12.5%", "11/11", "4.0 MiB", "4/3/0", "the CPU was busy 90%",
		"first byte p50 is 2.0 × its floor of 0.50s"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, sb.String())
		}
	}
	dir := t.TempDir()
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	// --calibrate simulates the fleet as it ran; staggered agents find
	// pieces already out, so their first byte has no floor.
	o.Stagger = 30 * time.Second
	staggered := buildReport(o, []*phase{ph})
	if err := staggered.write(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	var rr realReport
	if b, err := os.ReadFile(staggered.Files[0]); err != nil || json.Unmarshal(b, &rr) != nil {
		t.Fatalf("report.json: %v", err)
	}
	if rr.Origins != 2 || rr.StaggerSeconds != 30 || rr.Churn != 0.3 || rr.Netns == nil || !*rr.Netns {
		t.Errorf("report.json as --calibrate reads it: %+v", rr)
	}
	sb.Reset()
	staggered.text(&sb)
	if strings.Contains(sb.String(), "floor") {
		t.Errorf("a staggered fleet's first byte held to a floor:\n%s", sb.String())
	}
	html, _ := os.ReadFile(r.Files[1])
	if !strings.Contains(string(html), "4 / 3 / 0") || !strings.Contains(string(html), "2.0 MiB (12.5%)") {
		t.Errorf("HTML lacks the fallback GETs:\n%s", html)
	}
}

// The HTML report, opened in headless Chromium, draws both CDF curves and
// the timeline: the screenshot holds pixels of both series' colours.
func TestReportRendersInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium missing; .ci/run installs Debian chromium")
		}
		t.Skip("chromium not installed (apt install chromium)")
	}
	o := options{Agents: 3, Image: 64 << 20, Layers: 2, LinkBps: 25 << 20}
	mk := func(mode string, scale float64) *phase {
		ph := &phase{Mode: mode, OriginEgress: int64(scale) * o.Image}
		for i := range o.Agents {
			ph.Agents = append(ph.Agents, agentResult{Name: fmt.Sprintf("agent%02d", i), Start: 0.01 * float64(i),
				FirstByte: 0.2 + 0.05*float64(i), Done: scale * (2.8 + 0.3*float64(i)), ReceivedAll: o.Image})
		}
		return ph
	}
	r := buildReport(o, []*phase{mk("p2p", 1), mk("direct", 3)})
	dir := t.TempDir()
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--screenshot="+shot, "--window-size=800,1000", "file://"+r.Files[1]).CombinedOutput()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	near := func(c color.Color, r0, g0, b0 uint32) bool {
		r, g, b, _ := c.RGBA()
		d := func(x, y uint32) bool { return x>>8 > y-24 && x>>8 < y+24 }
		return d(r, r0) && d(g, g0) && d(b, b0)
	}
	blue, red := 0, 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			c := img.At(x, y)
			if near(c, 0x1f, 0x77, 0xb4) {
				blue++
			} else if near(c, 0xd6, 0x27, 0x28) {
				red++
			}
		}
	}
	// Curves and bars: a few thousand pixels of each colour.
	if blue < 500 || red < 500 {
		t.Fatalf("screenshot has %d p2p-blue and %d direct-red pixels: the charts did not render", blue, red)
	}
}

// needNamespaces skips a fleet test that cannot run here: namespaces and
// tc need root and iproute2.
func needNamespaces(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a fleet of processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("tc not installed")
	}
}

// The same fleet in network namespaces with tc-capped links: every agent
// finishes, and nothing is left behind in the host's namespace list.
func TestNetnsFleet(t *testing.T) {
	needNamespaces(t)
	o := options{Agents: 3, Image: 16 << 20, Layers: 2, LinkBps: 200e6 / 8, Bin: binDir(t), Out: t.TempDir(),
		Timeout: 2 * time.Minute, Netns: true}
	r := runFleet(t, o)
	for _, a := range r.Phases[0].Agents {
		if a.Error != "" || a.ReceivedAll != o.Image {
			t.Fatalf("%s: received %d of %d: %s", a.Name, a.ReceivedAll, o.Image, a.Error)
		}
	}
	// The capped links hold: no agent beat the bound by much.
	if s := r.Summaries[0]; s.P50 < 0.8*r.BoundSeconds {
		t.Fatalf("p50 %.2fs under the %.2fs bound: the links are not capped", s.P50, r.BoundSeconds)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), fmt.Sprintf("shoal-lt%d", os.Getpid())) {
		t.Fatalf("namespaces left behind:\n%s", out)
	}
}

// Fifty agents, each in a network namespace of its own on a 20 Mbit/s
// link, pull a 32 MiB image at once (the bound, image ÷ link, is 13.4 s):
// every one ends with the right bytes, and the origin sends at most two
// copies — the swarm, not the origin, feeds the fleet, even when the
// origin's link is as thin as everyone's. Set-up (52 namespaces and
// processes) takes about 5 s of the run.
func TestFleet50SlowLinks(t *testing.T) {
	needNamespaces(t)
	o := options{Agents: 50, Image: 32 << 20, Layers: 1, LinkBps: 20e6 / 8, Bin: binDir(t), Out: t.TempDir(),
		Timeout: 2 * time.Minute, Netns: true}
	began := time.Now()
	r := runFleet(t, o)
	ph := r.Phases[0]
	t.Logf("setup %.1fs, pull %.1fs, all told %.1fs", ph.Setup, ph.Wall, time.Since(began).Seconds())
	failed := 0
	for _, a := range ph.Agents {
		if a.Error != "" || a.ReceivedAll != o.Image {
			if failed++; failed <= 5 {
				t.Errorf("%s: received %d of %d: %s", a.Name, a.ReceivedAll, o.Image, a.Error)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d agents failed", failed, o.Agents)
	}
	// 1.22 copies measured alone (CPU 96 %); the collapse this guards
	// against sent 12.8, whole blobs from the origin.
	if s := r.Summaries[0]; s.EgressCopies > 2 {
		t.Errorf("the origin sent %.2f copies of the image (p2p %s, /v2 %s; fallback GETs ok %d, busy %d), want ≤ 2",
			s.EgressCopies, mib1(s.OriginP2P), mib1(s.OriginV2), s.OriginOK, s.OriginBusy)
	}
}

// runFleet runs the fleet o describes and logs its report's tables.
func runFleet(t *testing.T, o options) *report {
	t.Helper()
	r, err := fleetRun(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	r.text(&sb)
	t.Log(sb.String())
	return r
}

// Churned agents fetch again what they lost, so the bytes moved can pass
// the total: the bar stays full (it once panicked the whole run).
func TestProgressPastTotal(t *testing.T) {
	for _, tt := range []struct {
		moved int64
		bar   string
	}{
		{0, strings.Repeat(".", 30)},
		{50, strings.Repeat("#", 15) + strings.Repeat(".", 15)},
		{100, strings.Repeat("#", 30)},
		{130, strings.Repeat("#", 30)},
	} {
		var done atomic.Int32
		var moved atomic.Int64
		moved.Store(tt.moved)
		var out strings.Builder
		progress(&out, "p2p", 2, 100, &done, &moved)()
		if !strings.Contains(out.String(), "["+tt.bar+"]") {
			t.Errorf("%d of 100 moved: %q", tt.moved, out.String())
		}
	}
}
