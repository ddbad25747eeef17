package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The chart's default image is what `make image` builds and tags: the
// Makefile's IMAGE_REPO at the version make stamps into the binaries, which
// is the chart's appVersion. With only a registry override (image.repository)
// every Shoal container runs that image, and origins and trackers run as the
// image's non-root user while the agent alone asks for root.
func TestChartImageIsMakeImage(t *testing.T) {
	var chartFile struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct{ Repository, Tag string } `json:"image"`
	}
	for file, v := range map[string]any{filepath.Join(chart, "Chart.yaml"): &chartFile, filepath.Join(chart, "values.yaml"): &values} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE_REPO\s*\?=\s*(\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile sets no IMAGE_REPO")
	}
	if values.Image.Repository != string(m[1]) || values.Image.Tag != "" {
		t.Errorf("values image %s:%q, make image builds %s (tag: the chart's appVersion)", values.Image.Repository, values.Image.Tag, m[1])
	}
	if _, err := exec.LookPath("make"); err == nil {
		out, err := exec.Command("make", "-s", "-C", "..", "version").Output()
		if err != nil {
			t.Fatalf("make version: %v", err)
		}
		// On a commit after a release tag git describe says so
		// (0.1.0-3-gabc1234); the chart names the release.
		if v := strings.TrimSpace(string(out)); v != chartFile.AppVersion && !strings.HasPrefix(v, chartFile.AppVersion+"-") {
			t.Errorf("make stamps version %q, the chart's appVersion is %q: bump Chart.yaml with the release tag", v, chartFile.AppVersion)
		}
	}

	override := filepath.Join(t.TempDir(), "registry.yaml")
	if err := os.WriteFile(override, []byte("image: {repository: registry.internal:5000/mirror/shoal}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, spec := range render(t, override).podSpecs() {
		var containers []corev1.Container
		containers = append(append(containers, spec.InitContainers...), spec.Containers...)
		for _, c := range containers {
			if name == "shoal-etcd" {
				continue
			}
			if want := "registry.internal:5000/mirror/shoal:" + chartFile.AppVersion; c.Image != want {
				t.Errorf("%s/%s image %s, want %s", name, c.Name, c.Image, want)
			}
			root := c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil && *c.SecurityContext.RunAsUser == 0
			switch name {
			case "shoal-agent":
				if !root {
					t.Errorf("%s/%s: the agent writes containerd's root-owned files; want runAsUser 0", name, c.Name)
				}
			default:
				p := spec.SecurityContext
				if root || p == nil || p.RunAsNonRoot == nil || !*p.RunAsNonRoot || p.RunAsUser == nil || *p.RunAsUser != 65532 || p.FSGroup == nil {
					t.Errorf("%s/%s: want the image's non-root user 65532 with fsGroup, pod securityContext %+v", name, c.Name, p)
				}
			}
		}
	}
}
