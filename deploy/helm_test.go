package deploy_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/pnet"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/proctest"
	"github.com/shoal-project/shoal/pkg/upstream"
)

const chart = "helm/shoal"

func helm(t *testing.T) string {
	t.Helper()
	h, err := exec.LookPath("helm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("helm missing; make tools installs it")
		}
		t.Skip("helm not installed (make tools)")
	}
	return h
}

// rendered is what helm template produced, decoded strictly into the
// Kubernetes API types.
type rendered struct {
	configMaps   map[string]*corev1.ConfigMap
	services     []*corev1.Service
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	daemonSets   []*appsv1.DaemonSet
	pdbs         []*policyv1.PodDisruptionBudget
	secrets      map[string]*corev1.Secret
}

// strict decodes JSON into v, refusing fields the type does not have: a
// typo in a template is an error, as the API server's strict validation
// would make it.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func render(t *testing.T, values ...string) rendered {
	t.Helper()
	h := helm(t)
	args := []string{"lint", chart, "--strict"}
	for _, v := range values {
		args = append(args, "-f", v)
	}
	if out, err := exec.Command(h, args...).CombinedOutput(); err != nil {
		t.Fatalf("helm lint %v: %v\n%s", values, err, out)
	}
	args = []string{"template", "shoal", chart, "--namespace", "shoal"}
	for _, v := range values {
		args = append(args, "-f", v)
	}
	out, err := exec.Command(h, args...).Output()
	if err != nil {
		t.Fatalf("helm template %v: %v", values, err)
	}
	r := rendered{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, doc := range strings.Split(string(out), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(doc), "---")) == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		var meta struct{ APIVersion, Kind string }
		json.Unmarshal(j, &meta)
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			obj, r.configMaps[nameOf(j)] = o, o
		case "v1 Secret":
			o := &corev1.Secret{}
			obj, r.secrets[nameOf(j)] = o, o
		case "v1 Service":
			o := &corev1.Service{}
			obj, r.services = o, append(r.services, o)
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			obj, r.deployments = o, append(r.deployments, o)
		case "apps/v1 StatefulSet":
			o := &appsv1.StatefulSet{}
			obj, r.statefulSets = o, append(r.statefulSets, o)
		case "apps/v1 DaemonSet":
			o := &appsv1.DaemonSet{}
			obj, r.daemonSets = o, append(r.daemonSets, o)
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			obj, r.pdbs = o, append(r.pdbs, o)
		default:
			t.Fatalf("unexpected object %s %s", meta.APIVersion, meta.Kind)
		}
		if err := strict(j, obj); err != nil {
			t.Fatalf("%s %s does not match the Kubernetes API: %v", meta.Kind, nameOf(j), err)
		}
	}
	return r
}

func nameOf(j []byte) string {
	var m struct {
		Metadata struct{ Name string }
	}
	json.Unmarshal(j, &m)
	return m.Metadata.Name
}

func (r rendered) podSpecs() map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, d := range r.deployments {
		out[d.Name] = &d.Spec.Template.Spec
	}
	for _, s := range r.statefulSets {
		out[s.Name] = &s.Spec.Template.Spec
	}
	for _, d := range r.daemonSets {
		out[d.Name] = &d.Spec.Template.Spec
	}
	return out
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("addr %q: %v", addr, err)
	}
	var n int32
	fmt.Sscan(p, &n)
	return n
}

