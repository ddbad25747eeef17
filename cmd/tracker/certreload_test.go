package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/proctest"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// TestBinaryCertificateReload: a running tracker process presents its
// renewed gRPC certificate on the next handshake once its files are
// replaced (as a Secret update or cert-manager does), without a restart;
// before, it served the certificate it started with until restarted.
func TestBinaryCertificateReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	a, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	live := tlsconfig.Files{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), CAFile: a.CAFile}
	replace := func(src, dst string) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dst+".new", dst); err != nil {
			t.Fatal(err)
		}
	}
	replace(a.CertFile, live.CertFile)
	replace(a.KeyFile, live.KeyFile)

	tr := startTracker(t, proctest.Binary(t, "tracker"), "t0", "--data-dir", filepath.Join(dir, "data"),
		"--embedded-etcd-client-url", "http://"+proctest.FreeAddr(t), "--embedded-etcd-peer-url", "http://"+proctest.FreeAddr(t),
		"--tls-cert", live.CertFile, "--tls-key", live.KeyFile, "--tls-ca", live.CAFile)

	cc, err := a.Client() // the tracker wants a client certificate from CA a
	if err != nil {
		t.Fatal(err)
	}
	cc.RootCAs = x509.NewCertPool()
	for _, f := range []tlsconfig.Files{a, b} {
		pemCA, _ := os.ReadFile(f.CAFile)
		cc.RootCAs.AppendCertsFromPEM(pemCA)
	}
	cc.NextProtos = []string{"h2"}
	presented := func() []byte {
		c, err := tls.Dial("tcp", tr.grpc, cc)
		if err != nil {
			t.Fatalf("TLS handshake with the tracker: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	leaf := func(f tlsconfig.Files) []byte {
		pemCert, _ := os.ReadFile(f.CertFile)
		blk, _ := pem.Decode(pemCert)
		return blk.Bytes
	}
	if !bytes.Equal(presented(), leaf(a)) {
		t.Fatal("the tracker does not present the certificate it was started with")
	}
	replace(b.KeyFile, live.KeyFile)
	replace(b.CertFile, live.CertFile)
	start := time.Now()
	for !bytes.Equal(presented(), leaf(b)) {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the tracker still presents its old certificate 15 s after renewal\n%s", tr.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("renewed certificate presented %v after the files changed", time.Since(start).Round(100*time.Millisecond))
	if resp, err := http.Get("http://" + tr.http + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("tracker not ready after the renewal: %v", err)
	}
}
