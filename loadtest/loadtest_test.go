package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	r, err := fleetRun(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	r.text(&sb)
	t.Log(sb.String())
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