// TestHelmChart renders the chart with the default and a production-like
// values file and checks what matters on a cluster.
func TestHelmChart(t *testing.T) {
	for _, values := range [][]string{nil, {filepath.Join(chart, "values-production.yaml")}} {
		t.Run(fmt.Sprint("values", values), func(t *testing.T) {
			r := render(t, values...)
			specs := r.podSpecs()
			if len(r.daemonSets) != 1 || len(r.deployments) != 1 || len(r.statefulSets) < 1 || len(r.pdbs) < 1 {
				t.Fatalf("objects: %d DaemonSets, %d Deployments, %d StatefulSets, %d PDBs",
					len(r.daemonSets), len(r.deployments), len(r.statefulSets), len(r.pdbs))
			}

			// Every container, init containers too, has requests and limits.
			for name, spec := range specs {
				for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
					res := c.Resources
					if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Cpu().IsZero() || res.Limits.Memory().IsZero() {
						t.Errorf("%s/%s: resources %+v", name, c.Name, res)
					}
				}
			}

			// The agent: host network, on every node, and containerd's
			// config dir mounted where configure/restore write.
			ds := r.daemonSets[0]
			pod := ds.Spec.Template.Spec
			if !pod.HostNetwork || len(pod.Tolerations) == 0 || pod.Containers[0].ReadinessProbe == nil {
				t.Fatal("agent DaemonSet: want hostNetwork, tolerations and a readiness probe")
			}
			var containerdVol string
			for _, v := range pod.Volumes {
				if v.HostPath != nil && v.HostPath.Path == "/etc/containerd" {
					containerdVol = v.Name
				}
			}
			mounted := func(c corev1.Container) bool {
				for _, m := range c.VolumeMounts {
					if m.Name == containerdVol && m.MountPath == "/host/etc/containerd" {
						return true
					}
				}
				return false
			}
			if containerdVol == "" || !mounted(pod.InitContainers[0]) || !mounted(pod.Containers[0]) {
				t.Fatal("agent DaemonSet does not mount the node's /etc/containerd for configure and restore")
			}
			if pod.Containers[0].Lifecycle == nil || !strings.Contains(strings.Join(pod.Containers[0].Lifecycle.PreStop.Exec.Command, " "), "containerd restore") {
				t.Fatal("agent preStop does not restore containerd's files")
			}

			// Component configs parse in the real binaries, and Services
			// expose the ports the binaries listen on.
			listens := map[string]int32{}
			for _, c := range []string{"origin", "tracker", "agent"} {
				cm := r.configMaps["shoal-"+c]
				if cm == nil {
					t.Fatalf("no ConfigMap shoal-%s", c)
				}
				file := filepath.Join(t.TempDir(), c+".yaml")
				os.WriteFile(file, []byte(cm.Data[c+".yaml"]), 0o644)
				out, err := exec.Command(proctest.Binary(t, c), "--config", file, "--check-config").CombinedOutput()
				if err != nil {
					t.Fatalf("shoal-%s rejects its rendered config: %v\n%s\n%s", c, err, out, cm.Data[c+".yaml"])
				}
				var addrs struct {
					Addr     string `json:"addr"`
					GRPCAddr string `json:"grpc_addr"`
					HTTPAddr string `json:"http_addr"`
				}
				j, _ := yaml.YAMLToJSON([]byte(cm.Data[c+".yaml"]))
				json.Unmarshal(j, &addrs)
				switch c {
				case "tracker":
					listens["shoal-tracker/grpc"], listens["shoal-tracker/metrics"] = port(t, addrs.GRPCAddr), port(t, addrs.HTTPAddr)
				case "origin":
					listens["shoal-origin/http"] = port(t, addrs.Addr)
				case "agent":
					listens["shoal-agent/registry"] = port(t, addrs.Addr)
				}
			}
			containerPort := func(workload, name string) int32 {
				spec := specs[workload]
				if spec == nil {
					t.Fatalf("no workload %s", workload)
				}
				for _, c := range spec.Containers {
					for _, p := range c.Ports {
						if p.Name == name {
							return p.ContainerPort
						}
					}
				}
				t.Fatalf("%s has no port %q", workload, name)
				return 0
			}
			for key, want := range listens {
				workload, name, _ := strings.Cut(key, "/")
				if got := containerPort(workload, name); got != want {
					t.Errorf("%s port %s is %d, the binary listens on %d", workload, name, got, want)
				}
			}
			for _, svc := range r.services {
				workload := strings.TrimSuffix(svc.Name, "-headless")
				if _, ok := specs[workload]; !ok {
					continue
				}
				for _, p := range svc.Spec.Ports {
					if got := containerPort(workload, p.TargetPort.StrVal); got != p.Port {
						t.Errorf("Service %s port %s: %d, container listens on %d", svc.Name, p.Name, p.Port, got)
					}
				}
			}
		})
	}
}

// manifestSet is what `make manifests` renders with besides the defaults:
// no generated keys, which in a committed file would be everyone's.
var manifestSet = []string{"--set", "tls.generate=false", "--set", "p2p.psk.generate=false", "--set", "capabilities.generate=false"}

