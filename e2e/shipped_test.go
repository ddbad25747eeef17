package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	"github.com/shoal-project/shoal/pkg/proctest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// The configs an operator starts from. Tests take them as they are and
// change only what must differ on a test machine: listen addresses, the
// addresses components reach each other at, directories and the paths of
// secret files.
const shippedDir = "../deploy/config"

// shippedRegistry is a registry the shipped agent config mirrors.
const shippedRegistry = "registry.example.com"

// originRegistry, among startShipped's extra registries, is the registry
// named by the origin's host:port: images named after the origin itself.
const originRegistry = "<origin>"

// shipped reads deploy/config/<component>.yaml, applies edit to the
// decoded document and writes the result under dir.
func shipped(t *testing.T, dir, component string, edit func(doc map[string]any)) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(shippedDir, component+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, component+".yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// etcPaths rewrites every string under doc that names a file under
// /etc/shoal/ to the same file under dir, where the test made it: the
// shipped configs keep every other value.
func etcPaths(doc any, dir string) any {
	switch v := doc.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = etcPaths(e, dir)
		}
	case []any:
		for i, e := range v {
			v[i] = etcPaths(e, dir)
		}
	case string:
		if rest, ok := strings.CutPrefix(v, "/etc/shoal/"); ok {
			return filepath.Join(dir, rest)
		}
	}
	return doc
}

// section is the map under key, which the shipped file must have.
func section(t *testing.T, doc map[string]any, key string) map[string]any {
	t.Helper()
	m, ok := doc[key].(map[string]any)
	if !ok {
		t.Fatalf("shipped config has no %q section", key)
	}
	return m
}

// shippedCluster is a tracker, an origin and an agent run from the
// shipped configs.
type shippedCluster struct {
	dir                  string
	tracker, trackerHTTP string // gRPC and metrics addresses
	etcd                 string
	origin               string         // host:port
	originURL            string         // https://host:port
	roots                *x509.CertPool // the cluster CA
	secret               string         // the cluster secret
	agent                agentProc
	pusher               *http.Client // CI's credentials
}

// basicAuth adds HTTP Basic credentials to every request.
type basicAuth struct{ user, password string }

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.password)
	return http.DefaultTransport.RoundTrip(r)
}

