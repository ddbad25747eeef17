package tracker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func dgst(i int) string { return fmt.Sprintf("sha256:%064x", i) }

func announce(d, id string, complete bool) *shoalpb.AnnounceRequest {
	r := &shoalpb.AnnounceRequest{Digest: d, Peer: &shoalpb.Peer{Id: id, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}
	if complete {
		r.Have = &shoalpb.AnnounceRequest_Complete{Complete: true}
	} else {
		r.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: []byte{0}}
	}
	return r
}

func ids(r *shoalpb.AnnounceResponse) map[string]bool {
	out := map[string]bool{}
	for _, p := range r.GetPeers() {
		out[p.GetId()] = true
	}
	return out
}

func mustAnnounce(t testing.TB, c shoalpb.TrackerClient, req *shoalpb.AnnounceRequest) *shoalpb.AnnounceResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Announce(ctx, req)
	if err != nil {
		t.Fatalf("Announce(%s, %s): %v", req.GetDigest(), req.GetPeer().GetId(), err)
	}
	return r
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func TestAnnounceOverGRPC(t *testing.T) {
	tr := trackertest.Start(t, nil, tracker.Config{}, nil)
	d := dgst(1)
	if r := mustAnnounce(t, tr.Client, announce(d, "a", false)); len(r.GetPeers()) != 0 || r.GetIntervalSeconds() < 2 {
		t.Fatalf("first peer got %v, interval %d", ids(r), r.GetIntervalSeconds())
	}
	mustAnnounce(t, tr.Client, announce(d, "seed", true))
	r := mustAnnounce(t, tr.Client, announce(d, "b", false))
	if got := ids(r); !got["a"] || !got["seed"] || got["b"] {
		t.Fatalf("b got %v", got)
	}
	if !r.GetPeers()[0].GetComplete() || r.GetPeers()[0].GetId() != "seed" {
		t.Fatalf("the seeder should lead: %v", r.GetPeers())
	}
	// Swarms are per digest.
	if r := mustAnnounce(t, tr.Client, announce(dgst(2), "c", false)); len(r.GetPeers()) != 0 {
		t.Fatalf("other swarm leaked: %v", ids(r))
	}
}

// A seeder that evicted a blob says so: it is handed out no more, at
// once rather than when its entry expires, and no longer counts as one of
// the swarm's seeders. Announcing again puts it back.
func TestAnnounceStoppedLeavesSwarm(t *testing.T) {
	tr := trackertest.Start(t, nil, tracker.Config{}, nil)
	d := dgst(3)
	mustAnnounce(t, tr.Client, announce(d, "seed", true))
	mustAnnounce(t, tr.Client, announce(d, "other", true))
	if got := ids(mustAnnounce(t, tr.Client, announce(d, "b", false))); !got["seed"] || !got["other"] {
		t.Fatalf("before: b got %v", got)
	}
	stop := announce(d, "seed", false)
	stop.Stopped = true
	if r := mustAnnounce(t, tr.Client, stop); len(r.GetPeers()) != 0 {
		t.Fatalf("a stopped peer was handed %v", ids(r))
	}
	if got := ids(mustAnnounce(t, tr.Client, announce(d, "b", false))); got["seed"] || !got["other"] {
		t.Fatalf("after stop: b got %v, want other without seed", got)
	}
	// Stopping what the tracker never heard of records nothing.
	unknown := announce(dgst(4), "seed", false)
	unknown.Stopped = true
	mustAnnounce(t, tr.Client, unknown)
	if got := ids(mustAnnounce(t, tr.Client, announce(dgst(4), "c", false))); len(got) != 0 {
		t.Fatalf("a stop for an unknown swarm left %v", got)
	}
	mustAnnounce(t, tr.Client, announce(d, "seed", true))
	if got := ids(mustAnnounce(t, tr.Client, announce(d, "b", false))); !got["seed"] {
		t.Fatalf("re-announced: b got %v", got)
	}
}

