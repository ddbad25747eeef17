package origin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/upstream"
	"github.com/shoal-project/shoal/pkg/upstream/registrytest"
)

// upNS is the namespace the tests' upstream registry is mirrored under.
const upNS = "registry.test"

func upstreamConfig(reg *registrytest.Registry, ttl time.Duration) upstream.Config {
	return upstream.Config{
		Namespace: upNS, URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile}, TagTTL: ttl, Timeout: 10 * time.Second,
	}
}

// pullImage reads img through the origin as a client would (manifest by
// tag, then config and layers), checking every byte, with n clients at
// once.
func pullImage(t *testing.T, c *client, repo, tag string, img *registrytest.Image, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n*(len(img.Blobs)+1))
	for range n {
		wg.Go(func() {
			r := c.get("/v2/"+repo+"/manifests/"+tag, header{"Accept": upstream.AcceptManifests})
			if r.StatusCode != 200 || r.Header.Get("Docker-Content-Digest") != img.Manifest {
				errs <- fmt.Errorf("manifest %s: %d %s %s", tag, r.StatusCode, r.Header.Get("Docker-Content-Digest"), r.body)
				return
			}
			for d, want := range img.Blobs {
				r := c.get("/v2/"+repo+"/blobs/"+d, nil)
				if r.StatusCode != 200 || !bytes.Equal(r.body, want) {
					errs <- fmt.Errorf("blob %s: %d, %d bytes, want %d: %.200s", d, r.StatusCode, len(r.body), len(want), r.body)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// get is do without t.Fatal, for use from several goroutines.
func (c *client) get(path string, h header) response {
	req, _ := http.NewRequest("GET", c.o.URL+path, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{Response: &http.Response{StatusCode: 0}, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return response{resp, buf.Bytes()}
}

// TestPullThrough: an image that lives only in a real docker-registry
// (TLS, htpasswd) pulls through the origin by tag with every byte right,
// by range and HEAD too; the upstream serves each blob once however many
// clients ask at once and however often; the blobs get metainfo (they are
// ordinary Shoal blobs from then on); a pulled-through repository is
// read-only; and with the upstream stopped, the cached image still pulls
// by tag while a tag never seen fails cleanly.
func TestPullThrough(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 300<<10, 200<<10, 100<<10)
	c := newClient(t, origin.Config{Upstreams: []upstream.Config{upstreamConfig(reg, 200*time.Millisecond)}})
	repo := upNS + "/library/app"

	pullImage(t, c, repo, "1", img, 4)
	pullImage(t, c, repo, "1", img, 2)
	for d := range img.Blobs {
		if n := reg.BlobGETs(d); n != 1 {
			t.Errorf("upstream served blob %s %d times, want 1", d, n)
		}
		c.do("GET", origin.MetaInfoPath+d, nil, nil).expect(t, 200, "")
	}
	if n := reg.Requests("GET", "/manifests/"+img.Manifest); n != 1 {
		t.Errorf("upstream served the manifest %d times by digest, want 1", n)
	}
	layer := img.Layers[0]
	r := c.do("GET", "/v2/"+repo+"/blobs/"+layer, header{"Range": "bytes=100-199"}, nil).expect(t, http.StatusPartialContent, "")
	if !bytes.Equal(r.body, img.Blobs[layer][100:200]) {
		t.Error("range of a pulled-through blob differs")
	}
	r = c.do("HEAD", "/v2/"+repo+"/manifests/1", header{"Accept": upstream.AcceptManifests}, nil).expect(t, 200, "")
	if r.Header.Get("Docker-Content-Digest") != img.Manifest {
		t.Errorf("HEAD by tag: digest %s", r.Header.Get("Docker-Content-Digest"))
	}
	c.do("PUT", "/v2/"+repo+"/manifests/2", header{"Content-Type": mtOCIManifest}, []byte("{}")).expect(t, http.StatusForbidden, "DENIED")
	c.do("GET", "/v2/"+repo+"/manifests/missing", nil, nil).expect(t, http.StatusNotFound, "MANIFEST_UNKNOWN")
	c.do("GET", "/v2/"+repo+"/blobs/"+sha([]byte("nowhere")), nil, nil).expect(t, http.StatusNotFound, "BLOB_UNKNOWN")
	c.do("GET", "/v2/"+upNS+"/library/nothing/manifests/1", nil, nil).expect(t, http.StatusNotFound, "MANIFEST_UNKNOWN")
	tagHEADs := reg.Requests("HEAD", "/manifests/1")

	reg.Stop()
	time.Sleep(300 * time.Millisecond) // past the tag TTL: the tag must be asked again, and cannot be
	pullImage(t, c, repo, "1", img, 2)
	c.do("GET", "/v2/"+repo+"/manifests/2", nil, nil).expect(t, http.StatusServiceUnavailable, "UNAVAILABLE")
	c.do("GET", "/v2/"+repo+"/blobs/"+sha([]byte("new")), nil, nil).expect(t, http.StatusServiceUnavailable, "UNAVAILABLE")
	t.Logf("upstream requests: %d tag HEADs before it stopped; 1 GET per blob (%d blobs), 1 manifest GET", tagHEADs, len(img.Blobs))
}

// TestPullThroughFaults: what the upstream answers reaches the client as
// the right OCI error, and a blob with wrong bytes is refused with nothing
// stored, then pulls cleanly once the upstream is right again.
func TestPullThroughFaults(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 64<<10, 32<<10)
	c := newClient(t, origin.Config{Upstreams: []upstream.Config{upstreamConfig(reg, time.Hour)}})
	repo := upNS + "/library/app"
	c.do("GET", "/v2/"+repo+"/manifests/1", header{"Accept": upstream.AcceptManifests}, nil).expect(t, 200, "")
	layer := img.Layers[0]

	tests := []struct {
		name       string
		fault      registrytest.Fault
		status     int
		code       string
		retryAfter string
	}{
		{"wrong bytes", func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != "GET" || r.URL.Path != "/v2/library/app/blobs/"+layer {
				return false
			}
			bad := bytes.Clone(img.Blobs[layer])
			bad[len(bad)/2] ^= 1
			w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
			w.Write(bad)
			return true
		}, http.StatusBadGateway, "UNAVAILABLE", ""},
		{"short body", func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != "GET" || r.URL.Path != "/v2/library/app/blobs/"+layer {
				return false
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(img.Blobs[layer])))
			w.Write(img.Blobs[layer][:1000])
			panic(http.ErrAbortHandler)
		}, http.StatusServiceUnavailable, "UNAVAILABLE", ""},
		{"429", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "17")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS"}]}`, http.StatusTooManyRequests)
			return true
		}, http.StatusTooManyRequests, "TOOMANYREQUESTS", "17"},
		{"500", func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		}, http.StatusServiceUnavailable, "UNAVAILABLE", ""},
		{"401 after auth", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			http.Error(w, "no", http.StatusUnauthorized)
			return true
		}, http.StatusForbidden, "DENIED", ""},
		{"404", func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return true
		}, http.StatusNotFound, "BLOB_UNKNOWN", ""},
	}
	before, _ := c.storeFiles()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg.SetFault(tc.fault)
			defer reg.SetFault(nil)
			r := c.do("GET", "/v2/"+repo+"/blobs/"+layer, nil, nil).expect(t, tc.status, tc.code)
			if got := r.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
		})
	}
	c.assertStoreUnchanged(before)
	pullImage(t, c, repo, "1", img, 1)
}

