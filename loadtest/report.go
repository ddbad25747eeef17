package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/swarmsim"
)

// pullTimes are a fleet's pull times and times to first byte, in
// seconds, as the real and the simulated reports both give them.
type pullTimes struct {
	P50          float64 `json:"p50_seconds"`
	P90          float64 `json:"p90_seconds"`
	P99          float64 `json:"p99_seconds"`
	Max          float64 `json:"max_seconds"`
	FirstByteP50 float64 `json:"first_byte_p50_seconds"`
	FirstByteP99 float64 `json:"first_byte_p99_seconds"`
}

type summary struct {
	Mode string `json:"mode"`
	pullTimes
	// FirstByteFloorP50 and P99: the earliest any schedule could have had
	// those agents hold a first piece (swarmsim.FirstByteFloor); not for
	// the direct mode, whose first byte is not a checked piece.
	FirstByteFloorP50 float64 `json:"first_byte_floor_p50_seconds,omitempty"`
	FirstByteFloorP99 float64 `json:"first_byte_floor_p99_seconds,omitempty"`
	OriginEgress      int64   `json:"origin_egress_bytes"`
	EgressCopies      float64 `json:"origin_egress_copies"` // ÷ image size
	PeerBytes         int64   `json:"peer_bytes"`
	P99OverBound      float64 `json:"p99_over_bound,omitempty"`
	Failed            int     `json:"failed_agents"`
	// NeededBytes is agents × image; ReceivedOverNeeded is what the agents
	// received (from peers and origins) ÷ that, DuplicateShare the
	// duplicate bytes ÷ that.
	NeededBytes        int64   `json:"needed_bytes"`
	ReceivedOverNeeded float64 `json:"received_over_needed"`
	DuplicateShare     float64 `json:"duplicate_share"`
	agentCounters
	originCounters
	// CPUBusy and CPUBusyMax are the machine's busy share over the pull
	// and in its busiest second; CPULimited says the CPU may have been
	// the limit, and the times not the links'.
	CPUBusy    float64 `json:"cpu_busy_share"`
	CPUBusyMax float64 `json:"cpu_busy_share_max_1s"`
	CPULimited bool    `json:"cpu_limited"`
	Setup      float64 `json:"setup_seconds"`
	// The preheat before a "preheat" rollout: copies made, how long, and
	// the origin's egress for it (the rollout's egress excludes it).
	PreheatCopies  int     `json:"preheat_copies,omitempty"`
	PreheatSeconds float64 `json:"preheat_seconds,omitempty"`
	PreheatEgress  int64   `json:"preheat_origin_egress_bytes,omitempty"`
	// With --upstream: what the upstream registry sent over the pull, in
	// bytes and in copies of the image, what the origins counted reading
	// blobs from it, and the targets the run is held to.
	UpstreamEgress      int64    `json:"upstream_egress_bytes,omitempty"`
	UpstreamCopies      float64  `json:"upstream_egress_copies,omitempty"`
	UpstreamOriginsRead int64    `json:"upstream_origins_blob_bytes,omitempty"`
	UpstreamLastByte    float64  `json:"upstream_last_byte_seconds,omitempty"`
	Targets             []target `json:"targets,omitempty"`
}

// target is a bound a run's number is held to, and whether it held.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Max   float64 `json:"max"`
	Pass  bool    `json:"pass"`
}

// The pull-through targets (issue #15): the upstream sends the image about
// once per cluster, and the origin, which now also receives it, still
// sends it about once to the swarm.
const (
	maxUpstreamCopies = 1.1
	maxOriginCopies   = 1.5
)

func newTarget(name string, v, limit float64) target {
	return target{Name: name, Value: v, Max: limit, Pass: v <= limit}
}

