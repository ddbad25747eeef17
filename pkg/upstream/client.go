package upstream

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/pace"
)

// The errors an upstream answer maps to; an *Error wraps one of them.
var (
	// ErrNotFound: the upstream does not have it (404).
	ErrNotFound = errors.New("not found upstream")
	// ErrDenied: the upstream refused the origin's credentials (401, 403).
	ErrDenied = errors.New("upstream refused access")
	// ErrThrottled: the upstream said 429; Error.RetryAfter says when to
	// come back.
	ErrThrottled = errors.New("upstream rate limit")
	// ErrUnavailable: the upstream could not be reached or failed (5xx,
	// network errors, malformed answers).
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrMismatch: the upstream sent bytes that do not hash to the digest
	// asked for.
	ErrMismatch = errors.New("upstream sent content that does not match its digest")
)

// Error is an upstream's answer that was not a success.
type Error struct {
	Op         string        // "GET library/debian/manifests/12"
	Status     int           // HTTP status, 0 for a transport error
	RetryAfter time.Duration // from Retry-After on 429 and 503, else 0
	Kind       error         // one of the Err* sentinels
	Err        error         // the cause, if any
}

func (e *Error) Error() string {
	s := "upstream " + e.Op + ": " + e.Kind.Error()
	if e.Status != 0 {
		s += " (" + strconv.Itoa(e.Status) + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrNotFound) and its kin work.
func (e *Error) Is(target error) bool { return target == e.Kind }
func (e *Error) Unwrap() error        { return e.Err }

// maxRetryAfter caps the wait passed on to clients.
const maxRetryAfter = time.Hour

// retryAfter reads Retry-After as seconds or an HTTP date, bounded to
// [1s, maxRetryAfter]; absent or malformed is 0.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" || len(v) > 64 {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		d = time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0
	}
	return min(max(d, time.Second), maxRetryAfter)
}

// statusError turns a non-success response into an *Error.
func statusError(op string, resp *http.Response) *Error {
	e := &Error{Op: op, Status: resp.StatusCode}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		e.Kind = ErrNotFound
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		e.Kind = ErrDenied
	case resp.StatusCode == http.StatusTooManyRequests:
		e.Kind = ErrThrottled
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	default:
		e.Kind = ErrUnavailable
		if resp.StatusCode == http.StatusServiceUnavailable {
			e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return e
}

// Client speaks the distribution API to one upstream registry, as a
// client: Basic auth, or the Docker token flow (a Bearer challenge's realm,
// service and scope; anonymous tokens when no credentials are set), over
// TLS with the configured CA and client certificate. At most
// MaxConcurrent requests are in flight. Safe for concurrent use.
type Client struct {
	cfg        Config
	hc         *http.Client
	user, pass string
	sem        chan struct{}
	bandwidth  *rate.Limiter // nil: no cap

	mu     sync.Mutex
	basic  bool             // the upstream asked for Basic: send it up front
	tokens map[string]token // scope → bearer token
}

type token struct {
	value   string
	expires time.Time
}

// NewClient makes a client for cfg (see Config for the defaults).
func NewClient(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Namespace, err)
	}
	c := &Client{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrent), tokens: map[string]token{},
		bandwidth: pace.NewLimiter(cfg.Bandwidth)}
	if cfg.PasswordFile != "" {
		pw, err := auth.ReadSecretFile(cfg.PasswordFile, 1)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: password_file: %w", cfg.Namespace, err)
		}
		c.user, c.pass = cfg.Username, pw
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = cfg.Timeout
	tr.MaxIdleConnsPerHost = cfg.MaxConcurrent
	if cfg.TLS.Enabled() {
		tc, err := cfg.TLS.Client()
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tls: %w", cfg.Namespace, err)
		}
		// Public registries still serve TLS 1.2; the cluster's own 1.3
		// floor is for links Shoal controls.
		tc.MinVersion = tls.VersionTLS12
		tr.TLSClientConfig = tc
	}
	c.hc = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		// Blob GETs redirect to storage (Docker Hub: a CDN). Go drops
		// the Authorization header when the host changes; never follow
		// an https upstream down to plain http.
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return errors.New("redirect from https to http refused")
		}
		return nil
	}}
	return c, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

