// Package k8s_test installs Shoal's Helm chart on a real single-node
// Kubernetes and checks that pods' images come through the node's agent.
//
// It needs root, the cluster binaries from `make k8s-bins` (SHOAL_K8S_BIN),
// Shoal's binaries (SHOAL_BIN, make build) and image layout (SHOAL_IMAGE,
// make image), and Debian's etcd, containerd, runc, CNI plugins, kubectl,
// nft; helm from make tools. kubectl is built with the cluster: Debian's is 1.20. `make test-k8s` sets all of it; without it the
// test skips and says why (SHOAL_K8S_REQUIRED=1 makes that a failure).
package k8s_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/proctest"
)

const (
	release   = "shoal"
	namespace = "shoal"
	// The registry the agents mirror: pods name their images by it, and
	// nothing but the agent can serve it (the name resolves nowhere).
	mirrored = "registry.shoal.test"
)

func requirements(t *testing.T) (kbin, shoalBin, layoutDir string) {
	skip := func(format string, args ...any) {
		if os.Getenv("SHOAL_K8S_REQUIRED") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	kbin, shoalBin, layoutDir = os.Getenv("SHOAL_K8S_BIN"), os.Getenv("SHOAL_BIN"), os.Getenv("SHOAL_IMAGE")
	if kbin == "" || shoalBin == "" || layoutDir == "" {
		skip("live cluster: set SHOAL_K8S_BIN, SHOAL_BIN and SHOAL_IMAGE (make test-k8s does)")
	}
	if os.Geteuid() != 0 {
		skip("live cluster: needs root (kubelet, containerd, mounts, bridge)")
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns"} {
		if _, err := os.Stat(filepath.Join(kbin, b)); err != nil {
			skip("live cluster: %v (make k8s-bins)", err)
		}
	}
	for _, c := range []string{"etcd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "helm", "nft", "ip", "findmnt"} {
		if _, err := exec.LookPath(c); err != nil {
			skip("live cluster: %s not installed (.ci/run installs it)", c)
		}
	}
	if _, err := exec.LookPath("kubectl"); err != nil && !fileExists(filepath.Join(kbin, "kubectl")) {
		skip("live cluster: no kubectl (make k8s-bins builds it)")
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		skip("live cluster: no CNI plugins (containernetworking-plugins)")
	}
	if _, err := os.Stat(filepath.Join(shoalBin, "shoal-origin")); err != nil {
		skip("live cluster: %v (make build)", err)
	}
	return kbin, shoalBin, layoutDir
}

// TestHelmChartOnLiveCluster: start the cluster; start a Shoal origin outside
// it holding Shoal's own image (and the cluster's pause, CoreDNS and etcd
// images); helm install the chart with --wait; push a test image to the
// chart's origin and run a pod of it, pulled through the node's agent; Shoal's
// own image through the agent runs shoal-agent --version; the agent
// DaemonSet survives a rollout restart and a deleted origin pod comes back
// with its data; helm uninstall restores containerd's hosts.toml byte for
// byte and leaves no Shoal workload.
func TestHelmChartOnLiveCluster(t *testing.T) {
	kbin, shoalBin, layoutDir := requirements(t)
	ctx := context.Background()
	t0 := time.Now()
	step := func(what string, start time.Time) {
		t.Logf("STEP %-58s %6.1fs (total %6.1fs)", what, time.Since(start).Seconds(), time.Since(t0).Seconds())
	}

	// An origin outside the cluster: the registry Shoal's own image is
	// installed from (a cluster cannot pull its mirror from itself).
	s := time.Now()
	extAddr := proctest.FreeAddr(t)
	ext := proctest.Start(t, filepath.Join(shoalBin, "shoal-origin"), "--addr", extAddr, "--data-dir", t.TempDir())
	ext.WaitReady("http://"+extAddr+"/readyz", 30*time.Second)
	idx := layoutIndex(t, layoutDir)
	im, err := idx.IndexManifest()
	must(t, err)
	version := im.Annotations["org.opencontainers.image.version"]
	if version == "" {
		t.Fatal("image index has no version annotation")
	}
	shoalRepo := extAddr + "/shoal-project/shoal"
	r, err := name.ParseReference(shoalRepo + ":" + version)
	must(t, err)
	must(t, remote.WriteIndex(r, idx))
	testbin := buildTestbin(t)
	pushImage(t, singleBinaryImage(t, testbin, []string{"pause"}, []string{"/pause"}), extAddr+"/e2e/pause:1")
	pushImage(t, singleBinaryImage(t, testbin, []string{"usr/local/bin/etcd"}, nil), extAddr+"/e2e/etcd:1")
	coredns, err := os.ReadFile(filepath.Join(kbin, "coredns"))
	must(t, err)
	pushImage(t, singleBinaryImage(t, coredns, []string{"coredns"}, []string{"/coredns"}), extAddr+"/e2e/coredns:1")
	step("outside origin up; shoal "+version+" "+imageDigest(t, idx)[:19]+" pushed", s)

	s = time.Now()
	c := newCluster(t, kbin)
	t.Cleanup(c.stop)
	c.boot(ctx, extAddr)
	step("single-node cluster Ready (etcd, apiserver, kubelet, proxy, DNS)", s)

	// Storage: local PersistentVolumes on the node for the origin's and
	// etcd's claims (a bare cluster has no provisioner).
	var pvs strings.Builder
	for i := range 2 {
		dir := c.path("pv", strconv.Itoa(i))
		must(t, os.MkdirAll(dir, 0o755))
		fmt.Fprintf(&pvs, `apiVersion: v1
kind: PersistentVolume
metadata: {name: shoal-e2e-pv-%d}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  local: {path: %q}
  nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [%s]}]}]}}
---
`, i, dir, nodeName)
	}
	c.apply(pvs.String())

	// What the README asks of an installer: a namespace, the push user's
	// htpasswd and the origins' cluster secret.
	pushPass := randHex(t, 16)
	hash, err := bcrypt.GenerateFromPassword([]byte(pushPass), bcrypt.MinCost)
	must(t, err)
	c.mustKubectl("create", "namespace", namespace)
	c.mustKubectl("-n", namespace, "create", "secret", "generic", "shoal-origin-htpasswd", "--from-literal=htpasswd=ci:"+string(hash))
	c.mustKubectl("-n", namespace, "create", "secret", "generic", "shoal-origin-cluster", "--from-literal=secret="+randHex(t, 32))

	// The node already has a hosts.toml of its own for the mirrored
	// registry: the agent must put it back exactly, mode included.
	c.writeHostsToml(mirrored, "# the node's own\nserver = \"https://"+mirrored+"\"\n", 0o640)
	before := snapshot(t, c.hostsDir())

	_, agentPort, _ := net.SplitHostPort(proctest.FreeAddr(t))
	_, p2pPort, _ := net.SplitHostPort(proctest.FreeAddr(t))
	small := "resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {cpu: \"1\", memory: 1Gi}}"
	values := fmt.Sprintf(`image: {repository: %s}
registries: [%s]
agent:
  port: %s
  p2pPort: %s
  containerdConfig: %s
  cacheDir: %s
  %s
origin: {replicas: 1, replicationFactor: 1, storage: 1Gi, %s}
tracker: {replicas: 1, %s}
etcd: {replicas: 1, image: %s, storage: 1Gi, %s}
`, shoalRepo, mirrored, agentPort, p2pPort, c.containerdConfig(), c.path("agent-cache"), small,
		small, small, extAddr+"/e2e/etcd:1", small)
	valuesFile := c.path("values.yaml")
	must(t, os.WriteFile(valuesFile, []byte(values), 0o644))
	s = time.Now()
	if out, err := c.helm("install", release, "../../deploy/helm/shoal", "-n", namespace, "-f", valuesFile, "--wait", "--timeout", "6m"); err != nil {
		t.Fatalf("helm install: %v\n%s\n%s\n%s", err, out, c.describe(namespace), c.podLogs(namespace))
	}
	step("helm install --wait: etcd, origin, tracker, agent Ready", s)

	hostsToml := filepath.Join(c.hostsDir(), mirrored, "hosts.toml")
	b, err := os.ReadFile(hostsToml)
	must(t, err)
	if !strings.Contains(string(b), "127.0.0.1:"+agentPort) {
		t.Fatalf("hosts.toml for %s does not name the agent (127.0.0.1:%s):\n%s", mirrored, agentPort, b)
	}
	t.Logf("hosts.toml the agent's init container wrote:\n%s", b)

	// The test image goes to the chart's origin, as CI would push it:
	// HTTPS with the chart's CA, the htpasswd user.
	s = time.Now()
	ca := c.secretKey(namespace, release+"-tls-origin", "ca.crt")
	ip := strings.TrimSpace(c.mustKubectl("-n", namespace, "get", "svc", release+"-origin", "-o", "jsonpath={.spec.clusterIP}"))
	port := strings.TrimSpace(c.mustKubectl("-n", namespace, "get", "svc", release+"-origin", "-o", "jsonpath={.spec.ports[0].port}"))
	push := []remote.Option{remote.WithTransport(originTransport(t, ca, ip)), basicAuth("ci", pushPass)}
	originHost := release + "-origin." + namespace + ".svc:" + port
	hello := singleBinaryImage(t, testbin, []string{"hello"}, []string{"/hello"})
	// Ready pods are not yet a service that answers: kube-proxy programs
	// the service once the endpoints are ready, and until then refuses
	// connections (a push failed so in CI, right after helm --wait).
	waitDial(t, net.JoinHostPort(ip, port), 30*time.Second)
	pushImage(t, hello, originHost+"/e2e/hello:1", push...)
	before0 := agentMetrics(t, agentPort)
	c.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default}
spec:
  containers: [{name: hello, image: %s/e2e/hello:1, args: [through, the, agent]}]
`, mirrored))
	c.waitPod("default", "hello", "Ready", 3*time.Minute)
	after := agentMetrics(t, agentPort)
	served := after["shoal_agent_served_bytes_total"] - before0["shoal_agent_served_bytes_total"]
	manifests := after[`shoal_agent_requests_total{code="200",kind="manifest"}`] - before0[`shoal_agent_requests_total{code="200",kind="manifest"}`]
	if served < float64(layerBytes(t, hello)) || manifests < 1 {
		t.Fatalf("the agent served %.0f blob bytes (image layers: %d) and %.0f manifests: the pod's image did not come through it\n%v",
			served, layerBytes(t, hello), manifests, after)
	}
	if logs := c.mustKubectl("logs", "hello"); !strings.Contains(logs, "hello from a pod pulled through shoal [through the agent]") {
		t.Fatalf("hello pod logs: %q", logs)
	}
	step(fmt.Sprintf("pod Ready via agent: %.0f blob bytes, %.0f manifests served", served, manifests), s)

	// Dogfood: Shoal's image through Shoal's agent runs shoal-agent --version.
	s = time.Now()
	dst, err := name.ParseReference(originHost + "/shoal-project/shoal:" + version)
	must(t, err)
	must(t, remote.WriteIndex(dst, idx, push...))
	c.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: dogfood, namespace: default}
spec:
  restartPolicy: Never
  containers: [{name: shoal, image: %s/shoal-project/shoal:%s, command: [/usr/local/bin/shoal-agent, --version]}]
`, mirrored, version))
	c.waitPhase("default", "dogfood", "Succeeded", 3*time.Minute)
	if out := c.mustKubectl("logs", "dogfood"); !strings.Contains(out, "shoal-agent "+version+" (commit ") {
		t.Fatalf("dogfood: shoal-agent --version printed %q", out)
	} else {
		step("dogfood: "+strings.TrimSpace(out), s)
	}

	// The agent DaemonSet survives a rollout restart: its new pod is Ready
	// and containerd still asks it.
	s = time.Now()
	c.mustKubectl("-n", namespace, "rollout", "restart", "ds/"+release+"-agent")
	if out, err := c.kubectl("-n", namespace, "rollout", "status", "ds/"+release+"-agent", "--timeout=180s"); err != nil {
		t.Fatalf("agent rollout: %v\n%s\n%s", err, out, c.describe(namespace))
	}
	if b, _ := os.ReadFile(hostsToml); !strings.Contains(string(b), "127.0.0.1:"+agentPort) {
		t.Fatalf("after the rollout hosts.toml is\n%s", b)
	}
	waitFor(t, "agent ready after restart", time.Minute, func() error { return httpOK("http://127.0.0.1:" + agentPort + "/readyz") })
	step("agent rollout restart: Ready, hosts.toml still the agent's", s)

	// A deleted origin pod comes back with its data: the manifest pushed
	// before is still there.
	s = time.Now()
	c.mustKubectl("-n", namespace, "delete", "pod", release+"-origin-0", "--wait=true")
	c.waitPod(namespace, release+"-origin-0", "Ready", 3*time.Minute)
	helloRef, err := name.ParseReference(originHost + "/e2e/hello:1")
	must(t, err)
	waitFor(t, "hello manifest on the new origin pod", time.Minute, func() error {
		d, err := remote.Head(helloRef, push...)
		if err == nil && d.Digest.String() != imageDigest(t, hello) {
			err = fmt.Errorf("digest %s, pushed %s", d.Digest, imageDigest(t, hello))
		}
		return err
	})
	step("origin pod deleted: back Ready with the pushed image", s)

	// Readiness fails when it should: an origin without its etcd index
	// cannot serve tags or take pushes, so its probe must take it out of
	// the Service (and put it back once etcd returns), while liveness
	// leaves it running.
	s = time.Now()
	c.mustKubectl("-n", namespace, "scale", "statefulset", release+"-etcd", "--replicas=0")
	c.waitPod(namespace, release+"-origin-0", "Ready=false", 2*time.Minute)
	restarts := c.mustKubectl("-n", namespace, "get", "pod", release+"-origin-0", "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
	c.mustKubectl("-n", namespace, "scale", "statefulset", release+"-etcd", "--replicas=1")
	c.waitPod(namespace, release+"-origin-0", "Ready", 3*time.Minute)
	if after := c.mustKubectl("-n", namespace, "get", "pod", release+"-origin-0", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); after != restarts {
		t.Fatalf("the origin was restarted (%s -> %s) while etcd was away: liveness must not depend on etcd", restarts, after)
	}
	step("etcd away: origin NotReady (not restarted), Ready again when etcd is back", s)

	// Uninstall: the agent's preStop puts the node's hosts.toml back.
	s = time.Now()
	c.mustKubectl("delete", "pod", "hello", "dogfood", "--wait=true")
	// Foreground: helm returns once the pods are gone, so their preStop
	// hooks have run.
	if out, err := c.helm("uninstall", release, "-n", namespace, "--wait", "--cascade", "foreground", "--timeout", "3m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if out, err := c.kubectl("-n", namespace, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/instance="+release, "--timeout=120s"); err != nil {
		t.Fatalf("pods after uninstall: %v\n%s", err, out)
	}
	if diff := compareSnapshots(before, snapshot(t, c.hostsDir())); diff != "" {
		t.Fatalf("containerd's certs.d after uninstall differs from before install:\n%s", diff)
	}
	left, _ := c.kubectl("-n", namespace, "get", "all,configmaps,secrets", "-l", "app.kubernetes.io/instance="+release, "-o", "name")
	if strings.TrimSpace(left) != "" {
		t.Fatalf("helm uninstall left:\n%s", left)
	}
	step("helm uninstall: hosts.toml restored (bytes, mode), no workloads left", s)
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	_, err := rand.Read(b)
	must(t, err)
	return hex.EncodeToString(b)
}

