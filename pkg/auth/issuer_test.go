package auth

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenIssuer(t *testing.T) {
	file := htpasswdFile(t, "alice", "alice-pw", "agent", "agent-pw", "ci", "ci-pw")
	key := writeFile(t, "key", testKey+"\r\n")
	users := map[string]UserPolicy{
		"agent": {Actions: []Action{Pull}},
		"ci":    {Actions: []Action{Pull, Push, Delete}, Repositories: []string{"team/*", "shared"}},
	}
	ra := func(typ, name string, actions ...string) ResourceActions {
		return ResourceActions{Type: typ, Name: name, Actions: actions}
	}
	tests := []struct {
		name     string
		anonPull bool
		method   string
		authz    string
		query    string
		status   int
		grant    []ResourceActions
		subject  string
	}{
		{name: "push pull", authz: basic("alice", "alice-pw"), query: "service=shoal&scope=repository:foo/bar:pull,push", status: 200, subject: "alice",
			grant: []ResourceActions{ra("repository", "foo/bar", "pull", "push")}},
		{name: "no scope (login)", authz: basic("alice", "alice-pw"), query: "service=shoal&account=alice", status: 200, subject: "alice", grant: []ResourceActions{}},
		{name: "no service", authz: basic("alice", "alice-pw"), query: "scope=repository:foo:delete", status: 200, subject: "alice",
			grant: []ResourceActions{ra("repository", "foo", "delete")}},
		{name: "several scopes", authz: basic("alice", "alice-pw"), query: "scope=repository:a:pull&scope=repository:b:push,pull%20registry:catalog:*", status: 200, subject: "alice",
			grant: []ResourceActions{ra("repository", "a", "pull"), ra("repository", "b", "pull", "push"), ra("registry", "catalog", "*")}},
		{name: "wildcard expands", authz: basic("alice", "alice-pw"), query: "scope=repository:a:*", status: 200, subject: "alice",
			grant: []ResourceActions{ra("repository", "a", "pull", "push", "delete")}},
		{name: "unknown actions and types dropped", authz: basic("alice", "alice-pw"), query: "scope=repository:a:pull,frob&scope=widget:a:pull&scope=registry:other:*&scope=registry:catalog:pull", status: 200, subject: "alice",
			grant: []ResourceActions{ra("repository", "a", "pull")}},
		{name: "invalid repository name not granted", authz: basic("alice", "alice-pw"), query: "scope=repository:Foo/../x:pull", status: 200, subject: "alice", grant: []ResourceActions{}},
		{name: "host in name not granted", authz: basic("alice", "alice-pw"), query: "scope=repository:localhost:5000/a:pull", status: 200, subject: "alice", grant: []ResourceActions{}},

		{name: "policy pull only", authz: basic("agent", "agent-pw"), query: "scope=repository:a:pull,push&scope=registry:catalog:*", status: 200, subject: "agent",
			grant: []ResourceActions{ra("repository", "a", "pull"), ra("registry", "catalog", "*")}},
		{name: "policy repositories", authz: basic("ci", "ci-pw"), query: "scope=repository:team/x:push&scope=repository:shared:delete&scope=repository:other:pull&scope=registry:catalog:*", status: 200, subject: "ci",
			grant: []ResourceActions{ra("repository", "team/x", "push"), ra("repository", "shared", "delete")}},

		{name: "anonymous pull", anonPull: true, query: "service=shoal&scope=repository:a:pull,push&scope=registry:catalog:*", status: 200,
			grant: []ResourceActions{ra("repository", "a", "pull"), ra("registry", "catalog", "*")}},
		{name: "anonymous metainfo", anonPull: true, query: "scope=registry:metainfo:pull", status: 200, grant: []ResourceActions{ra("registry", "metainfo", "pull")}},
		{name: "metainfo for a pull-only user", authz: basic("agent", "agent-pw"), query: "scope=registry:metainfo:*", status: 200, subject: "agent",
			grant: []ResourceActions{ra("registry", "metainfo", "pull")}},
		{name: "anonymous wildcard", anonPull: true, query: "scope=repository:a:*", status: 200, grant: []ResourceActions{ra("repository", "a", "pull")}},
		{name: "anonymous push only", anonPull: true, query: "scope=repository:a:push", status: 200, grant: []ResourceActions{}},
		{name: "anonymous refused", query: "scope=repository:a:pull", status: 401},
		{name: "bad password", anonPull: true, authz: basic("alice", "nope"), query: "scope=repository:a:pull", status: 401},
		{name: "unknown user", authz: basic("mallory", "alice-pw"), query: "scope=repository:a:pull", status: 401},
		{name: "bearer", authz: "Bearer x", query: "scope=repository:a:pull", status: 401},
		{name: "1 MiB header", authz: "Basic " + strings.Repeat("A", 1<<20), query: "scope=repository:a:pull", status: 401},

		{name: "wrong service", authz: basic("alice", "alice-pw"), query: "service=evil&scope=repository:a:pull", status: 400},
		{name: "malformed scope", authz: basic("alice", "alice-pw"), query: "scope=repository:a", status: 400},
		{name: "hostile scope", authz: basic("alice", "alice-pw"), query: "scope=" + url.QueryEscape("repository:a\"\r\nX: y:pull"), status: 400},
		{name: "too many scopes", authz: basic("alice", "alice-pw"), query: strings.Repeat("scope=repository:a:pull&", maxScopes+1), status: 400},
		{name: "post", method: http.MethodPost, authz: basic("alice", "alice-pw"), query: "scope=repository:a:pull", status: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := newTokenIssuer(Config{
				Mode: ModeToken, Htpasswd: file, AnonymousPull: tt.anonPull, Users: users,
				Token: TokenConfig{Realm: testRealm, KeyFile: key, TTL: time.Minute},
			}, clock(t0))
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, "/auth/token?"+tt.query, nil)
			if tt.authz != "" {
				r.Header.Set("Authorization", tt.authz)
			}
			w := httptest.NewRecorder()
			iss.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if w.Code == 401 && w.Header().Get("WWW-Authenticate") != `Basic realm="shoal"` {
				t.Fatalf("401 without Basic challenge: %q", w.Header().Get("WWW-Authenticate"))
			}
			if w.Code != 200 {
				var body struct{ Errors []struct{ Code string } }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 {
					t.Fatalf("error body %q: %v", w.Body, err)
				}
				return
			}
			var resp tokenResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Token == "" || resp.AccessToken != resp.Token || resp.ExpiresIn != 60 || resp.IssuedAt != "2026-03-01T12:00:00Z" {
				t.Fatalf("response %+v", resp)
			}
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			var c claims
			if _, err := jwt.ParseWithClaims(resp.Token, &c, func(*jwt.Token) (any, error) { return []byte(testKey), nil },
				jwt.WithTimeFunc(clock(t0)), jwt.WithValidMethods([]string{"HS256"})); err != nil {
				t.Fatal(err)
			}
			if c.Subject != tt.subject || c.Issuer != defaultIssuer || !reflect.DeepEqual(c.Audience, jwt.ClaimStrings{"shoal"}) ||
				!c.ExpiresAt.Equal(t0.Add(time.Minute)) || !c.IssuedAt.Equal(t0) || c.ID == "" {
				t.Fatalf("claims %+v", c.RegisteredClaims)
			}
			if !reflect.DeepEqual(c.Access, tt.grant) {
				t.Fatalf("access %+v, want %+v", c.Access, tt.grant)
			}
		})
	}
}

