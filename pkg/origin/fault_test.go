package origin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"golang.org/x/crypto/bcrypt"
)

// blobPath is where the local store keeps d under an origin's data dir.
func blobPath(dataDir, d string) string {
	hex := strings.TrimPrefix(d, "sha256:")
	return filepath.Join(dataDir, "blobstore", "blobs", "sha256", hex[:2], hex)
}

// TestCorruptBlobNeverServed flips one byte of a stored blob behind the
// origin's back (disk rot, a bad restore) and checks that no client ever
// receives a complete wrong body: the connection is cut before the end,
// and the blob is then gone rather than served again.
func TestCorruptBlobNeverServed(t *testing.T) {
	data := randomBytes(t, 9<<20+5) // nineteen pieces of 512 KiB, the last short
	reads := []struct {
		name  string
		rng   string
		bytes int // expected length of a clean read
	}{
		{"whole blob", "", len(data)},
		{"range over the bad piece", "bytes=4194300-4194400", 101},
	}
	for _, tc := range reads {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := origintest.Start(t, origin.Config{DataDir: dir})
			c := &client{t: t, o: first, hc: http.DefaultClient}
			d := c.pushBlob("r", data)
			first.Stop()

			p := blobPath(dir, d)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[4<<20+50] ^= 0x01 // inside the fifth piece
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}

			// A restarted origin has not verified anything yet.
			o := origintest.Start(t, origin.Config{DataDir: dir})
			req, _ := http.NewRequest("GET", o.URL+"/v2/r/blobs/"+d, nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				got, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil {
					t.Fatalf("read %d bytes (status %d) cleanly from a corrupt blob", len(got), resp.StatusCode)
				}
			}
			// Quarantined: the next reader is told it is missing.
			resp, err = http.Get(o.URL + "/v2/r/blobs/" + d)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("after corruption: status %d, want 404", resp.StatusCode)
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("corrupt blob still on disk: %v", err)
			}
		})
	}
}

// TestRestartDiscardsTempFiles: what a crash mid-upload leaves in the temp
// directory is removed at start and never becomes a blob.
func TestRestartDiscardsTempFiles(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "blobstore", "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "upload-123"), []byte("half a blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	origintest.Start(t, origin.Config{DataDir: dir})
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("temp dir after start: %v", left)
	}
}

// TestShutdownFinishesInflightUpload: SIGTERM (here: cancelling Run) waits
// for an upload already sending its body, and the blob is committed.
func TestShutdownFinishesInflightUpload(t *testing.T) {
	dir := t.TempDir()
	o := origintest.Start(t, origin.Config{DataDir: dir, ShutdownTimeout: 30 * time.Second})
	data := randomBytes(t, 1<<20)
	d := sha(data)

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", o.URL+"/v2/r/blobs/uploads/?digest="+d, pr)
	req.ContentLength = int64(len(data))
	result := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			result <- -1
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	pw.Write(data[:len(data)/2])
	// Until the handler runs, the connection may still sit in the accept
	// queue, and a closed listener drops it: that is not in flight yet.
	waitFor(t, "condition", 5*time.Second, func() bool { return gauge(t, o, "shoal_origin_uploads_in_progress") == 1 })

	stopped := make(chan error, 1)
	go func() { stopped <- o.Stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned while an upload was in flight: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	pw.Write(data[len(data)/2:])
	pw.Close()
	if st := <-result; st != http.StatusCreated {
		t.Fatalf("in-flight upload: status %d, want 201", st)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	got, err := os.ReadFile(blobPath(dir, d))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after shutdown: %v", err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	c := newClient(t, origin.Config{})
	c.pushBlob("r", []byte("abc"))
	c.do("GET", "/healthz", nil, nil).expect(t, 200, "")
	c.do("GET", "/readyz", nil, nil).expect(t, 200, "")
	m := c.do("GET", "/metrics", nil, nil).expect(t, 200, "")
	for _, name := range []string{"shoal_origin_http_requests_total", "shoal_origin_bytes_received_total", "shoal_origin_upload_duration_seconds"} {
		if !strings.Contains(string(m.body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestAuthModes runs the registry's auth against a real origin: basic auth
// with an htpasswd file and Docker token auth with the built-in issuer.
func TestAuthModes(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte("ci:"+string(hash)+"\n"), 0o600)
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, bytes.Repeat([]byte("k"), 32), 0o600)

	t.Run("htpasswd", func(t *testing.T) {
		c := newClient(t, origin.Config{Auth: auth.Config{Mode: auth.ModeHtpasswd, Htpasswd: htpasswd, AnonymousPull: true}})
		r := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 401, "UNAUTHORIZED")
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("challenge %q", r.Header.Get("WWW-Authenticate"))
		}
		c.user, c.pass = "ci", "wrong"
		c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 401, "UNAUTHORIZED")
		c.pass = "s3cret"
		d := c.pushBlob("r", []byte("layer"))
		c.user = "" // anonymous pull is allowed by config
		c.do("GET", "/v2/r/blobs/"+d, nil, nil).expect(t, 200, "")
		c.do("DELETE", "/v2/r/blobs/"+d, nil, nil).expect(t, 401, "UNAUTHORIZED")
	})

	t.Run("token", func(t *testing.T) {
		cfg := origin.Config{Auth: auth.Config{
			Mode: auth.ModeToken, Htpasswd: htpasswd,
			Token: auth.TokenConfig{Realm: "http://placeholder/auth/token", KeyFile: key},
		}}
		c := newClient(t, cfg)
		r := c.do("GET", "/v2/", nil, nil).expect(t, 401, "UNAUTHORIZED")
		challenge := r.Header.Get("WWW-Authenticate")
		if !strings.HasPrefix(challenge, "Bearer ") || !strings.Contains(challenge, `service="shoal"`) {
			t.Fatalf("challenge %q", challenge)
		}
		token := func(user, pass, scope string) (int, string) {
			req, _ := http.NewRequest("GET", c.o.URL+"/auth/token?service=shoal&scope="+scope, nil)
			if user != "" {
				req.SetBasicAuth(user, pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var tok struct {
				Token string `json:"token"`
			}
			json.Unmarshal(b, &tok)
			return resp.StatusCode, tok.Token
		}
		if st, _ := token("ci", "nope", "repository:r:push,pull"); st != 401 {
			t.Errorf("token with a wrong password: status %d", st)
		}
		st, tok := token("ci", "s3cret", "repository:r:push,pull")
		if st != 200 || tok == "" {
			t.Fatalf("token: status %d", st)
		}
		data := []byte("layer")
		req, _ := http.NewRequestWithContext(context.Background(), "POST", c.o.URL+"/v2/r/blobs/uploads/?digest="+sha(data), bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("push with token: status %d", resp.StatusCode)
		}
		// The token is scoped: another repository is refused.
		req, _ = http.NewRequest("POST", c.o.URL+"/v2/other/blobs/uploads/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, _ = http.DefaultClient.Do(req)
		resp.Body.Close()
		if resp.StatusCode != 401 && resp.StatusCode != 403 {
			t.Errorf("token for r used on other: status %d", resp.StatusCode)
		}
		req, _ = http.NewRequest("GET", c.o.URL+"/v2/", nil)
		req.Header.Set("Authorization", "Bearer "+tok[:len(tok)-4]+"AAAA")
		resp, _ = http.DefaultClient.Do(req)
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("forged token: status %d", resp.StatusCode)
		}
	})
}

// gauge reads a gauge from the origin's own registry.
func gauge(t *testing.T, o *origintest.Origin, name string) float64 {
	t.Helper()
	mfs, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
