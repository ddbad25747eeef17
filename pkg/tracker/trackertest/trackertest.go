// Package trackertest runs real trackers on loopback gRPC listeners for
// tests in any package.
package trackertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/tracker"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Tracker is a running tracker.
type Tracker struct {
	Server   *tracker.Server
	Addr     string // gRPC host:port
	HTTPAddr string // metrics and health host:port
	Registry *prometheus.Registry
	// Client announces as named test peers (Named).
	Client *NamedClient
	stop   func() error
}

// Stop shuts the tracker down; it is also called by t.Cleanup.
func (t *Tracker) Stop() error { return t.stop() }

// Listen reserves a loopback listener, so a tracker's address can go into
// a ring before the tracker starts.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Start runs a tracker on ln (nil: a fresh loopback port). Extra gRPC
// server options (TLS) go in serverOpts.
func Start(t testing.TB, ln net.Listener, cfg tracker.Config, opts []tracker.Option, serverOpts ...grpc.ServerOption) *Tracker {
	t.Helper()
	if ln == nil {
		ln = Listen(t)
	}
	httpLn := Listen(t)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SHOAL_TEST_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	opts = append([]tracker.Option{tracker.WithLogger(log), tracker.WithRegistry(reg)}, opts...)
	srv := tracker.New(cfg, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln, httpLn, serverOpts...) }()

	tr := &Tracker{Server: srv, Addr: ln.Addr().String(), HTTPAddr: httpLn.Addr().String(), Registry: reg}
	var conn *grpc.ClientConn
	if len(serverOpts) == 0 {
		c, err := grpc.NewClient(tr.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conn, tr.Client = c, Named(shoalpb.NewTrackerClient(c))
	}
	stopped, result := false, error(nil)
	tr.stop = func() error {
		if !stopped {
			stopped = true
			if conn != nil {
				conn.Close()
			}
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() {
		if err := tr.Stop(); err != nil {
			t.Errorf("tracker shutdown: %v", err)
		}
	})
	return tr
}
