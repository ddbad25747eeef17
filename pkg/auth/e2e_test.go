package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// miniRegistry is the smallest /v2 handler that asks an Authorizer the way
// the origin does.
type miniRegistry struct{ authz Authorizer }

func (m miniRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v2/")
	var access []Access
	switch {
	case path == "":
	case path == "_catalog":
		access = []Access{catalog}
	case strings.HasSuffix(path, "/blobs/uploads/") && r.Method == http.MethodPost:
		name := strings.TrimSuffix(path, "/blobs/uploads/")
		access = []Access{repo(name, Pull), repo(name, Push)}
	case strings.Contains(path, "/manifests/") && r.Method == http.MethodGet:
		access = []Access{repo(path[:strings.Index(path, "/manifests/")], Pull)}
	case strings.Contains(path, "/manifests/") && r.Method == http.MethodDelete:
		access = []Access{repo(path[:strings.Index(path, "/manifests/")], Delete)}
	default:
		http.NotFound(w, r)
		return
	}
	id, err := m.authz.Authorize(r, access...)
	switch {
	case errors.Is(err, ErrUnauthorized):
		w.Header().Set("WWW-Authenticate", Challenge(err))
		http.Error(w, err.Error(), http.StatusUnauthorized)
	case errors.Is(err, ErrDenied):
		http.Error(w, err.Error(), http.StatusForbidden)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		fmt.Fprintf(w, "hello %s", id.Subject)
	}
}

// newTokenServer serves the mini registry and the token issuer on one
// httptest server, as the origin does in token mode.
func newTokenServer(t *testing.T, anonPull bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	cfg := Config{
		Mode:          ModeToken,
		Htpasswd:      htpasswdFile(t, "alice", "alice-pw", "agent", "agent-pw"),
		AnonymousPull: anonPull,
		Users:         map[string]UserPolicy{"agent": {Actions: []Action{Pull}}},
		Token: TokenConfig{
			Realm:   "http://" + srv.Listener.Addr().String() + "/auth/token",
			KeyFile: writeFile(t, "key", testKey),
			Service: "shoal-test",
		},
	}
	authz, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := NewTokenIssuer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", miniRegistry{authz})
	mux.Handle("/auth/token", issuer)
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// parseChallenge parses `Bearer k="v",k="v"` the way registry clients do.
func parseChallenge(t *testing.T, h string) (scheme string, params map[string]string) {
	t.Helper()
	scheme, rest, _ := strings.Cut(h, " ")
	params = map[string]string{}
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok || !strings.HasPrefix(v, `"`) {
			t.Fatalf("malformed challenge %q", h)
		}
		var val strings.Builder
		i := 1
		for ; i < len(v) && v[i] != '"'; i++ {
			if v[i] == '\\' {
				i++
			}
			val.WriteByte(v[i])
		}
		params[strings.TrimSpace(k)] = val.String()
		rest = strings.TrimPrefix(v[i+1:], ",")
	}
	return scheme, params
}

// dance performs a request as a Docker client does: on 401 it fetches a
// token from the challenge's realm (with Basic credentials unless user is
// "") and retries with it. It returns the final status and the number of
// token fetches.
func dance(t *testing.T, c *http.Client, method, u, user, password string) (status, fetches int) {
	t.Helper()
	do := func(authz string) *http.Response {
		req, err := http.NewRequest(method, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := do("")
	if resp.StatusCode != http.StatusUnauthorized {
		return resp.StatusCode, 0
	}
	scheme, p := parseChallenge(t, resp.Header.Get("WWW-Authenticate"))
	if scheme != "Bearer" || p["realm"] == "" || p["service"] != "shoal-test" {
		t.Fatalf("challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
	q := url.Values{"service": {p["service"]}}
	if p["scope"] != "" {
		q["scope"] = []string{p["scope"]}
	}
	req, err := http.NewRequest(http.MethodGet, p["realm"]+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	tr, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Body.Close()
	if tr.StatusCode != http.StatusOK {
		return tr.StatusCode, 1
	}
	var tok struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.NewDecoder(tr.Body).Decode(&tok); err != nil || tok.Token == "" || tok.ExpiresIn != 300 {
		t.Fatalf("token response %+v: %v", tok, err)
	}
	return do("Bearer " + tok.Token).StatusCode, 1
}

func TestTokenDanceEndToEnd(t *testing.T) {
	tests := []struct {
		name        string
		anonPull    bool
		method      string
		path        string
		user, pw    string
		wantStatus  int
		wantFetches int
	}{
		{name: "login ping", method: "GET", path: "/v2/", user: "alice", pw: "alice-pw", wantStatus: 200, wantFetches: 1},
		{name: "push", method: "POST", path: "/v2/foo/bar/blobs/uploads/", user: "alice", pw: "alice-pw", wantStatus: 200, wantFetches: 1},
		{name: "pull", method: "GET", path: "/v2/foo/bar/manifests/v1", user: "alice", pw: "alice-pw", wantStatus: 200, wantFetches: 1},
		{name: "delete", method: "DELETE", path: "/v2/foo/manifests/v1", user: "alice", pw: "alice-pw", wantStatus: 200, wantFetches: 1},
		{name: "catalog", method: "GET", path: "/v2/_catalog", user: "alice", pw: "alice-pw", wantStatus: 200, wantFetches: 1},
		{name: "wrong password", method: "GET", path: "/v2/foo/manifests/v1", user: "alice", pw: "nope", wantStatus: 401, wantFetches: 1},
		{name: "pull-only user pulls", method: "GET", path: "/v2/foo/manifests/v1", user: "agent", pw: "agent-pw", wantStatus: 200, wantFetches: 1},
		{name: "pull-only user pushes", method: "POST", path: "/v2/foo/blobs/uploads/", user: "agent", pw: "agent-pw", wantStatus: 403, wantFetches: 1},
		{name: "anonymous refused", method: "GET", path: "/v2/foo/manifests/v1", wantStatus: 401, wantFetches: 1},
		{name: "anonymous pull direct", anonPull: true, method: "GET", path: "/v2/foo/manifests/v1", wantStatus: 200},
		{name: "anonymous ping gets token", anonPull: true, method: "GET", path: "/v2/", wantStatus: 200, wantFetches: 1},
		{name: "anonymous push", anonPull: true, method: "POST", path: "/v2/foo/blobs/uploads/", wantStatus: 403, wantFetches: 1},
	}
	servers := map[bool]*httptest.Server{false: newTokenServer(t, false), true: newTokenServer(t, true)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := servers[tt.anonPull]
			status, fetches := dance(t, srv.Client(), tt.method, srv.URL+tt.path, tt.user, tt.pw)
			if status != tt.wantStatus || fetches != tt.wantFetches {
				t.Fatalf("status %d after %d token fetches, want %d after %d", status, fetches, tt.wantStatus, tt.wantFetches)
			}
		})
	}
}

// In htpasswd mode a client answers the Basic challenge of the /v2/ ping.
func TestBasicEndToEnd(t *testing.T) {
	authz, err := New(Config{Mode: ModeHtpasswd, Htpasswd: htpasswdFile(t, "alice", "alice-pw")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(miniRegistry{authz})
	t.Cleanup(srv.Close)
	tests := []struct {
		name   string
		user   string
		status int
	}{
		{"no credentials", "", 401},
		{"alice", "alice", 200},
		{"wrong", "bob", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/foo/blobs/uploads/", nil)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, "alice-pw")
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); tt.status == 401 && got != `Basic realm="shoal"` {
				t.Fatalf("challenge %q", got)
			}
		})
	}
}
