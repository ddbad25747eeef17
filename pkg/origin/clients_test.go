package origin_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
)

// The registry clients CI pushes with are the real judges of protocol
// compliance: each one below pushes to, copies within and pulls from a real
// origin, and what comes back is checked byte for byte. Missing binaries
// skip locally and fail in CI (.ci/run installs them).

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed; .ci/run should have installed it", name)
		}
		t.Skipf("%s not installed (make tools / apt install)", name)
	}
	return p
}

// runTool runs a client binary with a bounded time and returns its stdout.
func runTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireTool(t, name), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// layerTar builds an uncompressed layer of one file of n random bytes.
func layerTar(t *testing.T, name string, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := randomBytes(t, n)
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(n), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ociLayout reads an OCI image layout written by a client and checks that
// every blob's bytes hash to its name. It returns the blobs by digest.
func ociLayout(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Fatalf("no OCI layout in %s: %v", dir, err)
	}
	blobs := map[string][]byte{}
	files, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no blobs in %s (%v)", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := "sha256:" + filepath.Base(f)
		if got := sha(b); got != d {
			t.Fatalf("pulled blob %s hashes to %s", d, got)
		}
		blobs[d] = b
	}
	return blobs
}

// layerContents decompresses each layer of the image manifest m (found in
// blobs) and returns the uncompressed tars.
func layerContents(t *testing.T, blobs map[string][]byte, m []byte) [][]byte {
	t.Helper()
	var man struct {
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(m, &man); err != nil {
		t.Fatalf("manifest: %v\n%s", err, m)
	}
	var out [][]byte
	for _, l := range man.Layers {
		b, ok := blobs[l.Digest]
		if !ok {
			t.Fatalf("layer %s not pulled", l.Digest)
		}
		if strings.Contains(l.MediaType, "gzip") {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
		}
		out = append(out, b)
	}
	return out
}

func sameLayers(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d layers, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("layer %d differs from what was pushed (%d vs %d bytes)", i, len(got[i]), len(want[i]))
		}
	}
}

