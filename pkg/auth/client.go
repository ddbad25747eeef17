package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// ClientConfig is what a tracker or an agent presents to the origins: an
// htpasswd user of its own (in token mode, one the token issuer knows), so
// that a registry without anonymous pull still serves the swarm without
// anyone switching its auth off. The
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

// apply adds c to req as HTTP Basic credentials; anonymous credentials
// leave req as it is.
func (c Credentials) apply(req *http.Request) {
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password)
	}
}

// Transport returns a RoundTripper that authenticates every request
// before passing it to base (http.DefaultTransport when nil). Anonymous
// credentials return base itself.
//
// It speaks both origin modes. A request first carries Basic credentials,
// which htpasswd mode takes. An origin in token mode answers 401 with a
// Bearer challenge instead; the transport then asks the challenge's realm
// for a token of the challenge's scope, with the same Basic credentials
// (the token issuer checks them against its htpasswd file), and sends the
// request once more with the token. Tokens are kept per scope until shortly
// before they expire, and the scope each path needed is remembered, so
// later requests carry a token straight away. Only requests that can be
// sent twice (no body, or a body with GetBody) are retried.
func (c Credentials) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if c.Anonymous() {
		return base
	}
	return &credentialTransport{base: base, creds: c, now: time.Now,
		scopes: map[string]string{}, tokens: map[string]bearerToken{}}
}

// credentialTransport is Transport's RoundTripper; safe for concurrent use.
type credentialTransport struct {
	base  http.RoundTripper
	creds Credentials
	now   func() time.Time

	mu     sync.Mutex
	scopes map[string]string      // scopeKey of a path → the scope it needed
	tokens map[string]bearerToken // scope → token
}

type bearerToken struct {
	value   string
	expires time.Time
}

// maxTokenEntries bounds both maps: a node pulls from a few hundred
// repositories at most; past the bound they start over.
const maxTokenEntries = 1024

// scopeKey groups the paths that need one scope: the blobs of a repository
// share one, its manifests another, metainfo by digest a third.
func scopeKey(p string) string { return path.Dir(p) }

func (t *credentialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	key := scopeKey(req.URL.Path)
	r := req.Clone(req.Context())
	sent, haveToken := t.cached(key)
	if haveToken {
		r.Header.Set("Authorization", "Bearer "+sent)
	} else {
		t.creds.apply(r)
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	ch, ok := parseBearerChallenge(resp.Header.Get("WWW-Authenticate"))
	if !ok || !(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil) {
		return resp, nil // htpasswd mode said no, or nothing to retry with
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	// Another path may have fetched a token for this scope already (a
	// repository's manifests and blobs need the same one); a token that
	// was just refused is not asked for again.
	tok, ok := t.forScope(ch.scope)
	if !ok || (haveToken && tok.value == sent) {
		if tok, err = t.fetchToken(req.Context(), ch); err != nil {
			return nil, err
		}
	}
	t.store(key, ch.scope, tok)
	r = req.Clone(req.Context())
	if req.GetBody != nil {
		if r.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	r.Header.Set("Authorization", "Bearer "+tok.value)
	return t.base.RoundTrip(r)
}

func (t *credentialTransport) cached(key string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	scope, ok := t.scopes[key]
	if !ok {
		return "", false
	}
	tok, ok := t.tokens[scope]
	if !ok || !t.now().Before(tok.expires) {
		return "", false
	}
	return tok.value, true
}

func (t *credentialTransport) forScope(scope string) (bearerToken, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tok, ok := t.tokens[scope]
	return tok, ok && t.now().Before(tok.expires)
}

func (t *credentialTransport) store(key, scope string, tok bearerToken) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.scopes) >= maxTokenEntries {
		clear(t.scopes)
	}
	if len(t.tokens) >= maxTokenEntries {
		clear(t.tokens)
	}
	t.scopes[key] = scope
	t.tokens[scope] = tok
}

// fetchToken asks the challenge's realm for a token, authenticated with
// the Basic credentials.
func (t *credentialTransport) fetchToken(ctx context.Context, ch bearerChallenge) (bearerToken, error) {
	u, err := url.Parse(ch.realm)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bearerToken{}, fmt.Errorf("auth: token realm %q is not an absolute http(s) URL", ch.realm)
	}
	q := u.Query()
	if ch.service != "" {
		q.Set("service", ch.service)
	}
	if ch.scope != "" {
		q.Set("scope", ch.scope)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return bearerToken{}, err
	}
	t.creds.apply(req)
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return bearerToken{}, fmt.Errorf("auth: token from %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return bearerToken{}, fmt.Errorf("auth: token from %s as %q: %s", u.Host, t.creds.username, resp.Status)
	}
	var body tokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return bearerToken{}, fmt.Errorf("auth: token from %s: %w", u.Host, err)
	}
	tok := bearerToken{value: body.Token}
	if tok.value == "" {
		tok.value = body.AccessToken
	}
	if tok.value == "" {
		return bearerToken{}, fmt.Errorf("auth: token from %s: empty", u.Host)
	}
	// The spec's default lifetime is 60s; renew a little early so a token
	// never expires on the way.
	life := time.Duration(body.ExpiresIn) * time.Second
	if life <= 0 {
		life = time.Minute
	}
	tok.expires = t.now().Add(life - min(life/4, 30*time.Second))
	return tok, nil
}

// bearerChallenge is a parsed `Bearer realm="…",service="…",scope="…"`.
type bearerChallenge struct{ realm, service, scope string }

// parseBearerChallenge reads a WWW-Authenticate value of the Bearer
// scheme; ok is false for any other scheme or without a realm.
func parseBearerChallenge(h string) (bearerChallenge, bool) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "bearer") {
		return bearerChallenge{}, false
	}
	var ch bearerChallenge
	for rest = strings.TrimSpace(rest); rest != ""; {
		name, after, ok := strings.Cut(rest, "=")
		if !ok {
			return bearerChallenge{}, false
		}
		name = strings.ToLower(strings.TrimSpace(name))
		var value string
		if value, rest, ok = httpValue(strings.TrimSpace(after)); !ok {
			return bearerChallenge{}, false
		}
		switch name {
		case "realm":
			ch.realm = value
		case "service":
			ch.service = value
		case "scope":
			ch.scope = value
		}
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return ch, ch.realm != ""
}

// httpValue reads a quoted-string (RFC 9110 section 5.6.4) or a token
// from the start of s and returns it with the rest of s.
func httpValue(s string) (value, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		i := strings.IndexByte(s, ',')
		if i < 0 {
			i = len(s)
		}
		return strings.TrimSpace(s[:i]), s[i:], true
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 == len(s) {
				return "", "", false
			}
			i++
			b.WriteByte(s[i])
		case '"':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(s[i])
		}
	}
	return "", "", false
}
