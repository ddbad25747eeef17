package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/proctest"
)

func TestExampleConfigParses(t *testing.T) {
	fc, err := parse([]string{"--config", "../../deploy/config/agent.yaml", "--zone", "z1"})
	if err != nil {
		t.Fatal(err)
	}
	if fc.Addr != "127.0.0.1:5080" || fc.Zone != "z1" || fc.TagTTL != 5*time.Second ||
		len(fc.Registries["registry.example.com"].Origins) != 1 || fc.P2P.ListenAddrs[0] != "/ip4/0.0.0.0/tcp/4001" {
		t.Fatalf("parsed %+v", fc)
	}
	// Safe as shipped: https:// origins with the cluster CA, mutual TLS
	// to the trackers, the private network.
	for name, r := range fc.Registries {
		if len(r.Origins) == 0 || !strings.HasPrefix(r.Origins[0], "https://") || r.TLS.CAFile == "" {
			t.Errorf("registry %q: origins %v, ca_file %q", name, r.Origins, r.TLS.CAFile)
		}
	}
	if fc.TrackerTLS.CertFile == "" || fc.TrackerTLS.CAFile == "" || fc.P2P.PSKFile == "" {
		t.Fatalf("the shipped agent config leaves a protection off: %+v", fc)
	}
	if _, err := parse([]string{"--config", "../../deploy/config/agent.yaml", "--nope"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

// The real binary as a plain pull-through cache (no tracker): a blob comes
// through it from the origin, and SIGTERM ends it cleanly.
func TestBinaryPullThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	o := origintest.Start(t, origin.Config{})
	blob := bytes.Repeat([]byte("layer "), 200_000)
	sum := sha256.Sum256(blob)
	d := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := http.Post(o.URL+"/v2/app/blobs/uploads/?digest="+d, "application/octet-stream", bytes.NewReader(blob))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("push: %v %v", resp, err)
	}
	resp.Body.Close()

	addr := proctest.FreeAddr(t)
	p := proctest.Start(t, proctest.Binary(t, "agent"), "--addr", addr, "--data-dir", t.TempDir(),
		"--origins", o.URL, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--log-format", "json")
	p.WaitReady("http://"+addr+"/readyz", 20*time.Second)
	// The probe the DaemonSet runs inside the pod.
	bin := proctest.Binary(t, "agent")
	if out, err := exec.Command(bin, "healthcheck", "--url", "http://"+addr+"/readyz").CombinedOutput(); err != nil {
		t.Fatalf("healthcheck on a ready agent: %v %s", err, out)
	}
	if err := exec.Command(bin, "healthcheck", "--url", "http://"+proctest.FreeAddr(t)+"/readyz").Run(); err == nil {
		t.Fatal("healthcheck passed with nothing listening")
	}
	resp, err = http.Get("http://" + addr + "/v2/app/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, blob) {
		t.Fatalf("through the agent: %d, %d bytes\n%s", resp.StatusCode, len(got), p.Logs())
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.Logs())
	}
}
