package main

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/httpserver/httpservertest"
	"github.com/shoal-project/shoal/pkg/proctest"
)

// The real binary with its operator port on every interface, as the
// default ":7001" has it: profiles are not served there, from outside or
// from loopback, unless --debug-addr names a listener of their own.
func TestBinaryProfilesOffByDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ip := httpservertest.NonLoopbackIP(t)
	bin := proctest.Binary(t, "tracker")
	status := func(url string) int {
		code, _ := httpservertest.Status(url)
		return code
	}
	tests := []struct {
		name  string
		debug bool
	}{
		{"default flags", false},
		{"--debug-addr on loopback", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(proctest.FreeAddr(t))
			args := []string{"--id", "t", "--grpc-addr", proctest.FreeAddr(t), "--http-addr", ":" + port,
				"--data-dir", t.TempDir(), "--embedded-etcd-client-url", "http://" + proctest.FreeAddr(t),
				"--embedded-etcd-peer-url", "http://" + proctest.FreeAddr(t), "--log-format", "json"}
			debug := proctest.FreeAddr(t)
			if tt.debug {
				args = append(args, "--debug-addr", debug)
			}
			p := proctest.Start(t, bin, args...)
			p.WaitReady("http://127.0.0.1:"+port+"/readyz", 60*time.Second)
			outside := "http://" + net.JoinHostPort(ip.String(), port)
			if got := status(outside + "/metrics"); got != http.StatusOK {
				t.Fatalf("metrics from outside: %d, want 200 (the port must be reachable for the next check to mean anything)", got)
			}
			for _, u := range []string{outside, "http://127.0.0.1:" + port} {
				if got := status(u + "/debug/pprof/"); got != http.StatusNotFound {
					t.Fatalf("profiles on the operator port (%s): %d, want 404\n%s", u, got, p.Logs())
				}
			}
			_, dport, _ := net.SplitHostPort(debug)
			want := 0 // nothing listens
			if tt.debug {
				want = http.StatusOK
			}
			if got := status("http://" + debug + "/debug/pprof/"); got != want {
				t.Fatalf("profiles on %s: %d, want %d", debug, got, want)
			}
			if got := status("http://" + net.JoinHostPort(ip.String(), dport) + "/debug/pprof/"); got != 0 {
				t.Fatalf("profiles reachable from outside on the debug port: %d", got)
			}
			if err := p.Stop(30 * time.Second); err != nil {
				t.Fatalf("SIGTERM: %v\n%s", err, p.Logs())
			}
		})
	}
}
