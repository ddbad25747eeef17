package tracker_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// The announce benchmarks run the scenario: 10k peers in 100
// swarms, a fifth of them complete, downloaders carrying a 128-piece
// bitfield. Per-peer limits are lifted so the flood is all work.
const (
	benchSwarms = 100
	benchPeers  = 10000
)

var benchCfg = tracker.Config{PeerAnnounceRate: 1e9, PeerAnnounceBurst: 1 << 30,
	IPAnnounceRate: 1e9, IPAnnounceBurst: 1 << 30, MaxEntriesPerIP: 1 << 30}

func benchAnnounce(i int) *shoalpb.AnnounceRequest {
	p := i % benchPeers
	r := &shoalpb.AnnounceRequest{
		Digest: dgst(p % benchSwarms),
		Peer: &shoalpb.Peer{
			Id:     fmt.Sprintf("12D3KooWpeer%08d", p),
			Addrs:  []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 1024+p)},
			Labels: &shoalpb.Labels{Zone: fmt.Sprintf("z%d", p%3), Rack: fmt.Sprintf("r%d", p%40), Node: fmt.Sprintf("n%d", p)},
		},
	}
	if p%5 == 0 {
		r.Have = &shoalpb.AnnounceRequest_Complete{Complete: true}
	} else {
		bf := make([]byte, 16)
		for j := range bf {
			bf[j] = byte(p * (j + 1))
		}
		r.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: bf}
	}
	return r
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAnnounceHandler is the tracker's own cost: the handler called
// directly on 2 cores. announces/cpu-s is the per-core figure.
func BenchmarkAnnounceHandler(b *testing.B) {
	srv := tracker.New(benchCfg)
	ctx := context.Background()
	// Memory per entry: what the table keeps of 10k fresh requests, as
	// gRPC would hand them over.
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range benchPeers {
		if _, err := srv.Announce(ctx, benchAnnounce(i)); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perPeer := float64(after.HeapAlloc-before.HeapAlloc) / benchPeers

	reqs := make([]*shoalpb.AnnounceRequest, benchPeers)
	for i := range reqs {
		reqs[i] = benchAnnounce(i)
	}
	var next atomic.Int64
	c0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := srv.Announce(ctx, reqs[next.Add(1)%benchPeers]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/(cpuTime()-c0).Seconds(), "announces/cpu-s")
	b.ReportMetric(perPeer, "B/peer")
}

// BenchmarkAnnounceGRPC goes through real gRPC on loopback, client and
// server in this process: announces/cpu-s counts both ends, so the tracker
// alone does better.
func BenchmarkAnnounceGRPC(b *testing.B) {
	clients := benchClients(b)
	reqs := make([]*shoalpb.AnnounceRequest, benchPeers)
	for i := range reqs {
		reqs[i] = benchAnnounce(i)
	}
	runGRPC(b, 1, func(n int64) error {
		_, err := clients[n%4].Announce(context.Background(), reqs[n%benchPeers])
		return err
	})
}

// BenchmarkAnnounceBatchGRPC is the agent's real cadence: a node with
// several layers in flight sends one batch per interval, here 8 blobs.
func BenchmarkAnnounceBatchGRPC(b *testing.B) {
	const perBatch = 8
	clients := benchClients(b)
	batches := make([]*shoalpb.AnnounceBatchRequest, benchPeers/perBatch)
	for i := range batches {
		br := &shoalpb.AnnounceBatchRequest{}
		for j := range perBatch {
			a := benchAnnounce(i)
			// One node, eight blobs: same peer, different swarms.
			a.Digest = dgst((i + j*13) % benchSwarms)
			br.Announces = append(br.Announces, a)
		}
		batches[i] = br
	}
	runGRPC(b, perBatch, func(n int64) error {
		_, err := clients[n%4].AnnounceBatch(context.Background(), batches[n%int64(len(batches))])
		return err
	})
}

// benchClients starts a tracker filled with the 10k peers and returns four
// connections to it.
func benchClients(b *testing.B) []shoalpb.TrackerClient {
	tr := trackertest.Start(b, nil, benchCfg, nil)
	clients := make([]shoalpb.TrackerClient, 4)
	for i := range clients {
		c, err := grpc.NewClient(tr.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = trackertest.Named(shoalpb.NewTrackerClient(c))
	}
	for i := range benchPeers {
		if _, err := clients[0].Announce(context.Background(), benchAnnounce(i)); err != nil {
			b.Fatal(err)
		}
	}
	return clients
}

// runGRPC calls call b.N times from 16 goroutines per core; each call
// carries perCall announces.
func runGRPC(b *testing.B, perCall int, call func(n int64) error) {
	var next atomic.Int64
	b.SetParallelism(16)
	c0, t0 := cpuTime(), time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(next.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	n := float64(b.N * perCall)
	b.ReportMetric(n/time.Since(t0).Seconds(), "announces/s")
	b.ReportMetric(n/(cpuTime()-c0).Seconds(), "announces/cpu-s")
}