func (c *cluster) helm(args ...string) (string, error) {
	cmd := exec.Command("helm", args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *cluster) secretKey(ns, secret, key string) []byte {
	c.t.Helper()
	out := c.mustKubectl("-n", ns, "get", "secret", secret, "-o", "jsonpath={.data."+strings.ReplaceAll(key, ".", `\.`)+"}")
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	must(c.t, err)
	return b
}

// waitPod waits for a pod's condition, also while the pod does not exist
// yet (a StatefulSet recreating it), which kubectl wait alone fails at once.
func (c *cluster) waitPod(ns, pod, condition string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.kubectl("-n", ns, "wait", "--for=condition="+condition, "pod/"+pod, "--timeout=15s")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("pod %s/%s not %s: %v\n%s\n%s\n%s", ns, pod, condition, err, out, c.describe(ns), c.podLogs(namespace))
		}
		time.Sleep(time.Second)
	}
}

func (c *cluster) waitPhase(ns, pod, phase string, timeout time.Duration) {
	c.t.Helper()
	if out, err := c.kubectl("-n", ns, "wait", "--for=jsonpath={.status.phase}="+phase, "pod/"+pod, "--timeout="+timeout.String()); err != nil {
		c.t.Fatalf("pod %s/%s not %s: %v\n%s\n%s\n%s", ns, pod, phase, err, out, c.describe(ns), c.podLogs(namespace))
	}
}

