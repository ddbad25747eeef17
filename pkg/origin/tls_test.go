package origin_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// testPKI writes a CA and one certificate for 127.0.0.1, signed by it.
func testPKI(t *testing.T) tlsconfig.Files {
	t.Helper()
	f, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// originTLS is the origin's TLS with f's pair and, with clientCA, f's CA
// for client certificates.
func originTLS(f tlsconfig.Files, clientCA bool) origin.TLSConfig {
	c := origin.TLSConfig{CertFile: f.CertFile, KeyFile: f.KeyFile}
	if clientCA {
		c.ClientCAFile = f.CAFile
	}
	return c
}

// httpsClient trusts the CAs in caFiles and presents cert's pair when it
// has one. No keep-alives: every request is a fresh handshake, so what a
// test sees is what the origin's TLS layer decides now.
func httpsClient(t *testing.T, cert tlsconfig.Files, caFiles ...string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range caFiles {
		b, err := os.ReadFile(f)
		if err != nil || !pool.AppendCertsFromPEM(b) {
			t.Fatalf("CA %s: %v", f, err)
		}
	}
	tc := &tls.Config{RootCAs: pool}
	if cert.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestOriginHTTPS: with a certificate the origin speaks HTTPS only, and
// /v2 works over it for clients without a certificate of their own.
func TestOriginHTTPS(t *testing.T) {
	p := testPKI(t)
	c := newClient(t, origin.Config{TLS: originTLS(p, true)})
	c.hc = httpsClient(t, tlsconfig.Files{}, p.CAFile)

	body := c.image("app", mtOCIManifest, 2)
	d := c.putManifest("app", "v1", mtOCIManifest, body)
	got := c.do("GET", "/v2/app/manifests/v1", header{"Accept": mtOCIManifest}, nil).expect(t, http.StatusOK, "")
	if !bytes.Equal(got.body, body) || got.TLS == nil {
		t.Fatalf("manifest over https: %s (TLS %v), want %s", got.body, got.TLS != nil, d)
	}

	tests := []struct {
		name   string
		client *http.Client
		url    string
	}{
		// net/http answers 400 to plain HTTP on a TLS port; anything but a
		// served registry will do.
		{"plain HTTP on the TLS port", &http.Client{Timeout: 5 * time.Second}, "http://" + c.o.Host + "/v2/"},
		{"client that does not trust the CA", httpsClient(t, tlsconfig.Files{}, testPKI(t).CAFile), c.o.URL + "/v2/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.client.Get(tt.url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Fatalf("GET %s: 200", tt.url)
				}
			}
		})
	}
}

// TestCraneOverHTTPS: a real client pushes and pulls over HTTPS, trusting
// the origin's CA as a CI runner would.
func TestCraneOverHTTPS(t *testing.T) {
	if testing.Short() {
		t.Skip("real clients: not in -short")
	}
	requireTool(t, "crane")
	p := testPKI(t)
	c := newClient(t, origin.Config{TLS: originTLS(p, true)})
	c.hc = httpsClient(t, tlsconfig.Files{}, p.CAFile)
	layer := layerTar(t, "a.bin", 256<<10)
	file := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(file, layer, 0o644); err != nil {
		t.Fatal(err)
	}
	// No --insecure: crane tries https first even on 127.0.0.1, and plain
	// HTTP would get a 400 from the TLS port.
	env := []string{"SSL_CERT_FILE=" + p.CAFile, "HOME=" + t.TempDir()}
	ref := c.o.Host + "/ci/app:v1"
	runTool(t, env, "crane", "append", "-f", file, "-t", ref)
	pushed := runTool(t, env, "crane", "digest", ref)
	out := filepath.Join(t.TempDir(), "pulled")
	runTool(t, env, "crane", "pull", "--format", "oci", ref, out)
	m := c.do("GET", "/v2/ci/app/manifests/v1", header{"Accept": mtOCIManifest + ", " + mtDockerManifest}, nil).
		expect(t, http.StatusOK, "").body
	if sha(m) != pushed {
		t.Fatalf("served manifest hashes to %s, crane pushed %s", sha(m), pushed)
	}
	sameLayers(t, layerContents(t, ociLayout(t, out), m), [][]byte{layer})
}