// The plain manifests beside the chart are the chart rendered with its
// defaults, less the generated keys: `make manifests` keeps them so.
func TestRenderedManifestsUpToDate(t *testing.T) {
	out, err := exec.Command(helm(t), append([]string{"template", "shoal", chart, "--namespace", "shoal"}, manifestSet...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("kubernetes/shoal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, committed) {
		t.Fatal("deploy/kubernetes/shoal.yaml is stale: run make manifests")
	}
}

// config is a component's rendered config file, as generic YAML.
func (r rendered) config(t *testing.T, component string) map[string]any {
	t.Helper()
	cm := r.configMaps["shoal-"+component]
	if cm == nil {
		t.Fatalf("no ConfigMap shoal-%s", component)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data[component+".yaml"]), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// str walks m along keys to a string ("" when absent).
func str(m map[string]any, keys ...string) string {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

// secretFile finds the Secret that the file at path comes from in the
// container (mounted directory, or a subPath of one): its name and key.
func secretFile(spec *corev1.PodSpec, c corev1.Container, path string) (name, key string, ok bool) {
	for _, m := range c.VolumeMounts {
		var rel string
		switch {
		case m.SubPath != "" && path == m.MountPath:
			rel = m.SubPath
		case m.SubPath == "" && strings.HasPrefix(path, m.MountPath+"/"):
			rel = strings.TrimPrefix(path, m.MountPath+"/")
		default:
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			key = rel
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			return v.Secret.SecretName, key, true
		}
	}
	return "", "", false
}

// TestHelmDefaultsAreSafe: what the chart installs is locked down without
// further settings — TLS on every link with certificates that name what
// the components dial, a private-network key for the swarm, secrets only
// in mounted files, and no profiling listener.
func TestHelmDefaultsAreSafe(t *testing.T) {
	for _, values := range [][]string{nil, {filepath.Join(chart, "values-production.yaml")}} {
		t.Run(fmt.Sprint("values", values), func(t *testing.T) {
			r := render(t, values...)
			specs := r.podSpecs()
			container := func(workload string) (*corev1.PodSpec, corev1.Container) {
				spec := specs[workload]
				if spec == nil || len(spec.Containers) == 0 {
					t.Fatalf("no workload %s", workload)
				}
				return spec, spec.Containers[0]
			}
			// fromSecret fails unless every path is a file of a mounted
			// Secret, and that Secret, when the chart renders it, has the key.
			fromSecret := func(workload string, paths ...string) {
				t.Helper()
				spec, c := container(workload)
				for _, p := range paths {
					if p == "" {
						t.Errorf("%s: a TLS or key file is not configured", workload)
						continue
					}
					name, key, ok := secretFile(spec, c, p)
					if !ok {
						t.Errorf("%s: %s is not a file from a mounted Secret", workload, p)
						continue
					}
					if s := r.secrets[name]; s != nil && len(s.Data[key]) == 0 {
						t.Errorf("%s: Secret %s has no %s", workload, name, key)
					}
				}
			}
			origin, tracker, agent := r.config(t, "origin"), r.config(t, "tracker"), r.config(t, "agent")

			// Origin: HTTPS, client certificates on its internal endpoints.
			fromSecret("shoal-origin", str(origin, "tls", "cert_file"), str(origin, "tls", "key_file"), str(origin, "tls", "client_ca_file"))
			// Tracker: mutual TLS on gRPC, the CA for https origins.
			fromSecret("shoal-tracker", str(tracker, "tls", "cert_file"), str(tracker, "tls", "key_file"), str(tracker, "tls", "ca_file"),
				str(tracker, "origin_tls", "ca_file"))
			// Agent: its certificate for the tracker, https origins.
			fromSecret("shoal-agent", str(agent, "tracker_tls", "cert_file"), str(agent, "tracker_tls", "key_file"), str(agent, "tracker_tls", "ca_file"))
			regs, _ := agent["registries"].(map[string]any)
			if len(regs) == 0 {
				t.Fatal("agent has no registries")
			}
			var originHosts []string
			for name, up := range regs {
				upm, _ := up.(map[string]any)
				origins, _ := upm["origins"].([]any)
				for _, o := range origins {
					u, err := url.Parse(fmt.Sprint(o))
					if err != nil || u.Scheme != "https" {
						t.Errorf("agent registry %q: origin %v is not https", name, o)
						continue
					}
					originHosts = append(originHosts, u.Hostname())
				}
				fromSecret("shoal-agent", str(upm, "tls", "ca_file"))
			}
			// etcd: https with client certificates, from origins and trackers.
			var etcdHosts []string
			for _, comp := range []struct {
				workload string
				cfg      map[string]any
			}{{"shoal-origin", origin}, {"shoal-tracker", tracker}} {
				eps, _ := comp.cfg["etcd"].(map[string]any)["endpoints"].([]any)
				if len(eps) == 0 {
					t.Errorf("%s: no etcd endpoints", comp.workload)
				}
				for _, ep := range eps {
					u, err := url.Parse(fmt.Sprint(ep))
					if err != nil || u.Scheme != "https" {
						t.Errorf("%s: etcd endpoint %v is not https", comp.workload, ep)
						continue
					}
					etcdHosts = append(etcdHosts, u.Hostname())
				}
				fromSecret(comp.workload, str(comp.cfg, "etcd", "tls", "cert_file"), str(comp.cfg, "etcd", "tls", "key_file"),
					str(comp.cfg, "etcd", "tls", "ca_file"))
			}
			if spec := specs["shoal-etcd"]; spec != nil {
				_, c := container("shoal-etcd")
				args := map[string]string{}
				for _, a := range c.Args {
					k, v, _ := strings.Cut(a, "=")
					args[k] = v
				}
				for _, k := range []string{"--listen-client-urls", "--advertise-client-urls", "--listen-peer-urls", "--initial-advertise-peer-urls"} {
					if !strings.HasPrefix(args[k], "https://") {
						t.Errorf("etcd %s=%s: not https", k, args[k])
					}
				}
				if _, ok := args["--client-cert-auth"]; !ok {
					t.Error("etcd does not require client certificates")
				}
				if _, ok := args["--peer-client-cert-auth"]; !ok {
					t.Error("etcd does not require peer certificates")
				}
				if _, ok := args["--enable-pprof"]; ok {
					t.Error("etcd serves pprof")
				}
				fromSecret("shoal-etcd", args["--cert-file"], args["--key-file"], args["--trusted-ca-file"],
					args["--peer-cert-file"], args["--peer-key-file"], args["--peer-trusted-ca-file"])
			}

			// The private network: agents and origins hold the same key.
			fromSecret("shoal-agent", str(agent, "p2p", "psk_file"))
			fromSecret("shoal-origin", str(origin, "p2p", "psk_file"))
			if s := r.secrets["shoal-pnet"]; s != nil {
				if _, err := pnet.DecodeV1PSK(bytes.NewReader(s.Data["swarm.key"])); err != nil {
					t.Errorf("generated swarm.key: %v\n%s", err, s.Data["swarm.key"])
				}
			} else if values == nil {
				t.Error("the default install generates no private-network key")
			}

			// Piece capabilities: origins hold the private key, agents only
			// the public half, and the two are a pair.
			keyFile, pubFile := str(origin, "capability_key_file"), str(agent, "capability_public_key_file")
			fromSecret("shoal-origin", keyFile)
			fromSecret("shoal-agent", pubFile)
			for _, v := range specs["shoal-agent"].Volumes {
				if v.Secret != nil && v.Secret.SecretName == "shoal-capability-key" {
					t.Error("the agents mount the capability private key")
				}
			}
			if values == nil {
				checkCapabilityPair(t, r)
			}

			// Generated certificates chain to the CA and name what is
			// dialled: the Service and pods of each component.
			if values == nil {
				wantNames := map[string][]string{
					"origin":  append([]string{"shoal-origin-0.shoal-origin-headless.shoal.svc"}, originHosts...),
					"tracker": {str(tracker, "tls", "server_name"), "shoal-tracker.shoal.svc"},
					"etcd":    etcdHosts,
					"agent":   nil,
				}
				for comp, names := range wantNames {
					checkCert(t, r.secrets["shoal-tls-"+comp], names)
				}
				// The origins' internal endpoints take origins' certificates
				// only: the names they want are the origin's, no other's.
				clientNames, _ := origin["tls"].(map[string]any)["client_names"].([]any)
				if len(clientNames) == 0 {
					t.Error("origin: tls.client_names is empty: any certificate of the CA opens the internal endpoints")
				}
				for _, n := range clientNames {
					checkCert(t, r.secrets["shoal-tls-origin"], []string{fmt.Sprint(n)})
					for _, other := range []string{"agent", "tracker", "etcd"} {
						if validFor(r.secrets["shoal-tls-"+other], fmt.Sprint(n)) {
							t.Errorf("the %s certificate opens the origins' internal endpoints (valid for %v)", other, n)
						}
					}
				}
			}

			// Secrets reach processes only as files: never in args, env
			// or a ConfigMap.
			var secretValues []string
			for _, s := range r.secrets {
				for _, v := range s.Data {
					if v := strings.TrimSpace(string(v)); len(v) >= 16 {
						secretValues = append(secretValues, v)
					}
				}
			}
			for workload, spec := range specs {
				for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
					for _, e := range c.EnvFrom {
						if e.SecretRef != nil {
							t.Errorf("%s/%s: env from Secret %s", workload, c.Name, e.SecretRef.Name)
						}
					}
					visible := append(append([]string{}, c.Command...), c.Args...)
					for _, e := range c.Env {
						if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
							t.Errorf("%s/%s: env %s from a Secret", workload, c.Name, e.Name)
						}
						visible = append(visible, e.Value)
					}
					for _, v := range visible {
						for _, sv := range secretValues {
							if strings.Contains(v, sv) {
								t.Errorf("%s/%s: a secret value on the command line or in the environment", workload, c.Name)
							}
						}
						if strings.HasPrefix(v, "--debug-addr") {
							t.Errorf("%s/%s: %s", workload, c.Name, v)
						}
					}
					for _, p := range c.Ports {
						if strings.Contains(p.Name, "debug") || strings.Contains(p.Name, "pprof") {
							t.Errorf("%s/%s: port %s exposed", workload, c.Name, p.Name)
						}
					}
				}
			}
			for name, cm := range r.configMaps {
				for _, v := range cm.Data {
					for _, sv := range secretValues {
						if strings.Contains(v, sv) {
							t.Errorf("ConfigMap %s holds a secret value", name)
						}
					}
				}
			}
			for _, comp := range []string{"origin", "tracker", "agent"} {
				walkKeys(r.config(t, comp), func(key string, v any) {
					if s, ok := v.(string); ok && s != "" && !strings.HasSuffix(key, "_file") &&
						(strings.Contains(key, "secret") || strings.Contains(key, "password") || key == "psk") {
						t.Errorf("%s config: %s inline, want a *_file", comp, key)
					}
				})
			}

			// Profiles only on loopback, if at all.
			if addr := str(tracker, "debug_addr"); addr != "" {
				host, _, _ := net.SplitHostPort(addr)
				if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
					t.Errorf("tracker debug_addr %q beyond loopback", addr)
				}
			}
		})
	}
}

// walkKeys calls fn for every key of m and its nested maps.
func walkKeys(m map[string]any, fn func(key string, v any)) {
	for k, v := range m {
		fn(k, v)
		switch v := v.(type) {
		case map[string]any:
			walkKeys(v, fn)
		case []any:
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					walkKeys(em, fn)
				}
			}
		}
	}
}

