package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/shoal-project/shoal/pkg/proctest"
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
	r := rendered{configMaps: map[string]*corev1.ConfigMap{}}
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

// The plain manifests beside the chart are the chart rendered with its
// defaults: `make manifests` keeps them so.
func TestRenderedManifestsUpToDate(t *testing.T) {
	out, err := exec.Command(helm(t), "template", "shoal", chart, "--namespace", "shoal").Output()
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
