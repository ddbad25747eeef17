package auth

import (
	"fmt"
	"net/http"
	"slices"
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

// loadKey reads the shared HMAC key.
func loadKey(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("auth: %w: token.key_file is required", ErrConfig)
	}
	key, err := ReadSecretFile(path, minKeyLen)
	return []byte(key), err
}

// tokenAuth is token mode: bearer JWTs signed with the shared key.
type tokenAuth struct {
	key      []byte
	realm    string
	service  string
	anonPull bool
	parser   *jwt.Parser
}

func newTokenAuth(cfg Config, now func() time.Time) (*tokenAuth, error) {
	tc := cfg.Token
	if tc.Realm == "" {
		return nil, fmt.Errorf("auth: %w: token.realm (or realm) is required in token mode", ErrConfig)
	}
	if err := validRealmURL(tc.Realm); err != nil {
		return nil, err
	}
	if err := validateToken(tc); err != nil {
		return nil, err
	}
	key, err := loadKey(tc.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tokenAuth{
		key:      key,
		realm:    tc.Realm,
		service:  tc.Service,
		anonPull: cfg.AnonymousPull,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithAudience(tc.Service),
			jwt.WithIssuer(tc.Issuer),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
			jwt.WithTimeFunc(now),
			jwt.WithStrictDecoding(),
		),
	}, nil
}

// unauthorized builds the 401 with a Bearer challenge naming everything
// access needs, so the client asks the issuer for exactly that. A token
// that was sent and refused adds error="invalid_token" (RFC 6750).
func (a *tokenAuth) unauthorized(reason string, access []Access, invalidToken bool) error {
	c := "Bearer realm=" + quote(a.realm) + ",service=" + quote(a.service)
	if s := scopeFor(access); s != "" {
		c += ",scope=" + quote(s)
	}
	if invalidToken {
		c += `,error="invalid_token"`
	}
	return &challengeError{challenge: c, reason: reason}
}

// Authorize checks the bearer token's signature, algorithm, time claims,
// issuer and audience, then that its access claim covers every access.
func (a *tokenAuth) Authorize(r *http.Request, access ...Access) (Identity, error) {
	creds, present, err := authorization(r)
	if err != nil {
		return Identity{}, a.unauthorized(err.Error(), access, true)
	}
	if !present {
		if anonymousAllowed(a.anonPull, access) {
			return Identity{Anonymous: true}, nil
		}
		return Identity{}, a.unauthorized("token required", access, false)
	}
	if creds.scheme != "bearer" {
		return Identity{}, a.unauthorized("bearer token required", access, false)
	}
	c, err := a.verify(creds.value)
	if err != nil {
		return Identity{}, a.unauthorized(err.Error(), access, true)
	}
	id := Identity{Subject: c.Subject, Anonymous: c.Subject == ""}
	for _, want := range access {
		if !granted(c.Access, want) {
			return id, fmt.Errorf("%w: token does not grant %s", ErrDenied, want)
		}
	}
	return id, nil
}

// verify parses and validates a token.
func (a *tokenAuth) verify(token string) (*claims, error) {
	var c claims
	_, err := a.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		// WithValidMethods already refuses everything but HS256; checking
		// the type again keeps a future parser option from letting "none"
		// or an RSA confusion through.
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return a.key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("invalid token: %w", err)
	}
	return &c, nil
}

// granted reports whether a token's access claim covers want. A "*"
// action grants everything on its resource; "registry:catalog:*" is how
// the catalog is granted.
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
