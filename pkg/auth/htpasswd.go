package auth

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// LoadHtpasswd reads a bcrypt htpasswd file: "user:$2y$..." lines, blank
// lines and "#" comments. Other hash kinds (MD5, SHA1, crypt) are refused:
// they are too weak to keep.
func LoadHtpasswd(path string) (map[string][]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("auth: htpasswd file not configured")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return ParseHtpasswd(b)
}

// ParseHtpasswd parses htpasswd content; see LoadHtpasswd.
func ParseHtpasswd(b []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" || hash == "" {
			return nil, fmt.Errorf("auth: htpasswd line %d: want user:hash", n)
		}
		if !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$") {
			return nil, fmt.Errorf("auth: htpasswd line %d: only bcrypt hashes are accepted", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("auth: htpasswd line %d: %w", n, err)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: htpasswd: %w", err)
	}
	return users, nil
}

// dummyHash is compared against for unknown users so that the time taken
// does not tell which users exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("shoal-dummy-password"), bcrypt.DefaultCost)

// checkPassword reports whether user/password match the table.
func checkPassword(users map[string][]byte, user, password string) bool {
	hash, ok := users[user]
	if !ok {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
}

// parseBasic decodes Basic credentials.
func parseBasic(creds string) (user, password string, ok bool) {
	raw, err := base64.StdEncoding.DecodeString(creds)
	if err != nil {
		return "", "", false
	}
	user, password, ok = strings.Cut(string(raw), ":")
	return user, password, ok && user != ""
}

// basicAuth is htpasswd mode: any valid user may do anything.
type basicAuth struct {
	users    map[string][]byte
	realm    string
	anonPull bool
}

func (a *basicAuth) challenge(reason string) error {
	return &challengeError{challenge: fmt.Sprintf("Basic realm=%q", a.realm), reason: reason}
}

func (a *basicAuth) Authorize(r *http.Request, access ...Access) (Identity, error) {
	scheme, creds, present, err := authorization(r)
	if err != nil {
		return Identity{}, a.challenge(err.Error())
	}
	if !present {
		if a.anonPull && pullOnly(access) {
			return Identity{Anonymous: true}, nil
		}
		return Identity{}, a.challenge("credentials required")
	}
	if subtle.ConstantTimeCompare([]byte(scheme), []byte("basic")) != 1 {
		return Identity{}, a.challenge("basic credentials required")
	}
	user, pw, ok := parseBasic(creds)
	if !ok || !checkPassword(a.users, user, pw) {
		return Identity{}, a.challenge("invalid username or password")
	}
	return Identity{Subject: user}, nil
}
