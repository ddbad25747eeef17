package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/shoal-project/shoal/pkg/pace"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// upstreamNS is the registry name the fleet pulls the image under with
// --upstream (containerd's ?ns=); the origins keep it under the same
// prefix.
const upstreamNS = "upstream.loadtest"

// upstreamRegistry is the real third-party registry of --upstream:
// Debian's docker-registry (distribution 2.8) with TLS and htpasswd, as
// the pull-through tests run it, behind a TCP relay in this process. The
// relay does not terminate TLS; it counts the bytes the registry writes
// to its clients (TLS records, headers and bodies), which is the
// registry's egress as its network link would see it.
type upstreamRegistry struct {
	// url is the relay: what the origins are given.
	url string
	// direct is the registry itself, for the push the egress must not
	// count.
	direct             string
	tls                tlsconfig.Files
	user, password     string
	passwordFile       string
	client             *http.Client // trusts the registry's CA
	ln                 net.Listener
	sent               atomic.Int64  // registry → clients, through the relay
	lastSent           atomic.Int64  // when the relay last passed a byte on (Unix ns)
	limit              *rate.Limiter // the registry's uplink (nil: uncapped)
	mu                 sync.Mutex
	conns              map[net.Conn]struct{}
	wg                 sync.WaitGroup
	proc               *proc
	closeOnce          sync.Once
	registryConfigFile string
}

// startUpstream runs docker-registry under f (so stopAll ends it) and the
// counting relay in front of it, which caps what the registry sends at
// bps bytes per second (0: uncapped), the link to a remote registry.
func startUpstream(ctx context.Context, f *fleet, bps int64) (*upstreamRegistry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, errors.New("--upstream needs Debian's docker-registry (apt-get install docker-registry)")
	}
	dir := filepath.Join(f.dir, "upstream")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	u := &upstreamRegistry{user: "shoal", conns: map[net.Conn]struct{}{}, limit: pace.NewLimiter(bps)}
	if u.tls, err = tlsconfig.WriteTestPKI(dir); err != nil {
		return nil, err
	}
	var b [12]byte
	rand.Read(b[:])
	u.password = hex.EncodeToString(b[:])
	u.passwordFile = filepath.Join(dir, "password")
	hash, err := bcrypt.GenerateFromPassword([]byte(u.password), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	for path, s := range map[string]string{u.passwordFile: u.password + "\n", htpasswd: u.user + ":" + string(hash) + "\n"} {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			return nil, err
		}
	}
	if u.direct, err = freeAddr(); err != nil {
		return nil, err
	}
	u.registryConfigFile = filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: %s}
http:
  addr: %s
  secret: loadtest
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: loadtest, path: %s}
`, filepath.Join(dir, "data"), u.direct, u.tls.CertFile, u.tls.KeyFile, htpasswd)
	if err := os.WriteFile(u.registryConfigFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(u.tls.CAFile)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(ca)
	u.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	lo, _ := loopback{}.place("upstream")
	if u.proc, err = f.startArgv(lo, "upstream-registry", []string{bin, "serve", u.registryConfigFile}); err != nil {
		return nil, err
	}
	if err := u.waitReady(ctx); err != nil {
		return nil, err
	}
	if u.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	u.url = "https://" + u.ln.Addr().String()
	u.wg.Go(u.accept)
	return u, nil
}

// waitReady polls the registry's /v2/ until it asks for credentials.
func (u *upstreamRegistry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+u.direct+"/v2/", nil)
		resp, err := u.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case <-u.proc.done:
			b, _ := os.ReadFile(u.proc.log)
			return fmt.Errorf("docker-registry exited before it was ready:\n%s", tail(b, 2000))
		case <-ctx.Done():
			return fmt.Errorf("docker-registry not ready at %s: %w", u.direct, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (u *upstreamRegistry) accept() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.wg.Go(func() { u.relay(c) })
	}
}

// relay joins one client connection to the registry and counts what the
// registry sends.
func (u *upstreamRegistry) relay(c net.Conn) {
	defer c.Close()
	r, err := net.Dial("tcp", u.direct)
	if err != nil {
		return
	}
	defer r.Close()
	if !u.track(c, r) {
		return
	}
	defer u.untrack(c, r)
	done := make(chan struct{})
	go func() {
		io.Copy(r, c)
		r.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(countingWriter{w: c, n: &u.sent, last: &u.lastSent, lim: u.limit}, r)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// track registers a relayed pair so close can cut it; false once closed.
func (u *upstreamRegistry) track(cs ...net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conns == nil {
		return false
	}
	for _, c := range cs {
		u.conns[c] = struct{}{}
	}
	return true
}

func (u *upstreamRegistry) untrack(cs ...net.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range cs {
		delete(u.conns, c)
	}
}

// egress is what the registry has sent through the relay so far.
func (u *upstreamRegistry) egress() int64 { return u.sent.Load() }

// lastByte is when the relay last passed on a byte of the registry's.
func (u *upstreamRegistry) lastByte() time.Time { return time.Unix(0, u.lastSent.Load()) }

// close stops the relay (the registry process stops with the fleet).
func (u *upstreamRegistry) close() {
	u.closeOnce.Do(func() {
		if u.ln != nil {
			u.ln.Close()
		}
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.conns = nil
		u.mu.Unlock()
		u.wg.Wait()
		u.client.CloseIdleConnections()
	})
}

// originConfig is the origins' upstreams block for this registry.
func (u *upstreamRegistry) originConfig() string {
	return fmt.Sprintf("upstreams:\n  - namespace: %s\n    url: %s\n    username: %s\n    password_file: %q\n    tls: {ca_file: %q}\n",
		upstreamNS, u.url, u.user, u.passwordFile, u.tls.CAFile)
}

// pushTarget is where pushImage puts the image: an origin, or the
// upstream registry straight (not through the relay).
func (u *upstreamRegistry) pushTarget() registryTarget {
	return registryTarget{client: u.client, base: "https://" + u.direct, user: u.user, password: u.password}
}

// countingWriter passes the registry's bytes on, paced by lim, and counts
// them.
type countingWriter struct {
	w    io.Writer
	n    *atomic.Int64
	last *atomic.Int64
	lim  *rate.Limiter
}

func (c countingWriter) Write(b []byte) (int, error) {
	if err := pace.Wait(context.Background(), c.lim, len(b)); err != nil {
		return 0, err
	}
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	c.last.Store(time.Now().UnixNano())
	return n, err
}