// TestPullThroughClusterFetchesOnce: three origins asked for the same
// fresh blobs at the same moment, several clients each, make the upstream
// send each blob once: non-owners ask the blob's first owner, which
// shares one fetch among everyone waiting.
func TestPullThroughClusterFetchesOnce(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 512<<10, 256<<10, 128<<10)
	// The upstream answers slowly, so every ask arrives while the first
	// fetch is still under way.
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		time.Sleep(200 * time.Millisecond)
		return false
	})
	tc := newTestCluster(t)
	tc.ups = []upstream.Config{upstreamConfig(reg, time.Hour)}
	for i := range 3 {
		tc.add(fmt.Sprintf("o%d", i), origin.ClusterConfig{Replicas: 2})
	}
	repo := upNS + "/library/app"
	var wg sync.WaitGroup
	for _, n := range tc.nodes {
		wg.Go(func() { pullImage(t, n.client, repo, "1", img, 3) })
	}
	wg.Wait()
	for d := range img.Blobs {
		if got := reg.BlobGETs(d); got != 1 {
			t.Errorf("upstream served blob %s %d times to a cluster of 3 origins × 3 clients, want 1", d, got)
		}
	}
	t.Logf("9 clients on 3 origins, %d blobs: upstream blob GETs %d", len(img.Blobs), reg.Requests("GET", "")-reg.Requests("GET", "/manifests/1")-reg.Requests("GET", "/manifests/"+img.Manifest))
}

