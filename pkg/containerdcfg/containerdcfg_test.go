package containerdcfg_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/containerdcfg"
)

func TestConfigPath(t *testing.T) {
	tests := []struct {
		name, toml, want string
		err              bool
	}{
		{"containerd 1.x", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n", "/etc/containerd/certs.d", false},
		{"containerd 2.x", "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n", "/etc/containerd/certs.d", false},
		{"no config_path", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\n", "", true},
		{"empty file", "", "", true},
		{"not TOML", "version = = 2", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.toml")
			os.WriteFile(p, []byte(tt.toml), 0o644)
			got, err := containerdcfg.ConfigPath(p)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ConfigPath = %q, %v", got, err)
			}
		})
	}
	if _, err := containerdcfg.ConfigPath(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Fatal("missing file accepted")
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("version = 2\n"), 0o644)
	if _, err := containerdcfg.ConfigPath(p); !errors.Is(err, containerdcfg.ErrNoConfigPath) {
		t.Fatalf("err = %v, want ErrNoConfigPath", err)
	}
}

// Configure keeps an operator's file, is idempotent, and Restore brings
// back exactly what was there.
func TestConfigureRestore(t *testing.T) {
	dir := t.TempDir()
	own := []byte("server = \"https://quay.io\"\n# the operator's own mirror setup\n[host.\"https://mirror.internal\"]\n  capabilities = [\"pull\"]\n")
	os.MkdirAll(filepath.Join(dir, "quay.io"), 0o755)
	os.WriteFile(filepath.Join(dir, "quay.io", "hosts.toml"), own, 0o600)
	foreign := []byte("server = \"https://ghcr.io\"\n")
	os.MkdirAll(filepath.Join(dir, "ghcr.io"), 0o755)
	os.WriteFile(filepath.Join(dir, "ghcr.io", "hosts.toml"), foreign, 0o644)

	mirrors := []containerdcfg.Mirror{{Registry: "quay.io", Agent: "127.0.0.1:5080"}, {Registry: "docker.io", Agent: "127.0.0.1:5080"}}
	for range 2 { // twice: the second run must not back up our own file
		if err := containerdcfg.Configure(dir, mirrors); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range mirrors {
		got, _ := os.ReadFile(filepath.Join(dir, m.Registry, "hosts.toml"))
		if !bytes.Equal(got, m.HostsTOML()) {
			t.Fatalf("%s hosts.toml:\n%s", m.Registry, got)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml")); !strings.Contains(string(b), "registry-1.docker.io") {
		t.Fatalf("docker.io server: %s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "quay.io", "hosts.toml.shoal-backup")); !bytes.Equal(b, own) {
		t.Fatal("backup is not the operator's file")
	}

	if err := containerdcfg.Restore(dir, []string{"quay.io", "docker.io", "ghcr.io"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "quay.io", "hosts.toml")); !bytes.Equal(b, own) {
		t.Fatalf("quay.io not restored:\n%s", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "quay.io", "hosts.toml")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored with mode %v, was 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, "quay.io", "hosts.toml.shoal-backup")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("backup left behind")
	}
	if _, err := os.Stat(filepath.Join(dir, "docker.io")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("docker.io dir left behind")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ghcr.io", "hosts.toml")); !bytes.Equal(b, foreign) {
		t.Fatal("a file Shoal never wrote was touched")
	}
	for _, bad := range []string{"../etc", "a/b", ""} {
		if err := containerdcfg.Configure(dir, []containerdcfg.Mirror{{Registry: bad, Agent: "x:1"}}); err == nil {
			t.Fatalf("registry %q accepted", bad)
		}
	}
}