// writeSecret writes a secret file and returns its path.
func writeSecret(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clusterKeys makes the cluster CA, the component certificates and the
// private-network key under dir as the shipped configs document them,
// and returns the CA's pool.
func clusterKeys(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	proctest.Documented(t, filepath.Join(shippedDir, "origin.yaml"), "The cluster CA and one certificate per component", dir)
	proctest.Documented(t, filepath.Join(shippedDir, "agent.yaml"), "The cluster's private-network key", dir)
	ca, err := os.ReadFile(filepath.Join(dir, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("ca.crt holds no certificate")
	}
	trustCA(ca)
	return pool
}

// trusted holds the CAs of every shipped cluster this test process made.
// http.DefaultTransport (anonymous, metric, getBody, the pusher) trusts
// exactly these: the shipped origins serve HTTPS only, and no test of
// this package reaches a server with a public certificate. The tests do
// not run in parallel, so no handshake reads the pool while a new
// cluster's CA is added to it.
var trusted *x509.CertPool

func trustCA(pem []byte) {
	if trusted == nil {
		trusted = x509.NewCertPool()
		http.DefaultTransport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: trusted, MinVersion: tls.VersionTLS12}
	}
	trusted.AppendCertsFromPEM(pem)
}

// clientCert is a client that presents component's certificate (made by
// clusterKeys under dir) and trusts the cluster CA.
func clientCert(t *testing.T, dir, component string, roots *x509.CertPool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls", component+".crt"), filepath.Join(dir, "tls", component+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// capabilityKeyFiles makes the cluster capability key pair with the
// openssl commands the shipped origin config gives an operator: the
// private key for origins, the public one for agents.
func capabilityKeyFiles(t *testing.T, dir string) (keyFile, pubFile string) {
	t.Helper()
	keyFile, pubFile = filepath.Join(dir, "capability.key"), filepath.Join(dir, "capability.pub")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", keyFile},
		{"pkey", "-in", keyFile, "-pubout", "-out", pubFile},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	return keyFile, pubFile
}

// startShipped runs tracker, origin and agent on the shipped configs.
// closed turns anonymous pull off, as an operator of a private registry
// would, and gives the tracker and the agent a pull-only user each, as
// the config comments say to. Either way the origin and the agent get
// the piece capability key files the shipped configs name, made as the
// config comments say.
// The agent also mirrors extraRegistries, each from the origin;
// originRegistry stands for the origin's own host:port.
func startShipped(t *testing.T, closed bool, extraRegistries ...string) *shippedCluster {
	t.Helper()
	dir := t.TempDir()
	c := &shippedCluster{dir: dir, tracker: proctest.FreeAddr(t), trackerHTTP: proctest.FreeAddr(t),
		etcd: "https://" + proctest.FreeAddr(t), origin: proctest.FreeAddr(t)}
	c.originURL = "https://" + c.origin

	// CI pushes as "ci"; the tracker and the agents pull as "shoal-node".
	ciHash, _ := bcrypt.GenerateFromPassword([]byte("ci-password"), bcrypt.MinCost)
	nodeHash, _ := bcrypt.GenerateFromPassword([]byte("node-password"), bcrypt.MinCost)
	htpasswd := writeSecret(t, dir, "htpasswd", "ci:"+string(ciHash)+"\nshoal-node:"+string(nodeHash))
	nodePassword := writeSecret(t, dir, "node-password", "node-password")
	c.secret = rand.Text()
	secretFile := writeSecret(t, dir, "cluster-secret", c.secret)
	c.pusher = &http.Client{Transport: basicAuth{"ci", "ci-password"}}
	nodeAuth := map[string]any{"username": "shoal-node", "password_file": nodePassword}
	capKey, capPub := capabilityKeyFiles(t, dir)
	c.roots = clusterKeys(t, dir)

	trCfg := shipped(t, dir, "tracker", func(doc map[string]any) {
		if tls := section(t, doc, "tls"); tls["cert_file"] == "" || tls["ca_file"] == "" {
			t.Fatal("the shipped tracker config leaves gRPC TLS off")
		}
		etcPaths(doc, dir)
		doc["grpc_addr"], doc["http_addr"], doc["advertise"] = c.tracker, c.trackerHTTP, c.tracker
		doc["data_dir"] = filepath.Join(dir, "tracker")
		ee := section(t, doc, "embedded_etcd")
		ee["client_url"], ee["peer_url"] = c.etcd, "https://"+proctest.FreeAddr(t)
		if closed {
			doc["origin_auth"] = nodeAuth
		}
	})
	tr := proctest.Start(t, proctest.Binary(t, "tracker"), "--config", trCfg)
	tr.WaitReady("http://"+c.trackerHTTP+"/readyz", time.Minute)

	oCfg := shipped(t, dir, "origin", func(doc map[string]any) {
		if tls := section(t, doc, "tls"); tls["cert_file"] == "" || tls["client_ca_file"] == "" {
			t.Fatal("the shipped origin config leaves HTTPS off")
		}
		etcPaths(doc, dir)
		doc["addr"], doc["advertise"] = c.origin, c.origin
		doc["data_dir"] = filepath.Join(dir, "origin")
		a := section(t, doc, "auth")
		a["htpasswd"] = htpasswd
		if closed {
			a["anonymous_pull"] = false
			a["users"] = map[string]any{"shoal-node": map[string]any{"actions": []string{"pull"}}}
		}
		if doc["capability_key_file"] == "" {
			t.Fatal("the shipped origin config leaves piece capabilities off")
		}
		doc["capability_key_file"] = capKey
		section(t, doc, "etcd")["endpoints"] = []string{c.etcd}
		section(t, doc, "cluster")["secret_file"] = secretFile
	})
	o := proctest.Start(t, proctest.Binary(t, "origin"), "--config", oCfg)
	o.WaitReady(c.originURL+"/readyz", 30*time.Second)

	c.agent = agentProc{addr: proctest.FreeAddr(t), dir: filepath.Join(dir, "agent")}
	_, c.agent.p2pPort, _ = net.SplitHostPort(proctest.FreeAddr(t))
	c.agent.config = shipped(t, dir, "agent", func(doc map[string]any) {
		if section(t, doc, "p2p")["psk_file"] == "" {
			t.Fatal("the shipped agent config leaves the private network off")
		}
		etcPaths(doc, dir)
		doc["addr"], doc["data_dir"], doc["tracker"] = c.agent.addr, filepath.Join(c.agent.dir, "data"), c.tracker
		regs := section(t, doc, "registries")
		if _, ok := regs[shippedRegistry]; !ok {
			t.Fatalf("the shipped agent config does not mirror %s", shippedRegistry)
		}
		for _, name := range extraRegistries {
			if name == originRegistry {
				name = c.origin
			}
			// As the shipped registries: the origin's CA.
			regs[name] = map[string]any{"tls": section(t, regs, shippedRegistry)["tls"]}
		}
		for _, up := range regs {
			up := up.(map[string]any)
			if tls, _ := up["tls"].(map[string]any); tls["ca_file"] == "" {
				t.Fatal("the shipped agent config does not trust the cluster CA for the origins")
			}
			up["origins"] = []string{c.originURL}
			if closed {
				up["origin_auth"] = nodeAuth
			}
		}
		if doc["capability_public_key_file"] == "" {
			t.Fatal("the shipped agent config leaves piece capabilities off")
		}
		doc["capability_public_key_file"] = capPub
		// A fixed port: the tests dial this agent's seeder.
		section(t, doc, "p2p")["listen_addrs"] = []string{"/ip4/127.0.0.1/tcp/" + c.agent.p2pPort}
	})
	if err := os.MkdirAll(c.agent.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.agent.restart(t)
	return c
}

// anonymous sends a request with only the headers given (no credentials
// unless they are among them) and returns its status code.
func anonymous(t *testing.T, method, url string, body []byte, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metricWhere sums a metric's series whose labels contain sel, scraped
// from addr: host:port over plain HTTP, or a URL (an HTTPS origin).
func metricWhere(t *testing.T, addr, name, sel string) float64 {
	t.Helper()
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	resp, err := http.Get(addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	var sum float64
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line[:strings.IndexByte(line, '}')+1], sel) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}

// TestShippedConfigPull: tracker, origin and agent started from
// deploy/config as shipped (htpasswd, anonymous pull) take a push with
// CI's credentials, refuse one without, and containerd pulls the image
// through the agent, with the tracker serving the metainfo. The same
// with anonymous pull off, the tracker and the agent using a user of
// their own.
func TestShippedConfigPull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and containerd")
	}
	needContainerd(t)
	for _, tt := range []struct {
		name   string
		closed bool
	}{
		// Short names: containerd's socket path under the test's temp
		// dir must stay within 104 bytes.
		{"shipped", false}, // anonymous pull, as shipped
		{"closed", true},   // anonymous pull off, own users
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := startShipped(t, tt.closed)
			base := c.originURL

			// HTTPS only: a plain HTTP request, credentials and all, is
			// answered by the TLS server's 400, never by the registry.
			resp, err := http.Get("http://" + c.origin + "/v2/")
			if err == nil {
				resp.Body.Close()
			}
			if err == nil && resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("plain HTTP to the origin: %d, want refused", resp.StatusCode)
			}

			if got := anonymous(t, "POST", base+"/v2/team/app/blobs/uploads/", nil); got != http.StatusUnauthorized {
				t.Fatalf("push without credentials: %d, want 401", got)
			}
			im := pushImageOf(t, base, "team/app", "v1", placement{client: c.pusher}, 2<<20, 1<<20)
			wantAnon := http.StatusOK
			if tt.closed {
				wantAnon = http.StatusUnauthorized
			}
			if got := anonymous(t, "GET", base+"/v2/team/app/blobs/"+im.layers[0].Digest, nil); got != wantAnon {
				t.Fatalf("anonymous blob GET: %d, want %d", got, wantAnon)
			}
			if got := anonymous(t, "GET", base+"/internal/v1/metainfo/"+im.layers[0].Digest, nil); got != http.StatusUnauthorized {
				t.Fatalf("anonymous internal metainfo GET: %d, want 401", got)
			}

			// containerd may use only the agent: the registry's own
			// server is a closed port.
			hosts := filepath.Join(c.agent.dir, "certs.d", shippedRegistry)
			os.MkdirAll(hosts, 0o755)
			toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
				"http://"+proctest.FreeAddr(t), "http://"+c.agent.addr)
			os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644)
			sock := containerd(t, filepath.Join(c.agent.dir, "containerd"))
			args := []string{"-a", sock, "-n", "e2e", "images", "pull", "--plain-http",
				"--hosts-dir", filepath.Join(c.agent.dir, "certs.d")}
			if tt.closed {
				// The agent serves a private repository only to a client
				// the origin lets pull it, asked with the client's own
				// credentials: the agent's user is not lent out.
				agentURL := "http://" + c.agent.addr + "/v2/team/app/blobs/" + im.layers[0].Digest + "?ns=" + shippedRegistry
				if got := anonymous(t, "GET", agentURL, nil); got != http.StatusUnauthorized {
					t.Fatalf("anonymous blob GET through the agent: %d, want 401", got)
				}
				args = append(args, "--user", "ci:ci-password")
			}
			out, err := exec.Command("ctr", append(args, shippedRegistry+"/team/app:v1")...).CombinedOutput()
			if err != nil {
				t.Fatalf("ctr pull through the agent: %v\n%s\nagent logs:\n%s", err, out, c.agent.Logs())
			}
			snaps, err := exec.Command("ctr", "-a", sock, "-n", "e2e", "snapshots", "ls").CombinedOutput()
			if err != nil || strings.Count(string(snaps), "\n") < 3 {
				t.Fatalf("image not unpacked: %v\n%s", err, snaps)
			}
			if served := metric(t, c.agent.addr, "shoal_agent_served_bytes_total"); served < float64(im.layerBytes) {
				t.Errorf("agent served %.0f bytes, the layers are %d", served, im.layerBytes)
			}
			// The tracker fetched the metainfo from the origin for the
			// swarm, and no fetch failed.
			fetched := metricWhere(t, c.trackerHTTP, "shoal_tracker_metainfo_requests_total", `result="fetched"`)
			failed := metricWhere(t, c.trackerHTTP, "shoal_tracker_metainfo_requests_total", `result="error"`)
			t.Logf("tracker metainfo: %.0f fetched from the origin, %.0f failed", fetched, failed)
			if fetched < float64(len(im.layers)) || failed != 0 {
				t.Errorf("tracker metainfo: %.0f fetched, %.0f failed; want %d fetched, none failed", fetched, failed, len(im.layers))
			}

			// The agent now seeds the layer. A stranger on the libp2p
			// network gets no piece of it without a capability, and one
			// with a capability the origin issued for it (to whom may
			// pull the layer: anyone as shipped, CI's user when closed).
			var creds *http.Client
			if tt.closed {
				creds = c.pusher
			}
			strangerFetch(t, c, "team/app", im.layers[0].Digest, creds)
		})
	}
}

