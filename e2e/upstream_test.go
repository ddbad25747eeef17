package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/upstream/registrytest"
)

// TestContainerdPullsUpstreamImage: an image that lives only in a real
// third-party registry (Debian's docker-registry with TLS and htpasswd)
// is pulled and unpacked by two containerd daemons, each mirrored by its
// own agent, with the upstream's registry name (?ns=) that no agent
// configures: the origin process pulls it through and advertises the
// namespace. The upstream serves each blob once in all, and the second
// node takes the layers from the first over libp2p. containerd's own
// fallback is the upstream itself (hosts.toml server), so a pull that
// bypassed Shoal would show in the upstream's counts. Then the upstream
// is stopped and a third node still pulls the image, its tag past the TTL
// resolved to the last digest known.
func TestContainerdPullsUpstreamImage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries, containerd and docker-registry")
	}
	needContainerd(t)
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 3<<20, 2<<20, 1<<20)
	const ns = "upstream.test"

	dir := t.TempDir()
	tr := startTracker(t, dir)
	cfg := filepath.Join(dir, "origin-upstreams.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("upstreams:\n  - namespace: %s\n    url: %s\n    username: %s\n    password_file: %s\n    tls: {ca_file: %s}\n    tag_ttl: 1s\n",
		ns, reg.URL, reg.User, reg.PasswordFile, reg.CAFile)), 0o644)
	oAddr := startOrigin(t, dir, tr.etcd, "--config", cfg)

	var agents []agentProc
	for i := range 3 {
		if i == 2 {
			reg.Stop() // the third node pulls with the upstream gone
			time.Sleep(1100 * time.Millisecond)
		}
		a := startAgent(t, dir, fmt.Sprintf("agent%d", i), tr.grpc, oAddr, "upstream_refresh: 1s\n")
		agents = append(agents, a)
		deadline := time.Now().Add(20 * time.Second)
		for metric(t, a.addr, "shoal_agent_upstream_namespaces") != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("agent %d did not learn the upstream namespace from the origin\n%s", i, a.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
		hosts := filepath.Join(a.dir, "certs.d", ns)
		os.MkdirAll(hosts, 0o755)
		toml := fmt.Sprintf("server = %q\nca = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.URL, reg.CAFile, "http://"+a.addr)
		os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644)
		sock := containerd(t, filepath.Join(a.dir, "containerd"))
		out, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "images", "pull", "--plain-http",
			"--hosts-dir", filepath.Join(a.dir, "certs.d"), ns+"/library/app:1").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr pull through agent %d: %v\n%s\nagent logs:\n%s", i, err, out, a.Logs())
		}
		snaps, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "snapshots", "ls").CombinedOutput()
		if err != nil || strings.Count(string(snaps), "\n") < len(img.Layers)+1 {
			t.Fatalf("agent %d: image not unpacked: %v\n%s", i, err, snaps)
		}
		time.Sleep(1500 * time.Millisecond) // let the new seeder announce
	}

	agents = agents[:2]
	var layerBytes int
	for _, d := range img.Layers {
		layerBytes += len(img.Blobs[d])
	}
	total := 0
	for d := range img.Blobs {
		n := reg.BlobGETs(d)
		total += n
		if n != 1 {
			t.Errorf("upstream served blob %s %d times for two containerd pulls, want 1", d, n)
		}
	}
	peers := metric(t, agents[1].addr, "shoal_agent_peer_bytes_total")
	if peers < float64(layerBytes) {
		t.Errorf("second node took %.0f bytes from peers, want all %d layer bytes", peers, layerBytes)
	}
	t.Logf("2 containerd pulls of a %d-layer image (%d layer bytes), then a third with the upstream stopped: upstream blob GETs %d for %d blobs, manifest GETs by digest %d; second node %.0f bytes from peers",
		len(img.Layers), layerBytes, total, len(img.Blobs), reg.Requests("GET", "/manifests/"+img.Manifest), peers)
}
