package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testRealm = "https://registry.example/auth/token"

func newTestTokenAuth(t *testing.T, anonPull bool, now time.Time) Authorizer {
	t.Helper()
	a, err := newAuthorizer(Config{
		Mode:          ModeToken,
		AnonymousPull: anonPull,
		Token:         TokenConfig{Realm: testRealm, KeyFile: writeFile(t, "key", testKey+"\n")},
	}, clock(now))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTokenAuthorize(t *testing.T) {
	key := []byte(testKey)
	pushPull := ResourceActions{Type: "repository", Name: "foo/bar", Actions: []string{"pull", "push"}}
	pullOnly := ResourceActions{Type: "repository", Name: "foo/bar", Actions: []string{"pull"}}
	valid := tokenClaims("alice", pushPull)
	with := func(f func(c *claims)) claims {
		c := tokenClaims("alice", pushPull)
		f(&c)
		return c
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, key, valid)
	parts := strings.Split(good, ".")
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)

	tests := []struct {
		name     string
		now      time.Time // zero: t0
		anonPull bool
		authz    string
		access   []Access
		want     error
		subject  string
	}{
		{name: "valid push", authz: "Bearer " + good, access: []Access{repo("foo/bar", Pull), repo("foo/bar", Push)}, subject: "alice"},
		{name: "valid base", authz: "Bearer " + good, subject: "alice"},
		{name: "scheme case", authz: "bearer " + good, access: []Access{repo("foo/bar", Pull)}, subject: "alice"},
		{name: "within leeway after exp", now: t0.Add(5*time.Minute + 20*time.Second), authz: "Bearer " + good, access: []Access{repo("foo/bar", Pull)}, subject: "alice"},
		{name: "within leeway before nbf", now: t0.Add(-20 * time.Second), authz: "Bearer " + good, access: []Access{repo("foo/bar", Pull)}, subject: "alice"},
		{name: "expired", now: t0.Add(6 * time.Minute), authz: "Bearer " + good, access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "not yet valid", now: t0.Add(-time.Minute), authz: "Bearer " + good, access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "issued in future", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, with(func(c *claims) {
			c.IssuedAt, c.NotBefore = jwt.NewNumericDate(t0.Add(time.Hour)), nil
		})), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "no exp", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, with(func(c *claims) { c.ExpiresAt = nil })), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "wrong key", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("k", 32)), valid), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "alg none", authz: "Bearer " + noneToken, access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "alg none header on HS256 signature", authz: "Bearer " + noneHeader + "." + parts[1] + "." + parts[2], access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "alg none empty signature", authz: "Bearer " + noneHeader + "." + parts[1] + ".", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "HS512", authz: "Bearer " + sign(t, jwt.SigningMethodHS512, key, valid), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "ES256", authz: "Bearer " + sign(t, jwt.SigningMethodES256, ecKey, valid), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "wrong audience", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, with(func(c *claims) { c.Audience = jwt.ClaimStrings{"other"} })), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "no audience", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, with(func(c *claims) { c.Audience = nil })), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "one of audiences", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, with(func(c *claims) { c.Audience = jwt.ClaimStrings{"other", defaultService} })), access: []Access{repo("foo/bar", Pull)}, subject: "alice"},
		{name: "wrong issuer", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, with(func(c *claims) { c.Issuer = "evil" })), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "tampered payload", authz: "Bearer " + parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"shoal-token-issuer","aud":"shoal","exp":9999999999,"access":[{"type":"repository","name":"foo/bar","actions":["delete"]}]}`)) + "." + parts[2], access: []Access{repo("foo/bar", Delete)}, want: ErrUnauthorized},

		{name: "insufficient actions", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, tokenClaims("alice", pullOnly)), access: []Access{repo("foo/bar", Pull), repo("foo/bar", Push)}, want: ErrDenied, subject: "alice"},
		{name: "delete not granted", authz: "Bearer " + good, access: []Access{repo("foo/bar", Delete)}, want: ErrDenied, subject: "alice"},
		{name: "wrong repository", authz: "Bearer " + good, access: []Access{repo("foo/baz", Pull)}, want: ErrDenied, subject: "alice"},
		{name: "repository prefix is not a grant", authz: "Bearer " + good, access: []Access{repo("foo/bar/baz", Pull)}, want: ErrDenied, subject: "alice"},
		{name: "catalog not granted", authz: "Bearer " + good, access: []Access{catalog}, want: ErrDenied, subject: "alice"},
		{name: "catalog granted", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, tokenClaims("alice", ResourceActions{Type: "registry", Name: "catalog", Actions: []string{"*"}})), access: []Access{catalog}, subject: "alice"},
		{name: "wildcard action", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, tokenClaims("alice", ResourceActions{Type: "repository", Name: "foo/bar", Actions: []string{"*"}})), access: []Access{repo("foo/bar", Delete)}, subject: "alice"},
		{name: "type must match", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, tokenClaims("alice", ResourceActions{Type: "registry", Name: "foo/bar", Actions: []string{"pull"}})), access: []Access{repo("foo/bar", Pull)}, want: ErrDenied, subject: "alice"},
		{name: "anonymous token", authz: "Bearer " + sign(t, jwt.SigningMethodHS256, key, tokenClaims("", pullOnly)), access: []Access{repo("foo/bar", Pull)}},

		{name: "no token", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "basic instead", authz: basic("alice", "pw"), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "empty bearer", authz: "Bearer ", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "garbage", authz: "Bearer not-a-jwt", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "two dots", authz: "Bearer ..", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "four parts", authz: "Bearer " + good + ".x", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "bad base64", authz: "Bearer !!!." + parts[1] + "." + parts[2], access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "json array header", authz: "Bearer " + base64.RawURLEncoding.EncodeToString([]byte(`[1]`)) + "." + parts[1] + "." + parts[2], access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
		{name: "1 MiB token", authz: "Bearer " + strings.Repeat("a", 1<<20), access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},

		{name: "anon pull", anonPull: true, access: []Access{repo("foo/bar", Pull)}},
		{name: "anon catalog", anonPull: true, access: []Access{catalog}},
		{name: "anon push", anonPull: true, access: []Access{repo("foo/bar", Push)}, want: ErrUnauthorized},
		{name: "anon base", anonPull: true, want: ErrUnauthorized},
		{name: "anon pull invalid token", anonPull: true, authz: "Bearer garbage", access: []Access{repo("foo/bar", Pull)}, want: ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			a := newTestTokenAuth(t, tt.anonPull, now)
			id, err := a.Authorize(request(tt.authz), tt.access...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if id.Subject != tt.subject || (err == nil && id.Anonymous != (tt.subject == "")) {
				t.Fatalf("identity %+v, want subject %q", id, tt.subject)
			}
			c := Challenge(err)
			if errors.Is(err, ErrUnauthorized) != strings.HasPrefix(c, `Bearer realm="`+testRealm+`",service="shoal"`) {
				t.Fatalf("challenge %q for %v", c, err)
			}
		})
	}
}

func TestTokenChallenge(t *testing.T) {
	tests := []struct {
		name   string
		authz  string
		access []Access
		want   string
	}{
		{"base", "", nil, `Bearer realm="` + testRealm + `",service="shoal"`},
		{"push", "", []Access{repo("foo/bar", Pull), repo("foo/bar", Push)}, `Bearer realm="` + testRealm + `",service="shoal",scope="repository:foo/bar:pull,push"`},
		{"catalog", "", []Access{catalog}, `Bearer realm="` + testRealm + `",service="shoal",scope="registry:catalog:*"`},
		{"invalid token", "Bearer x", []Access{repo("a", Pull)}, `Bearer realm="` + testRealm + `",service="shoal",scope="repository:a:pull",error="invalid_token"`},
	}
	a := newTestTokenAuth(t, false, t0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Authorize(request(tt.authz), tt.access...)
			if got := Challenge(err); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	key := writeFile(t, "key", testKey)
	file := htpasswdFile(t, "alice", "pw")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"unknown mode", Config{Mode: "ldap"}},
		{"mode unset with htpasswd", Config{Htpasswd: file}},
		{"mode unset with anonymous pull", Config{AnonymousPull: true}},
		{"htpasswd missing", Config{Mode: ModeHtpasswd}},
		{"policy unknown user", Config{Mode: ModeHtpasswd, Htpasswd: file, Users: map[string]UserPolicy{"bob": {Actions: []Action{Pull}}}}},
		{"policy no actions", Config{Mode: ModeHtpasswd, Htpasswd: file, Users: map[string]UserPolicy{"alice": {}}}},
		{"policy bad action", Config{Mode: ModeHtpasswd, Htpasswd: file, Users: map[string]UserPolicy{"alice": {Actions: []Action{"write"}}}}},
		{"policy bad pattern", Config{Mode: ModeHtpasswd, Htpasswd: file, Users: map[string]UserPolicy{"alice": {Actions: []Action{Pull}, Repositories: []string{"Team/*"}}}}},
		{"policy mid wildcard", Config{Mode: ModeHtpasswd, Htpasswd: file, Users: map[string]UserPolicy{"alice": {Actions: []Action{Pull}, Repositories: []string{"a/*/b"}}}}},
		{"token no realm", Config{Mode: ModeToken, Token: TokenConfig{KeyFile: key}}},
		{"token default realm not a URL", Config{Mode: ModeToken, Realm: "shoal", Token: TokenConfig{KeyFile: key}}},
		{"token realm quote", Config{Mode: ModeToken, Token: TokenConfig{Realm: `http://x/"`, KeyFile: key}}},
		{"token no key", Config{Mode: ModeToken, Token: TokenConfig{Realm: testRealm}}},
		{"token missing key", Config{Mode: ModeToken, Token: TokenConfig{Realm: testRealm, KeyFile: key + ".nope"}}},
		{"token short key", Config{Mode: ModeToken, Token: TokenConfig{Realm: testRealm, KeyFile: writeFile(t, "short", testKey[:31]+"\n\n")}}},
		{"token negative ttl", Config{Mode: ModeToken, Token: TokenConfig{Realm: testRealm, KeyFile: key, TTL: -time.Second}}},
		{"token quoted service", Config{Mode: ModeToken, Token: TokenConfig{Realm: testRealm, KeyFile: key, Service: `a"b`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.cfg)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New = %v, %v; want ErrConfig", a, err)
			}
		})
	}
}

func TestNewTokenRealmFallback(t *testing.T) {
	a, err := New(Config{Mode: ModeToken, Realm: testRealm, Token: TokenConfig{KeyFile: writeFile(t, "key", testKey)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Authorize(request(""), repo("a", Pull))
	if want := `Bearer realm="` + testRealm + `",service="shoal",scope="repository:a:pull"`; Challenge(err) != want {
		t.Fatalf("challenge %q, want %q", Challenge(err), want)
	}
}
