package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// minKeyLen is the shortest shared key accepted: HS256 wants 256 bits.
const minKeyLen = 32

// claims are the Docker distribution token claims.
type claims struct {
	jwt.RegisteredClaims
	Access []ResourceActions `json:"access"`
}

// ResourceActions is one entry of a token's access claim.
type ResourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// tokenAuth is token mode: bearer JWTs signed with the shared key.
type tokenAuth struct {
	cfg      TokenConfig
	key      []byte
	anonPull bool
	parser   *jwt.Parser
}

func loadKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("auth: token.key_file is required in token mode")
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	key = []byte(strings.TrimSpace(string(key)))
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("auth: token key in %s is %d bytes, need at least %d", path, len(key), minKeyLen)
	}
	return key, nil
}

func (c *TokenConfig) applyDefaults() {
	if c.Service == "" {
		c.Service = "shoal"
	}
	if c.Issuer == "" {
		c.Issuer = "shoal-token-issuer"
	}
	if c.TTL == 0 {
		c.TTL = 5 * time.Minute
	}
}

func newTokenAuth(cfg Config) (*tokenAuth, error) {
	tc := cfg.Token
	tc.applyDefaults()
	if tc.Realm == "" {
		return nil, errors.New("auth: token.realm is required in token mode")
	}
	key, err := loadKey(tc.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tokenAuth{
		cfg: tc, key: key, anonPull: cfg.AnonymousPull,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithAudience(tc.Service),
			jwt.WithIssuer(tc.Issuer),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(30*time.Second),
		),
	}, nil
}

func (a *tokenAuth) challenge(reason string, access []Access) error {
	c := fmt.Sprintf("Bearer realm=%q,service=%q", a.cfg.Realm, a.cfg.Service)
	if s := scopeString(access); s != "" {
		c += fmt.Sprintf(",scope=%q", s)
	}
	if reason == "insufficient scope" {
		c += `,error="insufficient_scope"`
	}
	return &challengeError{challenge: c, reason: reason}
}

// scopeString renders accesses as space-separated scopes, actions of one
// resource merged: "repository:foo:pull,push".
func scopeString(access []Access) string {
	var order []string
	actions := map[string][]string{}
	for _, a := range access {
		k := a.Type + ":" + a.Name
		if _, ok := actions[k]; !ok {
			order = append(order, k)
		}
		act := string(a.Action)
		if a.Type == "registry" {
			act = "*"
		}
		if !slices.Contains(actions[k], act) {
			actions[k] = append(actions[k], act)
		}
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = k + ":" + strings.Join(actions[k], ",")
	}
	return strings.Join(parts, " ")
}

func (a *tokenAuth) Authorize(r *http.Request, access ...Access) (Identity, error) {
	scheme, creds, present, err := authorization(r)
	if err != nil {
		return Identity{}, a.challenge(err.Error(), access)
	}
	if !present {
		if a.anonPull && pullOnly(access) {
			return Identity{Anonymous: true}, nil
		}
		return Identity{}, a.challenge("token required", access)
	}
	if scheme != "bearer" {
		return Identity{}, a.challenge("bearer token required", access)
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(creds, &c, func(*jwt.Token) (any, error) { return a.key, nil }); err != nil {
		return Identity{}, a.challenge("invalid token: "+err.Error(), access)
	}
	for _, want := range access {
		if !granted(c.Access, want) {
			return Identity{Subject: c.Subject}, fmt.Errorf("%w: token does not grant %s", ErrDenied, want)
		}
	}
	return Identity{Subject: c.Subject}, nil
}

func granted(have []ResourceActions, want Access) bool {
	for _, h := range have {
		if h.Type != want.Type || h.Name != want.Name {
			continue
		}
		if slices.Contains(h.Actions, string(want.Action)) || slices.Contains(h.Actions, "*") {
			return true
		}
	}
	return false
}

// maxScopes bounds how many scopes one token request may ask for.
const maxScopes = 32

// ParseScope parses one Docker token scope, "type:name:action[,action]".
// The name may contain colons only for a registry resource with a port;
// repository names cannot, so the last colon separates the actions.
func ParseScope(s string) (ResourceActions, error) {
	if len(s) > 512 {
		return ResourceActions{}, errors.New("scope too long")
	}
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i <= 0 || typ == "" {
		return ResourceActions{}, fmt.Errorf("malformed scope %q", s)
	}
	name, acts := rest[:i], rest[i+1:]
	if typ != "repository" && typ != "registry" {
		return ResourceActions{}, fmt.Errorf("unknown scope type %q", typ)
	}
	var actions []string
	for a := range strings.SplitSeq(acts, ",") {
		switch a {
		case "pull", "push", "delete", "*":
			if !slices.Contains(actions, a) {
				actions = append(actions, a)
			}
		case "":
		default:
			return ResourceActions{}, fmt.Errorf("unknown action %q", a)
		}
	}
	if len(actions) == 0 {
		return ResourceActions{}, fmt.Errorf("scope %q has no actions", s)
	}
	return ResourceActions{Type: typ, Name: name, Actions: actions}, nil
}

// tokenIssuer is the built-in token endpoint.
type tokenIssuer struct {
	cfg      TokenConfig
	key      []byte
	users    map[string][]byte
	anonPull bool
	now      func() time.Time
}

// NewTokenIssuer returns the handler that issues tokens: it authenticates
// with Basic against the htpasswd file and grants what was asked (an
// authenticated user may pull, push and delete; an anonymous one may only
// pull, and only when anonymous pull is on).
func NewTokenIssuer(cfg Config) (http.Handler, error) {
	tc := cfg.Token
	tc.applyDefaults()
	key, err := loadKey(tc.KeyFile)
	if err != nil {
		return nil, err
	}
	users, err := LoadHtpasswd(cfg.Htpasswd)
	if err != nil {
		return nil, err
	}
	return &tokenIssuer{cfg: tc, key: key, users: users, anonPull: cfg.AnonymousPull, now: time.Now}, nil
}

func (t *tokenIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	if svc := q.Get("service"); svc != "" && svc != t.cfg.Service {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	scopes := q["scope"]
	if len(scopes) > maxScopes {
		http.Error(w, "too many scopes", http.StatusBadRequest)
		return
	}
	subject, anonymous := "", true
	if scheme, creds, present, err := authorization(r); present {
		user, pw, ok := parseBasic(creds)
		if err != nil || scheme != "basic" || !ok || !checkPassword(t.users, user, pw) {
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal-token"`)
			http.Error(w, "invalid credentials", http.StatusUnauthorized)
			return
		}
		subject, anonymous = user, false
	} else if !t.anonPull {
		w.Header().Set("WWW-Authenticate", `Basic realm="shoal-token"`)
		http.Error(w, "credentials required", http.StatusUnauthorized)
		return
	}
	var grant []ResourceActions
	for _, s := range scopes {
		for one := range strings.FieldsSeq(s) {
			ra, err := ParseScope(one)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if anonymous {
				ra.Actions = slices.DeleteFunc(ra.Actions, func(a string) bool { return a != "pull" && !(ra.Type == "registry" && a == "*") })
			}
			if len(ra.Actions) > 0 {
				grant = append(grant, ra)
			}
		}
	}
	now := t.now()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: t.cfg.Issuer, Subject: subject, Audience: jwt.ClaimStrings{t.cfg.Service},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(t.cfg.TTL)),
		},
		Access: grant,
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.key)
	if err != nil {
		http.Error(w, "cannot sign token", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": signed, "access_token": signed,
		"expires_in": int(t.cfg.TTL.Seconds()), "issued_at": now.UTC().Format(time.RFC3339),
	})
}
