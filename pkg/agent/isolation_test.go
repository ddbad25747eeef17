package agent_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
)

// Users of the private origins below; each one's password is its name
// followed by "-pw".
//   - ci pushes and pulls everything (not listed in users);
//   - reader pulls team/*;
//   - outsider pulls other/* only;
//   - node is the agents' own pull-only user (origin_auth), which may
//     pull everything and must never stand in for a client.
var privateUsers = map[string]auth.UserPolicy{
	"reader":   {Actions: []auth.Action{auth.Pull}, Repositories: []string{"team/*"}},
	"outsider": {Actions: []auth.Action{auth.Pull}, Repositories: []string{"other/*"}},
	"node":     {Actions: []auth.Action{auth.Pull}},
}

func basicAuth(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+user+"-pw"))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// privateOrigin starts an origin without anonymous pull, in mode
// "htpasswd" or "token" (with its built-in token issuer).
func privateOrigin(t *testing.T, mode string, more ...func(*origin.Config)) *origintest.Origin {
	t.Helper()
	var ht strings.Builder
	for _, u := range []string{"ci", "reader", "outsider", "node"} {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		ht.WriteString(u + ":" + string(h) + "\n")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := auth.Config{Mode: mode, Htpasswd: writeFile(t, "htpasswd", ht.String()), Users: privateUsers}
	if mode == auth.ModeToken {
		cfg.Token = auth.TokenConfig{Realm: "http://" + ln.Addr().String() + "/auth/token",
			KeyFile: writeFile(t, "token.key", "0123456789abcdef0123456789abcdef")}
	}
	ocfg := origin.Config{Auth: cfg}
	for _, f := range more {
		f(&ocfg)
	}
	return origintest.Serve(t, ln, ocfg)
}

// privateAgent runs an agent whose own origin user is node.
func privateAgent(t *testing.T, o *origintest.Origin) testAgent {
	t.Helper()
	up := agent.Upstream{Origins: []string{o.URL},
		OriginAuth: auth.ClientConfig{Username: "node", PasswordFile: writeFile(t, "node-pw", "node-pw")}}
	return startAgent(t, "", o.URL, agent.Config{Registries: map[string]agent.Upstream{"": up}})
}

// waitIdle waits until a has no download in progress: what it fetched is
// in its cache.
func waitIdle(t *testing.T, a testAgent) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for a.counter(t, "shoal_agent_downloads_in_progress") > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the download did not finish")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPrivateRepositoryNeedsClientCredentials (issue #13 row 7): a blob
// and its manifest sit in the agent's cache, fetched with the agent's own
// user, which may pull everything. A client still gets them only with
// credentials the origin takes for that repository: none or wrong ones get
// 401 with the origin's challenge, a user without pull rights on the
// repository 403, the right user the bytes — all without the agent
// fetching anything again.
func TestPrivateRepositoryNeedsClientCredentials(t *testing.T) {
	o := privateOrigin(t, auth.ModeHtpasswd)
	a := privateAgent(t, o)
	layer := random(1<<20 + 5)
	manifest, mt := imageAs(t, o.URL, "team/app", basicAuth("ci"), layer)

	// Warm the cache as the reader.
	resp, body := do(t, "GET", a.url+"/v2/team/app/blobs/"+sha(layer), map[string]string{"Authorization": basicAuth("reader")}, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("warming the cache: %d, %d bytes", resp.StatusCode, len(body))
	}
	waitIdle(t, a)
	fetched := a.counter(t, "shoal_agent_origin_bytes_total")

	blob := "/v2/team/app/blobs/" + sha(layer)
	byDigest := "/v2/team/app/manifests/" + sha(manifest)
	byTag := "/v2/team/app/manifests/v1"
	wrong := "Basic " + base64.StdEncoding.EncodeToString([]byte("reader:guess"))
	tests := []struct {
		name   string
		method string
		path   string
		authz  string
		status int
		want   []byte // body, for 200
	}{
		{"blob, no credentials", "GET", blob, "", 401, nil},
		{"blob HEAD, no credentials", "HEAD", blob, "", 401, nil},
		{"blob, wrong password", "GET", blob, wrong, 401, nil},
		{"blob, user without rights on the repository", "GET", blob, basicAuth("outsider"), 403, nil},
		{"blob, reader", "GET", blob, basicAuth("reader"), 200, layer},
		{"manifest by digest, no credentials", "GET", byDigest, "", 401, nil},
		{"manifest by tag, no credentials", "GET", byTag, "", 401, nil},
		{"manifest by tag, user without rights", "GET", byTag, basicAuth("outsider"), 403, nil},
		{"manifest by digest, reader", "GET", byDigest, basicAuth("reader"), 200, manifest},
		{"manifest by tag, reader", "GET", byTag, basicAuth("reader"), 200, manifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{"Accept": mt}
			if tt.authz != "" {
				hdr["Authorization"] = tt.authz
			}
			resp, body := do(t, tt.method, a.url+tt.path, hdr, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s: %d %.200q, want %d", tt.method, tt.path, resp.StatusCode, body, tt.status)
			}
			switch tt.status {
			case 401:
				if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Basic realm=`) {
					t.Fatalf("401 with challenge %q, want the origin's Basic challenge", ch)
				}
			case 403:
				if !strings.Contains(string(body), "DENIED") {
					t.Fatalf("403 body %s, want DENIED", body)
				}
			case 200:
				if tt.method == "GET" && !bytes.Equal(body, tt.want) {
					t.Fatalf("%d bytes, not the content", len(body))
				}
			}
		})
	}
	if got := a.counter(t, "shoal_agent_origin_bytes_total"); got != fetched {
		t.Fatalf("the agent read %v more bytes from the origin: the checks were not on the cached blob", got-fetched)
	}
}

// TestTokenChallengePassesThrough: with an origin in token mode, a real
// registry client holding a user's password, pointed at the agent only,
// follows the origin's Bearer challenge that the agent passes on, fetches
// a token at the origin's realm and pulls through the agent.
func TestTokenChallengePassesThrough(t *testing.T) {
	o := privateOrigin(t, auth.ModeToken)
	a := privateAgent(t, o)
	ciToken := clientFor(t, "ci")
	layer := random(300 << 10)
	pushWith(t, ciToken, o.URL, "team/app", layer)

	tests := []struct {
		user   string
		status int
	}{
		{"reader", 200},
		{"outsider", 403},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			resp, err := clientFor(t, tt.user).Get(a.url + "/v2/team/app/blobs/" + sha(layer))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || (tt.status == 200 && !bytes.Equal(body, layer)) {
				t.Fatalf("%s: %d, %d bytes; want %d", tt.user, resp.StatusCode, len(body), tt.status)
			}
		})
	}
	resp, _ := do(t, "GET", a.url+"/v2/team/app/blobs/"+sha(layer), nil, nil)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 ||
		!strings.Contains(ch, `realm="`+o.URL+`/auth/token"`) || !strings.Contains(ch, `scope="repository:team/app:pull"`) {
		t.Fatalf("anonymous: %d with challenge %q, want 401 with the origin's Bearer challenge", resp.StatusCode, ch)
	}
}

// clientFor is an HTTP client that logs in as user the way the agent's own
// origin client does: Basic first, a token when challenged for one.
func clientFor(t *testing.T, user string) *http.Client {
	t.Helper()
	creds, err := auth.ClientConfig{Username: user, PasswordFile: writeFile(t, user+"-pw", user+"-pw")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: creds.Transport(nil)}
}

// pushWith pushes one blob into repo with c.
func pushWith(t *testing.T, c *http.Client, base, repo string, b []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v2/"+repo+"/blobs/uploads/?digest="+sha(b), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("push: %d", resp.StatusCode)
	}
}

// TestCachedBlobOnlyUnderItsRepository (issue #13 row 7): agent B got a
// blob from the swarm for team/app; asked for it under a repository the
// origin does not hold it in, it answers 404 like the origin, for blobs
// and manifests alike.
func TestCachedBlobOnlyUnderItsRepository(t *testing.T) {
	o, trAddr, _ := seedingOrigin(t)
	layer := random(2<<20 + 3)
	manifest, _ := image(t, o.URL, layer)
	imageAs(t, o.URL, "other/repo", "", random(1000)) // a repository that exists, without the layer
	first := startAgent(t, trAddr, o.URL, agent.Config{})
	getAll(t, []string{first.url}, layer)
	b := startAgent(t, trAddr, o.URL, agent.Config{})
	getAll(t, []string{b.url}, layer)
	waitIdle(t, b)

	tests := []struct {
		name, path, code string
	}{
		{"blob under another repository", "/v2/other/repo/blobs/" + sha(layer), "BLOB_UNKNOWN"},
		{"blob under a repository nobody pushed", "/v2/nobody/here/blobs/" + sha(layer), "BLOB_UNKNOWN"},
		{"manifest under another repository", "/v2/other/repo/manifests/" + sha(manifest), "MANIFEST_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := do(t, method, b.url+tt.path, nil, nil)
				if resp.StatusCode != 404 || (method == "GET" && !strings.Contains(string(body), tt.code)) {
					t.Fatalf("%s %s: %d %.200q, want 404 %s", method, tt.path, resp.StatusCode, body, tt.code)
				}
			}
		})
	}
	// Under its own repository it is still served.
	getAll(t, []string{b.url}, layer)
}

// originRequests counts the origin's /v2 requests of endpoint and method.
func originRequests(t *testing.T, o *origintest.Origin, endpoint, method string) float64 {
	t.Helper()
	fams, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range fams {
		if f.GetName() != "shoal_origin_http_requests_total" {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if (l.GetName() == "endpoint" && l.GetValue() != endpoint) || (l.GetName() == "method" && l.GetValue() != method) {
					continue metrics
				}
			}
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// TestAnonymousChecksAreCached: for an anonymous repository, a hundred
// reads of a cached blob cost the origin one check, not a hundred; a
// client with credentials not seen before is checked afresh, and with the
// origin gone that check fails with 503 rather than serving unchecked.
func TestAnonymousChecksAreCached(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	layer := random(64 << 10)
	image(t, o.URL, layer)
	a := startAgent(t, "", o.URL, agent.Config{})
	url := a.url + "/v2/team/app/blobs/" + sha(layer)
	getAll(t, []string{a.url}, layer)
	waitIdle(t, a)
	before := originRequests(t, o, "blob", "HEAD")
	for range 100 {
		resp, body := do(t, "GET", url, nil, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
			t.Fatalf("GET: %d, %d bytes", resp.StatusCode, len(body))
		}
	}
	checks := originRequests(t, o, "blob", "HEAD")
	if checks < 1 || checks-before > 2 {
		t.Fatalf("the origin answered %v checks in all, %v of them for 100 reads of a cached blob; want 1 or 2", checks, checks-before)
	}
	if hits := a.counter(t, "shoal_agent_pull_checks_total"); hits < 100 {
		t.Fatalf("%v checks counted, want at least 100 (hits and asks)", hits)
	}

	if err := o.Stop(); err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, "GET", url, map[string]string{"Authorization": basicAuth("someone")}, nil)
	if resp.StatusCode != 503 || len(body) >= len(layer) {
		t.Fatalf("new credentials with the origin gone: %d, %d bytes; want 503", resp.StatusCode, len(body))
	}
}
