package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The shipped example config must parse strictly, and flags must win.
func TestParse(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("grpc_addr: :1\nintervall: 3s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("tracker-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(fileConfig) bool
	}{
		{"example file", []string{"--config", "../../deploy/config/tracker.yaml"}, "", func(c fileConfig) bool {
			return c.ID == "tracker-0" && c.GRPCAddr == ":7000" && c.Interval == 3*time.Second &&
				c.DefaultPeers == 30 && c.PeerAnnounceBurst == 5000 && c.MemberTTL == 10*time.Second &&
				c.DebugAddr == "" && c.HTTPTimeouts.ReadHeader == 10*time.Second && c.HTTPTimeouts.Idle == 2*time.Minute &&
				// Safe as shipped: mutual TLS on gRPC, the origins' CA,
				// the embedded etcd on TLS with client certificates.
				c.TLS.CertFile != "" && c.TLS.CAFile != "" && c.OriginTLS.CAFile != "" &&
				strings.HasPrefix(c.EmbeddedEtcd.ClientURL, "https://") && c.EmbeddedEtcd.TLS.CAFile != ""
		}},
		{"flags override the file", []string{"--config", "../../deploy/config/tracker.yaml", "--peers", "7",
			"--etcd-endpoints", "http://e1:2379, http://e2:2379", "--interval", "1s"}, "", func(c fileConfig) bool {
			return c.DefaultPeers == 7 && c.Interval == time.Second && len(c.Etcd.Endpoints) == 2 && c.Etcd.Endpoints[1] == "http://e2:2379"
		}},
		{"defaults", []string{"--data-dir", "/tmp/x"}, "", func(c fileConfig) bool {
			return c.GRPCAddr == ":7000" && c.HTTPAddr == ":7001" && c.ID != "" && c.EmbeddedEtcd.ClientURL == "http://127.0.0.1:2379" &&
				c.DebugAddr == ""
		}},
		{"debug address", []string{"--data-dir", "/tmp/x", "--debug-addr", "127.0.0.1:7002"}, "", func(c fileConfig) bool {
			return c.DebugAddr == "127.0.0.1:7002"
		}},
		{"typo in the file", []string{"--config", bad}, "intervall", nil},
		{"embedded etcd without a data dir", nil, "--data-dir", nil},
		{"origin user without a password", []string{"--data-dir", "/tmp/x", "--origin-username", "tracker"}, "password_file", nil},
		{"origin password file missing", []string{"--data-dir", "/tmp/x", "--origin-username", "tracker",
			"--origin-password-file", filepath.Join(t.TempDir(), "none")}, "no such file", nil},
		{"origin credentials", []string{"--data-dir", "/tmp/x", "--origin-username", "tracker", "--origin-password-file", pw}, "", func(c fileConfig) bool {
			return c.originCreds.Username() == "tracker"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("parsed %+v", c)
			}
		})
	}
}
