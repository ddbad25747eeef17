package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/proctest"
)

// registry is the name containerd and the agents know the origin by.
const registry = "shoal.test"

type trackerProc struct {
	*proctest.Proc
	grpc, http, etcd string
}

// startTracker runs a tracker with its embedded etcd under dir; extra are
// more flags (say --config FILE for the settings that have no flag).
func startTracker(t *testing.T, dir string, extra ...string) trackerProc {
	t.Helper()
	tr := trackerProc{grpc: proctest.FreeAddr(t), http: proctest.FreeAddr(t), etcd: "http://" + proctest.FreeAddr(t)}
	args := append([]string{"--id", "t0", "--grpc-addr", tr.grpc, "--http-addr", tr.http,
		"--advertise", tr.grpc, "--data-dir", filepath.Join(dir, "tracker"), "--interval", "1s",
		"--embedded-etcd-client-url", tr.etcd, "--embedded-etcd-peer-url", "http://" + proctest.FreeAddr(t)}, extra...)
	tr.Proc = proctest.Start(t, proctest.Binary(t, "tracker"), args...)
	tr.WaitReady("http://"+tr.http+"/readyz", time.Minute)
	return tr
}

// startOrigin runs an origin joined to the tracker's etcd and seeding over
// the piece protocol.
func startOrigin(t *testing.T, dir, etcd string, extra ...string) string {
	t.Helper()
	return startOriginSeeding(t, dir, etcd, true, extra...)
}

// startOriginSeeding runs an origin joined to the tracker's etcd; without
// seed it has no libp2p host, so it serves only /v2 and the tracker never
// hands it out.
func startOriginSeeding(t *testing.T, dir, etcd string, seed bool, extra ...string) string {
	t.Helper()
	return startOriginAs(t, "o0", filepath.Join(dir, "origin"), etcd, seed, extra...)
}

// startOriginAs runs origin id with its data in dataDir, joined to the
// tracker's etcd, each blob on one owner; seed gives it a libp2p host.
func startOriginAs(t *testing.T, id, dataDir, etcd string, seed bool, extra ...string) string {
	t.Helper()
	addr := proctest.FreeAddr(t)
	args := []string{"--id", id, "--addr", addr, "--advertise", addr, "--data-dir", dataDir,
		"--etcd-endpoints", etcd, "--replicas", "1", "--cluster-secret-file", clusterSecret(t, filepath.Dir(dataDir))}
	if seed {
		args = append(args, "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
	}
	args = append(args, extra...)
	p := proctest.Start(t, proctest.Binary(t, "origin"), args...)
	p.WaitReady("http://"+addr+"/readyz", 30*time.Second)
	return addr
}

// clusterSecret writes the secret every origin of a test cluster under dir
// shares, once, and returns its file.
func clusterSecret(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "cluster-secret")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(rand.Text()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type agentProc struct {
	*proctest.Proc
	addr, dir, config string
	p2pPort           string // when fixed by the test
}

// startAgent runs agent name with its data under dir/name; extra is YAML
// appended to its config.
func startAgent(t *testing.T, dir, name, tracker, origin, extra string) agentProc {
	t.Helper()
	a := agentProc{addr: proctest.FreeAddr(t), dir: filepath.Join(dir, name)}
	cfg := fmt.Sprintf("addr: %q\ndata_dir: %q\ntracker: %q\nseed_interval: 1s\nregistries:\n  %q:\n    origins: [%q]\n  \"\":\n    origins: [%q]\np2p:\n  listen_addrs: [/ip4/127.0.0.1/tcp/0]\n%s",
		a.addr, filepath.Join(a.dir, "data"), tracker, registry, "http://"+origin, "http://"+origin, extra)
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a.config = filepath.Join(a.dir, "agent.yaml")
	if err := os.WriteFile(a.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a.restart(t)
	return a
}

// restart starts the agent's process again on the same config and data.
func (a *agentProc) restart(t *testing.T) {
	t.Helper()
	a.Proc = proctest.Start(t, proctest.Binary(t, "agent"), "--config", a.config)
	a.WaitReady("http://"+a.addr+"/readyz", 30*time.Second)
}

// get fetches a blob through the agent.
func (a agentProc) get(d string) ([]byte, error) {
	resp, err := http.Get("http://" + a.addr + "/v2/team/app/blobs/" + d)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return b, err
}
