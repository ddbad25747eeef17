package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/tracker"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// loadtestPreheatToken is the fleet's preheat token: a private fleet on
// loopback or in namespaces of its own, gone with the run.
const loadtestPreheatToken = "loadtest-preheat-token-not-a-secret"

// runPreheat preheats the pushed image (loadtest/app:v1) on o.Preheat
// agents and waits for the copies. What the origins sent for it is
// measured and then set aside: the rollout that follows counts from here,
// in the origins' counters and in the agents'.
// The tracker is dialled from its place (with --netns, inside its
// namespace).
func runPreheat(ctx context.Context, o options, tr *place, trackerAddr string, origins []*originProc, agents []*agentProc) (*preheatResult, error) {
	conn, err := grpc.NewClient("passthrough:///"+trackerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return tr.dial(ctx, "tcp", addr) }))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out := io.Discard
	if o.Progress != nil {
		out = o.Progress
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	st, err := tracker.RunPreheat(pctx, shoalpb.NewTrackerClient(conn), loadtestPreheatToken,
		&shoalpb.PreheatRequest{Repo: "loadtest/app", Reference: "v1", Copies: int32(o.Preheat)}, out, 500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	r := &preheatResult{Copies: len(st.GetCompletePeers()), Seconds: time.Since(start).Seconds()}
	for _, org := range origins {
		m, err := scrape(org.pl.client, org.url+"/metrics")
		if err != nil {
			return nil, err
		}
		c := originCountersOf(subtract(m, org.base))
		r.OriginEgress += c.OriginP2P + c.OriginV2
		org.base = m
	}
	for _, a := range agents {
		m, err := a.counters()
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		for k, v := range m {
			a.earlier[k] -= v
		}
		a.mu.Unlock()
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "preheat: %d copies in %.1fs, origin sent %s\n", r.Copies, r.Seconds, mib(r.OriginEgress))
	}
	return r, nil
}

func subtract(m, base map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v - base[k]
	}
	return out
}
