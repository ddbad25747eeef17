package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/proctest"
)

// TestBinaryLifecycle runs the real executable the way an operator does:
// YAML config overridden by a flag, htpasswd push auth with anonymous pull,
// then SIGTERM, which must end it cleanly.
func TestBinaryLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("ci:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := proctest.FreeAddr(t)
	cfg := fmt.Sprintf("addr: %q\ndata_dir: %q\nlog_level: debug\nauth:\n  mode: htpasswd\n  htpasswd: %q\n  anonymous_pull: true\n",
		"127.0.0.1:1", filepath.Join(dir, "data"), htpasswd)
	cfgPath := filepath.Join(dir, "origin.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	// The file says 127.0.0.1:1; readiness on addr shows the flag won.
	proc := proctest.Start(t, proctest.Binary(t, "origin"), "--config", cfgPath, "--addr", addr, "--log-format", "json")
	base := "http://" + addr
	proc.WaitReady(base+"/readyz", 20*time.Second)

	blob := []byte("layer bytes pushed by CI")
	sum := sha256.Sum256(blob)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	push := func(user, pass string) int {
		req, _ := http.NewRequest("POST", base+"/v2/ci/app/blobs/uploads/?digest="+dgst, bytes.NewReader(blob))
		req.Header.Set("Content-Type", "application/octet-stream")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		user, pass string
		want       int
	}{
		{"", "", http.StatusUnauthorized},
		{"ci", "wrong", http.StatusUnauthorized},
		{"ci", "s3cret", http.StatusCreated},
	} {
		if got := push(tc.user, tc.pass); got != tc.want {
			t.Errorf("push as %q/%q: %d, want %d", tc.user, tc.pass, got, tc.want)
		}
	}
	resp, err := http.Get(base + "/v2/ci/app/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, blob) {
		t.Fatalf("anonymous pull: %d %q", resp.StatusCode, got)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "shoal_origin_http_requests_total") {
		t.Fatalf("/metrics lacks request counters:\n%.2000s", metrics)
	}

	if err := proc.Stop(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.Logs())
	}
	if logs := proc.Logs(); !strings.Contains(logs, `"level":"DEBUG"`) && !strings.Contains(logs, `"level":"INFO"`) {
		t.Errorf("expected JSON logs from the config's log_level and --log-format:\n%s", logs)
	}
}

// TestBinaryCluster runs two origin processes on one etcd: a blob and a
// tagged manifest pushed to one are served by the other, also after the
// first is killed.
func TestBinaryCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := proctest.Binary(t, "origin")
	eps := etcdtest.Embedded(t)
	type node struct {
		*proctest.Proc
		base string
	}
	secret := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(id string) node {
		addr := proctest.FreeAddr(t)
		p := proctest.Start(t, bin, "--id", id, "--addr", addr, "--advertise", addr, "--data-dir", t.TempDir(),
			"--etcd-endpoints", strings.Join(eps, ","), "--replicas", "2", "--cluster-secret-file", secret)
		n := node{p, "http://" + addr}
		n.WaitReady(n.base+"/readyz", 20*time.Second)
		return n
	}
	a, b := start("a"), start("b")
	do := func(method, url, ctype string, body []byte) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, got
	}
	digestOf := func(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

	// a must see b before a push to a can count b as an owner.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(metrics(t, a.base), "shoal_origin_cluster_members 2") {
		if time.Now().After(deadline) {
			t.Fatalf("a does not see b:\n%s", a.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	layer := []byte("layer pushed to a")
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	for _, blob := range [][]byte{layer, cfg} {
		if code, body := do("POST", a.base+"/v2/app/blobs/uploads/?digest="+digestOf(blob), "application/octet-stream", blob); code != 201 {
			t.Fatalf("push to a: %d %s", code, body)
		}
	}
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]}`,
		digestOf(cfg), len(cfg), digestOf(layer), len(layer))
	if code, body := do("PUT", a.base+"/v2/app/manifests/v1", "application/vnd.oci.image.manifest.v1+json", []byte(manifest)); code != 201 {
		t.Fatalf("manifest to a: %d %s", code, body)
	}

	check := func(when string) {
		t.Helper()
		if code, got := do("GET", b.base+"/v2/app/blobs/"+digestOf(layer), "", nil); code != 200 || !bytes.Equal(got, layer) {
			t.Fatalf("%s: layer from b: %d %q", when, code, got)
		}
		if code, got := do("GET", b.base+"/v2/app/manifests/v1", "", nil); code != 200 || string(got) != manifest {
			t.Fatalf("%s: tag v1 from b: %d %q", when, code, got)
		}
	}
	check("both up")
	a.Kill()
	check("a killed")
	if err := b.Stop(30 * time.Second); err != nil {
		t.Fatalf("b after SIGTERM: %v\n%s", err, b.Logs())
	}
}

func metrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
