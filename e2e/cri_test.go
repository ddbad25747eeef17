package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shoal-project/shoal/pkg/proctest"
)

// criContainerd starts a private containerd with its CRI plugin on (what
// kubelet talks to), registry hosts from hostsDir, and returns its socket.
// CNI is left unconfigured: image pulls do not need it.
func criContainerd(t *testing.T, hostsDir string) string {
	t.Helper()
	// A short path: the socket's must stay within 104 bytes.
	dir, err := os.MkdirTemp("", "cri")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.invalid/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "cni"), filepath.Join(dir, "cni"), hostsDir)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, "containerd", "--config", cfgPath)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("ctr", "-a", sock, "plugins", "ls").CombinedOutput()
		if err == nil && strings.Contains(string(out), "cri") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd with CRI did not start: %v\n%s\n%s", err, out, p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sock
}

// mirrorRequest is one request containerd sent to the mirror.
type mirrorRequest struct {
	method, path string
	auth         bool // carried an Authorization header
	status       int  // the agent's answer
}

// recordingMirror is a real listener in front of the agent that forwards
// every request and notes whether it carried credentials and what the
// agent answered.
type recordingMirror struct {
	addr string
	mu   sync.Mutex
	reqs []mirrorRequest
}

func startRecordingMirror(t *testing.T, agentAddr string) *recordingMirror {
	t.Helper()
	m := &recordingMirror{}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: agentAddr})
	proxy.ModifyResponse = func(resp *http.Response) error {
		m.mu.Lock()
		m.reqs = append(m.reqs, mirrorRequest{resp.Request.Method, resp.Request.URL.Path, resp.Request.Header.Get("Authorization") != "", resp.StatusCode})
		m.mu.Unlock()
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	m.addr = ln.Addr().String()
	return m
}

func (m *recordingMirror) requests() []mirrorRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mirrorRequest(nil), m.reqs...)
}

// TestCRIPullCredentialsAndMirror answers: does containerd (Debian 1.6.20)
// pass a pod's pull credentials — what kubelet puts in the CRI
// PullImageRequest from imagePullSecrets — on to a mirror? A private
// repository (anonymous pull off) on the origin is pulled through the
// CRI, with the agent (behind a recording proxy) as the mirror in
// hosts.toml and the origin as the registry's server.
//
// Measured: kubelet (v1.34, pkg/credentialprovider) leaves the
// AuthConfig's ServerAddress empty, and containerd's CRI (ParseAuth) then
// gives the credentials to every host of the pull: the mirror's first
// request of each object carries none, the agent answers 401 with the
// origin's challenge, containerd retries it with Basic credentials, and
// the agent serves the image. With a ServerAddress naming the registry
// (a CRI client that sets it), containerd gives the credentials only to
// that host: the mirror never sees them, answers 401 every time, and
// containerd falls back to the server, the origin, which serves the
// pull. Either way the pull succeeds and the agent answers no request
// without credentials with private bytes.
func TestCRIPullCredentialsAndMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	tests := []struct {
		name          string
		serverAddress func(registry string) string
		// Whether containerd shows the mirror the credentials.
		mirrorGetsCreds bool
	}{
		{"kubelet", func(string) string { return "" }, true},
		// ParseAuth compares the URL's host; containerd 1.6.20 fails the
		// whole pull on a bare host:port ("first path segment in URL
		// cannot contain colon").
		{"server address", func(registry string) string { return "https://" + registry }, false},
	}
	// One private cluster: the registry containerd pulls from is the
	// origin itself, host:port, so the credentials' ServerAddress names
	// it as kubelet's would name a registry.example.com.
	c := startShipped(t, true, originRegistry)
	registry := c.origin
	im := pushImageOf(t, c.originURL, "team/private", "v1", placement{client: c.pusher}, 1<<20, 256<<10)
	if got := anonymous(t, "GET", c.originURL+"/v2/team/private/manifests/v1", nil); got != http.StatusUnauthorized {
		t.Fatalf("anonymous manifest GET at the origin: %d, want 401 (a private repository)", got)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mirror := startRecordingMirror(t, c.agent.addr)
			hosts := filepath.Join(t.TempDir(), "certs.d")
			os.MkdirAll(filepath.Join(hosts, registry), 0o755)
			// The origin, containerd's fallback, serves HTTPS with a
			// certificate from the cluster CA; the agent is plain HTTP
			// on loopback.
			toml := fmt.Sprintf("server = %q\nca = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
				c.originURL, filepath.Join(c.dir, "tls", "ca.crt"), "http://"+mirror.addr)
			os.WriteFile(filepath.Join(hosts, registry, "hosts.toml"), []byte(toml), 0o644)
			sock := criContainerd(t, hosts)
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			images := cri.NewImageServiceClient(conn)

			servedBefore := metric(t, c.agent.addr, "shoal_agent_served_bytes_total")
			originBefore := metricWhere(t, c.originURL, "shoal_origin_http_requests_total", `endpoint="blob"`)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ref := registry + "/team/private:v1"
			resp, err := images.PullImage(ctx, &cri.PullImageRequest{
				Image: &cri.ImageSpec{Image: ref},
				Auth:  &cri.AuthConfig{Username: "ci", Password: "ci-password", ServerAddress: tt.serverAddress(registry)},
			})
			reqs := mirror.requests()
			var withAuth, without, servedWithout int
			for _, r := range reqs {
				if r.auth {
					withAuth++
					continue
				}
				without++
				if r.status/100 == 2 && r.method == http.MethodGet {
					servedWithout++
				}
			}
			t.Logf("CRI pull %s (ServerAddress %q): %v; mirror saw %d requests with Authorization, %d without; agent served %.0f bytes; origin blob requests +%.0f",
				ref, tt.serverAddress(registry), err, withAuth, without,
				metric(t, c.agent.addr, "shoal_agent_served_bytes_total")-servedBefore,
				metricWhere(t, c.originURL, "shoal_origin_http_requests_total", `endpoint="blob"`)-originBefore)
			for _, r := range reqs {
				t.Logf("  mirror: %s %s auth=%v -> %d", r.method, r.path, r.auth, r.status)
			}
			if err != nil {
				t.Fatalf("CRI PullImage with the pod's credentials: %v\nagent logs:\n%s", err, c.agent.Logs())
			}
			if resp.GetImageRef() == "" {
				t.Fatal("PullImage returned no image ref")
			}
			if servedWithout != 0 {
				t.Fatalf("the agent answered %d GETs without credentials with 2xx: private bytes to an anonymous client", servedWithout)
			}
			if len(reqs) == 0 {
				t.Fatal("containerd never asked the mirror")
			}
			if (withAuth > 0) != tt.mirrorGetsCreds {
				t.Fatalf("mirror got credentials on %d requests, want credentials: %v", withAuth, tt.mirrorGetsCreds)
			}
			served := metric(t, c.agent.addr, "shoal_agent_served_bytes_total") - servedBefore
			if !tt.mirrorGetsCreds && served != 0 {
				t.Fatalf("the agent served %.0f bytes without ever seeing credentials", served)
			}
			if tt.mirrorGetsCreds && served < float64(im.layerBytes) {
				t.Errorf("with credentials the agent served %.0f bytes, the layers are %d", served, im.layerBytes)
			}
		})
	}
}
