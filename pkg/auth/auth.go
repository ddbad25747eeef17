// Package auth decides who may pull from and push to the origin's /v2 API:
// HTTP Basic against a bcrypt htpasswd file, or Docker token auth where
// bearer tokens are HS256 JWTs signed with a key that the token issuer and
// the origins share. It also provides that token issuer.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Action is what a request wants to do to a repository.
type Action string

// The actions of the Docker token scope grammar that the origin checks.
const (
	Pull   Action = "pull"
	Push   Action = "push"
	Delete Action = "delete"
)

// allActions is every repository action, in the order tokens list them.
var allActions = [...]Action{Pull, Push, Delete}

// Resource types of the Docker token scope grammar.
const (
	// TypeRepository scopes name a repository ("repository:foo/bar:pull").
	TypeRepository = "repository"
	// TypeRegistry scopes name the registry itself: the catalog
	// ("registry:catalog:*") and the metainfo of blobs by digest
	// ("registry:metainfo:pull").
	TypeRegistry = "registry"
)

// MetaInfo is the access a metainfo request needs. Metainfo (a blob's
// piece hashes) is asked for by digest alone, by trackers and agents on
// behalf of a whole swarm, so it is a pull outside any repository:
// anonymous pull allows it as it allows a blob GET, and otherwise any user
// who may pull from some repository may read it.
var MetaInfo = Access{Type: TypeRegistry, Name: "metainfo", Action: Pull}

// Access is one requested permission: Type "repository" with a repository
// Name, or Type "registry" with Name "catalog" (the catalog listing, asked
// for with Action Pull and granted by "registry:catalog:*") or "metainfo"
// (see MetaInfo).
type Access struct {
	Type   string
	Name   string
	Action Action
}

// String renders the access as a scope with one action, for error messages.
func (a Access) String() string { return a.Type + ":" + a.Name + ":" + string(a.Action) }

// Identity is who a request was authenticated as. Subject is the htpasswd
// user or the token's "sub" claim; Anonymous is set when no credentials
// were needed (mode none, anonymous pull, or an anonymous token).
type Identity struct {
	Subject   string
	Anonymous bool
}

// Errors returned (wrapped) by Authorize, New and NewTokenIssuer. Callers
// tell them apart with errors.Is.
var (
	// ErrUnauthorized means no or invalid credentials: answer 401 and set
	// WWW-Authenticate to Challenge(err) so the client knows how to log in.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDenied means valid credentials without the rights asked for:
	// answer 403; logging in again would not help.
	ErrDenied = errors.New("denied")
	// ErrConfig means the configuration or a file it names is unusable; it
	// is returned at start so a typo never silently opens the registry.
	ErrConfig = errors.New("invalid auth configuration")
)

// Authorizer decides whether an HTTP request may perform access. An
// Authorizer is safe for concurrent use; it keeps no per-request state.
type Authorizer interface {
	// Authorize returns the caller's identity when every access is allowed.
	// Otherwise it returns an error that wraps ErrUnauthorized (no or
	// invalid credentials: the caller answers 401 and must set
	// WWW-Authenticate to Challenge(err)) or ErrDenied (valid credentials,
	// insufficient rights: 403). With no access at all (the /v2/ base
	// check) credentials are still required unless the mode is none, so
	// clients learn the challenge from their first request.
	Authorize(r *http.Request, access ...Access) (Identity, error)
}

// Mode names, as Config.Mode spells them.
const (
	ModeNone     = "none"
	ModeHtpasswd = "htpasswd"
	ModeToken    = "token"
)

// Config selects and configures the mode. The zero Config is mode none.
type Config struct {
	// Mode is "none" (default: everything allowed), "htpasswd" or "token".
	Mode string `yaml:"mode"`
	// Realm is the Basic realm shown to users (default "shoal"), and the
	// token realm when Token.Realm is empty.
	Realm string `yaml:"realm"`
	// Htpasswd is a bcrypt htpasswd file, used by htpasswd mode and by the
	// token issuer to check passwords.
	Htpasswd string `yaml:"htpasswd"`
	// AnonymousPull lets requests without credentials pull and list tags
	// and the catalog; push and delete still need credentials.
	AnonymousPull bool `yaml:"anonymous_pull"`
	// Users optionally limits named htpasswd users; see UserPolicy. A user
	// not listed may pull, push and delete everything. Enforced by
	// htpasswd mode and by the token issuer (in token mode the origin
	// trusts what the token grants).
	Users map[string]UserPolicy `yaml:"users"`
	// Token configures token mode and the token issuer.
	Token TokenConfig `yaml:"token"`
}

// TokenConfig configures Docker token auth. The origins and the issuer
// must agree on Service, Issuer and the key.
type TokenConfig struct {
	// Realm is the absolute URL clients fetch tokens from, e.g.
	// http://127.0.0.1:5000/auth/token; sent in the Bearer challenge.
	Realm string `yaml:"realm"`
	// Service is the token audience (default "shoal").
	Service string `yaml:"service"`
	// Issuer is the token "iss" claim (default "shoal-token-issuer").
	Issuer string `yaml:"issuer"`
	// KeyFile holds the shared HMAC key: at least 32 bytes, trailing
	// newlines ignored (so `openssl rand -hex 32 > key` works).
	KeyFile string `yaml:"key_file"`
	// TTL is the lifetime of issued tokens (default 5m).
	TTL time.Duration `yaml:"ttl"`
}