type report struct {
	Agents       int     `json:"agents"`
	ImageBytes   int64   `json:"image_bytes"`
	Layers       int     `json:"layers"`
	LinkBps      int64   `json:"link_bytes_per_second"`
	BoundSeconds float64 `json:"bound_seconds,omitempty"` // image ÷ link: the physical floor
	// How the fleet ran, for --calibrate to simulate it alike.
	Origins        int     `json:"origins"`
	StaggerSeconds float64 `json:"stagger_seconds"`
	Churn          float64 `json:"churn"`
	Netns          bool    `json:"netns"`
	// Capabilities: every piece request carried an origin-issued
	// capability that seeders checked (--capabilities).
	Capabilities bool `json:"capabilities"`
	// Upstream: the image lived only in an upstream registry the origins
	// pulled through (--upstream).
	Upstream    bool      `json:"upstream,omitempty"`
	Summaries   []summary `json:"summaries"`
	P2PVsDirect float64   `json:"p99_p2p_over_direct,omitempty"`
	// PreheatVsCold is the preheated rollout's p99 over the cold one's.
	PreheatVsCold float64   `json:"p99_preheat_over_cold,omitempty"`
	Phases        []*phase  `json:"phases"`
	Files         [2]string `json:"-"`
}

// percentile of sorted xs (nearest rank).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

func summarize(o options, ph *phase, bound float64) summary {
	s := summary{Mode: ph.Mode, OriginEgress: ph.OriginEgress, PeerBytes: ph.PeerBytes,
		agentCounters: ph.agentCounters, originCounters: ph.originCounters, NeededBytes: int64(len(ph.Agents)) * o.Image,
		CPUBusy: ph.CPU.Busy, CPUBusyMax: ph.CPU.Max, CPULimited: ph.CPU.limited(), Setup: ph.Setup}
	if s.NeededBytes > 0 {
		s.ReceivedOverNeeded = float64(ph.PeerBytes+ph.AgentOriginBytes) / float64(s.NeededBytes)
		s.DuplicateShare = float64(ph.DuplicateBytes) / float64(s.NeededBytes)
	}
	var done, fb []float64
	for _, a := range ph.Agents {
		if a.Error != "" {
			s.Failed++
			continue
		}
		done = append(done, a.Done-a.Start)
		fb = append(fb, a.FirstByte-a.Start)
	}
	slices.Sort(done)
	slices.Sort(fb)
	s.P50, s.P90, s.P99 = percentile(done, 50), percentile(done, 90), percentile(done, 99)
	if len(done) > 0 {
		s.Max = done[len(done)-1]
	}
	s.FirstByteP50, s.FirstByteP99 = percentile(fb, 50), percentile(fb, 99)
	if ph.Mode != "direct" && o.LinkBps > 0 && o.Layers > 0 && o.Stagger == 0 {
		// An origin's uplink is an agent's: each sends one piece per piece
		// time. Staggered agents find pieces already out: no floor.
		tau := swarmsim.PieceTime(metainfo.PieceLength(o.Image/int64(o.Layers)), o.LinkBps)
		floor := func(p float64) float64 {
			return swarmsim.FirstByteFloor(len(ph.Agents), p, tau, float64(max(1, o.Origins))).Seconds()
		}
		s.FirstByteFloorP50, s.FirstByteFloorP99 = floor(50), floor(99)
	}
	s.EgressCopies = float64(ph.OriginEgress) / float64(o.Image)
	if ph.Preheat != nil {
		s.PreheatCopies, s.PreheatSeconds, s.PreheatEgress = ph.Preheat.Copies, ph.Preheat.Seconds, ph.Preheat.OriginEgress
	}
	if u := ph.Upstream; u != nil {
		s.UpstreamEgress, s.UpstreamOriginsRead, s.UpstreamLastByte = u.EgressBytes, u.OriginsBlobsBytes, u.LastByte
		s.UpstreamCopies = float64(u.EgressBytes) / float64(o.Image)
		s.Targets = append(s.Targets, newTarget("upstream copies", s.UpstreamCopies, maxUpstreamCopies))
		// A direct fleet has the origin send every agent a copy: the
		// origin's target is the swarm's.
		if ph.Mode != "direct" {
			s.Targets = append(s.Targets, newTarget("origin copies", s.EgressCopies, maxOriginCopies))
		}
	}
	if bound > 0 {
		s.P99OverBound = s.P99 / bound
	}
	return s
}

