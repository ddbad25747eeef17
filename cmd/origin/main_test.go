package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/config"
)

// The shipped example config must parse strictly into the real config type.
func TestExampleConfigParses(t *testing.T) {
	var fc fileConfig
	if err := config.Load("../../deploy/config/origin.yaml", &fc); err != nil {
		t.Fatal(err)
	}
	if fc.Addr != ":5000" || fc.Auth.Mode != "htpasswd" || !fc.Auth.AnonymousPull || fc.MaxBlobSize != 64<<30 ||
		fc.ID != "origin-0" || fc.Cluster.Replicas != 3 || fc.Cluster.Replication != "sync" || fc.MemberTTL != 10*time.Second ||
		fc.Cluster.SecretFile != "/etc/shoal/cluster-secret" || len(fc.Etcd.Endpoints) != 1 {
		t.Fatalf("parsed %+v", fc)
	}
	// Safe as shipped: HTTPS with client certificates on the internal
	// endpoints, etcd over TLS, the swarm's network key.
	if fc.TLS.CertFile == "" || fc.TLS.ClientCAFile == "" || len(fc.TLS.ClientNames) == 0 ||
		!strings.HasPrefix(fc.Etcd.Endpoints[0], "https://") || fc.Etcd.TLS.CertFile == "" || fc.Etcd.TLS.CAFile == "" ||
		fc.P2P.PSKFile == "" {
		t.Fatalf("the shipped origin config leaves a protection off: %+v", fc)
	}
}

// With etcd endpoints the origin is one of a cluster, and a cluster needs
// its secret from a file before anything else happens.
func TestClusterNeedsSecret(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("s3cret\n"), 0o600)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"alone needs none", nil, ""},
		{"cluster without a secret", []string{"--etcd-endpoints", "http://127.0.0.1:1"}, "cluster secret"},
		{"shipped file without its secret file", []string{"--config", "../../deploy/config/origin.yaml", "--cluster-secret-file", filepath.Join(dir, "none")}, "no such file"},
		{"short secret", []string{"--etcd-endpoints", "http://127.0.0.1:1", "--cluster-secret-file", short}, "need at least"},
		{"no secret on the command line", []string{"--etcd-endpoints", "http://127.0.0.1:1", "--cluster-secret", "0123456789abcdef0123"}, "cluster-secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// run stops at the first error, before it listens or dials
			// etcd; the good cases stop at --check-config.
			args := append([]string{"--addr", "127.0.0.1:0", "--data-dir", dir}, tt.args...)
			if tt.wantErr == "" {
				args = append(args, "--check-config")
			}
			err := run(args)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// --check-config catches a retention rule the collector would refuse.
func TestGCConfigChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, yaml, wantErr string
	}{
		{"rules", "gc:\n  interval: 6h\n  retention:\n    - repositories: \"ci/*\"\n      keep_last: 20\n      keep_tags: \"v[0-9]+\"\n      untagged_older_than: 168h\n", ""},
		{"bad regexp", "gc:\n  retention:\n    - repositories: \"*\"\n      keep_tags: \"(\"\n", "keep_tags"},
		{"bad pattern", "gc:\n  retention:\n    - repositories: \"ci/[\"\n", "repositories pattern"},
		{"negative grace", "gc:\n  grace: -1s\n", "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".yaml")
			os.WriteFile(p, []byte(tt.yaml), 0o644)
			err := run([]string{"--config", p, "--addr", "127.0.0.1:0", "--data-dir", dir, "--check-config"})
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("addr: :1\ndata_dri: /x\n"), 0o644)
	err := run([]string{"--config", p})
	if err == nil || !strings.Contains(err.Error(), "data_dri") {
		t.Fatalf("run with a typo = %v, want an error naming the key", err)
	}
}