// TestShippedClusterSecret: the shipped origin config, in a cluster,
// refuses anonymous reads and writes of the origin-to-origin blob
// endpoint, and does not start at all without its secret.
func TestShippedClusterSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	c := startShipped(t, false)
	blob := []byte("a blob only cluster members may write")
	d := sha(blob)
	url := c.originURL + "/internal/v1/blobs/" + d
	// The internal endpoints want the cluster secret and, with the
	// shipped client_ca_file and client_names, an origin's certificate.
	withCert := func(component string) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = clientCert(t, c.dir, component, c.roots)
		return &http.Client{Transport: tr}
	}
	origin, tracker := withCert("origin"), withCert("tracker")
	bearer := []string{"Authorization", "Bearer " + c.secret}
	tests := []struct {
		name   string
		client *http.Client // nil: no client certificate
		method string
		body   []byte
		hdr    []string
		want   int
	}{
		{"anonymous PUT", origin, "PUT", blob, nil, http.StatusUnauthorized},
		{"anonymous GET", origin, "GET", nil, nil, http.StatusUnauthorized},
		{"anonymous HEAD", origin, "HEAD", nil, nil, http.StatusUnauthorized},
		{"CI's push credentials", origin, "PUT", blob, []string{"Authorization", "Basic Y2k6Y2ktcGFzc3dvcmQ="}, http.StatusUnauthorized},
		{"wrong secret", origin, "PUT", blob, []string{"Authorization", "Bearer " + strings.Repeat("x", len(c.secret))}, http.StatusUnauthorized},
		{"the secret without a client certificate", nil, "PUT", blob, bearer, http.StatusUnauthorized},
		{"the secret with the tracker's certificate", tracker, "PUT", blob, bearer, http.StatusUnauthorized},
		{"the cluster secret", origin, "PUT", blob, bearer, http.StatusCreated},
		{"read back with it", origin, "GET", nil, bearer, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := tt.client
			if client == nil {
				client = http.DefaultClient
			}
			req, _ := http.NewRequest(tt.method, url, bytes.NewReader(tt.body))
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s: %d, want %d", tt.method, url, resp.StatusCode, tt.want)
			}
		})
	}

	// The same shipped config without its secret file: the origin exits
	// before it joins the cluster.
	addr := proctest.FreeAddr(t)
	noSecret := shipped(t, t.TempDir(), "origin", func(doc map[string]any) {
		etcPaths(doc, c.dir)
		doc["addr"], doc["advertise"], doc["data_dir"] = addr, addr, filepath.Join(c.dir, "origin-nosecret")
		section(t, doc, "auth")["htpasswd"] = filepath.Join(c.dir, "htpasswd")
		section(t, doc, "etcd")["endpoints"] = []string{c.etcd}
		delete(section(t, doc, "cluster"), "secret_file")
	})
	p := proctest.Start(t, proctest.Binary(t, "origin"), "--config", noSecret)
	if err := p.Wait(20 * time.Second); err == nil || !strings.Contains(p.Logs(), "cluster mode needs a cluster secret") {
		t.Fatalf("origin in a cluster without a secret: exit %v\n%s", err, p.Logs())
	}
}

