package auth

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// testKey is a 32-byte shared key.
const testKey = "0123456789abcdef0123456789abcdef"

// t0 is the fixed "now" of token tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

// hashFor returns a MinCost bcrypt hash of password.
func hashFor(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// writeFile writes content to a new file in a temp dir and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// htpasswdFile writes an htpasswd file with user:password pairs.
func htpasswdFile(t testing.TB, pairs ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test users\n")
	for i := 0; i+1 < len(pairs); i += 2 {
		b.WriteString(pairs[i] + ":" + hashFor(t, pairs[i+1]) + "\n")
	}
	return writeFile(t, "htpasswd", b.String())
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// request builds a request with the given Authorization header ("" for
// none).
func request(authz string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return r
}

func repo(name string, a Action) Access { return Access{Type: TypeRepository, Name: name, Action: a} }

var catalog = Access{Type: TypeRegistry, Name: "catalog", Action: Pull}

// tokenClaims returns valid claims for the test service and issuer at t0.
func tokenClaims(sub string, access ...ResourceActions) claims {
	return claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    defaultIssuer,
			Subject:   sub,
			Audience:  jwt.ClaimStrings{defaultService},
			IssuedAt:  jwt.NewNumericDate(t0),
			NotBefore: jwt.NewNumericDate(t0),
			ExpiresAt: jwt.NewNumericDate(t0.Add(5 * time.Minute)),
		},
		Access: access,
	}
}

func sign(t testing.TB, method jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