func buildReport(o options, phases []*phase) *report {
	r := &report{Agents: o.Agents, ImageBytes: o.Image, Layers: o.Layers, LinkBps: o.LinkBps, Capabilities: o.Capabilities,
		Origins: o.Origins, StaggerSeconds: o.Stagger.Seconds(), Churn: o.Churn, Netns: o.Netns,
		Upstream: o.Upstream, Phases: phases}
	if o.LinkBps > 0 {
		r.BoundSeconds = float64(o.Image) / float64(o.LinkBps)
	}
	for _, ph := range phases {
		r.Summaries = append(r.Summaries, summarize(o, ph, r.BoundSeconds))
	}
	// By mode, not position: a --preheat run has a third phase between.
	byMode := map[string]summary{}
	for _, s := range r.Summaries {
		byMode[s.Mode] = s
	}
	if p, d := byMode["p2p"], byMode["direct"]; p.P99 > 0 && d.P99 > 0 {
		r.P2PVsDirect = p.P99 / d.P99
	}
	if p, w := byMode["p2p"], byMode["preheat"]; p.P99 > 0 && w.P99 > 0 {
		r.PreheatVsCold = w.P99 / p.P99
	}
	return r
}

// mib1 is MiB with a decimal, for counters that are often small.
func mib1(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (r *report) text(w io.Writer) {
	fmt.Fprintf(w, "\nShoal load test: %d agents pulling a %s image in %d layers", r.Agents, mib(r.ImageBytes), r.Layers)
	if r.LinkBps > 0 {
		fmt.Fprintf(w, ", every link capped at %.0f Mbit/s (bound: image ÷ link = %.1fs)", float64(r.LinkBps)*8/1e6, r.BoundSeconds)
	}
	if r.Capabilities {
		fmt.Fprint(w, "; piece requests carry capabilities")
	}
	if r.Upstream {
		fmt.Fprintf(w, "; the image lives only in an upstream registry (docker-registry, TLS + htpasswd) pulled through as ?ns=%s", upstreamNS)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "\n%-7s %8s %8s %8s %8s %9s %10s %10s %14s %8s %12s %6s\n",
		"mode", "p50", "p90", "p99", "max", "cpu/max", "ttfb p50", "ttfb p99", "origin egress", "copies", "from peers", "failed")
	for _, s := range r.Summaries {
		fmt.Fprintf(w, "%-7s %7.2fs %7.2fs %7.2fs %7.2fs %9s %9.3fs %9.3fs %14s %7.2fx %12s %6d\n",
			s.Mode, s.P50, s.P90, s.P99, s.Max, fmt.Sprintf("%.0f%%/%.0f%%", 100*s.CPUBusy, 100*s.CPUBusyMax), s.FirstByteP50, s.FirstByteP99,
			mib(s.OriginEgress), s.EgressCopies, mib(s.PeerBytes), s.Failed)
	}
	// What the processes counted: how the bytes moved.
	fmt.Fprintf(w, "\n%-7s %9s %15s %8s %15s %7s %12s %12s %15s %6s\n",
		"mode", "recv/need", "duplicate", "expired", "busy rcvd/sent", "stalls", "origin p2p", "origin /v2", "/v2 ok/busy/err", "429s")
	for _, s := range r.Summaries {
		fmt.Fprintf(w, "%-7s %8.2fx %15s %8d %15s %7d %12s %12s %15s %6d\n",
			s.Mode, s.ReceivedOverNeeded, fmt.Sprintf("%s %.1f%%", mib1(s.DuplicateBytes), 100*s.DuplicateShare), s.Expired,
			fmt.Sprintf("%d/%d", s.BusyReceived, s.BusySent+s.OriginBusySent), s.Stalls, mib1(s.OriginP2P), mib1(s.OriginV2),
			fmt.Sprintf("%d/%d/%d", s.OriginOK, s.OriginBusy, s.OriginError), s.OriginRefused)
	}
	for _, ph := range r.Phases {
		if d := ph.Disk; d != nil {
			fmt.Fprintf(w, "%-7s disk: an agent held at most %s of blobs against cache_bytes %s (%.2f x; deleted but open: at most %s; besides, metadata: %d bytes); over the limit in %d of %d samples\n",
				ph.Mode, mib1(d.MaxBytes), mib1(d.LimitBytes), float64(d.MaxBytes)/float64(d.LimitBytes), mib1(d.MaxUnlinkedBytes), d.MaxMetaBytes, d.OverLimit, d.Samples)
		}
	}
	fmt.Fprintln(w)
	for _, s := range r.Summaries {
		if s.P99OverBound > 0 {
			fmt.Fprintf(w, "%s: p99 is %.2f × the bound\n", s.Mode, s.P99OverBound)
		}
		if s.FirstByteFloorP50 > 0 {
			fmt.Fprintf(w, "%s: first byte p50 is %.1f × its floor of %.2fs, p99 %.1f × %.2fs (a first piece's holders at most double each piece time)\n",
				s.Mode, s.FirstByteP50/s.FirstByteFloorP50, s.FirstByteFloorP50, s.FirstByteP99/s.FirstByteFloorP99, s.FirstByteFloorP99)
		}
		if s.CPULimited {
			fmt.Fprintf(w, "%s: the CPU was busy %.0f%% (%.0f%% in its busiest second): the times may be the machine's limit, not the links'\n",
				s.Mode, 100*s.CPUBusy, 100*s.CPUBusyMax)
		}
	}
	for _, s := range r.Summaries {
		if s.Targets == nil {
			continue
		}
		fmt.Fprintf(w, "%s: upstream sent %s (%.2fx the image; the origins read %s of blobs from it), its last byte at %.2fs; origin sent %s (%.2fx)\n",
			s.Mode, mib1(s.UpstreamEgress), s.UpstreamCopies, mib1(s.UpstreamOriginsRead), s.UpstreamLastByte, mib1(s.OriginEgress), s.EgressCopies)
		for _, t := range s.Targets {
			verdict := "PASS"
			if !t.Pass {
				verdict = "FAIL"
			}
			fmt.Fprintf(w, "%s: %s %.2f, target ≤ %.2f: %s\n", s.Mode, t.Name, t.Value, t.Max, verdict)
		}
	}
	for _, s := range r.Summaries {
		if s.PreheatCopies > 0 {
			fmt.Fprintf(w, "%s: before the rollout, %d agents preheated in %.2fs; origin egress for the preheat %s (%.2fx the image)\n",
				s.Mode, s.PreheatCopies, s.PreheatSeconds, mib(s.PreheatEgress), float64(s.PreheatEgress)/float64(r.ImageBytes))
		}
	}
	if r.P2PVsDirect > 0 {
		fmt.Fprintf(w, "p2p p99 ÷ direct p99 = %.2f\n", r.P2PVsDirect)
	}
	if r.PreheatVsCold > 0 {
		fmt.Fprintf(w, "preheated p99 ÷ cold p2p p99 = %.2f\n", r.PreheatVsCold)
	}
	if r.Files[0] != "" {
		fmt.Fprintf(w, "\nJSON: %s\nHTML: %s\n", r.Files[0], r.Files[1])
	}
}

// write saves the JSON and the HTML report in dir.
func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	r.Files = [2]string{filepath.Join(dir, "report.json"), filepath.Join(dir, "report.html")}
	if err := os.WriteFile(r.Files[0], j, 0o644); err != nil {
		return err
	}
	f, err := os.Create(r.Files[1])
	if err != nil {
		return err
	}
	defer f.Close()
	return page.Execute(f, r.view())
}

