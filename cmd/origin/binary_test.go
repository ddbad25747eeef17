package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// binary returns the shoal-origin executable: the one `make test` built
// (SHOAL_BIN), or a fresh build for a plain `go test`.
func binary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("SHOAL_BIN"); dir != "" {
		return filepath.Join(dir, "shoal-origin")
	}
	out := filepath.Join(t.TempDir(), "shoal-origin")
	build := exec.Command("go", "build", "-o", out, ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

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
	addr := freeAddr(t)
	cfg := fmt.Sprintf("addr: %q\ndata_dir: %q\nlog_level: debug\nauth:\n  mode: htpasswd\n  htpasswd: %q\n  anonymous_pull: true\n",
		"127.0.0.1:1", filepath.Join(dir, "data"), htpasswd)
	cfgPath := filepath.Join(dir, "origin.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	cmd := exec.Command(binary(t), "--config", cfgPath, "--addr", addr, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("origin exited before ready: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("origin not ready on %s (the --addr flag must override the file)\n%s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

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

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("origin still running 30s after SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"level":"DEBUG"`) && !strings.Contains(logs.String(), `"level":"INFO"`) {
		t.Errorf("expected JSON logs from the config's log_level and --log-format:\n%s", logs.String())
	}
}
