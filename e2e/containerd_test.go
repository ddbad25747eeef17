// Package e2e runs Shoal as an operator would — the real binaries, an
// embedded etcd in the tracker, Debian's containerd — and checks what the
// metrics say about where the bytes came from.
package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/proctest"
)

func sha(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

// layer is a gzipped tar holding one file of random (incompressible) bytes.
func layer(t *testing.T, name string, size int) (gz []byte, diffID string) {
	t.Helper()
	content := make([]byte, size)
	rand.Read(content)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()
	var gzBuf bytes.Buffer
	// Stored blocks: random bytes do not compress, and deflating tens of
	// MiB under the race detector takes a minute.
	zw, _ := gzip.NewWriterLevel(&gzBuf, gzip.NoCompression)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	return gzBuf.Bytes(), sha(tarBuf.Bytes())
}

// request sends one push request with c (nil: http.DefaultClient) and
// wants 201.
func request(t *testing.T, c *http.Client, method, url, ctype string, body []byte) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
}

// pushImage pushes a runnable-shaped image of three layers and returns the
// layers' total size.
func pushImage(t *testing.T, origin, repo, tag string) int64 {
	t.Helper()
	return pushLayers(t, origin, repo, tag, 6<<20, 3<<20, 1<<20).layerBytes
}

// image is what pushLayers pushed.
type image struct {
	layers     []blobDesc // in manifest order
	config     blobDesc
	layerBytes int64 // the layers' total size
}

type blobDesc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int    `json:"size"`
}

// blobs are every blob the manifest names: the layers and the config.
func (im image) blobs() []blobDesc { return append(append([]blobDesc(nil), im.layers...), im.config) }

// bytes is the size of every blob the manifest names.
func (im image) bytes() int64 { return im.layerBytes + int64(im.config.Size) }

// pushLayers pushes an image with one layer of random content per size
// (uncompressed bytes) and tags it.
func pushLayers(t *testing.T, origin, repo, tag string, sizes ...int) image {
	t.Helper()
	return pushImageOf(t, origin, repo, tag, placement{}, sizes...)
}

// placement steers where pushImageOf puts blobs; zero fields do nothing.
type placement struct {
	// accept may refuse a layer's digest: the layer is drawn again with
	// new random content.
	accept func(digest string) bool
	// origin is the base URL to push a blob to, instead of pushImageOf's.
	origin func(digest string) string
	// client pushes, with credentials if it adds them.
	client *http.Client
}

// pushImageOf is pushLayers with a placement.
func pushImageOf(t *testing.T, origin, repo, tag string, place placement, sizes ...int) image {
	t.Helper()
	to := func(d string) string {
		if place.origin != nil {
			return place.origin(d)
		}
		return origin
	}
	var im image
	var diffIDs []string
	for i, size := range sizes {
		gz, diffID := layer(t, fmt.Sprintf("data/file%d", i), size)
		for place.accept != nil && !place.accept(sha(gz)) {
			gz, diffID = layer(t, fmt.Sprintf("data/file%d", i), size)
		}
		request(t, place.client, "POST", to(sha(gz))+"/v2/"+repo+"/blobs/uploads/?digest="+sha(gz), "application/octet-stream", gz)
		im.layers = append(im.layers, blobDesc{"application/vnd.oci.image.layer.v1.tar+gzip", sha(gz), len(gz)})
		diffIDs = append(diffIDs, diffID)
		im.layerBytes += int64(len(gz))
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
	})
	request(t, place.client, "POST", to(sha(cfg))+"/v2/"+repo+"/blobs/uploads/?digest="+sha(cfg), "application/octet-stream", cfg)
	im.config = blobDesc{"application/vnd.oci.image.config.v1+json", sha(cfg), len(cfg)}
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": im.config,
		"layers": im.layers,
	})
	request(t, place.client, "PUT", origin+"/v2/"+repo+"/manifests/"+tag, "application/vnd.oci.image.manifest.v1+json", m)
	return im
}