func TestAnnounceRejectsBadInput(t *testing.T) {
	tr := trackertest.Start(t, nil, tracker.Config{}, nil)
	long := string(bytes.Repeat([]byte("x"), 300))
	many := make([]string, 17)
	for i := range many {
		many[i] = "/ip4/1.2.3.4/tcp/1"
	}
	tests := []struct {
		name string
		mod  func(r *shoalpb.AnnounceRequest)
	}{
		{"no digest", func(r *shoalpb.AnnounceRequest) { r.Digest = "" }},
		{"bad digest", func(r *shoalpb.AnnounceRequest) { r.Digest = "sha256:xyz" }},
		{"traversal digest", func(r *shoalpb.AnnounceRequest) { r.Digest = "../../etc/passwd" }},
		{"no peer", func(r *shoalpb.AnnounceRequest) { r.Peer = nil }},
		{"empty id", func(r *shoalpb.AnnounceRequest) { r.Peer.Id = "" }},
		{"long id", func(r *shoalpb.AnnounceRequest) { r.Peer.Id = long }},
		{"too many addrs", func(r *shoalpb.AnnounceRequest) { r.Peer.Addrs = many }},
		{"long addr", func(r *shoalpb.AnnounceRequest) { r.Peer.Addrs = []string{long} }},
		{"empty addr", func(r *shoalpb.AnnounceRequest) { r.Peer.Addrs = []string{""} }},
		{"long label", func(r *shoalpb.AnnounceRequest) { r.Peer.Labels = &shoalpb.Labels{Zone: long} }},
		{"huge bitfield", func(r *shoalpb.AnnounceRequest) {
			r.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: make([]byte, 4096)}
		}},
		{"negative max_peers", func(r *shoalpb.AnnounceRequest) { r.MaxPeers = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := announce(dgst(1), "a", false)
			tt.mod(req)
			_, err := tr.Client.Announce(context.Background(), req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			batch := &shoalpb.AnnounceBatchRequest{Announces: []*shoalpb.AnnounceRequest{announce(dgst(1), "ok", false), req}}
			if _, err := tr.Client.AnnounceBatch(context.Background(), batch); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("batch err = %v, want InvalidArgument", err)
			}
		})
	}
	over := &shoalpb.AnnounceBatchRequest{}
	for i := range 1001 {
		over.Announces = append(over.Announces, announce(dgst(i), "a", false))
	}
	if _, err := tr.Client.AnnounceBatch(context.Background(), over); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("oversized batch: %v", err)
	}
	// Still serving.
	mustAnnounce(t, tr.Client, announce(dgst(1), "a", false))
}

