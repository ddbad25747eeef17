package auth

import (
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"
)

// A component's own credentials, loaded from their file, pass the origin's
// htpasswd check; half a credential is a configuration error, not an
// anonymous client.
func TestClientCredentials(t *testing.T) {
	users := htpasswdFile(t, "shoal-node", "node-pw")
	authz, err := New(Config{Mode: ModeHtpasswd, Htpasswd: users})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     ClientConfig
		wantErr error // from Load
		authErr error // from the origin's Authorize
	}{
		{name: "none is anonymous", cfg: ClientConfig{}, authErr: ErrUnauthorized},
		{name: "user and password file", cfg: ClientConfig{Username: "shoal-node", PasswordFile: writeFile(t, "pw", "node-pw\n")}},
		{name: "wrong password", cfg: ClientConfig{Username: "shoal-node", PasswordFile: writeFile(t, "pw", "nope\n")}, authErr: ErrUnauthorized},
		{name: "user without password", cfg: ClientConfig{Username: "shoal-node"}, wantErr: ErrConfig},
		{name: "password without user", cfg: ClientConfig{PasswordFile: writeFile(t, "pw", "node-pw")}, wantErr: ErrConfig},
		{name: "missing file", cfg: ClientConfig{Username: "shoal-node", PasswordFile: filepath.Join(t.TempDir(), "none")}, wantErr: ErrConfig},
		{name: "empty file", cfg: ClientConfig{Username: "shoal-node", PasswordFile: writeFile(t, "pw", "\n")}, wantErr: ErrConfig},
		{name: "colon in user", cfg: ClientConfig{Username: "a:b", PasswordFile: writeFile(t, "pw", "x")}, wantErr: ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := tt.cfg.Load()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Load: %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			r := httptest.NewRequest("GET", "/metainfo/sha256:x", nil)
			creds.apply(r)
			if _, err := authz.Authorize(r, MetaInfo); !errors.Is(err, tt.authErr) {
				t.Fatalf("Authorize: %v, want %v", err, tt.authErr)
			}
		})
	}
}

// A password bcrypt accepted is trusted for verifiedTTL, then checked
// again; a wrong one is never remembered.
func TestVerifiedCache(t *testing.T) {
	now := t0
	c := newVerifiedCache(func() time.Time { return now })
	steps := []struct {
		name    string
		advance time.Duration
		add     bool
		user    string
		pw      string
		want    bool
	}{
		{name: "unknown", user: "a", pw: "pw", want: false},
		{name: "after a success", add: true, user: "a", pw: "pw", want: true},
		{name: "another password", user: "a", pw: "pw2", want: false},
		{name: "another user", user: "b", pw: "pw", want: false},
		{name: "user and password not run together", user: "ap", pw: "w", want: false},
		{name: "within the TTL", advance: verifiedTTL - time.Second, user: "a", pw: "pw", want: true},
		{name: "after the TTL", advance: time.Second, user: "a", pw: "pw", want: false},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if s.add {
			c.add(s.user, s.pw)
		}
		if got := c.check(s.user, s.pw); got != s.want {
			t.Fatalf("%s: check = %v, want %v", s.name, got, s.want)
		}
	}
}

// The challenge parser reads what the origin's token mode sends and
// refuses what it cannot read whole.
func TestParseBearerChallenge(t *testing.T) {
	tests := []struct {
		in   string
		want bearerChallenge
		ok   bool
	}{
		{`Bearer realm="http://o:5000/auth/token",service="shoal",scope="repository:a/b:pull"`,
			bearerChallenge{"http://o:5000/auth/token", "shoal", "repository:a/b:pull"}, true},
		{`bearer realm="r", scope="repository:a:pull,push" , service=shoal`, bearerChallenge{"r", "shoal", "repository:a:pull,push"}, true},
		{`Bearer realm="a \"quoted\\ realm"`, bearerChallenge{realm: `a "quoted\ realm`}, true},
		{`Bearer realm="r",error="invalid_token"`, bearerChallenge{realm: "r"}, true},
		{`Basic realm="shoal"`, bearerChallenge{}, false},
		{`Bearer service="shoal"`, bearerChallenge{}, false},
		{`Bearer realm="unterminated`, bearerChallenge{}, false},
		{`Bearer realm`, bearerChallenge{}, false},
		{`Bearer realm="r\`, bearerChallenge{}, false},
		{``, bearerChallenge{}, false},
	}
	for _, tt := range tests {
		got, ok := parseBearerChallenge(tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseBearerChallenge(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// A hostile origin's challenge never panics or hangs the parser.
func FuzzParseBearerChallenge(f *testing.F) {
	for _, s := range []string{`Bearer realm="r",service="s",scope="x:y:pull"`, `Bearer realm="a\"b"`, `Bearer =,=`, `Bearer realm="\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ch, ok := parseBearerChallenge(s)
		if ok && ch.realm == "" {
			t.Fatalf("ok without a realm: %q", s)
		}
	})
}