func TestRealClients(t *testing.T) {
	if testing.Short() {
		t.Skip("real clients: not in -short")
	}
	c := newClient(t, origin.Config{})
	host := c.o.Host
	tmp := t.TempDir()

	// The image CI would push: three layers, built here so every byte is known.
	layers := [][]byte{layerTar(t, "a.bin", 64<<10), layerTar(t, "b.bin", 1<<20), layerTar(t, "c.bin", 3<<20)}
	var appendArgs []string
	for i, l := range layers {
		p := filepath.Join(tmp, "layer"+string(rune('0'+i))+".tar")
		if err := os.WriteFile(p, l, 0o644); err != nil {
			t.Fatal(err)
		}
		appendArgs = append(appendArgs, "-f", p)
	}
	img := host + "/ci/app:v1"
	index := host + "/ci/app:multi"

	// manifestOf fetches what the origin serves for ref, as a pulling
	// runtime would, and returns body and Content-Type.
	manifestOf := func(repo, ref string) ([]byte, string) {
		r := c.do("GET", "/v2/"+repo+"/manifests/"+ref, header{"Accept": strings.Join([]string{
			mtOCIManifest, mtOCIIndex, mtDockerManifest, mtDockerList}, ", ")}, nil).expect(t, 200, "")
		return r.body, r.Header.Get("Content-Type")
	}

	t.Run("crane", func(t *testing.T) {
		runTool(t, nil, "crane", append([]string{"append", "--insecure", "-t", img}, appendArgs...)...)
		pushed := runTool(t, nil, "crane", "digest", "--insecure", img)

		out := filepath.Join(t.TempDir(), "pulled")
		runTool(t, nil, "crane", "pull", "--insecure", "--format", "oci", img, out)
		blobs := ociLayout(t, out)
		m, _ := manifestOf("ci/app", "v1")
		if sha(m) != pushed {
			t.Fatalf("served manifest hashes to %s, crane pushed %s", sha(m), pushed)
		}
		sameLayers(t, layerContents(t, blobs, m), layers)

		runTool(t, nil, "crane", "copy", "--insecure", img, host+"/mirror/app:v1")
		if got := runTool(t, nil, "crane", "digest", "--insecure", host+"/mirror/app:v1"); got != pushed {
			t.Fatalf("copy has digest %s, want %s", got, pushed)
		}

		// A manifest list of two platform images, as docker buildx pushes.
		for _, p := range []string{"amd64", "arm64"} {
			runTool(t, nil, "crane", "mutate", "--insecure", "--set-platform", "linux/"+p, img, "-t", img+"-"+p)
		}
		runTool(t, nil, "crane", "index", "append", "--insecure", "--docker-empty-base", "-m", img+"-amd64", "-m", img+"-arm64", "-t", index)
		list := runTool(t, nil, "crane", "index", "list", "--insecure", index)
		if !strings.Contains(list, "linux/amd64") || !strings.Contains(list, "linux/arm64") {
			t.Fatalf("index lists:\n%s", list)
		}
		if _, ct := manifestOf("ci/app", "multi"); ct != mtDockerList {
			t.Fatalf("manifest list served as %q", ct)
		}
	})

	t.Run("regctl", func(t *testing.T) {
		env := []string{"HOME=" + t.TempDir()}
		runTool(t, env, "regctl", "registry", "set", "--tls", "disabled", host)
		want := runTool(t, env, "regctl", "image", "digest", index)
		runTool(t, env, "regctl", "image", "copy", index, host+"/regctl/app:multi")
		if got := runTool(t, env, "regctl", "image", "digest", host+"/regctl/app:multi"); got != want {
			t.Fatalf("regctl copy has digest %s, want %s", got, want)
		}
		// Every child manifest and blob came along: pull the arm64 image.
		runTool(t, env, "regctl", "image", "copy", "--platform", "linux/arm64", host+"/regctl/app:multi", "ocidir://"+filepath.Join(t.TempDir(), "arm"))

		// Referrers through a real client: attach an SBOM, then list it.
		sbom := filepath.Join(t.TempDir(), "sbom.json")
		if err := os.WriteFile(sbom, []byte(`{"spdxVersion":"SPDX-2.3"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		runTool(t, env, "regctl", "artifact", "put", "--subject", img, "--artifact-type", "application/vnd.example.sbom",
			"--file", sbom, "--file-media-type", "application/spdx+json")
		n := runTool(t, env, "regctl", "artifact", "list", img, "--filter-artifact-type", "application/vnd.example.sbom", "--format", "{{len .Descriptors}}")
		if n != "1" {
			t.Fatalf("regctl lists %s SBOM referrers, want 1", n)
		}
		n = runTool(t, env, "regctl", "artifact", "list", img, "--filter-artifact-type", "application/vnd.example.other", "--format", "{{len .Descriptors}}")
		if n != "0" {
			t.Fatalf("artifactType filter let %s referrers through", n)
		}
	})

	t.Run("skopeo", func(t *testing.T) {
		policy := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		skopeo := func(t *testing.T, args ...string) string {
			return runTool(t, nil, "skopeo", append([]string{"--policy", policy, "--tmpdir", t.TempDir()}, args...)...)
		}
		noTLS := []string{"--src-tls-verify=false", "--dest-tls-verify=false"}
		for _, tc := range []struct {
			format, mediaType string
		}{
			{"v2s2", mtDockerManifest},
			{"oci", mtOCIManifest},
		} {
			t.Run(tc.format, func(t *testing.T) {
				dst := "skopeo/" + tc.format
				skopeo(t, append(append([]string{"copy"}, noTLS...), "--format", tc.format, "docker://"+img, "docker://"+host+"/"+dst+":v1")...)
				m, ct := manifestOf(dst, "v1")
				if ct != tc.mediaType {
					t.Fatalf("skopeo --format %s stored %q", tc.format, ct)
				}
				// Pull it back into an OCI layout and compare every layer.
				out := filepath.Join(t.TempDir(), "layout")
				skopeo(t, "copy", "--src-tls-verify=false", "--preserve-digests", "docker://"+host+"/"+dst+":v1", "oci:"+out+":v1")
				blobs := ociLayout(t, out)
				sameLayers(t, layerContents(t, blobs, m), layers)
			})
		}
		t.Run("index", func(t *testing.T) {
			// A manifest list copied as is keeps its digest...
			skopeo(t, append(append([]string{"copy", "--all", "--preserve-digests"}, noTLS...), "docker://"+index, "docker://"+host+"/skopeo/app:multi")...)
			want, _ := manifestOf("ci/app", "multi")
			got, _ := manifestOf("skopeo/app", "multi")
			if !bytes.Equal(got, want) {
				t.Fatalf("manifest list changed in copy:\n%s\nwant\n%s", got, want)
			}
			// ...and converted, becomes an OCI index of OCI manifests.
			skopeo(t, append(append([]string{"copy", "--all", "--format", "oci"}, noTLS...), "docker://"+index, "docker://"+host+"/skopeo/app:oci-index")...)
			if _, ct := manifestOf("skopeo/app", "oci-index"); ct != mtOCIIndex {
				t.Fatalf("converted index served as %q", ct)
			}
			out := filepath.Join(t.TempDir(), "layout")
			skopeo(t, "copy", "--all", "--src-tls-verify=false", "docker://"+host+"/skopeo/app:oci-index", "oci:"+out+":multi")
			if blobs := ociLayout(t, out); len(blobs) < 8 { // index, 2 manifests, 2 configs, 3 shared layers
				t.Fatalf("index copy pulled %d blobs", len(blobs))
			}
		})
	})
}