// Peers that stop announcing disappear; a restarted tracker is whole again
// one interval after it comes back, because live agents re-announce.
func TestExpiryAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for intervals")
	}
	cfg := tracker.Config{Interval: time.Second}
	ln := trackertest.Listen(t)
	addr := ln.Addr().String()
	tr := trackertest.Start(t, ln, cfg, nil)
	d := dgst(7)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := trackertest.Named(shoalpb.NewTrackerClient(conn))

	// Three agents announce as real agents do: again after each interval.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b", "c"} {
		wg.Go(func() {
			for ctx.Err() == nil {
				wait := 200 * time.Millisecond
				if r, err := client.Announce(ctx, announce(d, id, false)); err == nil {
					wait = time.Duration(r.GetIntervalSeconds()) * time.Second
				}
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	waitPeers := func(want int, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			r, err := client.Announce(context.Background(), &shoalpb.AnnounceRequest{Digest: d, Peer: &shoalpb.Peer{Id: "observer"}, Have: &shoalpb.AnnounceRequest_Complete{Complete: true}})
			if err == nil && len(ids(r)) == want {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("saw %v after %s, want %d peers", ids(r), within, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitPeers(3, 3*time.Second)

	if err := tr.Stop(); err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	trackertest.Start(t, ln2, cfg, nil)
	took := waitPeers(3, 3*time.Second)
	t.Logf("restarted tracker whole again after %s (interval 1s)", took)

	// Stop one agent: it is gone after three missed intervals.
	cancel()
	wg.Wait()
	took = waitPeers(0, 6*time.Second)
	t.Logf("silent peers expired after %s", took)
}

// Two trackers that learn each other through etcd: an announce sent to the
// wrong one is forwarded to the owner in one hop.
func TestForwardingThroughEtcdMembership(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Embedded(t))
	var trs []*trackertest.Tracker
	var groups []*membership.Group
	for _, id := range []string{"t1", "t2"} {
		ln := trackertest.Listen(t)
		g, err := membership.Join(context.Background(), cli, membership.Config{
			Prefix: membership.TrackerPrefix, Self: &ring.Member{ID: id, Addr: ln.Addr().String()},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		groups = append(groups, g)
		trs = append(trs, trackertest.Start(t, ln, tracker.Config{ID: id}, []tracker.Option{tracker.WithTrackers(g)}))
	}
	deadline := time.Now().Add(5 * time.Second)
	for groups[0].Ring().Len() != 2 || groups[1].Ring().Len() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("trackers did not see each other")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A digest owned by t2, announced to t1.
	var d string
	for i := 0; ; i++ {
		if o, _ := groups[0].Ring().Owner(dgst(i)); o.ID == "t2" {
			d = dgst(i)
			break
		}
	}
	mustAnnounce(t, trs[0].Client, announce(d, "a", false))
	// t2 holds the state: asked directly (as owner), it knows a.
	r := mustAnnounce(t, trs[1].Client, announce(d, "b", false))
	if !ids(r)["a"] {
		t.Fatalf("owner does not know the forwarded peer: %v", ids(r))
	}
	// And t1, asked again, answers with t2's view.
	if r := mustAnnounce(t, trs[0].Client, announce(d, "c", false)); !ids(r)["a"] || !ids(r)["b"] {
		t.Fatalf("non-owner answer %v", ids(r))
	}
	if n := counter(t, trs[0].Registry, "shoal_tracker_forwards_total", map[string]string{"result": "ok"}); n != 2 {
		t.Fatalf("t1 forwarded %v announces, want 2", n)
	}
	if n := counter(t, trs[1].Registry, "shoal_tracker_forwards_total", nil); n != 0 {
		t.Fatalf("the owner forwarded %v announces", n)
	}

	// A batch spanning both owners lands each announce on its owner.
	batch := &shoalpb.AnnounceBatchRequest{}
	for i := range 20 {
		batch.Announces = append(batch.Announces, announce(dgst(1000+i), "batcher", false))
	}
	resp, err := trs[0].Client.AnnounceBatch(context.Background(), batch)
	if err != nil || len(resp.GetResponses()) != 20 {
		t.Fatalf("batch: %v, %d responses", err, len(resp.GetResponses()))
	}
	for i := range 20 {
		o, _ := groups[0].Ring().Owner(dgst(1000 + i))
		owner := trs[0]
		if o.ID == "t2" {
			owner = trs[1]
		}
		req := announce(dgst(1000+i), "checker", false)
		req.Forwarded = true // ask the owner itself
		if r := mustAnnounce(t, owner.Client, req); !ids(r)["batcher"] {
			t.Fatalf("announce %d not on its owner %s", i, o.ID)
		}
	}
}

// When the owner is down, the receiving tracker answers from its own state
// rather than failing the agent.
func TestForwardFailureAnswersLocally(t *testing.T) {
	dead := trackertest.Listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	r := ring.New([]ring.Member{{ID: "t1", Addr: "unused"}, {ID: "dead", Addr: deadAddr}})
	tr := trackertest.Start(t, nil, tracker.Config{ID: "t1", ForwardTimeout: 500 * time.Millisecond}, []tracker.Option{tracker.WithTrackers(r)})
	var d string
	for i := 0; ; i++ {
		if o, _ := r.Owner(dgst(i)); o.ID == "dead" {
			d = dgst(i)
			break
		}
	}
	mustAnnounce(t, tr.Client, announce(d, "a", false))
	if got := ids(mustAnnounce(t, tr.Client, announce(d, "b", false))); !got["a"] {
		t.Fatalf("local fallback lost state: %v", got)
	}
	if n := counter(t, tr.Registry, "shoal_tracker_forwards_total", map[string]string{"result": "error"}); n != 2 {
		t.Fatalf("failed forwards counted %v", n)
	}
}

// pushBlob puts b into a real origin and returns its digest.
func pushBlob(t *testing.T, o *origintest.Origin, b []byte) string {
	t.Helper()
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := http.Post(o.URL+"/v2/test/repo/blobs/uploads/?digest="+d, "application/octet-stream", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %s", resp.Status)
	}
	return d
}

// A thousand agents asking for one blob's metainfo at once cost the origin
// one request; the answer is the origin's, validated.
func TestGetMetaInfo(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	blob := bytes.Repeat([]byte("shoal"), 2<<20) // 10 MiB: twenty 512 KiB pieces
	d := pushBlob(t, o, blob)

	deadLn := trackertest.Listen(t)
	deadAddr := deadLn.Addr().String()
	deadLn.Close()
	// Two origins, one down: the tracker must get past it.
	origins := ring.New([]ring.Member{{ID: "o-live", Addr: o.Host}, {ID: "o-dead", Addr: deadAddr}})
	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{tracker.WithOrigins(origins)})

	const callers = 1000
	var wg sync.WaitGroup
	results := make([]*shoalpb.MetaInfo, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			r, err := tr.Client.GetMetaInfo(context.Background(), &shoalpb.GetMetaInfoRequest{Digest: d})
			results[i], errs[i] = r.GetMetainfo(), err
		})
	}
	wg.Wait()
	want, err := metainfo.Compute(digest.Digest(d), bytes.NewReader(blob), int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		got, err := metainfo.FromProto(results[i])
		if err != nil || !got.Equal(want) || got.NumPieces() != 20 {
			t.Fatalf("caller %d got %+v (%v)", i, got, err)
		}
	}
	// The dead origin may be tried first (the ring decides), so at most
	// two origin requests: one per origin, not one per caller.
	if n := counter(t, tr.Registry, "shoal_tracker_origin_metainfo_fetches_total", nil); n < 1 || n > 2 {
		t.Fatalf("%v origin fetches for %d callers", n, callers)
	}

	tests := []struct {
		name   string
		digest string
		code   codes.Code
	}{
		{"unknown blob", dgst(99), codes.NotFound},
		{"malformed digest", "sha256:zz", codes.InvalidArgument},
		{"empty", "", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tr.Client.GetMetaInfo(context.Background(), &shoalpb.GetMetaInfoRequest{Digest: tt.digest})
			if status.Code(err) != tt.code {
				t.Fatalf("err = %v, want %s", err, tt.code)
			}
		})
	}

	// Only the dead origin: unavailable, not "not found".
	lonely := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{tracker.WithOrigins(ring.New([]ring.Member{{ID: "o-dead", Addr: deadAddr}}))})
	if _, err := lonely.Client.GetMetaInfo(context.Background(), &shoalpb.GetMetaInfoRequest{Digest: d}); status.Code(err) != codes.Unavailable {
		t.Fatalf("dead origins: %v, want Unavailable", err)
	}
}

func TestRateLimits(t *testing.T) {
	t.Run("tracker-wide", func(t *testing.T) {
		tr := trackertest.Start(t, nil, tracker.Config{AnnounceRate: 10}, nil)
		limited := 0
		for i := range 50 {
			_, err := tr.Client.Announce(context.Background(), announce(dgst(1), fmt.Sprintf("p%d", i), false))
			if status.Code(err) == codes.ResourceExhausted {
				limited++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if limited < 30 {
			t.Fatalf("only %d of 50 rapid announces limited at 10/s", limited)
		}
	})
	t.Run("one flooding peer", func(t *testing.T) {
		tr := trackertest.Start(t, nil, tracker.Config{PeerAnnounceRate: 5, PeerAnnounceBurst: 10}, nil)
		limited, forged := 0, 0
		for i := range 200 {
			req := announce(dgst(i), "flood", false)
			// Claiming to be a forwarding tracker buys no exemption.
			req.Forwarded = i%2 == 0
			_, err := tr.Client.Announce(context.Background(), req)
			switch {
			case req.Forwarded && status.Code(err) == codes.PermissionDenied:
				forged++
			case !req.Forwarded && status.Code(err) == codes.ResourceExhausted:
				limited++
			case !req.Forwarded && err == nil:
			default:
				t.Fatalf("announce %d (forwarded %v): %v", i, req.Forwarded, err)
			}
		}
		if limited < 85 || forged != 100 {
			t.Fatalf("flooding peer limited %d of 100 times, %d of 100 forged forwards refused", limited, forged)
		}
		// Everyone else is unaffected.
		for i := range 20 {
			mustAnnounce(t, tr.Client, announce(dgst(1), fmt.Sprintf("calm-%d", i), false))
		}
		if n := counter(t, tr.Registry, "shoal_tracker_announces_total", map[string]string{"result": "rate_limited"}); int(n) != limited {
			t.Fatalf("metric says %v limited, saw %d", n, limited)
		}
	})
	t.Run("oversized message", func(t *testing.T) {
		tr := trackertest.Start(t, nil, tracker.Config{}, nil)
		req := announce(dgst(1), "big", false)
		req.Peer.Labels = &shoalpb.Labels{Node: string(bytes.Repeat([]byte("n"), 2<<20))}
		if _, err := tr.Client.Announce(context.Background(), req); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("2 MiB announce: %v, want ResourceExhausted", err)
		}
		mustAnnounce(t, tr.Client, announce(dgst(1), "small", false))
	})
}

// With cluster TLS, only clients holding a certificate from the cluster CA
// get in.
func TestMutualTLS(t *testing.T) {
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srvCfg, err := pki.Server()
	if err != nil {
		t.Fatal(err)
	}
	tr := trackertest.Start(t, nil, tracker.Config{}, nil, grpc.Creds(credentials.NewTLS(srvCfg)))

	call := func(opt grpc.DialOption) error {
		conn, err := grpc.NewClient(tr.Addr, opt)
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = trackertest.Named(shoalpb.NewTrackerClient(conn)).Announce(ctx, announce(dgst(1), "a", false))
		return err
	}
	good, err := pki.Client()
	if err != nil {
		t.Fatal(err)
	}
	noCert, _ := tlsconfig.Files{CAFile: pki.CAFile}.Client()
	tests := []struct {
		name string
		opt  grpc.DialOption
		ok   bool
	}{
		{"cluster certificate", grpc.WithTransportCredentials(credentials.NewTLS(good)), true},
		{"no client certificate", grpc.WithTransportCredentials(credentials.NewTLS(noCert)), false},
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := call(tt.opt); (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