func (c *Client) acquire(ctx context.Context) (func(), error) {
	select {
	case c.sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-c.sem }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// do sends method on /v2/<repo>/<path> with the upstream's auth and
// returns a 2xx response, or an *Error. The caller closes the body and
// then calls release (the concurrency slot stays taken while a body is
// read).
func (c *Client) do(ctx context.Context, method, repo, path string, hdr http.Header) (*http.Response, func(), error) {
	op := method + " " + repo + "/" + path
	release, err := c.acquire(ctx)
	if err != nil {
		return nil, nil, &Error{Op: op, Kind: ErrUnavailable, Err: err}
	}
	u := c.cfg.URL + "/v2/" + repo + "/" + path
	scope := "repository:" + repo + ":pull"
	resp, err := c.send(ctx, method, u, hdr, c.authFor(scope))
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		authz, aerr := c.answerChallenge(ctx, resp, scope)
		drain(resp)
		if aerr != nil {
			release()
			return nil, nil, &Error{Op: op, Status: http.StatusUnauthorized, Kind: ErrDenied, Err: aerr}
		}
		resp, err = c.send(ctx, method, u, hdr, authz)
	}
	if err != nil {
		release()
		return nil, nil, &Error{Op: op, Kind: ErrUnavailable, Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := statusError(op, resp)
		drain(resp)
		release()
		return nil, nil, e
	}
	return resp, release, nil
}

func (c *Client) send(ctx context.Context, method, u string, hdr http.Header, authz string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return c.hc.Do(req)
}

// drain reads a little of a body so the connection can be reused.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// authFor is the Authorization to send before any challenge: a token
// already held for scope, or Basic once the upstream has asked for it.
func (c *Client) authFor(scope string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[scope]; ok && time.Now().Before(t.expires) {
		return "Bearer " + t.value
	}
	if c.basic && c.user != "" {
		return basicAuth(c.user, c.pass)
	}
	return ""
}

func basicAuth(user, pass string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// answerChallenge returns the Authorization a 401's challenge asks for.
func (c *Client) answerChallenge(ctx context.Context, resp *http.Response, scope string) (string, error) {
	var chs []Challenge
	for _, h := range resp.Header.Values("WWW-Authenticate") {
		cs, err := ParseChallenges(h)
		if err != nil {
			return "", err
		}
		chs = append(chs, cs...)
	}
	for _, ch := range chs {
		if ch.Scheme == "bearer" {
			t, err := c.fetchToken(ctx, ch, scope)
			if err != nil {
				return "", err
			}
			return "Bearer " + t, nil
		}
	}
	for _, ch := range chs {
		if ch.Scheme == "basic" {
			if c.user == "" {
				return "", errors.New("the upstream wants Basic credentials and none are configured")
			}
			c.mu.Lock()
			c.basic = true
			c.mu.Unlock()
			return basicAuth(c.user, c.pass), nil
		}
	}
	return "", errors.New("no Bearer or Basic challenge in the 401")
}

// maxTokens bounds the token cache; past it, it starts over.
const maxTokens = 4096

// fetchToken asks the challenge's realm for a token of scope (the
// challenge's own scope when it names one), with the origin's Basic
// credentials when it has them and anonymously otherwise.
func (c *Client) fetchToken(ctx context.Context, ch Challenge, scope string) (string, error) {
	realm := ch.Params["realm"]
	u, err := url.Parse(realm)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("token realm %.100q is not an absolute http(s) URL", realm)
	}
	if c.user != "" && u.Scheme == "http" && strings.HasPrefix(c.cfg.URL, "https:") {
		// Credentials meant for a TLS upstream are not sent in clear
		// because its challenge says so.
		return "", fmt.Errorf("token realm %s is plain http for an https upstream", u.Host)
	}
	if s := ch.Params["scope"]; s != "" {
		scope = s
	}
	q := u.Query()
	if svc := ch.Params["service"]; svc != "" {
		q.Set("service", svc)
	}
	q.Set("scope", scope)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token from %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token from %s: %s", u.Host, resp.Status)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return "", fmt.Errorf("token from %s: %w", u.Host, err)
	}
	t := body.Token
	if t == "" {
		t = body.AccessToken
	}
	if t == "" || len(t) > 16<<10 || strings.ContainsAny(t, "\r\n") {
		return "", fmt.Errorf("token from %s: empty or malformed", u.Host)
	}
	// The spec's default lifetime is 60s; renew early so a token never
	// expires on the way, and never keep one past an hour.
	life := min(time.Duration(max(body.ExpiresIn, 0))*time.Second, time.Hour)
	if life <= 0 {
		life = time.Minute
	}
	c.mu.Lock()
	if len(c.tokens) >= maxTokens {
		clear(c.tokens)
	}
	c.tokens[scope] = token{value: t, expires: time.Now().Add(life - life/4)}
	c.mu.Unlock()
	return t, nil
}