// TestPullThroughTokenUpstream: the upstream is a bearer-token registry
// (a Shoal origin in token mode, no anonymous pull): the pulling origin
// gets tokens for its pull-only user from the upstream's realm, and a
// user the upstream refuses makes the client see DENIED, not a 401 it
// could answer.
func TestPullThroughTokenUpstream(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ciHash, _ := bcrypt.GenerateFromPassword([]byte("ci-pw"), bcrypt.MinCost)
	nodeHash, _ := bcrypt.GenerateFromPassword([]byte("node-pw"), bcrypt.MinCost)
	htpasswd := write("htpasswd", "ci:"+string(ciHash)+"\nnode:"+string(nodeHash)+"\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	up := origintest.Serve(t, ln, origin.Config{Auth: auth.Config{
		Mode: auth.ModeToken, Htpasswd: htpasswd,
		Users: map[string]auth.UserPolicy{"node": {Actions: []auth.Action{auth.Pull}}},
		Token: auth.TokenConfig{Realm: base + "/auth/token", KeyFile: write("key", "0123456789abcdef0123456789abcdef\n")},
	}})
	ci, err := auth.ClientConfig{Username: "ci", PasswordFile: write("ci-pw", "ci-pw\n")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	pusher := &client{t: t, o: up, hc: &http.Client{Transport: ci.Transport(nil)}}
	body := pusher.image("library/app", mtOCIManifest, 2)
	md := pusher.putManifest("library/app", "1", mtOCIManifest, body)
	var m struct {
		Config descriptor
		Layers []descriptor
	}
	json.Unmarshal(body, &m)
	img := &registrytest.Image{Manifest: md, Blobs: map[string][]byte{}}
	for _, desc := range append(m.Layers, m.Config) {
		img.Blobs[desc.Digest] = pusher.do("GET", "/v2/library/app/blobs/"+desc.Digest, nil, nil).expect(t, 200, "").body
	}

	tests := []struct {
		name     string
		password string
		status   int
		code     string
	}{
		{"pull-only user", "node-pw", 200, ""},
		{"refused user", "wrong", http.StatusForbidden, "DENIED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, origin.Config{Upstreams: []upstream.Config{{
				Namespace: "shoal.test", URL: up.URL, Username: "node", PasswordFile: write(tc.name, tc.password+"\n"),
			}}})
			if tc.status == 200 {
				pullImage(t, c, "shoal.test/library/app", "1", img, 2)
				return
			}
			c.do("GET", "/v2/shoal.test/library/app/manifests/1", nil, nil).expect(t, tc.status, tc.code)
		})
	}
}

// lockedBuffer is a log sink several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPullThroughKeepsCredentialsSecret: whatever the upstream answers,
// the origin's credentials for it appear in no log line (debug included),
// no error body and nothing on /metrics.
func TestPullThroughKeepsCredentialsSecret(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 32<<10)
	var logs lockedBuffer
	o := origintest.Start(t, origin.Config{Upstreams: []upstream.Config{upstreamConfig(reg, time.Nanosecond)}},
		origin.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	c := &client{t: t, o: o, hc: &http.Client{}}
	repo := upNS + "/library/app"
	var bodies []string
	faults := []registrytest.Fault{
		func(w http.ResponseWriter, r *http.Request) bool { // refuses the credentials
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			http.Error(w, "no", http.StatusUnauthorized)
			return true
		},
		func(w http.ResponseWriter, r *http.Request) bool { // a token realm in clear text
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1:1/token",service="x"`)
			http.Error(w, "no", http.StatusUnauthorized)
			return true
		},
		func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		},
		nil,
	}
	for _, f := range faults {
		reg.SetFault(f)
		bodies = append(bodies, string(c.get("/v2/"+repo+"/manifests/1", nil).body))
		for _, d := range img.Layers {
			bodies = append(bodies, string(c.get("/v2/"+repo+"/blobs/"+d, nil).body))
		}
	}
	metrics := string(c.do("GET", "/metrics", nil, nil).expect(t, 200, "").body)
	basic := (&http.Request{Header: http.Header{}})
	basic.SetBasicAuth(reg.User, reg.Password)
	for _, secret := range []string{reg.Password, strings.TrimPrefix(basic.Header.Get("Authorization"), "Basic ")} {
		for what, text := range map[string]string{"logs": logs.String(), "metrics": metrics, "error bodies": strings.Join(bodies, "\n")} {
			if strings.Contains(text, secret) {
				t.Errorf("the upstream credentials appear in the %s", what)
			}
		}
	}
	if !strings.Contains(metrics, `shoal_upstream_requests_total{namespace="registry.test"`) {
		t.Error("no upstream request metrics")
	}
}