// Tokens the issuer signs are accepted by the token Authorizer for exactly
// what they grant, until they expire.
func TestIssuerTokensVerify(t *testing.T) {
	cfg := Config{
		Mode: ModeToken, Htpasswd: htpasswdFile(t, "alice", "pw"),
		Token: TokenConfig{Realm: testRealm, KeyFile: writeFile(t, "key", testKey)},
	}
	iss, err := newTokenIssuer(cfg, clock(t0))
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/auth/token?scope=repository:a:pull,push", nil)
	r.Header.Set("Authorization", basic("alice", "pw"))
	w := httptest.NewRecorder()
	iss.ServeHTTP(w, r)
	var resp tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		now    time.Time
		access Access
		want   error
	}{
		{"push", t0, repo("a", Push), nil},
		{"pull later", t0.Add(4 * time.Minute), repo("a", Pull), nil},
		{"delete", t0, repo("a", Delete), ErrDenied},
		{"other repo", t0, repo("b", Pull), ErrDenied},
		{"expired", t0.Add(6 * time.Minute), repo("a", Pull), ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := newAuthorizer(cfg, clock(tt.now))
			if err != nil {
				t.Fatal(err)
			}
			id, err := a.Authorize(request("Bearer "+resp.Token), tt.access)
			if !errors.Is(err, tt.want) || id.Subject != "alice" && err == nil {
				t.Fatalf("%+v, %v; want %v", id, err, tt.want)
			}
		})
	}
}

func TestNewTokenIssuerErrors(t *testing.T) {
	key := writeFile(t, "key", testKey)
	file := htpasswdFile(t, "alice", "pw")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no htpasswd", Config{Mode: ModeToken, Token: TokenConfig{KeyFile: key}}},
		{"no key", Config{Mode: ModeToken, Htpasswd: file}},
		{"short key", Config{Mode: ModeToken, Htpasswd: file, Token: TokenConfig{KeyFile: writeFile(t, "k", "short")}}},
		{"bad policy", Config{Mode: ModeToken, Htpasswd: file, Token: TokenConfig{KeyFile: key}, Users: map[string]UserPolicy{"nobody": {Actions: []Action{Pull}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewTokenIssuer(tt.cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}
