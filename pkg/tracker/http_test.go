package tracker_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/httpserver/httpservertest"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
)

// A client that connects and says nothing, or stays after its request,
// is let go after the configured timeouts.
func TestIdleClientsAreLetGo(t *testing.T) {
	tr := trackertest.Start(t, nil, tracker.Config{HTTPTimeouts: httpserver.Timeouts{
		ReadHeader: 300 * time.Millisecond, Idle: 300 * time.Millisecond}}, nil)
	httpservertest.AssertClosesIdle(t, tr.HTTPAddr, "/healthz", 250*time.Millisecond, 3*time.Second)
}

// The operator port listens on every interface (":7001"); profiles are
// not on it, and are served only on a debug listener given explicitly.
func TestProfilesOnlyOnTheDebugListener(t *testing.T) {
	ip := httpservertest.NonLoopbackIP(t)
	tests := []struct {
		name  string
		debug bool
	}{
		{"default", false},
		{"debug listener on loopback", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grpcLn := trackertest.Listen(t)
			httpLn, err := net.Listen("tcp", ":0") // all interfaces, as the default ":7001"
			if err != nil {
				t.Fatal(err)
			}
			port := strconv.Itoa(httpLn.Addr().(*net.TCPAddr).Port)
			opts := []tracker.Option{tracker.WithLogger(slog.New(slog.DiscardHandler))}
			var debugPort string
			if tt.debug {
				debugLn := trackertest.Listen(t)
				debugPort = strconv.Itoa(debugLn.Addr().(*net.TCPAddr).Port)
				opts = append(opts, tracker.WithDebugListener(debugLn))
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tracker.New(tracker.Config{}, opts...).Run(ctx, grpcLn, httpLn) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("tracker: %v", err)
				}
			})
			remote := "http://" + net.JoinHostPort(ip.String(), port)
			// The port is reachable from outside: a 404 below is the
			// handler's, not a closed door.
			if code, err := httpservertest.Status(remote + "/metrics"); err != nil || code != http.StatusOK {
				t.Fatalf("metrics on %s: %d %v", remote, code, err)
			}
			if code, err := httpservertest.Status(remote + "/debug/pprof/"); err != nil || code != http.StatusNotFound {
				t.Fatalf("profiles on the operator port %s: %d %v, want 404", remote, code, err)
			}
			if !tt.debug {
				return
			}
			if code, err := httpservertest.Status("http://127.0.0.1:" + debugPort + "/debug/pprof/"); err != nil || code != http.StatusOK {
				t.Fatalf("profiles on the debug listener: %d %v", code, err)
			}
			if _, err := httpservertest.Status("http://" + net.JoinHostPort(ip.String(), debugPort) + "/debug/pprof/"); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("debug listener from %s: %v, want connection refused", ip, err)
			}
		})
	}
}