// The HTML is self-contained: inline SVG, no scripts, no network.
type series struct {
	Mode    string
	Color   string
	Points  string // SVG polyline points of the completion-time CDF
	LegendY float64
}

type bar struct {
	Y, X0, X1, X2 float64
	Label         string
	Color         string
	Failed        bool
}

// counterRow is one line of the HTML table of counters: a value per mode.
type counterRow struct {
	Name, Meaning string
	Values        []string
}

type view struct {
	*report
	Text     string
	Counters []counterRow
	Series   []series
	Bars     []bar
	Width    float64
	Height   float64
	MaxT     float64
	Ticks    []float64
	TLHeight float64
}

func (r *report) view() view {
	var sb strings.Builder
	r.text(&sb)
	v := view{report: r, Text: sb.String(), Width: 640, Height: 320, Counters: r.counterRows()}
	colors := map[string]string{"p2p": "#1f77b4", "direct": "#d62728", "preheat": "#2ca02c"}
	for _, ph := range r.Phases {
		for _, a := range ph.Agents {
			v.MaxT = max(v.MaxT, a.Done)
		}
	}
	v.MaxT = max(v.MaxT, r.BoundSeconds, 0.001) * 1.05
	x := func(t float64) float64 { return 50 + t/v.MaxT*(v.Width-70) }
	for i := 0; i <= 4; i++ {
		v.Ticks = append(v.Ticks, v.MaxT*float64(i)/4)
	}
	for _, ph := range r.Phases {
		var done []float64
		for _, a := range ph.Agents {
			if a.Error == "" {
				done = append(done, a.Done-a.Start)
			}
		}
		slices.Sort(done)
		var pts []string
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(0), v.Height-30))
		for i, d := range done {
			y := v.Height - 30 - float64(i+1)/float64(len(ph.Agents))*(v.Height-50)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(d), v.Height-30-float64(i)/float64(len(ph.Agents))*(v.Height-50)), fmt.Sprintf("%.1f,%.1f", x(d), y))
		}
		v.Series = append(v.Series, series{Mode: ph.Mode, Color: colors[ph.Mode], Points: strings.Join(pts, " "),
			LegendY: 34 + 16*float64(len(v.Series))})
	}
	// The timeline leaves room on the left for agent names.
	tx := func(t float64) float64 { return 110 + t/v.MaxT*(v.Width-130) }
	row := 0.0
	for _, ph := range r.Phases {
		for _, a := range ph.Agents {
			v.Bars = append(v.Bars, bar{Y: 20 + row*14, X0: tx(a.Start), X1: tx(max(a.FirstByte, a.Start)), X2: tx(a.Done),
				Label: ph.Mode + " " + a.Name, Color: colors[ph.Mode], Failed: a.Error != ""})
			row++
		}
	}
	v.TLHeight = 40 + row*14
	return v
}

