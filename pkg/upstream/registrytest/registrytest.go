// Package registrytest runs a real third-party registry for pull-through
// tests: Debian's docker-registry (distribution 2.8) as a process, with
// TLS from a CA made for the test and htpasswd auth, behind a small
// reverse proxy that counts requests and can inject faults (the only
// thing between Shoal and the real registry).
package registrytest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/proctest"
)

// Registry is a running docker-registry and its counting proxy.
type Registry struct {
	// URL is the proxy (https://127.0.0.1:port): give it to Shoal.
	URL string
	// Direct is the registry itself, host:port, for pushes the counts
	// should not see.
	Direct string
	// CAFile verifies both; User and PasswordFile log in to both.
	CAFile, User, Password, PasswordFile string

	t     testing.TB
	dir   string
	proc  *proctest.Proc
	proxy *httptest.Server

	mu       sync.Mutex
	counts   map[string]int // "GET /v2/…" → requests that reached the proxy
	fault    Fault
	throttle int64                // blob bodies' bytes/s; 0: unpaced
	sent     map[string]time.Time // blob path → when the proxy sent its last byte
}

// Fault may answer a request in the registry's place; it returns false to
// let the request through.
type Fault func(w http.ResponseWriter, r *http.Request) bool

// Start runs docker-registry with TLS and htpasswd until the test ends.
// It skips the test when the registry is not installed
// (apt-get install docker-registry; .ci/run does).
func Start(t testing.TB) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("docker-registry not installed (apt-get install docker-registry)")
	}
	g := &Registry{t: t, dir: t.TempDir(), User: "shoal", Password: "upstream-secret-" + randHex(8), counts: map[string]int{}, sent: map[string]time.Time{}}
	cert, key := g.writeCA()
	g.PasswordFile = filepath.Join(g.dir, "password")
	write(t, g.PasswordFile, g.Password+"\n")
	hash, err := bcrypt.GenerateFromPassword([]byte(g.Password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(g.dir, "htpasswd"), g.User+":"+string(hash)+"\n")
	g.Direct = proctest.FreeAddr(t)
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
  secret: registrytest
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: registrytest, path: %s}
`, filepath.Join(g.dir, "data"), g.Direct, cert, key, filepath.Join(g.dir, "htpasswd"))
	cfgFile := filepath.Join(g.dir, "config.yml")
	write(t, cfgFile, cfg)
	g.proc = proctest.Start(t, bin, "serve", cfgFile)
	g.waitReady()
	g.startProxy(cert, key)
	return g
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// writeCA makes a CA and a certificate for 127.0.0.1 signed by it.
func (g *Registry) writeCA() (certFile, keyFile string) {
	t := g.t
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "registrytest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	g.CAFile = filepath.Join(g.dir, "ca.pem")
	certFile, keyFile = filepath.Join(g.dir, "tls.crt"), filepath.Join(g.dir, "tls.key")
	write(t, g.CAFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	write(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// Client trusts the test CA.
func (g *Registry) Client() *http.Client {
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(g.CAFile)
	pool.AppendCertsFromPEM(b)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
}

func (g *Registry) waitReady() {
	g.t.Helper()
	hc := g.Client()
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("https://" + g.Direct + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("docker-registry not ready at %s: %v\n%s", g.Direct, err, g.proc.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *Registry) startProxy(certFile, keyFile string) {
	target, _ := url.Parse("https://" + g.Direct)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = g.Client().Transport
	rp.ErrorLog = nil
	g.proxy = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.counts[r.Method+" "+r.URL.Path]++
		f, bps := g.fault, g.throttle
		g.mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		blob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
		if blob && bps > 0 {
			w = Slow(w, bps)
		}
		rp.ServeHTTP(w, r)
		if blob {
			g.mu.Lock()
			g.sent[r.URL.Path] = time.Now()
			g.mu.Unlock()
		}
	}))
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		g.t.Fatal(err)
	}
	g.proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	g.proxy.StartTLS()
	g.URL = g.proxy.URL
	g.t.Cleanup(g.proxy.Close)
}

// SetFault installs f (nil removes it).
func (g *Registry) SetFault(f Fault) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fault = f
}

// SetThrottle paces the blob bodies the registry sends at bps bytes per
// second (0: unpaced), as a slow link to a public registry would.
func (g *Registry) SetThrottle(bps int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.throttle = bps
}

// BlobSent is when the proxy finished sending blob d's body the last
// time (zero if never).
func (g *Registry) BlobSent(d string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, at := range g.sent {
		if strings.HasSuffix(p, "/blobs/"+d) {
			return at
		}
	}
	return time.Time{}
}

// ServeWrongBlob has the registry answer GETs of repo's blob d (whose
// right content is right) with one flipped bit, at bps bytes per second,
// until SetFault(nil) or the test's end; it returns the wrong body.
func (g *Registry) ServeWrongBlob(t testing.TB, repo, d string, right []byte, bps int64) []byte {
	wrong := bytes.Clone(right)
	wrong[len(wrong)/2] ^= 1
	g.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/"+repo+"/blobs/"+d {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(wrong)))
		Slow(w, bps).Write(wrong)
		return true
	})
	t.Cleanup(func() { g.SetFault(nil) })
	return wrong
}

// Slow wraps w so that its body goes out at bps bytes per second, in
// small flushed writes: a throttled link, for Faults that write their own
// bodies as well as for SetThrottle.
func Slow(w http.ResponseWriter, bps int64) http.ResponseWriter {
	return &slowWriter{ResponseWriter: w, bps: bps}
}

type slowWriter struct {
	http.ResponseWriter
	bps int64
}

func (s *slowWriter) Write(p []byte) (int, error) {
	const chunk = 16 << 10
	n := 0
	for len(p) > 0 {
		k := min(len(p), chunk)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		http.NewResponseController(s.ResponseWriter).Flush()
		time.Sleep(time.Duration(int64(k) * int64(time.Second) / s.bps))
		p = p[k:]
	}
	return n, nil
}

func (s *slowWriter) Flush() { http.NewResponseController(s.ResponseWriter).Flush() }

func (s *slowWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Requests counts the requests with method whose path ends with suffix.
func (g *Registry) Requests(method, suffix string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for k, v := range g.counts {
		m, p, _ := strings.Cut(k, " ")
		if m == method && strings.HasSuffix(p, suffix) {
			n += v
		}
	}
	return n
}

// BlobGETs counts the GETs of blob d that reached the upstream.
func (g *Registry) BlobGETs(d string) int { return g.Requests(http.MethodGet, "/blobs/"+d) }

// Stop stops the registry and closes the proxy: the upstream is gone.
func (g *Registry) Stop() {
	g.proxy.CloseClientConnections()
	g.proxy.Close()
	g.proc.Kill()
}

// Image is an image pushed to the registry.
type Image struct {
	Ref      string   // host/repo:tag as pushed (to Direct)
	Manifest string   // its digest
	Config   string   // config blob digest
	Layers   []string // layer digests
	Blobs    map[string][]byte
}

// Push builds an image of len(layerSizes) layers, each a tar.gz holding a
// file of random bytes of that size, and pushes it to repo:tag with crane.
func (g *Registry) Push(repo, tag string, layerSizes ...int) *Image {
	t := g.t
	t.Helper()
	crane, err := exec.LookPath("crane")
	if err != nil {
		if gp, gerr := exec.Command("go", "env", "GOPATH").Output(); gerr == nil {
			crane = filepath.Join(strings.TrimSpace(string(gp)), "bin", "crane")
		}
		if _, err := os.Stat(crane); err != nil {
			t.Skip("crane not installed (make tools)")
		}
	}
	dir := t.TempDir()
	args := []string{"append", "-t", g.Direct + "/" + repo + ":" + tag}
	for i, n := range layerSizes {
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i))
		write(t, p, string(layer(t, fmt.Sprintf("file%d", i), n)))
		args = append(args, "-f", p)
	}
	// crane reads credentials from DOCKER_CONFIG and trusts SSL_CERT_FILE.
	authDir := filepath.Join(dir, "docker")
	os.MkdirAll(authDir, 0o700)
	auth := map[string]any{"auths": map[string]any{g.Direct: map[string]string{"username": g.User, "password": g.Password}}}
	b, _ := json.Marshal(auth)
	write(t, filepath.Join(authDir, "config.json"), string(b))
	env := append(os.Environ(), "DOCKER_CONFIG="+authDir, "SSL_CERT_FILE="+g.CAFile)
	run := func(args ...string) []byte {
		cmd := exec.Command(crane, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	ref := g.Direct + "/" + repo + ":" + tag
	run(args...)
	run("mutate", "--set-platform", "linux/amd64", ref)
	img := &Image{Ref: ref, Blobs: map[string][]byte{}}
	img.Manifest = strings.TrimSpace(string(run("digest", ref)))
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(run("manifest", ref), &m); err != nil {
		t.Fatal(err)
	}
	img.Config = m.Config.Digest
	for _, l := range m.Layers {
		img.Layers = append(img.Layers, l.Digest)
	}
	for _, d := range append([]string{img.Config}, img.Layers...) {
		img.Blobs[d] = run("blob", g.Direct+"/"+repo+"@"+d)
	}
	return img
}

// layer is a gzipped tar holding one file of n random bytes.
func layer(t testing.TB, name string, n int) []byte {
	data := make([]byte, n)
	rand.Read(data)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(n), ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
