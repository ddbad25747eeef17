package origin_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
)

// countingTransport counts the token requests a client sends.
type countingTransport struct{ tokens atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, "/auth/token") {
		c.tokens.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A tracker's or an agent's own user reads from an origin without
// anonymous pull, in both modes: Basic in htpasswd mode, a token from the
// origin's issuer in token mode, fetched once per scope and reused.
func TestOwnUserReadsClosedOrigin(t *testing.T) {
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
	creds := func(user, pw string) auth.Credentials {
		t.Helper()
		c, err := auth.ClientConfig{Username: user, PasswordFile: write(user+"-"+pw, pw+"\n")}.Load()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	blob := []byte("a layer only users may read")
	sum := sha256.Sum256(blob)
	d := "sha256:" + hex.EncodeToString(sum[:])

	for _, mode := range []string{auth.ModeHtpasswd, auth.ModeToken} {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			base := "http://" + ln.Addr().String()
			o := origintest.Serve(t, ln, origin.Config{Auth: auth.Config{
				Mode: mode, Htpasswd: htpasswd,
				Users: map[string]auth.UserPolicy{"node": {Actions: []auth.Action{auth.Pull}}},
				Token: auth.TokenConfig{Realm: base + "/auth/token", KeyFile: key},
			}})
			client := func(c auth.Credentials) (*http.Client, *countingTransport) {
				ct := &countingTransport{}
				return &http.Client{Transport: c.Transport(ct)}, ct
			}
			ci, _ := client(creds("ci", "ci-pw"))
			node, nodeCount := client(creds("node", "node-pw"))
			wrong, _ := client(creds("node", "not-the-pw"))
			anon, _ := client(auth.Credentials{})

			resp, err := ci.Post(o.URL+"/v2/team/app/blobs/uploads/?digest="+d, "application/octet-stream", bytes.NewReader(blob))
			if err != nil || resp.StatusCode != http.StatusCreated {
				t.Fatalf("push as ci: %v %v", resp, err)
			}
			resp.Body.Close()

			tests := []struct {
				name   string
				c      *http.Client
				method string
				path   string
				want   int // 0: the request fails (no token for a wrong password)
			}{
				{"anonymous metainfo", anon, "GET", origin.MetaInfoPath + d, http.StatusUnauthorized},
				{"own user metainfo", node, "GET", origin.MetaInfoPath + d, http.StatusOK},
				{"own user metainfo again", node, "GET", origin.MetaInfoPath + d, http.StatusOK},
				{"own user blob", node, "GET", "/v2/team/app/blobs/" + d, http.StatusOK},
				{"own user blob again", node, "GET", "/v2/team/app/blobs/" + d, http.StatusOK},
				{"own user manifest (same scope)", node, "GET", "/v2/team/app/manifests/latest", http.StatusNotFound},
				{"own user may not push", node, "POST", "/v2/team/app/blobs/uploads/", http.StatusForbidden},
				{"wrong password", wrong, "GET", origin.MetaInfoPath + d, map[string]int{auth.ModeHtpasswd: http.StatusUnauthorized, auth.ModeToken: 0}[mode]},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					req, _ := http.NewRequest(tt.method, o.URL+tt.path, nil)
					resp, err := tt.c.Do(req)
					if tt.want == 0 {
						if err == nil {
							resp.Body.Close()
							t.Fatalf("%s %s: %d, want an error", tt.method, tt.path, resp.StatusCode)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != tt.want {
						t.Fatalf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
					}
				})
			}
			// Token mode: one token per scope (metainfo, the repository's
			// blobs, the push attempt), reused on the second requests.
			want := map[string]int64{auth.ModeHtpasswd: 0, auth.ModeToken: 3}[mode]
			if got := nodeCount.tokens.Load(); got != want {
				t.Fatalf("%d token requests, want %d", got, want)
			}
		})
	}
}
