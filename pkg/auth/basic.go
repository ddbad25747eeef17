package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// basicAuth is htpasswd mode: HTTP Basic on every request.
type basicAuth struct {
	users     *htpasswd
	policy    policy
	challenge string
	anonPull  bool
	verified  *verifiedCache
}

func newBasicAuth(cfg Config) (*basicAuth, error) {
	users, err := loadHtpasswd(cfg.Htpasswd)
	if err != nil {
		return nil, err
	}
	pol, err := newPolicy(cfg.Users, users)
	if err != nil {
		return nil, err
	}
	return &basicAuth{
		users:     users,
		policy:    pol,
		challenge: "Basic realm=" + quote(cfg.Realm),
		anonPull:  cfg.AnonymousPull,
		verified:  newVerifiedCache(time.Now),
	}, nil
}

func (a *basicAuth) unauthorized(reason string) error {
	return &challengeError{challenge: a.challenge, reason: reason}
}

// Authorize checks Basic credentials against the htpasswd file, then the
// user's policy.
func (a *basicAuth) Authorize(r *http.Request, access ...Access) (Identity, error) {
	creds, present, err := authorization(r)
	if err != nil {
		return Identity{}, a.unauthorized(err.Error())
	}
	if !present {
		if anonymousAllowed(a.anonPull, access) {
			return Identity{Anonymous: true}, nil
		}
		return Identity{}, a.unauthorized("credentials required")
	}
	if creds.scheme != "basic" {
		return Identity{}, a.unauthorized("basic credentials required")
	}
	user, password, err := parseBasic(creds.value)
	if err != nil {
		return Identity{}, a.unauthorized(err.Error())
	}
	if !a.verified.check(user, password) {
		if !a.users.verify(user, password) {
			return Identity{}, a.unauthorized("invalid username or password")
		}
		a.verified.add(user, password)
	}
	id := Identity{Subject: user}
	for _, want := range access {
		if !a.policy.permits(user, want) {
			return id, fmt.Errorf("%w: user %q may not %s", ErrDenied, user, want)
		}
	}
	return id, nil
}

// verifiedCache remembers for a minute the credentials that passed bcrypt.
// Agents and trackers with users of their own send Basic credentials with
// every metainfo request and piece range, and one bcrypt check at the
// default cost takes tens of milliseconds of CPU. Entries are keyed by an
// HMAC under a key made at start, so the map holds nothing a reader of
// the process memory could test passwords against offline. Only successes
// are kept: a wrong password always pays the full bcrypt price.
type verifiedCache struct {
	key [32]byte
	now func() time.Time
	mu  sync.Mutex
	m   map[[32]byte]time.Time // expiry
}

const (
	verifiedTTL = time.Minute
	// verifiedMax bounds the cache: a fleet uses a handful of users.
	verifiedMax = 4096
)

func newVerifiedCache(now func() time.Time) *verifiedCache {
	c := &verifiedCache{now: now, m: map[[32]byte]time.Time{}}
	rand.Read(c.key[:])
	return c
}

func (c *verifiedCache) sum(user, password string) [32]byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (c *verifiedCache) check(user, password string) bool {
	k := c.sum(user, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[k]
	return ok && c.now().Before(exp)
}

func (c *verifiedCache) add(user, password string) {
	k := c.sum(user, password)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= verifiedMax {
		for k, exp := range c.m {
			if !now.Before(exp) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= verifiedMax {
			clear(c.m)
		}
	}
	c.m[k] = now.Add(verifiedTTL)
}
