package auth

import (
	"fmt"
	"net/http"
)

// ClientConfig is what a tracker or an agent presents to the origins: an
// htpasswd user of its own, so that a registry without anonymous pull
// still serves the swarm without anyone switching its auth off. The
// password is read from a file, never given on a command line. The zero
// ClientConfig sends no credentials, which suits origins with anonymous
// pull.
type ClientConfig struct {
	// Username is the htpasswd user; a pull-only one is enough
	// (users: {agents: {actions: [pull]}}).
	Username string `yaml:"username"`
	// PasswordFile holds the user's password (trailing newlines ignored).
	PasswordFile string `yaml:"password_file"`
}

// Credentials are a loaded ClientConfig. The zero value is anonymous.
// Safe for concurrent use: it is never changed after Load.
type Credentials struct {
	username, password string
}

// Load reads the password file. A username without a password file, or
// the other way round, is an error wrapping ErrConfig: half a credential
// would silently fall back to anonymous requests.
func (c ClientConfig) Load() (Credentials, error) {
	switch {
	case c.Username == "" && c.PasswordFile == "":
		return Credentials{}, nil
	case c.Username == "" || c.PasswordFile == "":
		return Credentials{}, fmt.Errorf("auth: %w: origin credentials need both username and password_file", ErrConfig)
	case !validUser(c.Username):
		return Credentials{}, fmt.Errorf("auth: %w: origin credentials: invalid username %q", ErrConfig, c.Username)
	}
	pw, err := ReadSecretFile(c.PasswordFile, 1)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{username: c.Username, password: pw}, nil
}

// Anonymous reports whether c sends nothing.
func (c Credentials) Anonymous() bool { return c.username == "" }

// Username is the user c authenticates as ("" when anonymous).
func (c Credentials) Username() string { return c.username }

// Apply adds c to req as HTTP Basic credentials; anonymous credentials
// leave req as it is.
func (c Credentials) Apply(req *http.Request) {
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password)
	}
}

// Transport returns a RoundTripper that applies c to every request before
// passing it to base (http.DefaultTransport when nil). Requests are cloned,
// not changed, as RoundTripper requires.
func (c Credentials) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if c.Anonymous() {
		return base
	}
	return &credentialTransport{base: base, creds: c}
}

type credentialTransport struct {
	base  http.RoundTripper
	creds Credentials
}

func (t *credentialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	t.creds.Apply(r)
	return t.base.RoundTrip(r)
}
