package auth

import (
	"fmt"
	"net/http"
)

// basicAuth is htpasswd mode: HTTP Basic on every request.
type basicAuth struct {
	users     *htpasswd
	policy    policy
	challenge string
	anonPull  bool
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
	if !a.users.verify(user, password) {
		return Identity{}, a.unauthorized("invalid username or password")
	}
	id := Identity{Subject: user}
	for _, want := range access {
		if !a.policy.permits(user, want) {
			return id, fmt.Errorf("%w: user %q may not %s", ErrDenied, user, want)
		}
	}
	return id, nil
}