// checkCert verifies the Secret's tls.crt against its ca.crt for each
// name, for use by servers and clients both.
func checkCert(t *testing.T, s *corev1.Secret, names []string) {
	t.Helper()
	if s == nil {
		t.Error("certificate Secret not rendered")
		return
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.Data["ca.crt"]) {
		t.Errorf("%s: no CA", s.Name)
		return
	}
	if _, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"]); err != nil {
		t.Errorf("%s: key pair: %v", s.Name, err)
		return
	}
	blk, _ := pem.Decode(s.Data["tls.crt"])
	if blk == nil {
		t.Errorf("%s: tls.crt is not PEM", s.Name)
		return
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Errorf("%s: %v", s.Name, err)
		return
	}
	// Verify accepts a chain that allows any one of KeyUsages: ask for
	// each.
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("%s: usage %v: %v", s.Name, u, err)
		}
	}
	for _, n := range names {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: n}); err != nil {
			t.Errorf("%s: not valid for %s: %v", s.Name, n, err)
		}
	}
}

// validFor reports whether the Secret's tls.crt is valid for name.
func validFor(s *corev1.Secret, name string) bool {
	if s == nil {
		return false
	}
	blk, _ := pem.Decode(s.Data["tls.crt"])
	if blk == nil {
		return false
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	return err == nil && cert.VerifyHostname(name) == nil
}

// checkCapabilityPair fails unless the rendered capability Secrets hold an
// Ed25519 private key and its public half, each as the component that
// mounts it loads it.
func checkCapabilityPair(t *testing.T, r rendered) ed25519.PrivateKey {
	t.Helper()
	keySecret, pubSecret := r.secrets["shoal-capability-key"], r.secrets["shoal-capability-public"]
	if keySecret == nil || pubSecret == nil {
		t.Fatal("the default install generates no capability key")
	}
	dir := t.TempDir()
	keyFile, pubFile := filepath.Join(dir, "capability.key"), filepath.Join(dir, "capability.pub")
	os.WriteFile(keyFile, keySecret.Data["capability.key"], 0o600)
	os.WriteFile(pubFile, pubSecret.Data["capability.pub"], 0o644)
	priv, err := capability.LoadPrivateKey(keyFile)
	if err != nil {
		t.Fatalf("the origins cannot load the generated key: %v", err)
	}
	pub, err := capability.LoadPublicKey(pubFile)
	if err != nil {
		t.Fatalf("the agents cannot load the generated public key: %v", err)
	}
	if !pub.Equal(priv.Public()) {
		t.Fatal("the agents' public key is not the origins' key's")
	}
	return priv
}

// TestHelmCapabilityKeyOfYourOwn: a key given in the values is the one the
// origins sign with, and the agents get its public half.
func TestHelmCapabilityKeyOfYourOwn(t *testing.T) {
	_, mine, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKCS8PrivateKey(mine)
	values, _ := yaml.Marshal(map[string]any{"capabilities": map[string]any{
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}})
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, values, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := checkCapabilityPair(t, render(t, f)); !got.Equal(mine) {
		t.Fatal("the origins sign with a generated key, not the one given")
	}
}

// TestHelmUpstreams: upstreams in the values reach the origins' config as
// the origin reads it, each credentials secret mounted where its
// password_file points, and nothing changes without them.
func TestHelmUpstreams(t *testing.T) {
	values := filepath.Join(t.TempDir(), "upstreams.yaml")
	os.WriteFile(values, []byte(`origin:
  upstreams:
    - {namespace: docker.io, url: "https://registry-1.docker.io", tagTTL: 10m}
    - {namespace: ghcr.io, url: "https://ghcr.io", username: bot, credentialsSecret: ghcr-pull, bandwidth: 104857600}
`), 0o644)
	r := render(t, values)
	var cfg struct {
		Upstreams []upstream.Config `yaml:"upstreams"`
	}
	dec := yamlv3.NewDecoder(strings.NewReader(pickUpstreams(t, r.configMaps["shoal-origin"].Data["origin.yaml"])))
	dec.KnownFields(true) // as the origin reads its config
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Upstreams) != 2 || cfg.Upstreams[0].TagTTL != 10*time.Minute || cfg.Upstreams[1].PasswordFile != "/etc/shoal/upstreams/1/password" ||
		cfg.Upstreams[1].Username != "bot" || cfg.Upstreams[1].Bandwidth != 100<<20 || cfg.Upstreams[0].PasswordFile != "" {
		t.Fatalf("upstreams %+v", cfg.Upstreams)
	}
	if _, err := upstream.NewSet(cfg.Upstreams[:1], nil, nil); err != nil {
		t.Fatalf("the origin refuses the rendered upstream: %v", err)
	}
	var sts *appsv1.StatefulSet
	for _, s := range r.statefulSets {
		if s.Name == "shoal-origin" {
			sts = s
		}
	}
	mounted := false
	for _, m := range sts.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounted = mounted || (m.Name == "upstream-1" && m.MountPath == "/etc/shoal/upstreams/1")
	}
	secret := false
	for _, v := range sts.Spec.Template.Spec.Volumes {
		secret = secret || (v.Name == "upstream-1" && v.Secret != nil && v.Secret.SecretName == "ghcr-pull")
	}
	if !mounted || !secret {
		t.Fatal("the ghcr.io credentials secret is not mounted")
	}
	if strings.Contains(render(t).configMaps["shoal-origin"].Data["origin.yaml"], "upstreams") {
		t.Fatal("default values render an upstreams block")
	}
}

// pickUpstreams is the upstreams block of an origin.yaml (the rest holds
// keys only the origin's command knows).
func pickUpstreams(t *testing.T, doc string) string {
	t.Helper()
	i := strings.Index(doc, "\nupstreams:")
	if i < 0 {
		t.Fatalf("no upstreams in\n%s", doc)
	}
	rest := doc[i+1:]
	lines := strings.Split(rest, "\n")
	out := []string{lines[0]}
	for _, l := range lines[1:] {
		if l != "" && l[0] != ' ' {
			break
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
