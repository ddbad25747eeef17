package auth

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/reference"
)

// tokenIssuer is the built-in Docker token endpoint. It is read-only after
// construction, so concurrent requests are safe.
type tokenIssuer struct {
	key       []byte
	service   string
	issuer    string
	ttl       time.Duration
	users     *htpasswd
	policy    policy
	anonPull  bool
	challenge string
	now       func() time.Time
}

// tokenResponse is the Docker token spec's response body. Both token and
// access_token carry the token: docker reads the first, OAuth2 clients the
// second.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// NewTokenIssuer returns the token endpoint handler for GET requests in the
// Docker token spec's form (?service=...&scope=...&scope=...). It
// authenticates the caller with HTTP Basic against cfg.Htpasswd and signs
// a token granting the intersection of the requested scopes and what the
// user may do: everything, unless cfg.Users limits the user. Requests
// without credentials get a pull-only token when cfg.AnonymousPull is set,
// and 401 otherwise. Any mode may serve it, but only token mode origins
// accept its tokens. Errors wrap ErrConfig.
func NewTokenIssuer(cfg Config) (http.Handler, error) {
	return newTokenIssuer(cfg, time.Now)
}

// newTokenIssuer is NewTokenIssuer with the clock injectable for tests.
func newTokenIssuer(cfg Config, now func() time.Time) (*tokenIssuer, error) {
	cfg = cfg.applyDefaults()
	if err := validateToken(cfg.Token); err != nil {
		return nil, err
	}
	key, err := loadKey(cfg.Token.KeyFile)
	if err != nil {
		return nil, err
	}
	users, err := loadHtpasswd(cfg.Htpasswd)
	if err != nil {
		return nil, err
	}
	pol, err := newPolicy(cfg.Users, users)
	if err != nil {
		return nil, err
	}
	return &tokenIssuer{
		key:       key,
		service:   cfg.Token.Service,
		issuer:    cfg.Token.Issuer,
		ttl:       cfg.Token.TTL,
		users:     users,
		policy:    pol,
		anonPull:  cfg.AnonymousPull,
		challenge: "Basic realm=" + quote(cfg.Realm),
		now:       now,
	}, nil
}

// ServeHTTP answers one token request.
func (t *tokenIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// containerd tries the OAuth2 POST form first and falls back to
		// GET on 405 when it has a username.
		w.Header().Set("Allow", "GET, HEAD")
		ocierr.Write(w, r, ocierr.New(ocierr.Unsupported, "token requests use GET"))
		return
	}
	q := r.URL.Query()
	if svc := q.Get("service"); svc != "" && svc != t.service {
		ocierr.Write(w, r, ocierr.New(ocierr.Unsupported, "unknown service %q", svc).WithStatus(http.StatusBadRequest))
		return
	}
	scopes, err := parseScopes(q["scope"])
	if err != nil {
		ocierr.Write(w, r, ocierr.Wrap(ocierr.Unsupported, err).WithStatus(http.StatusBadRequest))
		return
	}
	subject, err := t.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", t.challenge)
		ocierr.Write(w, r, ocierr.Wrap(ocierr.Unauthorized, err))
		return
	}
	grant := make([]ResourceActions, 0, len(scopes))
	for _, ra := range scopes {
		if g, ok := t.grant(subject, ra); ok {
			grant = append(grant, g)
		}
	}
	token, now, err := t.sign(subject, grant)
	if err != nil {
		ocierr.Write(w, r, fmt.Errorf("sign token: %w", err))
		return
	}
	b, err := json.Marshal(tokenResponse{
		Token:       token,
		AccessToken: token,
		ExpiresIn:   int(t.ttl / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	})
	if err != nil {
		ocierr.Write(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// authenticate returns the Basic user, or "" for an anonymous caller when
// anonymous pull is on. Credentials that are present must be valid.
func (t *tokenIssuer) authenticate(r *http.Request) (string, error) {
	creds, present, err := authorization(r)
	if err != nil {
		return "", err
	}
	if !present {
		if t.anonPull {
			return "", nil
		}
		return "", errors.New("credentials required")
	}
	if creds.scheme != "basic" {
		return "", errors.New("basic credentials required")
	}
	user, password, err := parseBasic(creds.value)
	if err != nil {
		return "", err
	}
	if !t.users.verify(user, password) {
		return "", errors.New("invalid username or password")
	}
	return user, nil
}

// grant intersects one requested resource with what subject may do ("" is
// anonymous: pull only). Unknown resource types and actions are not
// granted, as the spec asks; ok is false when nothing is.
func (t *tokenIssuer) grant(subject string, want ResourceActions) (ResourceActions, bool) {
	var may []Action
	switch want.Type {
	case TypeRepository:
		if reference.ValidateName(want.Name) != nil {
			return ResourceActions{}, false
		}
	case TypeRegistry:
	default:
		return ResourceActions{}, false
	}
	if subject == "" {
		if t.anonPull && (want.Type == TypeRepository || want.Name == "catalog" || want.Name == MetaInfo.Name) {
			may = []Action{Pull}
		}
	} else {
		may = t.policy.allowed(subject, want.Type, want.Name)
	}
	out := ResourceActions{Type: want.Type, Class: want.Class, Name: want.Name}
	if want.Type == TypeRegistry && want.Name == "catalog" {
		// The catalog is granted as "registry:catalog:*", nothing else.
		if slices.Contains(may, Pull) && slices.Contains(want.Actions, "*") {
			out.Actions = []string{"*"}
		}
	} else {
		for _, a := range may {
			if slices.Contains(want.Actions, string(a)) || slices.Contains(want.Actions, "*") {
				out.Actions = append(out.Actions, string(a))
			}
		}
	}
	return out, len(out.Actions) > 0
}

// sign builds and signs the token, returning it with its issue time.
func (t *tokenIssuer) sign(subject string, grant []ResourceActions) (string, time.Time, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", time.Time{}, err
	}
	now := t.now()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{t.service},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(t.ttl)),
			ID:        hex.EncodeToString(id[:]),
		},
		Access: grant,
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.key)
	return s, now, err
}
