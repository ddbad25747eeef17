// Package auth decides who may pull from and push to the origin: HTTP Basic
// against a bcrypt htpasswd file, or Docker token auth where bearer tokens are
// JWTs signed with a key the token issuer and the origins share.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Action is what a request wants to do to a repository.
type Action string

// The actions of the Docker token scope grammar.
const (
	Pull   Action = "pull"
	Push   Action = "push"
	Delete Action = "delete"
)

// Access is one requested permission: Type "repository" with a repository
// Name, or Type "registry" with Name "catalog".
type Access struct {
	Type   string
	Name   string
	Action Action
}

func (a Access) String() string { return a.Type + ":" + a.Name + ":" + string(a.Action) }

// Identity is who a request was authenticated as.
type Identity struct {
	Subject   string
	Anonymous bool
}

// Errors returned (wrapped) by Authorize.
var (
	// ErrUnauthorized: no or invalid credentials; answer 401 with Challenge.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDenied: valid credentials without the rights asked for; answer 403.
	ErrDenied = errors.New("denied")
)

// Authorizer decides whether an HTTP request may perform access.
type Authorizer interface {
	// Authorize returns the caller's identity when every access is allowed;
	// otherwise an error wrapping ErrUnauthorized or ErrDenied.
	Authorize(r *http.Request, access ...Access) (Identity, error)
}

// Config selects and configures the mode.
type Config struct {
	// Mode is "none" (default: everything allowed), "htpasswd" or "token".
	Mode string `yaml:"mode"`
	// Realm names the Basic realm.
	Realm string `yaml:"realm"`
	// Htpasswd is a bcrypt htpasswd file (htpasswd mode; the token issuer).
	Htpasswd string `yaml:"htpasswd"`
	// AnonymousPull lets requests without credentials pull and list.
	AnonymousPull bool `yaml:"anonymous_pull"`
	// Token configures token mode.
	Token TokenConfig `yaml:"token"`
}

// TokenConfig configures Docker token auth.
type TokenConfig struct {
	// Realm is the URL clients fetch tokens from.
	Realm string `yaml:"realm"`
	// Service is the token audience.
	Service string `yaml:"service"`
	// Issuer is the token issuer.
	Issuer string `yaml:"issuer"`
	// KeyFile holds the shared HMAC key (at least 32 bytes).
	KeyFile string `yaml:"key_file"`
	// TTL is the lifetime of issued tokens (default 5m).
	TTL time.Duration `yaml:"ttl"`
}

// New builds the Authorizer cfg describes, loading its files.
func New(cfg Config) (Authorizer, error) {
	switch cfg.Mode {
	case "", "none":
		return allowAll{}, nil
	case "htpasswd":
		users, err := LoadHtpasswd(cfg.Htpasswd)
		if err != nil {
			return nil, err
		}
		return &basicAuth{users: users, realm: realmOr(cfg.Realm), anonPull: cfg.AnonymousPull}, nil
	case "token":
		return newTokenAuth(cfg)
	}
	return nil, fmt.Errorf("auth: unknown mode %q (want none, htpasswd or token)", cfg.Mode)
}

func realmOr(r string) string {
	if r == "" {
		return "shoal"
	}
	return r
}

type allowAll struct{}

func (allowAll) Authorize(*http.Request, ...Access) (Identity, error) {
	return Identity{Anonymous: true}, nil
}

// challengeError carries the WWW-Authenticate value of a 401.
type challengeError struct {
	challenge string
	reason    string
}

func (e *challengeError) Error() string { return "unauthorized: " + e.reason }
func (e *challengeError) Unwrap() error { return ErrUnauthorized }

// Challenge returns the WWW-Authenticate header value for a 401 produced by
// Authorize, or "" for other errors.
func Challenge(err error) string {
	var ce *challengeError
	if errors.As(err, &ce) {
		return ce.challenge
	}
	return ""
}

// pullOnly reports whether every access is a read, which anonymous pull allows.
func pullOnly(access []Access) bool {
	for _, a := range access {
		if a.Action != Pull {
			return false
		}
	}
	return true
}

// maxAuthHeader bounds the Authorization header we look at; real ones are
// under a few KiB even for JWTs.
const maxAuthHeader = 8 << 10

// authorization returns the scheme and credentials of the Authorization
// header; ok is false when there is none.
func authorization(r *http.Request) (scheme, creds string, ok bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", "", false, nil
	}
	if len(h) > maxAuthHeader {
		return "", "", true, errors.New("authorization header too long")
	}
	scheme, creds, found := strings.Cut(h, " ")
	if !found {
		return "", "", true, errors.New("malformed authorization header")
	}
	return strings.ToLower(scheme), strings.TrimSpace(creds), true, nil
}
