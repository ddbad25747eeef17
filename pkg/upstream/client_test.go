package upstream_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/upstream"
)

func sha(b []byte) digest.Digest {
	s := sha256.Sum256(b)
	return digest.Digest("sha256:" + hex.EncodeToString(s[:]))
}

// TestClientTokenFlow runs the client against a real bearer-token
// registry (a Shoal origin in token mode, its issuer as the realm):
// anonymous tokens where anonymous pull is allowed, tokens for the
// configured user where it is not, and refusals as ErrDenied.
func TestClientTokenFlow(t *testing.T) {
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
	key := write("key", "0123456789abcdef0123456789abcdef\n")
	nodePW, wrongPW := write("node-pw", "node-pw\n"), write("wrong-pw", "nope\n")

	blob := []byte("a layer in a token registry")
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux"}`)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + sha(cfgBlob).String() + `","size":` + strconv.Itoa(len(cfgBlob)) + `},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + sha(blob).String() + `","size":` + strconv.Itoa(len(blob)) + `}]}`)

	for _, anonPull := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := "http://" + ln.Addr().String()
		o := origintest.Serve(t, ln, origin.Config{Auth: auth.Config{
			Mode: auth.ModeToken, Htpasswd: htpasswd, AnonymousPull: anonPull,
			Users: map[string]auth.UserPolicy{"node": {Actions: []auth.Action{auth.Pull}}},
			Token: auth.TokenConfig{Realm: base + "/auth/token", KeyFile: key},
		}})
		ci, err := auth.ClientConfig{Username: "ci", PasswordFile: write("ci-pw", "ci-pw\n")}.Load()
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: ci.Transport(nil)}
		for _, b := range [][]byte{blob, cfgBlob} {
			resp, err := hc.Post(o.URL+"/v2/team/app/blobs/uploads/?digest="+sha(b).String(), "application/octet-stream", bytes.NewReader(b))
			if err != nil || resp.StatusCode != http.StatusCreated {
				t.Fatalf("push: %v %v", resp, err)
			}
			resp.Body.Close()
		}
		req, _ := http.NewRequest("PUT", o.URL+"/v2/team/app/manifests/v1", bytes.NewReader(manifest))
		req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(manifest)), nil }
		if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("push manifest: %v %v", resp, err)
		}

		tests := []struct {
			name       string
			user, pass string
			want       error // nil: every read works
		}{
			{"anonymous", "", "", map[bool]error{true: nil, false: upstream.ErrDenied}[anonPull]},
			{"pull-only user", "node", nodePW, nil},
			// Where anonymous pull is on, the upstream never challenges, so
			// a wrong password is never sent.
			{"wrong password", "node", wrongPW, map[bool]error{true: nil, false: upstream.ErrDenied}[anonPull]},
		}
		for _, tc := range tests {
			t.Run(map[bool]string{true: "anonymous pull/", false: "closed/"}[anonPull]+tc.name, func(t *testing.T) {
				c, err := upstream.NewClient(upstream.Config{Namespace: "shoal.test", URL: o.URL, Username: tc.user, PasswordFile: tc.pass})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				ctx := context.Background()
				for range 2 { // the second round reuses the token
					d, ok, err := c.ResolveTag(ctx, "team/app", "v1")
					if tc.want != nil {
						if !errors.Is(err, tc.want) {
							t.Fatalf("ResolveTag: %v, want %v", err, tc.want)
						}
						return
					}
					if err != nil || !ok || d != sha(manifest) {
						t.Fatalf("ResolveTag: %s %v %v", d, ok, err)
					}
					m, err := c.GetManifest(ctx, "team/app", d.String())
					if err != nil || !bytes.Equal(m.Body, manifest) || m.Digest != d {
						t.Fatalf("GetManifest: %v", err)
					}
					body, size, err := c.GetBlob(ctx, "team/app", sha(blob))
					if err != nil {
						t.Fatalf("GetBlob: %v", err)
					}
					got, _ := io.ReadAll(body)
					body.Close()
					if !bytes.Equal(got, blob) || size != int64(len(blob)) {
						t.Fatalf("GetBlob: %d bytes, size %d", len(got), size)
					}
					if _, err := c.GetManifest(ctx, "team/app", "v9"); !errors.Is(err, upstream.ErrNotFound) {
						t.Fatalf("unknown tag: %v, want ErrNotFound", err)
					}
				}
			})
		}
	}
}

// TestClientBandwidthCap: blob bytes from one upstream are paced to its
// bandwidth, across concurrent fetches.
func TestClientBandwidthCap(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	blob := make([]byte, 512<<10)
	resp, err := http.Post(o.URL+"/v2/team/app/blobs/uploads/?digest="+sha(blob).String(), "application/octet-stream", bytes.NewReader(blob))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %v %v", resp, err)
	}
	resp.Body.Close()
	tests := []struct {
		name      string
		bandwidth int64
		atLeast   time.Duration
	}{
		{"uncapped", 0, 0},
		// Two fetches, 1 MiB at 512 KiB/s with a burst of 512 KiB: ≥ 1 s.
		{"512 KiB/s", 512 << 10, 900 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := upstream.NewClient(upstream.Config{Namespace: "shoal.test", URL: o.URL, Bandwidth: tc.bandwidth})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					body, _, err := c.GetBlob(context.Background(), "team/app", sha(blob))
					if err != nil {
						t.Error(err)
						return
					}
					defer body.Close()
					if n, _ := io.Copy(io.Discard, body); n != int64(len(blob)) {
						t.Errorf("read %d bytes", n)
					}
				})
			}
			wg.Wait()
			if took := time.Since(start); took < tc.atLeast {
				t.Errorf("1 MiB took %s, want at least %s", took, tc.atLeast)
			}
		})
	}
}
