package membership

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/ring"
)

const prefix = "/test/members/"

func join(t *testing.T, cli *clientv3.Client, id string, ttl time.Duration) *Group {
	t.Helper()
	cfg := Config{Prefix: prefix, TTL: ttl, Logger: slog.New(slog.DiscardHandler)}
	if id != "" {
		cfg.Self = &ring.Member{ID: id, Addr: id + ":5000"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := Join(ctx, cli, cfg)
	if err != nil {
		t.Fatalf("Join %q: %v", id, err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func memberIDs(g *Group) []string {
	var out []string
	for _, m := range g.Ring().Members() {
		out = append(out, m.ID)
	}
	return out
}

// eventually waits up to d for g to list exactly want.
func eventually(t *testing.T, g *Group, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !slices.Equal(memberIDs(g), want) {
		if time.Now().After(deadline) {
			t.Fatalf("members %v, want %v", memberIDs(g), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJoinLeaveAndCrash(t *testing.T) {
	endpoints := etcdtest.Embedded(t)
	cli := etcdtest.Client(t, endpoints)

	watcher := join(t, cli, "", 0)
	changes := watcher.Subscribe()
	a := join(t, cli, "a", 0)
	b := join(t, cli, "b", 0)
	eventually(t, watcher, 5*time.Second, "a", "b")
	eventually(t, a, 5*time.Second, "a", "b")
	select {
	case <-changes:
	default:
		t.Fatal("no change notification")
	}
	if m, _ := watcher.Ring().Member("b"); m.Addr != "b:5000" {
		t.Fatalf("member b = %+v", m)
	}

	// A clean leave is seen at once, not after the TTL.
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, watcher, 2*time.Second, "a")
	t.Logf("clean leave seen after %s", time.Since(start))

	// A crash (no revoke: the process and its etcd client just vanish) is
	// seen within the TTL.
	crashCli := etcdtest.Client(t, endpoints)
	join(t, crashCli, "c", 2*time.Second)
	eventually(t, watcher, 5*time.Second, "a", "c")
	start = time.Now()
	crashCli.Close()
	eventually(t, watcher, 6*time.Second, "a")
	t.Logf("crash seen after %s (TTL 2s)", time.Since(start))
}

// If etcd drops the lease (an outage longer than the TTL), the member
// registers again on its own.
func TestReRegisterAfterLeaseLoss(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Embedded(t))
	watcher := join(t, cli, "", 0)
	a := join(t, cli, "a", 0)
	eventually(t, watcher, 5*time.Second, "a")
	a.mu.Lock()
	lease := a.lease
	a.mu.Unlock()
	if _, err := cli.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	eventually(t, watcher, 5*time.Second)
	eventually(t, watcher, 15*time.Second, "a")
}

func TestMalformedEntriesIgnored(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Embedded(t))
	ctx := context.Background()
	for k, v := range map[string]string{
		prefix + "junk":     "{not json",
		prefix + "mismatch": `{"id":"other"}`,
		prefix + "noid":     `{"addr":"x"}`,
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	watcher := join(t, cli, "", 0)
	join(t, cli, "good", 0)
	eventually(t, watcher, 5*time.Second, "good")
	if _, err := cli.Put(ctx, prefix+"late", "garbage"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	eventually(t, watcher, time.Second, "good")
}

func TestConfigErrors(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Embedded(t))
	for _, cfg := range []Config{
		{Prefix: "/no/slash"},
		{Prefix: prefix, Self: &ring.Member{}},
		{Prefix: prefix, Self: &ring.Member{ID: "a/b"}},
		{Prefix: prefix, TTL: 10 * time.Millisecond},
	} {
		if g, err := Join(context.Background(), cli, cfg); err == nil {
			g.Close()
			t.Errorf("Join(%+v) accepted", cfg)
		}
	}
}

// With a three-member etcd cluster, losing one etcd member does not stop
// membership: joins and leaves are still seen.
func TestSurvivesEtcdMemberLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	c := etcdtest.StartCluster(t, 3)
	cli := etcdtest.Client(t, c.Endpoints)
	watcher := join(t, cli, "", 0)
	join(t, cli, "a", 3*time.Second)
	eventually(t, watcher, 5*time.Second, "a")
	c.Kill(0)
	b := join(t, etcdtest.Client(t, c.Endpoints[1:]), "b", 3*time.Second)
	eventually(t, watcher, 10*time.Second, "a", "b")
	b.Close()
	eventually(t, watcher, 10*time.Second, "a")
}
