// Package etcdtest starts real etcd servers for tests: the embedded server
// in-process, or a cluster of Debian etcd-server processes on loopback, so
// leases, watches and member loss behave as in production.
package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shoal-project/shoal/pkg/embedetcd"
	"github.com/shoal-project/shoal/pkg/proctest"
)

// Embedded starts a single-node embedded etcd and returns its endpoints.
func Embedded(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := embedetcd.Start(ctx, embedetcd.Config{
		Dir:       t.TempDir(),
		ClientURL: "http://" + proctest.FreeAddr(t),
		PeerURL:   "http://" + proctest.FreeAddr(t),
	})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s.Endpoints
}

// Client connects to endpoints and closes with the test.
func Client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Cluster is a set of etcd processes.
type Cluster struct {
	t     testing.TB
	procs []*exec.Cmd
	// Endpoints are the client URLs, one per member.
	Endpoints []string
}

// StartCluster runs n Debian etcd-server members on loopback and waits until
// the cluster answers. It skips when the binary is missing, except in CI.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("etcd (Debian etcd-server) not installed; .ci/run installs it")
		}
		t.Skip("etcd not installed (apt install etcd-server)")
	}
	type member struct{ name, client, peer string }
	ms := make([]member, n)
	var initial []string
	for i := range ms {
		ms[i] = member{
			name:   fmt.Sprintf("m%d", i),
			client: "http://" + proctest.FreeAddr(t),
			peer:   "http://" + proctest.FreeAddr(t),
		}
		initial = append(initial, ms[i].name+"="+ms[i].peer)
	}
	c := &Cluster{t: t}
	base := t.TempDir()
	for _, m := range ms {
		cmd := exec.Command(bin,
			"--name", m.name, "--data-dir", filepath.Join(base, m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(base), "--log-level", "error")
		// Debian's etcd 3.4 refuses to run on untested architectures
		// without this; harmless elsewhere.
		cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+goarch())
		if err := cmd.Start(); err != nil {
			t.Fatalf("start etcd %s: %v", m.name, err)
		}
		c.procs = append(c.procs, cmd)
		c.Endpoints = append(c.Endpoints, m.client)
	}
	t.Cleanup(func() {
		for i := range c.procs {
			c.Kill(i)
		}
	})
	cli := Client(t, c.Endpoints)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Put(ctx, "etcdtest/ready", "1")
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill stops member i abruptly (SIGKILL), as a crashed host would.
func (c *Cluster) Kill(i int) {
	p := c.procs[i]
	if p.ProcessState != nil || p.Process == nil {
		return
	}
	_ = p.Process.Kill()
	_ = p.Wait()
}

func goarch() string { return runtime.GOARCH }

// nopLogger keeps the etcd client's zap logs out of test output.
func nopLogger() *zap.Logger { return zap.NewNop() }
