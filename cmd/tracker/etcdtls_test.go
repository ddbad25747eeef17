package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/proctest"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// TestBinaryEmbeddedEtcdTLS: the tracker's embedded etcd serves TLS with
// client certificates, the tracker registers through it with its own, a
// second tracker joins with --etcd-tls-*, and plain HTTP beyond loopback
// is refused at start.
func TestBinaryEmbeddedEtcdTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := proctest.Binary(t, "tracker")
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	etcdURL := "https://" + proctest.FreeAddr(t)
	startTracker(t, bin, "a", "--data-dir", t.TempDir(),
		"--embedded-etcd-client-url", etcdURL, "--embedded-etcd-peer-url", "https://"+proctest.FreeAddr(t),
		"--embedded-etcd-tls-cert", pki.CertFile, "--embedded-etcd-tls-key", pki.KeyFile, "--embedded-etcd-tls-ca", pki.CAFile)
	startTracker(t, bin, "b", "--etcd-endpoints", etcdURL,
		"--etcd-tls-cert", pki.CertFile, "--etcd-tls-key", pki.KeyFile, "--etcd-tls-ca", pki.CAFile)

	cli, err := membership.Dial(context.Background(), membership.EtcdConfig{Endpoints: []string{etcdURL}, TLS: pki})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitKeys(t, cli, "a,b", 10*time.Second)
	if c, err := membership.Dial(context.Background(), membership.EtcdConfig{Endpoints: []string{etcdURL},
		TLS: tlsconfig.Files{CAFile: pki.CAFile}, DialTimeout: time.Second}); err == nil {
		c.Close()
		t.Fatal("etcd answered a client without a certificate")
	}

	p := proctest.Start(t, bin, "--id", "c", "--data-dir", t.TempDir(), "--grpc-addr", proctest.FreeAddr(t),
		"--http-addr", proctest.FreeAddr(t), "--embedded-etcd-client-url", "http://0.0.0.0:0")
	if err := p.Wait(30 * time.Second); err == nil || !strings.Contains(p.Logs(), "plain http beyond loopback") {
		t.Fatalf("tracker with plain etcd on 0.0.0.0: exit %v\n%s", err, p.Logs())
	}
}
