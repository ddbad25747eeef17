package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/shoal-project/shoal/pkg/ocierr"
)

// Pull checks: the agent serves nothing of a repository — cached or not,
// blob or manifest — until the origin has said that this client may pull
// that object from that repository.
//
//   - The question is a HEAD of the same /v2 path at the origin, carrying
//     the client's own Authorization header as it came. The origin then
//     answers with its own rules: who may pull which repository, and
//     whether the repository holds the digest (a blob cached for one
//     repository is not served under another).
//   - The agent's own origin_auth user is never used for this: it may pull
//     everything, its clients may not.
//   - A yes is remembered per (credential, registry, repository, object)
//     for PullCheckTTL, so an anonymous image costs the origin one HEAD
//     per object per TTL, not one per request. A no is not remembered: a
//     push or a grant shows at once, and a refusal costs the origin no
//     bytes.
//   - 401 is passed on with the origin's challenge, so the client logs in
//     at the origin's realm and comes back with credentials; 403 is
//     DENIED; 404 is BLOB_UNKNOWN or MANIFEST_UNKNOWN. No answer is 503:
//     nothing is served unchecked.

// maxPullChecks bounds the remembered answers. An entry is ~150 bytes; a
// node pulling a few hundred images holds a few thousand.
const maxPullChecks = 16384

// checkKey is one remembered yes.
type checkKey struct {
	cred   [sha256.Size]byte // of the Authorization header values; zero when none
	ns     string
	repo   string
	object string // "blobs/<digest>" or "manifests/<reference>"
}

func (k checkKey) String() string {
	return fmt.Sprintf("%x\x00%s\x00%s\x00%s", k.cred, k.ns, k.repo, k.object)
}

// checkResult is what the origins answered.
type checkResult struct {
	status    int
	challenge string // WWW-Authenticate of a 401
	// retryAfter is the Retry-After of a 429: an origin's uplink is full,
	// or the upstream registry it pulls through is rate limiting.
	retryAfter string
}

// pullChecks asks origins and remembers their yeses.
type pullChecks struct {
	ttl    time.Duration
	now    func() time.Time
	flight singleflight.Group

	mu  sync.Mutex
	yes map[checkKey]time.Time // expiry
}

// bareClient asks origins over rt with only what the client sent: it
// carries no credentials of the agent's own.
func bareClient(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: rt,
		// The origin answers a HEAD itself; a redirect would take the
		// client's credentials somewhere not configured here.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func newPullChecks(ttl time.Duration) *pullChecks {
	return &pullChecks{
		ttl: ttl,
		now: time.Now,
		yes: map[checkKey]time.Time{},
	}
}

func (c *pullChecks) allowed(k checkKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.yes[k]
	if ok && c.now().After(exp) {
		delete(c.yes, k)
		return false
	}
	return ok
}

func (c *pullChecks) remember(k checkKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.yes) >= maxPullChecks {
		for k, exp := range c.yes {
			if now.After(exp) {
				delete(c.yes, k)
			}
		}
		// Still full of live entries: drop arbitrary ones. A dropped yes
		// costs one more HEAD, never a wrong answer.
		for k := range c.yes {
			if len(c.yes) < maxPullChecks {
				break
			}
			delete(c.yes, k)
		}
	}
	c.yes[k] = now.Add(c.ttl)
}

