package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// maxHtpasswdFile bounds the htpasswd file read at start; 16 MiB is over
// 200,000 users.
const maxHtpasswdFile = 16 << 20

// bcryptHashLen is the length of every well-formed bcrypt hash:
// "$2y$" + two cost digits + "$" + 22 salt + 31 hash characters.
const bcryptHashLen = 60

// htpasswd is a loaded bcrypt htpasswd file. It is read-only after
// loading, so concurrent verify calls are safe.
type htpasswd struct {
	users []htpasswdUser
	// dummy is compared against when the user is unknown, so that a
	// failed login takes the same time whether or not the user exists. It
	// has the highest cost found in the file.
	dummy []byte
}

type htpasswdUser struct {
	name []byte
	hash []byte // always bcryptHashLen bytes
}

// loadHtpasswd reads and parses the htpasswd file at path.
func loadHtpasswd(path string) (*htpasswd, error) {
	if path == "" {
		return nil, fmt.Errorf("auth: %w: htpasswd file not configured", ErrConfig)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w: %w", ErrConfig, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHtpasswdFile+1))
	if err != nil {
		return nil, fmt.Errorf("auth: %w: htpasswd %s: %w", ErrConfig, path, err)
	}
	if len(b) > maxHtpasswdFile {
		return nil, fmt.Errorf("auth: %w: htpasswd %s: larger than %d bytes", ErrConfig, path, maxHtpasswdFile)
	}
	h, err := parseHtpasswd(b)
	if err != nil {
		return nil, fmt.Errorf("auth: %w: htpasswd %s: %w", ErrConfig, path, err)
	}
	return h, nil
}

// parseHtpasswd parses htpasswd content: "user:$2y$..." lines, blank lines
// and "#" comments. Other hash kinds (MD5 apr1, SHA-1, SHA-crypt, DES
// crypt, plain text) are refused with the line number: they are too weak
// to keep, and silently skipping them would lock users out mysteriously.
func parseHtpasswd(b []byte) (*htpasswd, error) {
	h := &htpasswd{}
	seen := map[string]int{}
	maxCost := bcrypt.MinCost
	for i, line := range bytes.Split(b, []byte("\n")) {
		n := i + 1
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		user, hash, ok := strings.Cut(s, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want user:hash", n)
		}
		if !validUser(user) {
			return nil, fmt.Errorf("line %d: invalid user name", n)
		}
		if prev, dup := seen[user]; dup {
			return nil, fmt.Errorf("line %d: user %q already defined on line %d", n, user, prev)
		}
		cost, err := checkBcrypt(hash)
		if err != nil {
			return nil, fmt.Errorf("line %d: user %q: %w", n, user, err)
		}
		seen[user] = n
		maxCost = max(maxCost, cost)
		h.users = append(h.users, htpasswdUser{name: []byte(user), hash: []byte(hash)})
	}
	if len(h.users) == 0 {
		maxCost = bcrypt.DefaultCost
	}
	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte(fmt.Sprintf("%x", pw)), maxCost)
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// checkBcrypt validates a bcrypt hash and returns its cost; the error
// names the hash kind when it is not bcrypt.
func checkBcrypt(hash string) (int, error) {
	kind := ""
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
	case strings.HasPrefix(hash, "$apr1$"):
		kind = "MD5 (apr1)"
	case strings.HasPrefix(hash, "{SHA}"):
		kind = "SHA-1"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		kind = "SHA-crypt"
	case strings.HasPrefix(hash, "$2"):
		kind = "unsupported bcrypt variant"
	case hash == "":
		kind = "empty"
	default:
		kind = "crypt or plain-text"
	}
	if kind != "" {
		return 0, fmt.Errorf("%s password hash; only bcrypt ($2a$, $2b$, $2y$) is accepted, create it with htpasswd -B", kind)
	}
	if len(hash) != bcryptHashLen {
		return 0, fmt.Errorf("bcrypt hash is %d characters, want %d", len(hash), bcryptHashLen)
	}
	if !isDigit(hash[4]) || !isDigit(hash[5]) || hash[6] != '$' {
		return 0, fmt.Errorf("malformed bcrypt hash")
	}
	for _, c := range []byte(hash[7:]) {
		if !(c == '.' || c == '/' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return 0, fmt.Errorf("malformed bcrypt hash")
		}
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return 0, fmt.Errorf("malformed bcrypt hash: %w", err)
	}
	return cost, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// verify reports whether user and password match an entry. The user is
// looked up by a constant-time scan of every entry, and exactly one bcrypt
// comparison runs whether or not the user exists, so neither the lookup
// nor the hash reveals which users exist.
func (h *htpasswd) verify(user, password string) bool {
	hash := make([]byte, bcryptHashLen)
	copy(hash, h.dummy)
	found := 0
	for _, u := range h.users {
		eq := subtle.ConstantTimeCompare(u.name, []byte(user))
		subtle.ConstantTimeCopy(eq, hash, u.hash)
		found |= eq
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return ok && found == 1
}

// has reports whether user is in the file; for config validation only, so
// not constant time.
func (h *htpasswd) has(user string) bool {
	for _, u := range h.users {
		if string(u.name) == user {
			return true
		}
	}
	return false
}