func (r *report) counterRows() []counterRow {
	rows := []struct {
		name, meaning string
		value         func(s summary) string
	}{
		{"CPU busy", "the machine's busy share over the pull, and in its busiest second; near 100%: the CPU, not the links, set the pace",
			func(s summary) string { return fmt.Sprintf("%.0f%% / %.0f%%", 100*s.CPUBusy, 100*s.CPUBusyMax) }},
		{"received ÷ needed", "bytes the agents received from peers and origins ÷ agents × image",
			func(s summary) string { return fmt.Sprintf("%.2f×", s.ReceivedOverNeeded) }},
		{"duplicate bytes", "piece bytes received for pieces already held (share of the bytes needed)",
			func(s summary) string {
				return fmt.Sprintf("%s (%.1f%%)", mib1(s.DuplicateBytes), 100*s.DuplicateShare)
			}},
		{"requests expired", "piece requests withdrawn because the peer went quiet past its deadline (asked again elsewhere)",
			func(s summary) string { return fmt.Sprint(s.Expired) }},
		{"busy received", "piece requests a seeder refused because its uplink was full (chokes)",
			func(s summary) string { return fmt.Sprint(s.BusyReceived) }},
		{"busy sent", "refusals sent by agents' seeders / by origins",
			func(s summary) string { return fmt.Sprintf("%d / %d", s.BusySent, s.OriginBusySent) }},
		{"stalls", "times a download's swarm went quiet, so pieces came from the origin one at a time",
			func(s summary) string { return fmt.Sprint(s.Stalls) }},
		{"origin egress p2p", "piece bytes the origins seeded over the piece protocol",
			func(s summary) string { return mib1(s.OriginP2P) }},
		{"origin egress /v2", "bytes the origins sent as /v2 bodies (blobs, fallback ranges, manifests)",
			func(s summary) string { return mib1(s.OriginV2) }},
		{"/v2 fallback GETs", "agents' range GETs to an origin: ok / busy / error",
			func(s summary) string { return fmt.Sprintf("%d / %d / %d", s.OriginOK, s.OriginBusy, s.OriginError) }},
		{"/v2 refused (429)", "blob GETs the origins refused because their uplink was full",
			func(s summary) string { return fmt.Sprint(s.OriginRefused) }},
		{"setup", "time to start the fleet before the pull",
			func(s summary) string { return fmt.Sprintf("%.1fs", s.Setup) }},
	}
	if r.Upstream {
		rows = append(rows, struct {
			name, meaning string
			value         func(s summary) string
		}{"upstream egress", fmt.Sprintf("bytes the upstream registry sent over the pull, counted at a relay in front of it (copies of the image; target ≤ %.1f)", maxUpstreamCopies),
			func(s summary) string { return fmt.Sprintf("%s (%.2f×)", mib1(s.UpstreamEgress), s.UpstreamCopies) }})
	}
	var out []counterRow
	for _, row := range rows {
		c := counterRow{Name: row.name, Meaning: row.meaning}
		for _, s := range r.Summaries {
			c.Values = append(c.Values, row.value(s))
		}
		out = append(out, c)
	}
	return out
}