// credentialHash identifies the client's credentials without keeping
// them: the answer for one Authorization header is never used for another.
func credentialHash(h http.Header) [sha256.Size]byte {
	vs := h.Values("Authorization")
	if len(vs) == 0 {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256([]byte(strings.Join(vs, "\n")))
}

// checkPull returns nil when the origin lets r's client pull object
// ("blobs/<digest>" or "manifests/<reference>") from repository repo of
// registry ns. Otherwise it returns the OCI error to answer with, having
// set the origin's challenge on w for a 401.
func (a *Agent) checkPull(w http.ResponseWriter, r *http.Request, ns string, up Upstream, repo, object string, unknown ocierr.Code) error {
	k := checkKey{cred: credentialHash(r.Header), ns: ns, repo: repo, object: object}
	if a.checks.allowed(k) {
		a.metrics.pullChecks.WithLabelValues("hit").Inc()
		return nil
	}
	// Clients asking at once with the same credentials for the same object
	// share one question; the answer is theirs alike.
	v, err, _ := a.checks.flight.Do(k.String(), func() (any, error) {
		timeout := a.cfg.OriginTimeout
		if _, pulled := a.adverts.lookup(ns); pulled {
			// The origin answers once it holds the object, which for a
			// blob still in the upstream means after fetching all of it.
			timeout = a.cfg.UpstreamTimeout
		}
		return a.askOrigin(r, up, repo, object, timeout)
	})
	if err != nil {
		a.metrics.pullChecks.WithLabelValues("error").Inc()
		return ocierr.New(ocierr.Unavailable, "cannot ask the origin whether %s/%s may be pulled: %v", repo, object, err).
			WithStatus(http.StatusServiceUnavailable)
	}
	res := v.(checkResult)
	switch {
	case res.status >= 200 && res.status < 300:
		a.checks.remember(k)
		a.metrics.pullChecks.WithLabelValues("allowed").Inc()
		return nil
	case res.status == http.StatusUnauthorized:
		a.metrics.pullChecks.WithLabelValues("unauthorized").Inc()
		if res.challenge != "" {
			w.Header().Set("WWW-Authenticate", res.challenge)
		}
		return ocierr.New(ocierr.Unauthorized, "the origin wants credentials to pull %s", repo)
	case res.status == http.StatusForbidden:
		a.metrics.pullChecks.WithLabelValues("denied").Inc()
		return ocierr.New(ocierr.Denied, "the origin does not let this client pull %s", repo)
	case res.status == http.StatusTooManyRequests:
		a.metrics.pullChecks.WithLabelValues("throttled").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter(res.retryAfter)/time.Second)))
		return ocierr.New(ocierr.TooManyRequests, "the origin asks to come back later for %s/%s", repo, object)
	case res.status == http.StatusNotFound:
		a.metrics.pullChecks.WithLabelValues("unknown").Inc()
		return ocierr.New(unknown, "%s in %s", strings.TrimPrefix(strings.TrimPrefix(object, "blobs/"), "manifests/"), repo)
	}
	a.metrics.pullChecks.WithLabelValues("error").Inc()
	return ocierr.New(ocierr.Unavailable, "the origin answered %d when asked whether %s/%s may be pulled", res.status, repo, object).
		WithStatus(http.StatusServiceUnavailable)
}

// askOrigin sends the HEAD to each origin in turn until one answers other
// than with a server error. It runs detached from r's context: waiters
// that share it must not fail because the first client went away.
func (a *Agent) askOrigin(r *http.Request, up Upstream, repo, object string, timeout time.Duration) (checkResult, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), timeout)
	defer cancel()
	var errs []error
	for _, base := range up.Origins {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+repo+"/"+object, nil)
		if err != nil {
			return checkResult{}, err
		}
		if vs := r.Header.Values("Authorization"); len(vs) > 0 {
			req.Header["Authorization"] = vs
		}
		if strings.HasPrefix(object, "manifests/") {
			accept := r.Header.Get("Accept")
			if accept == "" {
				accept = acceptAll
			}
			req.Header.Set("Accept", accept)
		}
		hc := up.bare
		if timeout > a.cfg.OriginTimeout {
			hc = up.bareSlow
		}
		resp, err := hc.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			errs = append(errs, fmt.Errorf("%s: %s", base, resp.Status))
			continue
		}
		return checkResult{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"),
			retryAfter: resp.Header.Get("Retry-After")}, nil
	}
	if len(errs) == 0 {
		return checkResult{}, errors.New("no origins configured")
	}
	return checkResult{}, fmt.Errorf("origins unreachable: %w", errors.Join(errs...))
}
