package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	"github.com/shoal-project/shoal/pkg/peerproof"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

const benchSize = 1 << 30

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, c0 time.Duration, t0 time.Time) {
	bytes := float64(b.N) * benchSize
	b.ReportMetric(bytes/time.Since(t0).Seconds()/1e6, "MB/s")
	b.ReportMetric((cpuTime()-c0).Seconds()/(bytes/1e9), "cpu-s/GB")
}

// plainWriter hides io.ReaderFrom so copies use a large buffer, not
// io.Discard's 8 KiB one.
type plainWriter struct{}

func (plainWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkPull1GiB: one agent pulls a 1 GiB blob from one seeder over
// libp2p (TLS 1.3), verifying every piece and the whole digest, writing it
// to its cache and streaming it to an HTTP client — against, in the same
// run, a raw loopback copy and a raw copy hashed at the receiver.
func BenchmarkPull1GiB(b *testing.B) {
	blob := p2ptest.NewBlob(benchSize, metainfo.PieceLength(benchSize))
	b.Run("raw-tcp", func(b *testing.B) { rawCopy(b, blob.Data, false, false) })
	b.Run("raw-tcp+sha256", func(b *testing.B) { rawCopy(b, blob.Data, true, false) })
	b.Run("raw-tcp+sha256+file", func(b *testing.B) { rawCopy(b, blob.Data, true, true) })
	b.Run("agent", func(b *testing.B) {
		tr := trackertest.Start(b, nil, tracker.Config{}, nil)
		seeder := p2ptest.NewHost(b, p2p.HostConfig{})
		p2p.NewSeeder(seeder, p2ptest.Blobs{blob.MI.Digest: blob}, nil, nil)
		addrs := p2p.Addrs(seeder)
		b.SetBytes(benchSize)
		var cpu time.Duration
		var wall time.Duration
		for range b.N {
			b.StopTimer()
			// The seeder must be known to the tracker, and the metainfo
			// must come from somewhere: a fresh agent each round.
			peerproof.NewClient(tr.Client.TrackerClient, seeder.Peerstore().PrivKey(seeder.ID())).Announce(context.Background(), &shoalpb.AnnounceRequest{Digest: blob.MI.Digest.String(),
				Peer: &shoalpb.Peer{Id: seeder.ID().String(), Addrs: addrs}, Have: &shoalpb.AnnounceRequest_Complete{Complete: true}})
			a := startBenchAgent(b, tr.Addr, blob)
			b.StartTimer()
			c0, t0 := cpuTime(), time.Now()
			resp, err := http.Get(a + "/v2/app/blobs/" + blob.MI.Digest.String())
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(plainWriter{}, resp.Body, make([]byte, 1<<20))
			resp.Body.Close()
			if err != nil || n != benchSize {
				b.Fatalf("%d bytes, %v", n, err)
			}
			cpu += cpuTime() - c0
			wall += time.Since(t0)
		}
		bytes := float64(b.N) * benchSize
		b.ReportMetric(bytes/wall.Seconds()/1e6, "MB/s")
		b.ReportMetric(cpu.Seconds()/(bytes/1e9), "cpu-s/GB")
	})
}

// BenchmarkServeCached1GiB: an agent serves a 1 GiB blob from its cache.
// "first-read" is the first read after a restart, which checks every piece
// against the metainfo before sending it; "verified" a later read, sent
// as it is.
func BenchmarkServeCached1GiB(b *testing.B) {
	blob := p2ptest.NewBlob(benchSize, metainfo.PieceLength(benchSize))
	dir := b.TempDir()
	store, err := blobstore.NewLocal(filepath.Join(dir, "cache"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := blobstore.Put(context.Background(), store, bytes.NewReader(blob.Data), benchSize, blob.MI.Digest); err != nil {
		b.Fatal(err)
	}
	get := func(b *testing.B, url string) {
		resp, err := http.Get(url + "/v2/app/blobs/" + blob.MI.Digest.String())
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(plainWriter{}, resp.Body, make([]byte, 1<<20))
		resp.Body.Close()
		if err != nil || n != benchSize {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
	for _, first := range []bool{true, false} {
		name := "verified"
		if first {
			name = "first-read"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(benchSize)
			var cpu, wall time.Duration
			for range b.N {
				b.StopTimer()
				url, stop := startCacheAgent(b, dir)
				if !first {
					get(b, url)
				}
				b.StartTimer()
				c0, t0 := cpuTime(), time.Now()
				get(b, url)
				cpu += cpuTime() - c0
				wall += time.Since(t0)
				b.StopTimer()
				stop()
				b.StartTimer()
			}
			total := float64(b.N) * benchSize
			b.ReportMetric(total/wall.Seconds()/1e6, "MB/s")
			b.ReportMetric(cpu.Seconds()/(total/1e9), "cpu-s/GB")
		})
	}
}

// startCacheAgent runs an agent on dir with no tracker: what it serves is
// what its cache holds. Its origin is a stand-in that allows every pull
// check (one per agent, then remembered): the benchmark is about the
// cache path.
func startCacheAgent(b *testing.B, dir string) (url string, stop func()) {
	allow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			http.Error(w, "the benchmark reads the cache only", http.StatusInternalServerError)
		}
	}))
	b.Cleanup(allow.Close)
	cfg := agent.Config{DataDir: dir, Registries: map[string]agent.Upstream{"": {Origins: []string{allow.URL}}},
		P2P: p2p.HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}}
	a, err := agent.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, ln) }()
	return "http://" + ln.Addr().String(), func() { cancel(); <-done }
}

// startBenchAgent runs an agent whose metainfo source is an in-process
// origin stand-in: the benchmark is about the piece path.
func startBenchAgent(b *testing.B, trackerAddr string, blob *p2ptest.Blob) string {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		m, _ := blob.MI.Marshal()
		w.Write(m)
	})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	cfg := agent.Config{DataDir: b.TempDir(), Tracker: trackerAddr,
		Registries: map[string]agent.Upstream{"": {Origins: []string{"http://" + ln.Addr().String()}}},
		P2P:        p2p.HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}}
	a, err := agent.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	aln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, aln) }()
	b.Cleanup(func() { cancel(); <-done })
	return "http://" + aln.Addr().String()
}

// rawCopy receives data over a plain loopback socket; hash runs it through
// sha256, file also writes it to a file as the agent's cache must.
func rawCopy(b *testing.B, data []byte, hash, file bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.Write(data); c.Close() }()
		}
	}()
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	c0, t0 := cpuTime(), time.Now()
	for range b.N {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		var w io.Writer = plainWriter{}
		h := sha256.New()
		if hash {
			w = h
		}
		if file {
			f, err := os.Create(filepath.Join(b.TempDir(), "blob"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			w = io.MultiWriter(h, f)
		}
		if n, err := io.CopyBuffer(w, c, buf); err != nil || n != benchSize {
			b.Fatal(fmt.Sprint(n, err))
		}
		c.Close()
	}
	report(b, c0, t0)
}