func (v view) X(t float64) float64 { return 50 + t/v.MaxT*(v.Width-70) }

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"sub": func(a, b float64) float64 { return a - b },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Shoal load test</title>
<style>body{font:14px sans-serif;margin:24px;color:#222} pre{background:#f6f6f6;padding:12px} svg{background:#fff;border:1px solid #ddd}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} td.v{text-align:right;white-space:nowrap} td.m{color:#666;font-size:12px}</style>
</head><body>
<h1>Shoal load test</h1>
<pre>{{.Text}}</pre>
<h2>Completion time CDF</h2>
<svg id="cdf" width="{{.Width}}" height="{{.Height}}" xmlns="http://www.w3.org/2000/svg">
<line x1="50" y1="{{sub .Height 30}}" x2="{{sub .Width 20}}" y2="{{sub .Height 30}}" stroke="#444"/>
<line x1="50" y1="20" x2="50" y2="{{sub .Height 30}}" stroke="#444"/>
{{range .Ticks}}<text x="{{$.X .}}" y="{{sub $.Height 12}}" font-size="11" text-anchor="middle">{{printf "%.1fs" .}}</text>{{end}}
<text x="14" y="24" font-size="11">100%</text><text x="20" y="{{sub .Height 30}}" font-size="11">0%</text>
{{if .BoundSeconds}}<line x1="{{.X .BoundSeconds}}" y1="20" x2="{{.X .BoundSeconds}}" y2="{{sub .Height 30}}" stroke="#999" stroke-dasharray="4"/><text x="{{.X .BoundSeconds}}" y="16" font-size="11" text-anchor="middle">bound</text>{{end}}
{{range .Series}}<polyline fill="none" stroke="{{.Color}}" stroke-width="2" points="{{.Points}}"><title>{{.Mode}}</title></polyline>{{end}}
{{range .Series}}<text x="{{sub $.Width 120}}" y="{{.LegendY}}" fill="{{.Color}}" font-size="12">{{.Mode}}</text>{{end}}
</svg>
<h2>Per-agent timeline</h2>
<p>Thin: waiting for the first byte. Thick: downloading. Red outline: failed.</p>
<svg id="timeline" width="{{.Width}}" height="{{.TLHeight}}" xmlns="http://www.w3.org/2000/svg">
{{range .Bars}}<text x="4" y="{{.Y}}" font-size="9" dy="4">{{.Label}}</text>
<line x1="{{.X0}}" y1="{{.Y}}" x2="{{.X1}}" y2="{{.Y}}" stroke="{{.Color}}" stroke-width="2"/>
<rect x="{{.X1}}" y="{{sub .Y 5}}" width="{{sub .X2 .X1}}" height="10" fill="{{.Color}}"{{if .Failed}} stroke="red"{{end}}/>
{{end}}</svg>
<h2>What the processes counted</h2>
<table id="counters">
<tr><th>counter</th>{{range .Summaries}}<th>{{.Mode}}</th>{{end}}<th>meaning</th></tr>
{{range .Counters}}<tr><td>{{.Name}}</td>{{range .Values}}<td class="v">{{.}}</td>{{end}}<td class="m">{{.Meaning}}</td></tr>
{{end}}</table>
</body></html>
`))