// Defaults applied by applyDefaults.
const (
	defaultRealm   = "shoal"
	defaultService = "shoal"
	defaultIssuer  = "shoal-token-issuer"
	defaultTTL     = 5 * time.Minute
	// leeway absorbs clock skew between the issuer and the origins.
	leeway = 30 * time.Second
)

// applyDefaults returns a copy of c with defaults filled in.
func (c Config) applyDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeNone
	}
	if c.Token.Realm == "" {
		c.Token.Realm = c.Realm
	}
	if c.Realm == "" {
		c.Realm = defaultRealm
	}
	if c.Token.Service == "" {
		c.Token.Service = defaultService
	}
	if c.Token.Issuer == "" {
		c.Token.Issuer = defaultIssuer
	}
	if c.Token.TTL == 0 {
		c.Token.TTL = defaultTTL
	}
	return c
}

// validateUnset rejects settings that would be ignored because no mode was
// chosen: "htpasswd: x" without "mode: htpasswd" must not leave the
// registry open.
func validateUnset(c Config) error {
	if c.Mode != "" {
		return nil
	}
	if c.Htpasswd != "" || c.Token.KeyFile != "" || c.AnonymousPull || len(c.Users) > 0 {
		return fmt.Errorf("auth: %w: mode is not set but other auth settings are; set mode (none, htpasswd or token)", ErrConfig)
	}
	return nil
}

// validateToken checks the token settings both the authorizer and the
// issuer need.
func validateToken(tc TokenConfig) error {
	if tc.TTL < 0 {
		return fmt.Errorf("auth: %w: token.ttl %s is negative", ErrConfig, tc.TTL)
	}
	if strings.ContainsAny(tc.Service, " \"\\") || strings.ContainsAny(tc.Issuer, "\"\\") {
		return fmt.Errorf("auth: %w: token.service and token.issuer must not contain quotes or backslashes", ErrConfig)
	}
	return nil
}

// New builds the Authorizer cfg describes, validating it and loading its
// files. Errors wrap ErrConfig.
func New(cfg Config) (Authorizer, error) {
	return newAuthorizer(cfg, time.Now)
}

// newAuthorizer is New with the clock injectable for tests.
func newAuthorizer(cfg Config, now func() time.Time) (Authorizer, error) {
	if err := validateUnset(cfg); err != nil {
		return nil, err
	}
	cfg = cfg.applyDefaults()
	switch cfg.Mode {
	case ModeNone:
		return allowAll{}, nil
	case ModeHtpasswd:
		return newBasicAuth(cfg)
	case ModeToken:
		return newTokenAuth(cfg, now)
	}
	return nil, fmt.Errorf("auth: %w: unknown mode %q (want none, htpasswd or token)", ErrConfig, cfg.Mode)
}

// allowAll is mode none.
type allowAll struct{}

func (allowAll) Authorize(*http.Request, ...Access) (Identity, error) {
	return Identity{Anonymous: true}, nil
}

// challengeError is an ErrUnauthorized that carries the WWW-Authenticate
// value the 401 must be sent with.
type challengeError struct {
	challenge string
	reason    string
}

func (e *challengeError) Error() string { return "unauthorized: " + e.reason }
func (e *challengeError) Unwrap() error { return ErrUnauthorized }

// Challenge returns the WWW-Authenticate header value for a 401 produced by
// Authorize: `Basic realm="..."` or `Bearer realm="...",service="...",
// scope="..."`. It returns "" for errors that carry no challenge.
func Challenge(err error) string {
	if ce, ok := errors.AsType[*challengeError](err); ok {
		return ce.challenge
	}
	return ""
}

// quote renders s as an HTTP quoted-string (RFC 9110 section 5.6.4). Go's
// %q would escape non-ASCII the Go way, which no HTTP client undoes.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// anonymousAllowed reports whether a request without credentials may
// perform access: only with anonymous pull on, and only for a non-empty
// list of pulls. The empty list (GET /v2/) still challenges, as Docker Hub
// does: docker and ggcr learn the auth scheme from that first 401 and
// would otherwise never send credentials for a later push.
func anonymousAllowed(anonPull bool, access []Access) bool {
	if !anonPull || len(access) == 0 {
		return false
	}
	for _, a := range access {
		if a.Action != Pull {
			return false
		}
	}
	return true
}

// validRealmURL checks that a token realm is an absolute http(s) URL, the
// only kind clients will fetch.
func validRealmURL(realm string) error {
	u, err := url.Parse(realm)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("auth: %w: token.realm %q is not an absolute http(s) URL", ErrConfig, realm)
	}
	if strings.ContainsAny(realm, "\"\\") {
		return fmt.Errorf("auth: %w: token.realm must not contain quotes or backslashes", ErrConfig)
	}
	return nil
}
