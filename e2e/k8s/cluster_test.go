package k8s_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/proctest"
)

// Addresses of the cluster's own networks: pods on a bridge of their own,
// services, and the cluster DNS. Uncommon ranges, so another engineer's
// cluster or namespace test on this machine does not overlap.
const (
	podSubnet  = "10.244.77.0/24"
	svcRange   = "10.97.77.0/24"
	apiSvcIP   = "10.97.77.1"
	clusterDNS = "10.97.77.10"
	bridgeName = "shoalk8s0"
	nodeName   = "shoal-e2e-node"
)

// cluster is a single-node Kubernetes made of real processes: Debian's etcd,
// containerd and runc, and kube-apiserver, controller-manager, scheduler,
// kubelet and kube-proxy built from k8s.io/kubernetes (make k8s-bins). All
// its state lives under dir; stop undoes what start did.
type cluster struct {
	t       *testing.T
	log     *slog.Logger
	dir     string
	bin     string
	nodeIP  string
	ports   map[string]string
	procs   []*proc
	env     []string // KUBECONFIG and Helm's dirs, for kubectl and helm
	sock    string   // containerd's socket
	hadDirs map[string]bool
	ipFwd   []byte
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
}

func newCluster(t *testing.T, bin string) *cluster {
	dir, err := os.MkdirTemp("", "shoal-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, bin: bin, ports: map[string]string{}, hadDirs: map[string]bool{},
		log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	c.sock = filepath.Join(dir, "containerd", "containerd.sock")
	for _, n := range []string{"etcd", "etcd-peer", "api", "kubelet", "kubelet-healthz", "proxy-healthz", "proxy-metrics"} {
		_, p, _ := net.SplitHostPort(proctest.FreeAddr(t))
		c.ports[n] = p
	}
	c.nodeIP = nodeIP(t)
	c.env = append(os.Environ(),
		"KUBECONFIG="+filepath.Join(dir, "admin.kubeconfig"), "KUBECACHEDIR="+filepath.Join(dir, "kube-cache"),
		"HELM_CACHE_HOME="+filepath.Join(dir, "helm/cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "helm/config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "helm/data"))
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// nodeIP is the address of the default route's interface: the kubelet
// refuses a loopback node IP, and pods reach the apiserver through it.
func nodeIP(t *testing.T) string {
	out, err := exec.Command("ip", "-4", "-o", "route", "get", "1.1.1.1").Output()
	if err != nil {
		t.Fatalf("ip route get: %v", err)
	}
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "src" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no source address in %q", out)
	return ""
}

func (c *cluster) path(p ...string) string { return filepath.Join(append([]string{c.dir}, p...)...) }

// start runs name in its own process group, logging to logs/name.log.
func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		c.t.Fatal(err)
	}
	f, err := os.Create(c.path("logs", name+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = f, f, c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.procs = append(c.procs, &proc{name: name, cmd: cmd, log: f})
	go cmd.Wait() //nolint:errcheck // reaped here; stop looks at ProcessState
}

// waitFor polls check until it succeeds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
}

func (c *cluster) logTail(name string) string {
	b, _ := os.ReadFile(c.path("logs", name+".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// kubectlBin is the kubectl make k8s-bins built (Debian's is 1.20, too
// old), or one on PATH.
func (c *cluster) kubectlBin() string {
	if p := filepath.Join(c.bin, "kubectl"); fileExists(p) {
		return p
	}
	return "kubectl"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// kubectl runs kubectl against the cluster and returns its stdout.
func (c *cluster) kubectl(args ...string) (string, error) {
	cmd := exec.Command(c.kubectlBin(), args...)
	cmd.Env = c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func (c *cluster) mustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *cluster) apply(manifest string) {
	c.t.Helper()
	cmd := exec.Command(c.kubectlBin(), "apply", "-f", "-")
	cmd.Env, cmd.Stdin = c.env, strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// pki makes the cluster CA and every component's certificate and kubeconfig.
func (c *cluster) pki() {
	c.t.Helper()
	dir := c.path("pki")
	must(c.t, os.MkdirAll(dir, 0o700))
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(c.t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal-e2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(c.t, err)
	caCert, err := x509.ParseCertificate(caDER)
	must(c.t, err)
	writePEM(c.t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
	writePEM(c.t, filepath.Join(dir, "ca.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(caKey))
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	must(c.t, err)
	writePEM(c.t, filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa))
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	must(c.t, err)
	writePEM(c.t, filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub)

	serial := int64(2)
	leaf := func(name, cn string, org []string, server bool) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		must(c.t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: org},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		serial++
		if server {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(c.nodeIP), net.ParseIP(apiSvcIP)}
			tmpl.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		must(c.t, err)
		writePEM(c.t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
		writePEM(c.t, filepath.Join(dir, name+".key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	}
	leaf("apiserver", "kube-apiserver", nil, true)
	leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, false)
	for _, u := range []struct{ name, cn, org string }{
		{"admin", "admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + nodeName, "system:nodes"},
		{"kube-proxy", "system:kube-proxy", ""},
	} {
		var org []string
		if u.org != "" {
			org = []string{u.org}
		}
		leaf(u.name, u.cn, org, false)
		c.kubeconfig(u.name)
	}
}

func (c *cluster) kubeconfig(name string) {
	c.t.Helper()
	b64 := func(f string) string {
		b, err := os.ReadFile(c.path("pki", f))
		must(c.t, err)
		return base64.StdEncoding.EncodeToString(b)
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:%s", certificate-authority-data: %s}
users:
- name: u
  user: {client-certificate-data: %s, client-key-data: %s}
contexts:
- name: e2e
  context: {cluster: e2e, user: u}
current-context: e2e
`, c.ports["api"], b64("ca.crt"), b64(name+".crt"), b64(name+".key"))
	must(c.t, os.WriteFile(c.path(name+".kubeconfig"), []byte(kc), 0o600))
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	must(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// hostDirs are paths the kubelet, containerd or CNI create outside dir
// whatever their configuration; stop removes those that were not there.
var hostDirs = []string{"/var/log/containers", "/var/lib/cni", "/var/run/netns", "/var/lib/kubelet", "/var/log/pods"}

// boot starts the control plane, containerd and the kubelet; registry is
// the host:port of a plain-HTTP registry holding the pause and CoreDNS
// images (the Shoal origin outside the cluster).
func (c *cluster) boot(ctx context.Context, registry string) {
	t := c.t
	t0 := time.Now()
	for _, p := range hostDirs {
		if _, err := os.Stat(p); err == nil {
			c.hadDirs[p] = true
		}
	}
	c.ipFwd, _ = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	for _, d := range []string{"etcd", "containerd", "etc/containerd/certs.d", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "volume-plugins"} {
		must(t, os.MkdirAll(c.path(d), 0o755))
	}
	c.pki()
	p := c.ports
	c.start("etcd", "etcd", "--name", "e2e", "--data-dir", c.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:"+p["etcd"], "--advertise-client-urls", "http://127.0.0.1:"+p["etcd"],
		"--listen-peer-urls", "http://127.0.0.1:"+p["etcd-peer"], "--initial-advertise-peer-urls", "http://127.0.0.1:"+p["etcd-peer"],
		"--initial-cluster", "e2e=http://127.0.0.1:"+p["etcd-peer"], "--log-level", "warn")
	waitFor(t, "etcd", 30*time.Second, func() error { return httpOK("http://127.0.0.1:" + p["etcd"] + "/health") })

	pki := func(f string) string { return c.path("pki", f) }
	c.start("kube-apiserver", filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:"+p["etcd"], "--bind-address=0.0.0.0", "--secure-port="+p["api"],
		"--advertise-address="+c.nodeIP, "--service-cluster-ip-range="+svcRange,
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"), "--client-ca-file="+pki("ca.crt"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"), "--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"), "--service-account-signing-key-file="+pki("sa.key"),
		// kubectl logs/exec reach the kubelet by the node's address.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--authorization-mode=Node,RBAC", "--allow-privileged=true", "--enable-admission-plugins=NodeRestriction")
	waitFor(t, "kube-apiserver /readyz", 3*time.Minute, func() error {
		_, err := c.kubectl("get", "--raw", "/readyz")
		return err
	})
	c.log.Info("apiserver ready", "after", time.Since(t0).Round(time.Millisecond))

	c.start("kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"),
		"--kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+c.path("controller-manager.kubeconfig"), "--authorization-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=true",
		// Without the root CA pods wait for kube-root-ca.crt forever.
		"--service-account-private-key-file="+pki("sa.key"), "--root-ca-file="+pki("ca.crt"),
		"--cluster-signing-cert-file="+pki("ca.crt"), "--cluster-signing-key-file="+pki("ca.key"),
		"--flex-volume-plugin-dir="+c.path("volume-plugins"))
	c.start("kube-scheduler", filepath.Join(c.bin, "kube-scheduler"),
		"--kubeconfig="+c.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+c.path("scheduler.kubeconfig"), "--authorization-kubeconfig="+c.path("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false")

	// containerd: a private instance; its registry config_path is where
	// the Shoal agent's init container writes hosts.toml.
	c.writeHostsToml(registry, "server = \"http://"+registry+"\"\n[host.\"http://"+registry+"\"]\n  capabilities = [\"pull\", \"resolve\"]\n", 0o644)
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[6]s/e2e/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE on these machines: runc cannot give the sandbox
  # its -998 oom_score_adj, and every sandbox fails without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[9]q
`, c.path("containerd/root"), c.path("containerd/state"), c.sock, c.sock+".ttrpc", c.path("containerd/opt"),
		registry, c.path("containerd/runc"), c.path("cni/net.d"), c.hostsDir())
	must(t, os.WriteFile(c.containerdConfig(), []byte(cfg), 0o644))
	must(t, os.WriteFile(c.path("cni/net.d/10-shoal-e2e.conflist"), []byte(fmt.Sprintf(`{
  "cniVersion": "0.4.0", "name": "shoal-e2e",
  "plugins": [{"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]
}`, bridgeName, c.path("cni/ipam"), podSubnet)), 0o644))
	c.start("containerd", "containerd", "--config", c.containerdConfig())
	waitFor(t, "containerd", 30*time.Second, func() error {
		return exec.Command("ctr", "--address", c.sock, "version").Run()
	})

	must(t, os.WriteFile(c.path("kubelet/config.yaml"), []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
port: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
podLogsDir: %s
volumePluginDir: %s
resolvConf: /etc/resolv.conf
clusterDNS: [%s]
clusterDomain: cluster.local
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, c.sock, p["kubelet"], p["kubelet-healthz"], pki("ca.crt"), c.path("pod-logs"), c.path("volume-plugins"), clusterDNS)), 0o644))
	c.start("kubelet", filepath.Join(c.bin, "kubelet"), "--config="+c.path("kubelet/config.yaml"),
		"--kubeconfig="+c.path("kubelet.kubeconfig"), "--root-dir="+c.path("kubelet"), "--cert-dir="+c.path("kubelet/pki"),
		"--hostname-override="+nodeName, "--node-ip="+c.nodeIP)
	waitFor(t, "node Ready", 3*time.Minute, func() error {
		out, err := c.kubectl("get", "node", nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && out != "True" {
			err = fmt.Errorf("Ready=%q", out)
		}
		return err
	})
	c.log.Info("node Ready", "after", time.Since(t0).Round(time.Millisecond))

	c.start("kube-proxy", filepath.Join(c.bin, "kube-proxy"), "--kubeconfig="+c.path("kube-proxy.kubeconfig"),
		"--proxy-mode=nftables", "--hostname-override="+nodeName, "--cluster-cidr="+podSubnet,
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
		"--healthz-bind-address=127.0.0.1:"+p["proxy-healthz"], "--metrics-bind-address=127.0.0.1:"+p["proxy-metrics"])
	waitFor(t, "kube-proxy", time.Minute, func() error { return httpOK("http://127.0.0.1:" + p["proxy-healthz"] + "/healthz") })

	c.apply(coreDNSManifest(registry + "/e2e/coredns:1"))
	if out, err := c.kubectl("-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=180s"); err != nil {
		t.Fatalf("coredns: %v\n%s\n%s", err, out, c.describe("kube-system"))
	}
	waitFor(t, "default serviceaccount", time.Minute, func() error {
		_, err := c.kubectl("get", "serviceaccount", "default")
		return err
	})
	c.log.Info("cluster ready", "after", time.Since(t0).Round(time.Millisecond), "dir", c.dir)
}

// describe is what to read when a step fails: pods, events, and the
// kubelet's last lines.
func (c *cluster) describe(ns string) string {
	pods, _ := c.kubectl("-n", ns, "get", "pods,pvc", "-o", "wide")
	ev, _ := c.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp")
	if len(ev) > 4000 {
		ev = ev[len(ev)-4000:]
	}
	return pods + "\n" + ev + "\nkubelet:\n" + c.logTail("kubelet")
}

// containerdConfig and hostsDir are a node's /etc/containerd/config.toml
// and certs.d: apart from containerd's root and state, as on a real node,
// because the agent mounts their directory.
func (c *cluster) containerdConfig() string { return c.path("etc/containerd/config.toml") }
func (c *cluster) hostsDir() string         { return c.path("etc/containerd/certs.d") }

// writeHostsToml writes containerd's hosts.toml for registry.
func (c *cluster) writeHostsToml(registry, body string, mode os.FileMode) {
	dir := filepath.Join(c.hostsDir(), registry)
	must(c.t, os.MkdirAll(dir, 0o755))
	f := filepath.Join(dir, "hosts.toml")
	must(c.t, os.WriteFile(f, []byte(body), mode))
	must(c.t, os.Chmod(f, mode))
}

func httpOK(url string) error {
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// stop undoes boot, in the order that lets each step succeed: the kubelet
// first (or it restarts what we kill), pod containers while containerd
// still answers, then the rest; then mounts, cgroups, the bridge,
// kube-proxy's nft table, ip_forward and host directories.
func (c *cluster) stop() {
	t := c.t
	stopProc := func(names ...string) {
		var waitList []*proc
		for _, n := range names {
			for _, p := range c.procs {
				if p.name == n && p.cmd.Process != nil && alive(p.cmd.Process.Pid) {
					_ = p.cmd.Process.Signal(syscall.SIGTERM)
					waitList = append(waitList, p)
				}
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, p := range waitList {
			for alive(p.cmd.Process.Pid) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if alive(p.cmd.Process.Pid) {
				_ = p.cmd.Process.Kill()
			}
			p.log.Close()
		}
	}
	stopProc("kubelet")
	if _, err := os.Stat(c.sock); err == nil {
		ctr := func(args ...string) string {
			out, _ := exec.Command("ctr", append([]string{"--address", c.sock, "-n", "k8s.io"}, args...)...).Output()
			return string(out)
		}
		for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
			ctr("tasks", "kill", "-s", "SIGKILL", id)
		}
		time.Sleep(time.Second)
		for _, id := range strings.Fields(ctr("tasks", "ls", "-q")) {
			ctr("tasks", "delete", "-f", id)
		}
		for _, id := range strings.Fields(ctr("containers", "ls", "-q")) {
			ctr("containers", "delete", id)
		}
	}
	stopProc("kube-proxy", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "containerd")
	stopProc("etcd")
	// containerd's shims outlive it (re-parented to init): ours name our socket.
	if out, err := exec.Command("pgrep", "-f", "containerd-shim-runc-v2 .*-address "+c.sock).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for fam := range strings.FieldsSeq("ip ip6") {
		if exec.Command("nft", "list", "table", fam, "kube-proxy").Run() == nil {
			_ = exec.Command("nft", "delete", "table", fam, "kube-proxy").Run()
		}
	}
	for range 3 {
		out, _ := exec.Command("findmnt", "-rn", "-o", "TARGET").Output()
		var ms []string
		for _, m := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(m, c.dir+"/") {
				ms = append(ms, m)
			}
		}
		if len(ms) == 0 {
			break
		}
		// deepest first
		for i := len(ms) - 1; i >= 0; i-- {
			if syscall.Unmount(ms[i], 0) != nil {
				_ = syscall.Unmount(ms[i], syscall.MNT_DETACH)
			}
		}
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	roots = append(roots, "/sys/fs/cgroup/kubepods")
	for _, r := range roots {
		removeEmptyDirs(r)
	}
	if exec.Command("ip", "link", "show", bridgeName).Run() == nil {
		_ = exec.Command("ip", "link", "del", bridgeName).Run()
	}
	if len(c.ipFwd) > 0 {
		_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", c.ipFwd, 0o644)
	}
	// The kubelet links container logs here whatever its podLogsDir; the
	// links into dir are ours.
	if links, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, l := range links {
			p := filepath.Join("/var/log/containers", l.Name())
			if dst, err := os.Readlink(p); err == nil && strings.HasPrefix(dst, c.dir+"/") {
				os.Remove(p)
			}
		}
	}
	for _, p := range hostDirs {
		if c.hadDirs[p] {
			continue
		}
		switch p {
		case "/var/lib/cni":
			os.RemoveAll(p) // libcni's result cache, ours alone: it was not there before
		case "/var/lib/kubelet":
			os.Remove(filepath.Join(p, "device-plugins/kubelet.sock")) // hard-coded path
			removeEmptyDirs(p)
		default:
			removeEmptyDirs(p)
		}
	}
	if out, _ := exec.Command("findmnt", "-rn", "-o", "TARGET").Output(); strings.Contains(string(out), c.dir+"/") {
		t.Errorf("mounts left under %s", c.dir)
		return
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("remove %s: %v", c.dir, err)
	}
}

// removeEmptyDirs removes the directories under root, deepest first:
// os.Remove fails, as wanted, on one that is not empty, and a cgroup
// directory counts as empty once no process is in it.
func removeEmptyDirs(root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // best effort
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}

// coreDNSManifest is the cluster DNS: the chart's components find etcd, the
// origins and the tracker by their Service names.
func coreDNSManifest(image string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . /etc/resolv.conf
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: %s
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}}
        resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
        volumeMounts: [{name: config, mountPath: /etc/coredns}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: %s
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`, image, clusterDNS)
}