// TestTrackerUnknownDigests: GetMetaInfo for digests nobody pushed, asked
// of a tracker and origin run on the shipped configs, costs the origin a
// handful of requests, not one each: an unknown digest is remembered, and
// misses are rate limited per client.
func TestTrackerUnknownDigests(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	c := startShipped(t, false)
	// The tracker's gRPC is mutual TLS: a plaintext client, and one
	// with no client certificate, are refused.
	for name, creds := range map[string]grpc.DialOption{
		"plaintext":             grpc.WithTransportCredentials(insecure.NewCredentials()),
		"no client certificate": grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12})),
	} {
		conn, err := grpc.NewClient(c.tracker, creds)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = shoalpb.NewTrackerClient(conn).GetMetaInfo(ctx, &shoalpb.GetMetaInfoRequest{Digest: sha([]byte(name))})
		cancel()
		conn.Close()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%s gRPC client: %v, want refused (Unavailable)", name, err)
		}
	}
	// An agent's certificate, as the shipped agent config presents it.
	conn, err := grpc.NewClient(c.tracker, grpc.WithTransportCredentials(credentials.NewTLS(clientCert(t, c.dir, "agent", c.roots))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := shoalpb.NewTrackerClient(conn)
	random := func() string {
		var b [32]byte
		rand.Read(b[:])
		return "sha256:" + hex.EncodeToString(b[:])
	}
	atOrigin := func() float64 {
		return metricWhere(t, c.originURL, "shoal_origin_http_requests_total", `endpoint="metainfo"`)
	}
	same := random()
	tests := []struct {
		name       string
		digest     func() string
		minFetches float64 // at the origin, for the 100 calls
		maxFetches float64
	}{
		// The first call reaches the origin; the other 99 are answered
		// from the negative cache.
		{"one unknown digest 100 times", func() string { return same }, 1, 1},
		// Per-client burst (8) and a little refill.
		{"100 random digests", random, 1, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, trBefore := atOrigin(), metric(t, c.trackerHTTP, "shoal_tracker_origin_metainfo_fetches_total")
			for range 100 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := client.GetMetaInfo(ctx, &shoalpb.GetMetaInfoRequest{Digest: tt.digest()})
				cancel()
				if code := status.Code(err); code != codes.NotFound && code != codes.ResourceExhausted {
					t.Fatalf("GetMetaInfo of an unknown digest: %v, want NotFound or ResourceExhausted", err)
				}
			}
			got := atOrigin() - before
			sent := metric(t, c.trackerHTTP, "shoal_tracker_origin_metainfo_fetches_total") - trBefore
			t.Logf("%s: %.0f metainfo requests at the origin, %.0f sent by the tracker", tt.name, got, sent)
			if got < tt.minFetches || got > tt.maxFetches || sent > tt.maxFetches {
				t.Fatalf("%.0f metainfo requests reached the origin (%.0f sent), want %.0f..%.0f", got, sent, tt.minFetches, tt.maxFetches)
			}
		})
	}
	cached := metricWhere(t, c.trackerHTTP, "shoal_tracker_metainfo_requests_total", `result="not_found_cached"`)
	limited := metricWhere(t, c.trackerHTTP, "shoal_tracker_metainfo_requests_total", `result="rate_limited"`)
	if cached < 99 || limited < 80 {
		t.Fatalf("tracker counted %.0f negative-cache answers and %.0f rate-limited misses", cached, limited)
	}
}

