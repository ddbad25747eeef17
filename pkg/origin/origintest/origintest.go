// Package origintest starts real origins on loopback ports for tests in any
// package: a real listener, the real handler, a temp data dir, cleaned up
// with the test.
package origintest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/pkg/origin"
)

// Origin is a running origin.
type Origin struct {
	Server   *origin.Server
	URL      string // http://127.0.0.1:port (https:// with cfg.TLS)
	Host     string // 127.0.0.1:port, the registry host for clients
	DataDir  string
	Registry *prometheus.Registry
	stop     func() error
}

// Stop shuts the origin down gracefully and returns Run's error. It is
// called by t.Cleanup too; calling it twice is fine.
func (o *Origin) Stop() error { return o.stop() }

// Start runs an origin with cfg until the test ends. An empty DataDir gets a
// temp dir; logs are discarded unless SHOAL_TEST_LOG=1.
func Start(t testing.TB, cfg origin.Config, opts ...origin.Option) *Origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, ln, cfg, opts...)
}

// Serve is Start on a listener of the caller's, for origins that must be
// reachable at a known address (cluster members, restarts).
func Serve(t testing.TB, ln net.Listener, cfg origin.Config, opts ...origin.Option) *Origin {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SHOAL_TEST_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	opts = append([]origin.Option{origin.WithLogger(log), origin.WithRegistry(reg)}, opts...)
	srv, err := origin.New(cfg, opts...)
	if err != nil {
		ln.Close()
		t.Fatalf("origin.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	<-srv.Ready()
	var result error
	stopped := false
	scheme := "http"
	if cfg.TLS.Enabled() {
		scheme = "https"
	}
	o := &Origin{
		Server: srv, URL: scheme + "://" + ln.Addr().String(), Host: ln.Addr().String(),
		DataDir: cfg.DataDir, Registry: reg,
	}
	o.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() {
		if err := o.Stop(); err != nil {
			t.Errorf("origin shutdown: %v", err)
		}
	})
	return o
}