// metric sums a counter's series from a component's /metrics.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// containerd starts a private containerd and returns its socket.
func containerd(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, "containerd", "--config", cfgPath)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := exec.Command("ctr", "-a", sock, "version").Run(); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not start\n%s", p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestContainerdPullsThroughAgents: tracker (embedded etcd), a seeding
// origin joined to it and three agents, each the mirror of its own
// containerd. The first pull takes the layers from the origin over the
// piece protocol; the other two take them from the agents before them.
func TestContainerdPullsThroughAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	dir := t.TempDir()
	tr := startTracker(t, dir)
	oAddr := startOrigin(t, dir, tr.etcd)
	total := pushImage(t, "http://"+oAddr, "team/app", "v1")

	pull := func(i int) (agentAddr string) {
		t.Helper()
		a := startAgent(t, dir, fmt.Sprintf("agent%d", i), tr.grpc, oAddr, "")
		hosts := filepath.Join(a.dir, "certs.d", registry)
		os.MkdirAll(hosts, 0o755)
		toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+oAddr, "http://"+a.addr)
		os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644)
		sock := containerd(t, filepath.Join(a.dir, "containerd"))
		out, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "images", "pull", "--plain-http",
			"--hosts-dir", filepath.Join(a.dir, "certs.d"), registry+"/team/app:v1").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr pull through agent %d: %v\n%s\nagent logs:\n%s", i, err, out, a.Logs())
		}
		// Unpacked: the image's snapshot chain exists.
		snaps, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "snapshots", "ls").CombinedOutput()
		if err != nil || strings.Count(string(snaps), "\n") < 4 {
			t.Fatalf("agent %d: image not unpacked: %v\n%s", i, err, snaps)
		}
		return a.addr
	}

	var agents []string
	for i := range 3 {
		agents = append(agents, pull(i))
		time.Sleep(1500 * time.Millisecond) // let the new seeder announce
	}
	seeded := metric(t, oAddr, "shoal_origin_seeded_bytes_total")
	for i, a := range agents {
		peers := metric(t, a, "shoal_agent_peer_bytes_total")
		fallback := metric(t, a, "shoal_agent_origin_bytes_total")
		up := metric(t, a, "shoal_agent_uploaded_bytes_total")
		t.Logf("agent %d: %.0f bytes from peers, %.0f from origin /v2, %.0f seeded", i, peers, fallback, up)
		if fallback != 0 || peers < float64(total) {
			t.Errorf("agent %d took %.0f bytes from the origin's /v2 and %.0f from peers; want all %d from peers", i, fallback, peers, total)
		}
	}
	t.Logf("layers %d bytes; origin seeded %.0f (%.2f copies) for 3 pulls", total, seeded, seeded/float64(total))
	if seeded > 1.5*float64(total) {
		t.Errorf("origin seeded %.2f copies of the layers for 3 agents", seeded/float64(total))
	}
}

// `shoal-agent containerd configure` writes hosts.toml files that a real
// containerd pulls through, and `restore` brings back exactly the files
// that were there before.
func TestContainerdConfigureRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	dir := t.TempDir()
	tr := startTracker(t, dir)
	oAddr := startOrigin(t, dir, tr.etcd)
	pushImage(t, "http://"+oAddr, "team/app", "v1")
	a := startAgent(t, dir, "agent", tr.grpc, oAddr, "")

	// The node's containerd, with a registry config_path holding the
	// operator's own hosts.toml for the registry.
	certs := filepath.Join(dir, "certs.d")
	own := fmt.Appendf(nil, "server = %q\n# the operator's file, kept byte for byte\n", "http://"+oAddr)
	os.MkdirAll(filepath.Join(certs, registry), 0o755)
	os.WriteFile(filepath.Join(certs, registry, "hosts.toml"), own, 0o644)
	ctdDir := filepath.Join(dir, "containerd")
	sock := containerd(t, ctdDir)
	ctdConfig := filepath.Join(ctdDir, "config.toml")
	base, _ := os.ReadFile(ctdConfig)
	nocfg := filepath.Join(dir, "no-config-path.toml")
	os.WriteFile(nocfg, base, 0o644)
	os.WriteFile(ctdConfig, fmt.Appendf(base, "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", certs), 0o644)

	agentBin := proctest.Binary(t, "agent")
	cmd := func(args ...string) (string, error) {
		out, err := exec.Command(agentBin, append([]string{"containerd"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := cmd("configure", "--config", a.config, "--containerd-config", nocfg); err == nil || !strings.Contains(out, "config_path") {
		t.Fatalf("configure without a config_path: %v\n%s", err, out)
	}
	if out, err := cmd("configure", "--config", a.config, "--containerd-config", ctdConfig); err != nil {
		t.Fatalf("configure: %v\n%s", err, out)
	}
	served := metric(t, a.addr, "shoal_agent_served_bytes_total")
	out, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "images", "pull", "--plain-http",
		"--hosts-dir", certs, registry+"/team/app:v1").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr pull with the written hosts.toml: %v\n%s", err, out)
	}
	if got := metric(t, a.addr, "shoal_agent_served_bytes_total"); got <= served {
		t.Fatal("containerd pulled without going through the agent")
	}
	if out, err := cmd("restore", "--config", a.config, "--containerd-config", ctdConfig); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	back, _ := os.ReadFile(filepath.Join(certs, registry, "hosts.toml"))
	if !bytes.Equal(back, own) {
		t.Fatalf("restore left:\n%s\nwant:\n%s", back, own)
	}
	entries, _ := os.ReadDir(filepath.Join(certs, registry))
	if len(entries) != 1 {
		t.Fatalf("left behind in %s: %v", registry, entries)
	}
}

// needContainerd skips without Debian containerd, except in CI, which
// installs it.
func needContainerd(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing; .ci/run installs Debian containerd", tool)
			}
			t.Skipf("%s not installed (apt install containerd)", tool)
		}
	}
}
