package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/shoal-project/shoal/pkg/proctest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

const preheatToken = "e2e-preheat-token-0123456789abcdef"

// preheatCacheBytes is each agent's cache: one 7 MiB image fits, two do
// not, so a second image puts the first under pressure.
const preheatCacheBytes = 10 << 20

// preheatCluster is a tracker (embedded etcd, preheat token, a tag rule
// for rules/*), a seeding origin and four agents, two per zone, each
// fetching at most 4 MiB/s so that a preheat lasts long enough to kill
// an agent in the middle of it.
type preheatCluster struct {
	dir, origin, tokenFile string
	tracker                trackerProc
	agents                 []agentProc
	ids                    []string // agents' peer IDs, same order
	client                 shoalpb.TrackerClient
	dead                   map[int]bool // agents killed
}

func startPreheatCluster(t *testing.T) *preheatCluster {
	t.Helper()
	c := &preheatCluster{dir: t.TempDir(), dead: map[int]bool{}}
	c.tokenFile = filepath.Join(c.dir, "preheat-token")
	cfg := filepath.Join(c.dir, "tracker.yaml")
	os.WriteFile(c.tokenFile, []byte(preheatToken+"\n"), 0o600)
	os.WriteFile(cfg, []byte("preheat:\n  poll_interval: 1s\n  rules:\n    - repository: \"rules/*\"\n      copies: 1\n      selector: {zone: b}\n"), 0o644)
	c.tracker = startTracker(t, c.dir, "--config", cfg, "--preheat-token-file", c.tokenFile)
	c.origin = startOrigin(t, c.dir, c.tracker.etcd)
	peerRE := regexp.MustCompile(`msg="agent serving".* peer=(\S+)`)
	for i, zone := range []string{"a", "a", "b", "b"} {
		a := startAgent(t, c.dir, fmt.Sprintf("a%d", i), c.tracker.grpc, c.origin,
			fmt.Sprintf("zone: %s\nrack: r%d\ndownload_rate: 4194304\ncache_bytes: %d\n", zone, i, preheatCacheBytes))
		m := peerRE.FindStringSubmatch(a.Logs())
		if m == nil {
			t.Fatalf("agent a%d: no peer ID in its log:\n%s", i, a.Logs())
		}
		c.agents, c.ids = append(c.agents, a), append(c.ids, m[1])
	}
	conn, err := grpc.NewClient(c.tracker.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.client = shoalpb.NewTrackerClient(conn)
	return c
}

// holders are the agents (by index) holding every blob of im.
func (c *preheatCluster) holders(t *testing.T, im image) []int {
	t.Helper()
	var out []int
	for i, a := range c.agents {
		all := true
		for _, b := range im.blobs() {
			all = all && holdsBlob(t, filepath.Join(a.dir, "data"), b.Digest)
		}
		if all {
			out = append(out, i)
		}
	}
	return out
}

// holdsAny reports whether agent i holds any blob of im.
func (c *preheatCluster) holdsAny(t *testing.T, i int, im image) bool {
	for _, b := range im.blobs() {
		if holdsBlob(t, filepath.Join(c.agents[i].dir, "data"), b.Digest) {
			return true
		}
	}
	return false
}

// preheat runs `shoal-tracker preheat` to its end and returns its output.
func (c *preheatCluster) preheat(t *testing.T, args ...string) string {
	t.Helper()
	p := proctest.Start(t, proctest.Binary(t, "tracker"), append([]string{"preheat", "--tracker", c.tracker.grpc,
		"--token-file", c.tokenFile, "--timeout", "90s"}, args...)...)
	if err := p.Wait(2 * time.Minute); err != nil {
		t.Fatalf("preheat %v: %v\n%s\ntracker:\n%s", args, err, p.Logs(), c.tracker.Logs())
	}
	return p.Logs()
}

func (c *preheatCluster) zone(i int) string { return map[bool]string{true: "a", false: "b"}[i < 2] }

func TestPreheat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := startPreheatCluster(t)
	imgSizes := []int{4 << 20, 2 << 20, 1 << 20}
	var v1 image

	t.Run("K=2 of 4: exactly two copies, one per zone", func(t *testing.T) {
		im := pushLayers(t, "http://"+c.origin, "team/app", "v1", imgSizes...)
		egress0 := metric(t, c.origin, "shoal_origin_seeded_bytes_total") + metric(t, c.origin, "shoal_origin_bytes_sent_total")
		out := c.preheat(t, "--repo", "team/app", "--tag", "v1", "--copies", "2")
		if !strings.Contains(out, "done: 2/2 complete") {
			t.Fatalf("preheat output:\n%s", out)
		}
		v1 = im
		h := c.holders(t, im)
		if len(h) != 2 || c.zone(h[0]) == c.zone(h[1]) {
			t.Fatalf("agents holding the image: %v (zones a,a,b,b), want two in different zones\n%s", h, out)
		}
		for i := range c.agents {
			if !slices.Contains(h, i) && c.holdsAny(t, i, im) {
				t.Fatalf("agent a%d, not chosen, holds a blob of the image", i)
			}
		}
		egress := metric(t, c.origin, "shoal_origin_seeded_bytes_total") + metric(t, c.origin, "shoal_origin_bytes_sent_total") - egress0
		t.Logf("preheat K=2: image %d bytes, origin sent %.0f bytes (%.2f copies)\n%s", im.bytes(), egress, egress/float64(im.bytes()), out)
	})

	t.Run("repeat is a no-op", func(t *testing.T) {
		out := c.preheat(t, "--repo", "team/app", "--tag", "v1", "--copies", "2")
		if !strings.Contains(out, "no-op") {
			t.Fatalf("second preheat was not a no-op:\n%s", out)
		}
	})

	t.Run("wrong token refused", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer not-the-token-at-all")
		if _, err := c.client.Preheat(ctx, &shoalpb.PreheatRequest{Repo: "team/app", Reference: "v1", Copies: 1}); err == nil {
			t.Fatal("preheat with a wrong token accepted")
		}
	})

	t.Run("chosen agent killed mid-preheat: another takes its place", func(t *testing.T) {
		im := pushLayers(t, "http://"+c.origin, "team/app", "v2", imgSizes...)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+preheatToken)
		st, err := c.client.Preheat(ctx, &shoalpb.PreheatRequest{Repo: "team/app", Reference: "v2", Copies: 2})
		if err != nil {
			t.Fatal(err)
		}
		// The first agent told to fetch is alone (the origin's one copy):
		// kill it once it is under way.
		deadline := time.Now().Add(30 * time.Second)
		victim := -1
		for victim < 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no agent fetching: %v", st)
			}
			time.Sleep(200 * time.Millisecond)
			if st, err = c.client.PreheatStatus(ctx, &shoalpb.PreheatStatusRequest{Id: st.GetId()}); err != nil {
				t.Fatal(err)
			}
			for _, id := range st.GetFetchingPeers() {
				if i := slices.Index(c.ids, id); i >= 0 && victim < 0 {
					// Wait for its first bytes, so it dies mid-download.
					for time.Now().Before(deadline) && !strings.Contains(c.agents[i].Logs(), "preheat order") {
						time.Sleep(50 * time.Millisecond)
					}
					time.Sleep(500 * time.Millisecond)
					c.agents[i].Kill()
					c.dead[i] = true
					victim = i
				}
			}
		}
		deadline = time.Now().Add(90 * time.Second)
		for st.GetState() == "running" && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			if st, err = c.client.PreheatStatus(ctx, &shoalpb.PreheatStatusRequest{Id: st.GetId()}); err != nil {
				t.Fatal(err)
			}
		}
		if st.GetState() != "done" || len(st.GetCompletePeers()) < 2 || slices.Contains(st.GetCompletePeers(), c.ids[victim]) {
			t.Fatalf("after killing a%d: %v\n%s", victim, st, c.tracker.Logs())
		}
		h := c.holders(t, im)
		if slices.Contains(h, victim) || len(h) < 2 {
			t.Fatalf("holders %v, victim a%d", h, victim)
		}
		if n := metric(t, c.tracker.http, "shoal_tracker_preheat_replaced_total"); n < 1 {
			t.Fatalf("replaced = %v, want ≥ 1", n)
		}
		t.Logf("killed a%d mid-fetch; complete on %v", victim, h)
	})

	t.Run("pinned blobs survive cache pressure", func(t *testing.T) {
		h := slices.DeleteFunc(c.holders(t, v1), func(i int) bool { return c.dead[i] })
		if len(h) == 0 {
			t.Fatal("no live holder of v1")
		}
		a := c.agents[h[0]]
		// 8 MiB more through a 10 MiB cache that holds the pinned 7 MiB.
		v3 := pushLayers(t, "http://"+c.origin, "team/app", "v3", 4<<20, 4<<20)
		for _, l := range v3.layers {
			if _, err := a.get(l.Digest); err != nil {
				t.Fatal(err)
			}
		}
		for _, b := range v1.blobs() {
			if !holdsBlob(t, filepath.Join(a.dir, "data"), b.Digest) {
				t.Fatalf("pinned blob %s evicted under pressure", b.Digest)
			}
		}
		if n := metric(t, a.addr, "shoal_agent_pinned_blobs"); n < float64(len(v1.blobs())) {
			t.Fatalf("shoal_agent_pinned_blobs = %v, want ≥ %d", n, len(v1.blobs()))
		}
		// The pressure was real: an unpinned blob went.
		if holdsBlob(t, filepath.Join(a.dir, "data"), v3.layers[0].Digest) {
			t.Fatalf("no eviction: cache %v bytes", metric(t, a.addr, "shoal_agent_cache_bytes"))
		}
	})

	t.Run("tag push matching a rule preheats", func(t *testing.T) {
		im := pushLayers(t, "http://"+c.origin, "rules/app", "v1", 1<<20)
		deadline := time.Now().Add(60 * time.Second)
		for {
			h := c.holders(t, im)
			if len(h) >= 1 {
				if c.zone(h[0]) != "b" {
					t.Fatalf("rule's selector zone=b, copy on a%d", h[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no copy after a tag push\n%s", c.tracker.Logs())
			}
			time.Sleep(300 * time.Millisecond)
		}
	})
}

// blobRequests counts the blob requests an agent has answered.
func blobRequests(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "shoal_agent_requests_total{") && strings.Contains(line, `kind="blob"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			n += v
		}
	}
	return n
}

// TestPreheatIntoContainerd: a preheat with --containerd leaves the image
// pulled and unpacked in the chosen node's containerd (Debian's 1.6),
// named by its tag; a pull of it afterwards asks the agent for no blob.
func TestPreheatIntoContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "preheat-token")
	os.WriteFile(tok, []byte(preheatToken), 0o600)
	tr := startTracker(t, dir, "--preheat-token-file", tok)
	oAddr := startOrigin(t, dir, tr.etcd)
	pushImage(t, "http://"+oAddr, "team/app", "v1")
	sock := containerd(t, filepath.Join(dir, "ctrd"))
	a := startAgent(t, dir, "a0", tr.grpc, oAddr,
		fmt.Sprintf("containerd:\n  address: %q\n  namespace: e2e\n  registry: %q\n", sock, registry))

	p := proctest.Start(t, proctest.Binary(t, "tracker"), "preheat", "--tracker", tr.grpc, "--token-file", tok,
		"--repo", "team/app", "--tag", "v1", "--copies", "1", "--containerd", "--registry", registry, "--timeout", "90s")
	if err := p.Wait(2 * time.Minute); err != nil {
		t.Fatalf("preheat: %v\n%s", err, p.Logs())
	}
	// The copy is counted at the announce; containerd's pull follows.
	want := registry + "/team/app:v1"
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := exec.Command("ctr", "-a", sock, "-n", "e2e", "images", "ls", "-q").CombinedOutput()
		if slices.Contains(strings.Fields(string(out)), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd has no %s: %s\nagent:\n%s", want, out, a.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	snaps, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "snapshots", "ls").CombinedOutput()
	if err != nil || strings.Count(string(snaps), "\n") < 4 {
		t.Fatalf("image not unpacked: %v\n%s", err, snaps)
	}
	before := blobRequests(t, a.addr)
	if before < 4 {
		t.Fatalf("containerd's preheat pull asked the agent for %v blobs, want the image's 4 (3 layers, config)", before)
	}
	_, certs := mirroredContainerdHosts(t, a, oAddr)
	out, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "images", "pull", "--plain-http",
		"--hosts-dir", certs, want).CombinedOutput()
	if err != nil {
		t.Fatalf("pull after preheat: %v\n%s", err, out)
	}
	if after := blobRequests(t, a.addr); after != before {
		t.Fatalf("pull after the preheat asked the agent for %v blobs, want none", after-before)
	}
	t.Logf("preheat pulled %s into containerd; a pull after it fetched no blob", want)
}

// mirroredContainerdHosts writes hosts.toml naming the agent as the
// registry's mirror, for a containerd already running.
func mirroredContainerdHosts(t *testing.T, a agentProc, server string) (string, string) {
	t.Helper()
	certs := filepath.Join(a.dir, "certs.d")
	hosts := filepath.Join(certs, registry)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+server, "http://"+a.addr)
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return hosts, certs
}
