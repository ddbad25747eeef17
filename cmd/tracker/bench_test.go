package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/proctest"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// BenchmarkTrackerProcess charges announces to the tracker process alone:
// the real binary serves 10k peers in 100 swarms while this process plays
// the agents, and server CPU comes from /proc. It reports single announces
// and batches of 8 (one node with 8 layers in flight).
func BenchmarkTrackerProcess(b *testing.B) {
	const peers, swarms = 10000, 100
	dir := b.TempDir()
	cfg := filepath.Join(dir, "tracker.yaml")
	// Lift the per-peer and per-IP flood limits: the benchmark is the
	// flood, from one IP.
	limits := "peer_announce_rate: 1000000000\npeer_announce_burst: 1000000000\n" +
		"ip_announce_rate: 1000000000\nip_announce_burst: 1000000000\nmax_entries_per_ip: 1000000000\n"
	if err := os.WriteFile(cfg, []byte(limits), 0o644); err != nil {
		b.Fatal(err)
	}
	grpcAddr, httpAddr := proctest.FreeAddr(b), proctest.FreeAddr(b)
	p := proctest.Start(b, proctest.Binary(b, "tracker"), "--config", cfg, "--id", "bench",
		"--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--data-dir", filepath.Join(dir, "data"),
		"--embedded-etcd-client-url", "http://"+proctest.FreeAddr(b), "--embedded-etcd-peer-url", "http://"+proctest.FreeAddr(b),
		"--log-level", "warn")
	p.WaitReady("http://"+httpAddr+"/readyz", time.Minute)

	clients := make([]shoalpb.TrackerClient, 4)
	for i := range clients {
		c, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = trackertest.Named(shoalpb.NewTrackerClient(c))
	}
	announce := func(i, swarm int) *shoalpb.AnnounceRequest {
		r := &shoalpb.AnnounceRequest{
			Digest: fmt.Sprintf("sha256:%064x", swarm+1),
			Peer: &shoalpb.Peer{Id: fmt.Sprintf("12D3KooWpeer%08d", i),
				Addrs:  []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 1024+i)},
				Labels: &shoalpb.Labels{Zone: fmt.Sprintf("z%d", i%3), Rack: fmt.Sprintf("r%d", i%40), Node: fmt.Sprintf("n%d", i)}},
		}
		if i%5 == 0 {
			r.Have = &shoalpb.AnnounceRequest_Complete{Complete: true}
		} else {
			r.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: make([]byte, 16)}
		}
		return r
	}
	ctx := context.Background()
	for i := range peers {
		if _, err := clients[0].Announce(ctx, announce(i, i%swarms)); err != nil {
			b.Fatal(err)
		}
	}

	for _, perCall := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch=%d", perCall), func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(16)
			cpu0, t0 := p.CPUTime(), time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := int(next.Add(1))
					c := clients[n%4]
					var err error
					if perCall == 1 {
						_, err = c.Announce(ctx, announce(n%peers, n%swarms))
					} else {
						br := &shoalpb.AnnounceBatchRequest{}
						for j := range perCall {
							br.Announces = append(br.Announces, announce(n%peers, (n+j*13)%swarms))
						}
						_, err = c.AnnounceBatch(ctx, br)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			total := float64(b.N * perCall)
			b.ReportMetric(total/time.Since(t0).Seconds(), "announces/s")
			if cpu := (p.CPUTime() - cpu0).Seconds(); cpu > 0 {
				b.ReportMetric(total/cpu, "server-announces/cpu-s")
			}
		})
	}
}