// TestClusterOverTLS: origins replicate to each other over HTTPS with
// their certificates, and the internal endpoints want both a client
// certificate from the cluster CA and the cluster secret.
func TestClusterOverTLS(t *testing.T) {
	p, other := testPKI(t), testPKI(t)
	tc := newTestCluster(t)
	tc.tls, tc.hc = originTLS(p, true), httpsClient(t, tlsconfig.Files{}, p.CAFile)
	a := tc.add("a", origin.ClusterConfig{Replicas: 2})
	b := tc.add("b", origin.ClusterConfig{Replicas: 2})

	blob := randomBytes(t, 64<<10)
	d := a.pushBlob("app", blob)
	if !a.has(d) || !b.has(d) {
		t.Fatalf("after a sync push with 2 replicas: on a %v, on b %v", a.has(d), b.has(d))
	}
	if got := b.pull(d); !bytes.Equal(got, blob) {
		t.Fatal("b serves other bytes")
	}

	secret := header{"Authorization": "Bearer " + testSecret}
	tests := []struct {
		name   string
		client *http.Client
		h      header
		status int // 0: refused, by the handshake or with 401
	}{
		{"secret without certificate", httpsClient(t, tlsconfig.Files{}, p.CAFile), secret, http.StatusUnauthorized},
		{"certificate without secret", httpsClient(t, p, p.CAFile), nil, http.StatusUnauthorized},
		{"certificate and secret", httpsClient(t, p, p.CAFile), secret, http.StatusOK},
		{"certificate of another CA", httpsClient(t, other, p.CAFile), secret, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", b.origin.URL+origin.InternalBlobPath+d, nil)
			for k, v := range tt.h {
				req.Header.Set(k, v)
			}
			resp, err := tt.client.Do(req)
			if tt.status == 0 {
				// Go's client sends the certificate only if its issuer is
				// among the CAs the server names (both test CAs share a
				// name, so it does and the handshake fails).
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						t.Fatalf("certificate of another CA: %s, want refused", resp.Status)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

// TestInternalClientNames: with client_names, a certificate of the
// cluster CA opens the internal endpoints only if it names an origin.
func TestInternalClientNames(t *testing.T) {
	p := testPKI(t) // its certificate is valid for localhost and 127.0.0.1
	tests := []struct {
		names  []string
		status int
	}{
		{[]string{"localhost"}, http.StatusNotFound}, // past the checks, nothing stored
		{[]string{"origin.example", "127.0.0.1"}, http.StatusNotFound},
		{[]string{"origin.example"}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.names), func(t *testing.T) {
			tc := newTestCluster(t)
			tc.tls, tc.hc = originTLS(p, true), httpsClient(t, tlsconfig.Files{}, p.CAFile)
			tc.tls.ClientNames = tt.names
			n := tc.add("a", origin.ClusterConfig{})
			req, _ := http.NewRequest("GET", n.origin.URL+origin.InternalBlobPath+sha([]byte("x")), nil)
			req.Header.Set("Authorization", "Bearer "+testSecret)
			resp, err := httpsClient(t, p, p.CAFile).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
	if _, err := origin.New(origin.Config{DataDir: t.TempDir(), TLS: origin.TLSConfig{ClientNames: []string{"x"}}}); err == nil {
		t.Fatal("client_names without client_ca_file accepted")
	}
}

// TestOriginReloadsCertificate: a certificate replaced on disk, as
// Kubernetes replaces a Secret's files, is served without a restart.
func TestOriginReloadsCertificate(t *testing.T) {
	first, second := testPKI(t), testPKI(t)
	live := t.TempDir()
	cert, key := filepath.Join(live, "tls.crt"), filepath.Join(live, "tls.key")
	install := func(f tlsconfig.Files) {
		for src, dst := range map[string]string{f.CertFile: cert, f.KeyFile: key} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			tmp := dst + ".new"
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first)
	c := newClient(t, origin.Config{TLS: origin.TLSConfig{CertFile: cert, KeyFile: key}})
	hc := httpsClient(t, tlsconfig.Files{}, first.CAFile, second.CAFile)
	served := func() []byte {
		resp, err := hc.Get(c.o.URL + "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Raw
	}
	der := func(f tlsconfig.Files) []byte {
		b, _ := os.ReadFile(f.CertFile)
		blk, _ := pem.Decode(b)
		return blk.Bytes
	}
	if !bytes.Equal(served(), der(first)) {
		t.Fatal("origin does not serve its certificate")
	}
	install(second)
	waitFor(t, "the replaced certificate served", 3*tlsconfig.ReloadInterval+2*time.Second, func() bool {
		return bytes.Equal(served(), der(second))
	})
}