// strangerFetch: a fresh libp2p identity asks the shipped agent's seeder
// for a piece of blob d of repo: refused ("forbidden", counted by the
// agent) without a capability; with one the origin issued for the
// stranger, asked with creds (nil: none), a verified piece comes. With
// creds, the origin refuses the capability to a stranger without them.
func strangerFetch(t *testing.T, c *shippedCluster, repo, d string, creds *http.Client) {
	t.Helper()
	client := http.DefaultClient
	if creds != nil {
		client = creds
	}
	blob := getBody(t, client, c.originURL+"/v2/"+repo+"/blobs/"+d)
	mi, err := metainfo.Compute(digest.Digest(d), bytes.NewReader(blob), int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := p2p.LoadOrCreateKey(filepath.Join(c.agent.dir, "data", "peer.key"))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	agent := peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/" + c.agent.p2pPort)}}
	// Without the private-network key a host cannot even connect.
	outsider := p2ptest.NewHost(t, p2p.HostConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = outsider.Connect(ctx, agent)
	cancel()
	if err == nil {
		t.Fatal("a libp2p host without the private-network key connected to the agent")
	}
	// A stranger inside the private network (a node holding the key
	// file, the shipped one) still needs a capability.
	stranger := p2ptest.NewHost(t, p2p.HostConfig{PSKFile: filepath.Join(c.dir, "swarm.key")})

	refusedBefore := metricWhere(t, c.agent.addr, "shoal_agent_capabilities_total", `result="refused"`)
	if got, err := p2ptest.FetchPiece(t, stranger, agent, mi, nil); got || err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("a stranger without a capability: piece %v, err %v; want forbidden and nothing", got, err)
	}
	if got := metricWhere(t, c.agent.addr, "shoal_agent_capabilities_total", `result="refused"`) - refusedBefore; got != 1 {
		t.Errorf("the agent counted %v refused streams, want 1", got)
	}

	capURL := c.originURL + capability.HTTPPath + repo + "/" + d + "?peer=" + stranger.ID().String()
	if creds != nil {
		if got := anonymous(t, "GET", capURL, nil); got != http.StatusUnauthorized {
			t.Fatalf("capability for a stranger without credentials: %d, want 401", got)
		}
	}
	var cp shoalpb.Capability
	if err := proto.Unmarshal(getBody(t, client, capURL), &cp); err != nil {
		t.Fatal(err)
	}
	if got, err := p2ptest.FetchPiece(t, stranger, agent, mi, &cp); !got {
		t.Fatalf("a stranger with a capability the origin issued: no piece: %v", err)
	}
}

// getBody GETs url with client and returns the body of a 200.
func getBody(t *testing.T, client *http.Client, url string) []byte {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, b)
	}
	return b
}
