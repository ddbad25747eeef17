package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/proctest"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

type trackerProc struct {
	*proctest.Proc
	grpc, http string
}

func startTracker(t *testing.T, bin, id string, extra ...string) trackerProc {
	t.Helper()
	tp := trackerProc{grpc: proctest.FreeAddr(t), http: proctest.FreeAddr(t)}
	args := append([]string{"--id", id, "--grpc-addr", tp.grpc, "--http-addr", tp.http, "--advertise", tp.grpc,
		"--log-format", "json"}, extra...)
	tp.Proc = proctest.Start(t, bin, args...)
	tp.WaitReady("http://"+tp.http+"/readyz", 60*time.Second)
	return tp
}

func trackerKeys(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, membership.TrackerPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), membership.TrackerPrefix))
	}
	return out
}

func waitKeys(t *testing.T, cli *clientv3.Client, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := strings.Join(trackerKeys(t, cli), ",")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trackers in etcd = %q after %s, want %q", got, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBinaryCluster runs two real tracker processes the way a small
// deployment does: the first starts the embedded etcd under its data dir,
// the second joins it; gRPC uses mutual TLS from the flags. Announces sent
// to either tracker meet in one swarm (forwarding to the digest's owner),
// SIGTERM leaves the ring at once, and the embedded etcd's data survives a
// restart.
func TestBinaryCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := proctest.Binary(t, "tracker")
	dir := t.TempDir()
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tlsArgs := []string{"--tls-cert", pki.CertFile, "--tls-key", pki.KeyFile, "--tls-ca", pki.CAFile}
	etcdURL := "http://" + proctest.FreeAddr(t)
	embedded := []string{"--data-dir", filepath.Join(dir, "a"),
		"--embedded-etcd-client-url", etcdURL, "--embedded-etcd-peer-url", "http://" + proctest.FreeAddr(t)}

	a := startTracker(t, bin, "a", append(embedded, tlsArgs...)...)
	b := startTracker(t, bin, "b", append([]string{"--etcd-endpoints", etcdURL}, tlsArgs...)...)

	cli, err := membership.Dial(context.Background(), membership.EtcdConfig{Endpoints: []string{etcdURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitKeys(t, cli, "a,b", 10*time.Second)

	cc, err := pki.Client()
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr string, creds credentials.TransportCredentials) shoalpb.TrackerClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return trackertest.Named(shoalpb.NewTrackerClient(conn))
	}
	ca, cb := dial(a.grpc, credentials.NewTLS(cc)), dial(b.grpc, credentials.NewTLS(cc))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := dial(a.grpc, insecure.NewCredentials()).Announce(ctx, req(0, "x", true)); err == nil {
		t.Fatal("plaintext announce accepted by a tracker configured for TLS")
	}

	// Each digest is owned by a or b; whichever the seeder and the leecher
	// reach, the leecher must be handed the seeder.
	const digests = 20
	for i := range digests {
		if _, err := ca.Announce(ctx, req(i, "seeder", true)); err != nil {
			t.Fatalf("announce to a: %v", err)
		}
		resp, err := cb.Announce(ctx, req(i, "leecher", false))
		if err != nil {
			t.Fatalf("announce to b: %v", err)
		}
		if p := resp.GetPeers(); len(p) != 1 || p[0].GetId() != "seeder" {
			t.Fatalf("digest %d: leecher on b got %v, want the seeder that announced to a", i, p)
		}
	}
	fa, fb := forwarded(t, a.http), forwarded(t, b.http)
	if fa+fb < digests || fa == 0 || fb == 0 {
		t.Fatalf("forwarded announces a=%d b=%d: want both trackers to forward, %d in all", fa, fb, digests)
	}

	// SIGTERM revokes b's lease: it leaves etcd at once, not after the TTL.
	stopped := time.Now()
	if err := b.Stop(30 * time.Second); err != nil {
		t.Fatalf("b after SIGTERM: %v\n%s", err, b.Logs())
	}
	waitKeys(t, cli, "a", 2*time.Second)
	t.Logf("b left the ring %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	// With b gone a owns every digest, so announces no longer forward.
	for i := range digests {
		if _, err := ca.Announce(ctx, req(i, "seeder", true)); err != nil {
			t.Fatalf("announce to a alone: %v", err)
		}
	}

	if _, err := cli.Put(ctx, "/shoal/test/durable", "yes"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	if err := a.Stop(30 * time.Second); err != nil {
		t.Fatalf("a after SIGTERM: %v\n%s", err, a.Logs())
	}
	a = startTracker(t, bin, "a", append(embedded, tlsArgs...)...)
	cli2, err := membership.Dial(context.Background(), membership.EtcdConfig{Endpoints: []string{etcdURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	got, err := cli2.Get(ctx, "/shoal/test/durable")
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("embedded etcd lost data across a restart: %v %v", got, err)
	}
	waitKeys(t, cli2, "a", 5*time.Second)
	if err := a.Stop(30 * time.Second); err != nil {
		t.Fatalf("a after SIGTERM: %v\n%s", err, a.Logs())
	}
}

func req(i int, peer string, complete bool) *shoalpb.AnnounceRequest {
	r := &shoalpb.AnnounceRequest{Digest: fmt.Sprintf("sha256:%064x", i+1), Peer: &shoalpb.Peer{Id: peer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}
	if complete {
		r.Have = &shoalpb.AnnounceRequest_Complete{Complete: true}
	} else {
		r.Have = &shoalpb.AnnounceRequest_Bitfield{Bitfield: []byte{0}}
	}
	return r
}

// forwarded reads shoal_tracker_forwards_total{result="ok"} from /metrics.
func forwarded(t *testing.T, httpAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "shoal_tracker_forwards_total{") && strings.Contains(line, `result="ok"`) {
			var n float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n)
			return int(n)
		}
	}
	return 0
}
