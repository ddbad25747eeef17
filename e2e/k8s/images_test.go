package k8s_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// buildTestbin compiles e2e/k8s/testbin static: pause, etcd and hello.
func buildTestbin(t *testing.T) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "testbin")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./testbin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testbin: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	must(t, err)
	return b
}

// singleBinaryImage is a one-layer linux/amd64 image holding body at
// path, run as entrypoint.
func singleBinaryImage(t *testing.T, body []byte, paths []string, entrypoint []string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, p := range paths {
		for d := filepath.Dir(p); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		must(t, tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}))
	}
	must(t, tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}))
	for _, p := range paths {
		must(t, tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))}))
		_, err := tw.Write(body)
		must(t, err)
	}
	must(t, tw.Close())
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
	must(t, err)
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: l, MediaType: types.OCILayer})
	must(t, err)
	cf, err := img.ConfigFile()
	must(t, err)
	cf = cf.DeepCopy()
	// Without os/arch containerd finds no match for the platform.
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.RootFS.Type = "layers"
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	must(t, err)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

func pushImage(t *testing.T, img v1.Image, ref string, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	must(t, err)
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// layoutIndex is the index make image wrote into the layout at dir.
func layoutIndex(t *testing.T, dir string) v1.ImageIndex {
	t.Helper()
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("layout %s (make image): %v", dir, err)
	}
	top, err := lp.ImageIndex()
	must(t, err)
	m, err := top.IndexManifest()
	must(t, err)
	if len(m.Manifests) != 1 {
		t.Fatalf("layout %s: %d entries", dir, len(m.Manifests))
	}
	idx, err := top.ImageIndex(m.Manifests[0].Digest)
	must(t, err)
	return idx
}

// originTransport reaches the in-cluster origin from the host: its
// certificate names the Service, which the host cannot resolve, so every
// dial goes to the Service's ClusterIP (kube-proxy routes it) and TLS checks
// the name against the chart's CA.
func originTransport(t *testing.T, caPEM []byte, clusterIP string) http.RoundTripper {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("origin CA: no certificate")
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return d.DialContext(ctx, network, net.JoinHostPort(clusterIP, port))
		},
	}
}

func basicAuth(user, pass string) remote.Option {
	return remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}))
}

func imageDigest(t *testing.T, img interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := img.Digest()
	must(t, err)
	return d.String()
}

func layerBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	ls, err := img.Layers()
	must(t, err)
	var n int64
	for _, l := range ls {
		s, err := l.Size()
		must(t, err)
		n += s
	}
	return n
}
