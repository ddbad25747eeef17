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
