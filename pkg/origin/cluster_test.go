package origin_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/upstream"
)

// clusterNode is one origin of a test cluster: its own etcd client (so a
// crash can drop its lease without revoking it), membership and store.
type clusterNode struct {
	t      *testing.T
	id     string
	addr   string
	dir    string
	cc     origin.ClusterConfig
	tls    origin.TLSConfig
	hc     *http.Client // nil: plain HTTP
	ups    []upstream.Config
	eps    []string
	cli    *clientv3.Client
	group  *membership.Group
	blobs  *blobstore.Local
	origin *origintest.Origin
	*client
}

type testCluster struct {
	t     *testing.T
	tls   origin.TLSConfig // of every origin; hc is the client that trusts it
	hc    *http.Client
	ups   []upstream.Config // registries every origin pulls through
	eps   []string
	nodes []*clusterNode
	cli   *clientv3.Client // the test's own view of etcd
}

func newTestCluster(t *testing.T) *testCluster {
	eps := etcdtest.Embedded(t)
	return &testCluster{t: t, eps: eps, cli: etcdtest.Client(t, eps)}
}

// testSecret is the cluster secret of test clusters that set none.
const testSecret = "test-cluster-secret-0123456789"

// add starts a new origin and waits until every running node sees it.
func (tc *testCluster) add(id string, cc origin.ClusterConfig) *clusterNode {
	tc.t.Helper()
	if cc.Secret == "" && cc.SecretFile == "" {
		cc.Secret = testSecret
	}
	n := &clusterNode{t: tc.t, id: id, dir: tc.t.TempDir(), cc: cc, eps: tc.eps, tls: tc.tls, hc: tc.hc, ups: tc.ups}
	n.start("127.0.0.1:0")
	tc.nodes = append(tc.nodes, n)
	tc.waitMembers()
	return n
}