// AcceptManifests is every manifest type the origin stores.
const AcceptManifests = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// Manifest is a manifest read from the upstream, checked against its digest.
type Manifest struct {
	Body      []byte
	MediaType string
	Digest    digest.Digest
}

// ResolveTag asks the upstream which manifest tag names, with a HEAD
// (registries such as Docker Hub do not count those against pull limits).
// ok is false when the upstream answers without a digest: then GET it.
func (c *Client) ResolveTag(ctx context.Context, repo, tag string) (d digest.Digest, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	resp, release, err := c.do(ctx, http.MethodHead, repo, "manifests/"+tag, http.Header{"Accept": {AcceptManifests}})
	if err != nil {
		return "", false, err
	}
	drain(resp)
	release()
	d, perr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	return d, perr == nil, nil
}

// GetManifest reads the manifest ref names (a tag or a digest). By digest,
// the body must hash to it; by tag, to the digest the upstream claims, if
// it claims one.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	op := "GET " + repo + "/manifests/" + ref
	resp, release, err := c.do(ctx, http.MethodGet, repo, "manifests/"+ref, http.Header{"Accept": {AcceptManifests}})
	if err != nil {
		return nil, err
	}
	defer release()
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, manifest.MaxSize+1))
	if err != nil {
		return nil, &Error{Op: op, Kind: ErrUnavailable, Err: err}
	}
	if len(body) > manifest.MaxSize {
		return nil, &Error{Op: op, Kind: ErrUnavailable, Err: fmt.Errorf("manifest over %d bytes", manifest.MaxSize)}
	}
	want, _ := digest.Parse(ref)
	if want == "" {
		want, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	}
	alg := digest.SHA256
	if want != "" {
		alg = want.Algorithm()
	}
	h := alg.Hash()
	h.Write(body)
	got := digest.FromHash(alg, h)
	if want != "" && got != want {
		return nil, &Error{Op: op, Kind: ErrMismatch, Err: fmt.Errorf("hashes to %s, not %s", got, want)}
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return &Manifest{Body: body, MediaType: strings.TrimSpace(mt), Digest: got}, nil
}

// GetBlob starts a read of blob d. The caller reads the body (its bytes
// are not verified here: the store does that) and closes it, which also
// frees the concurrency slot. size is -1 when the upstream does not say.
func (c *Client) GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	resp, release, err := c.do(ctx, http.MethodGet, repo, "blobs/"+d.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	var body io.Reader = resp.Body
	if c.bandwidth != nil {
		body = &pace.Reader{Ctx: ctx, R: resp.Body, Lim: c.bandwidth}
	}
	return &releasingBody{Reader: body, Closer: resp.Body, release: release}, resp.ContentLength, nil
}

type releasingBody struct {
	io.Reader
	io.Closer
	release func()
}

func (b *releasingBody) Close() error {
	err := b.Closer.Close()
	b.release()
	return err
}