// podLogs is the last lines of every container in ns, for failures.
func (c *cluster) podLogs(ns string) string {
	pods, _ := c.kubectl("-n", ns, "get", "pods", "-o", "name")
	var b strings.Builder
	for _, p := range strings.Fields(pods) {
		out, _ := c.kubectl("-n", ns, "logs", p, "--all-containers", "--tail=15")
		fmt.Fprintf(&b, "== %s\n%s\n", p, out)
	}
	return b.String()
}

// agentMetrics reads the agent's Prometheus counters (on the node's
// loopback: the agent runs in the host network).
func agentMetrics(t *testing.T, port string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

type fileState struct {
	mode fs.FileMode
	body string
}

// snapshot is every file and directory under dir with its mode and bytes.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: info.Mode()}
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.body = string(b)
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = st
		return nil
	}))
	return out
}

func compareSnapshots(a, b map[string]fileState) string {
	var diff strings.Builder
	for p, s := range a {
		if s2, ok := b[p]; !ok {
			fmt.Fprintf(&diff, "%s: gone\n", p)
		} else if s2 != s {
			fmt.Fprintf(&diff, "%s: was %v %q, now %v %q\n", p, s.mode, s.body, s2.mode, s2.body)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			fmt.Fprintf(&diff, "%s: new\n", p)
		}
	}
	return diff.String()
}

// waitDial waits until addr accepts a TCP connection.
func waitDial(t *testing.T, addr string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections after %s: %v", addr, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