func (n *clusterNode) start(addr string) {
	n.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		n.t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	n.cli = etcdtest.Client(n.t, n.eps)
	n.group, err = membership.Join(context.Background(), n.cli, membership.Config{
		Prefix: membership.OriginPrefix, Self: &ring.Member{ID: n.id, Addr: n.addr}, TTL: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		n.t.Fatal(err)
	}
	if n.blobs, err = blobstore.NewLocal(filepath.Join(n.dir, "blobstore")); err != nil {
		n.t.Fatal(err)
	}
	index := repostore.NewEtcd(n.cli, repostore.EtcdConfig{})
	n.origin = origintest.Serve(n.t, ln, origin.Config{DataDir: n.dir, Cluster: n.cc, TLS: n.tls, Upstreams: n.ups},
		origin.WithStores(n.blobs, index),
		origin.WithCluster(origin.Peers{Members: n.group, Self: n.id}))
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if n.hc != nil {
		hc.Transport = n.hc.Transport
	}
	n.client = &client{t: n.t, o: n.origin, hc: hc}
}

// crash stops serving and stops renewing the lease without revoking it, as
// a killed process would: the others still list it until the TTL ends.
func (n *clusterNode) crash() {
	n.origin.Stop()
	n.cli.Close()
	// Closing the group would revoke the lease; a killed process cannot.
	g := n.group
	n.t.Cleanup(func() { g.Close() })
	n.client.hc.CloseIdleConnections()
}

func (n *clusterNode) has(d string) bool {
	_, err := n.blobs.Stat(context.Background(), digest.Digest(d))
	return err == nil
}

func (n *clusterNode) members() int { return n.group.Ring().Len() }

// waitMembers waits until every node that is up sees exactly the nodes
// that are up.
func (tc *testCluster) waitMembers(up ...*clusterNode) {
	tc.t.Helper()
	if up == nil {
		up = tc.nodes
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, n := range up {
			ok = ok && n.members() == len(up)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("membership did not settle on %d origins", len(up))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// owners are the nodes that own d on ring r.
func (tc *testCluster) owners(r *ring.Ring, d string, n int) []*clusterNode {
	var out []*clusterNode
	for _, m := range r.Owners(d, n) {
		for _, node := range tc.nodes {
			if node.id == m.ID {
				out = append(out, node)
			}
		}
	}
	return out
}

func (c *client) pull(d string) []byte {
	c.t.Helper()
	return c.do("GET", "/v2/app/blobs/"+d, nil, nil).expect(c.t, http.StatusOK, "").body
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterPushReplicatesAndReadsAnywhere: with four origins and two
// replicas, a push to any origin leaves the blob on both owners before 201,
// and every origin, owner or not, serves it — whole, by range, and as
// metainfo — with tags and manifests visible everywhere at once.
func TestClusterPushReplicatesAndReadsAnywhere(t *testing.T) {
	tc := newTestCluster(t)
	cc := origin.ClusterConfig{Replicas: 2}
	for i := range 4 {
		tc.add(fmt.Sprintf("o%d", i), cc)
	}
	r := tc.nodes[0].group.Ring()

	blobs := map[string][]byte{}
	for i := range 24 {
		b := randomBytes(t, 1000+i*5000)
		d := tc.nodes[i%4].pushBlob("app", b)
		blobs[d] = b
		owners := tc.owners(r, d, 2)
		for _, o := range owners {
			if !o.has(d) {
				t.Fatalf("blob %d pushed to %s: owner %s lacks it after 201", i, tc.nodes[i%4].id, o.id)
			}
		}
	}
	nonOwnerReads := 0
	for d, b := range blobs {
		for _, n := range tc.nodes {
			if !n.has(d) {
				nonOwnerReads++
			}
			if got := n.pull(d); !bytes.Equal(got, b) {
				t.Fatalf("%s served %d wrong bytes of %s", n.id, len(got), d)
			}
			resp := n.do("GET", "/v2/app/blobs/"+d, header{"Range": "bytes=10-19"}, nil).expect(t, http.StatusPartialContent, "")
			if !bytes.Equal(resp.body, b[10:20]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(b)) {
				t.Fatalf("%s range of %s: %q %q", n.id, d, resp.body, resp.Header.Get("Content-Range"))
			}
			n.do("HEAD", "/v2/app/blobs/"+d, nil, nil).expect(t, http.StatusOK, "")
			n.do("GET", origin.MetaInfoPath+d, nil, nil).expect(t, http.StatusOK, "")
		}
	}
	if nonOwnerReads == 0 {
		t.Fatal("no read went through a non-owner; the test shows nothing")
	}
	missing := sha([]byte("never pushed"))
	for _, n := range tc.nodes {
		n.do("GET", "/v2/app/blobs/"+missing, nil, nil).expect(t, http.StatusNotFound, "BLOB_UNKNOWN")
		n.do("GET", origin.MetaInfoPath+missing, nil, nil).expect(t, http.StatusNotFound, "BLOB_UNKNOWN")
	}

	// A manifest pushed to one origin: its layers were pushed to another,
	// and every origin resolves the tag and serves the manifest.
	body := tc.nodes[1].image("app", mtOCIManifest, 2)
	md := tc.nodes[2].putManifest("app", "v1", mtOCIManifest, body)
	for _, n := range tc.nodes {
		resp := n.do("GET", "/v2/app/manifests/v1", header{"Accept": mtOCIManifest}, nil).expect(t, http.StatusOK, "")
		if !bytes.Equal(resp.body, body) || resp.Header.Get("Docker-Content-Digest") != md {
			t.Fatalf("%s: manifest by tag %q", n.id, resp.body)
		}
	}
	// Cross-repository mount finds a blob stored on other origins.
	var someBlob string
	for d := range blobs {
		someBlob = d
		break
	}
	for _, n := range tc.nodes {
		if !n.has(someBlob) {
			n.do("POST", "/v2/other/blobs/uploads/?mount="+someBlob+"&from=app", nil, nil).expect(t, http.StatusCreated, "")
			break
		}
	}
}

// TestClusterSurvivesKilledOrigin: an origin killed mid-cluster (its lease
// still listed) leaves every blob readable through the others, at once and
// after its lease expires.
func TestClusterSurvivesKilledOrigin(t *testing.T) {
	tc := newTestCluster(t)
	cc := origin.ClusterConfig{Replicas: 2}
	for i := range 3 {
		tc.add(fmt.Sprintf("o%d", i), cc)
	}
	blobs := map[string][]byte{}
	for i := range 30 {
		b := randomBytes(t, 2000+i)
		blobs[tc.nodes[i%3].pushBlob("app", b)] = b
	}
	victim, alive := tc.nodes[1], []*clusterNode{tc.nodes[0], tc.nodes[2]}
	victim.crash()
	readAll := func(when string) {
		for d, b := range blobs {
			for _, n := range alive {
				if got := n.pull(d); !bytes.Equal(got, b) {
					t.Fatalf("%s: %s served wrong bytes of %s", when, n.id, d)
				}
			}
		}
	}
	if alive[0].members() != 3 {
		t.Fatalf("the killed origin left the ring at once (%d members); the test wants its lease to linger", alive[0].members())
	}
	readAll("killed origin still listed")
	killed := time.Now()
	tc.waitMembers(alive...)
	t.Logf("killed origin left the ring after %s (TTL 2s)", time.Since(killed).Round(10*time.Millisecond))
	readAll("after lease expiry")

	// Repair restores two copies of every blob on the two survivors.
	waitFor(t, "repair to two copies", 20*time.Second, func() bool {
		for d := range blobs {
			if !alive[0].has(d) || !alive[1].has(d) {
				return false
			}
		}
		return true
	})
}

// TestClusterRepairOnJoin: blobs pushed to a one-origin cluster reach the
// origins that join later and become their owners.
func TestClusterRepairOnJoin(t *testing.T) {
	tc := newTestCluster(t)
	cc := origin.ClusterConfig{Replicas: 2, RepairBandwidth: 64 << 20}
	first := tc.add("o0", cc)
	var ds []string
	for i := range 40 {
		ds = append(ds, first.pushBlob("app", randomBytes(t, 10_000+i)))
	}
	tc.add("o1", cc)
	tc.add("o2", cc)
	r := first.group.Ring()
	moved := 0
	waitFor(t, "every blob on its new owners", 30*time.Second, func() bool {
		moved = 0
		for _, d := range ds {
			for _, o := range tc.owners(r, d, 2) {
				if !o.has(d) {
					return false
				}
				if o != first {
					moved++
				}
			}
		}
		return true
	})
	// Rendezvous placement: each of the 40 blobs has 2 of 3 owners, so
	// about 2/3 × 2 × 40 ≈ 53 copies belong on the newcomers.
	if moved < 30 {
		t.Fatalf("only %d copies moved to the new origins", moved)
	}
}

// TestClusterAsyncSurvivesRestart: in async mode a push is acknowledged
// once one origin holds it; copies owed to an owner that is down are
// queued on disk, survive a restart of the origin that owes them, and land
// when the owner is back.
func TestClusterAsyncSurvivesRestart(t *testing.T) {
	tc := newTestCluster(t)
	cc := origin.ClusterConfig{Replicas: 2, Replication: "async"}
	a := tc.add("a", cc)
	b := tc.add("b", cc)
	bAddr := b.addr
	// b stops serving but keeps its lease: it is an owner no one reaches.
	b.origin.Stop()

	var ds []string
	for i := range 10 {
		ds = append(ds, a.pushBlob("app", randomBytes(t, 5000+i)))
	}
	for _, d := range ds {
		if b.has(d) {
			t.Fatal("b received a blob while down")
		}
	}
	queued := func(n *clusterNode) int {
		m := metric(t, n.origin.Registry, "shoal_origin_replication_queue")
		return int(m)
	}
	if got := queued(a); got != len(ds) {
		t.Fatalf("queue holds %d, want %d", got, len(ds))
	}
	// Restart a: the queue must come back from disk.
	a.origin.Stop()
	a.group.Close()
	a.cli.Close()
	a.start(a.addr)
	if got := queued(a); got != len(ds) {
		t.Fatalf("after restart the queue holds %d, want %d", got, len(ds))
	}
	// b comes back (same address, same ID): the queue drains into it.
	b.group.Close()
	b.cli.Close()
	b.start(bAddr)
	waitFor(t, "queued copies on b", 30*time.Second, func() bool {
		for _, d := range ds {
			if !b.has(d) {
				return false
			}
		}
		return queued(a) == 0
	})
}

// TestClusterSyncQuorum: in sync mode a push fails with 503 when an owner
// is unreachable and the quorum needs it, and succeeds (queuing the copy)
// when the quorum is met without it.
func TestClusterSyncQuorum(t *testing.T) {
	tc := newTestCluster(t)
	all := tc.add("a", origin.ClusterConfig{Replicas: 2})
	tc.add("b", origin.ClusterConfig{Replicas: 2})
	one := tc.add("c", origin.ClusterConfig{Replicas: 2, WriteQuorum: 1})
	tc.nodes[1].origin.Stop() // b: listed, unreachable

	r := all.group.Ring()
	pushed := 0
	for i := 0; pushed < 3 && i < 200; i++ {
		b := randomBytes(t, 100)
		d := sha(b)
		owners := r.Owners(d, 2)
		if owners[0].ID != "b" && owners[1].ID != "b" {
			continue // only blobs b owns test anything
		}
		all.do("POST", "/v2/app/blobs/uploads/?digest="+d, header{"Content-Type": "application/octet-stream"}, b).
			expect(t, http.StatusServiceUnavailable, "UNAVAILABLE")
		all.do("HEAD", "/v2/app/blobs/"+d, nil, nil).expect(t, http.StatusNotFound, "")
		one.do("POST", "/v2/app/blobs/uploads/?digest="+d, header{"Content-Type": "application/octet-stream"}, b).
			expect(t, http.StatusCreated, "")
		pushed++
	}
	if pushed == 0 {
		t.Fatal("no blob owned by b in 200 tries")
	}
}

// TestInternalEndpointRejectsBadInput: the origin-to-origin endpoint
// verifies what it is sent and keeps nothing wrong, and wants the cluster
// secret.
func TestInternalEndpointRejectsBadInput(t *testing.T) {
	tc := newTestCluster(t)
	n := tc.add("a", origin.ClusterConfig{Secret: "s3cret-s3cret-s3cret"})
	good := []byte("a blob")
	auth := header{"Authorization": "Bearer s3cret-s3cret-s3cret"}
	tests := []struct {
		name   string
		method string
		path   string
		h      header
		body   []byte
		status int
	}{
		{"no secret", "PUT", sha(good), nil, good, http.StatusUnauthorized},
		{"no secret read", "GET", sha(good), nil, nil, http.StatusUnauthorized},
		{"basic instead of bearer", "GET", sha(good), header{"Authorization": "Basic czNjcmV0LXMzY3JldC1zM2NyZXQ="}, nil, http.StatusUnauthorized},
		{"wrong secret", "PUT", sha(good), header{"Authorization": "Bearer nope"}, good, http.StatusUnauthorized},
		{"malformed digest", "PUT", "sha256:xyz", auth, good, http.StatusBadRequest},
		{"wrong bytes", "PUT", sha(good), auth, []byte("other"), http.StatusBadRequest},
		{"missing blob", "GET", sha(good), auth, nil, http.StatusNotFound},
		{"bad method", "POST", sha(good), auth, nil, http.StatusMethodNotAllowed},
		{"good", "PUT", sha(good), auth, good, http.StatusCreated},
		{"read back", "GET", sha(good), auth, nil, http.StatusOK},
		{"metainfo", "GET", origin.InternalMetaInfoPath + sha(good), auth, nil, http.StatusOK},
		{"metainfo bad method", "PUT", origin.InternalMetaInfoPath + sha(good), auth, good, http.StatusMethodNotAllowed},
		{"metainfo bad digest", "GET", origin.InternalMetaInfoPath + "sha256:00", auth, nil, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if !strings.HasPrefix(path, "/") {
				path = origin.InternalBlobPath + path
			}
			resp := n.do(tt.method, n.origin.URL+path, tt.h, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.path, resp.StatusCode, resp.body, tt.status)
			}
		})
	}
	if files, tmp := n.storeFiles(); len(files) != 1 || len(tmp) != 0 {
		t.Fatalf("store after bad input: %v, temp %v", files, tmp)
	}
}

// metric reads a gauge or counter (no labels) from reg.
func metric(t *testing.T, reg interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return sum
	}
	return 0
}
