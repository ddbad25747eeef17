package tlsconfig_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

func TestFiles(t *testing.T) {
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		files      tlsconfig.Files
		serverErr  string
		clientErr  string
		clientAuth tls.ClientAuthType
	}{
		{"mutual", pki, "", "", tls.RequireAndVerifyClientCert},
		{"server without CA", tlsconfig.Files{CertFile: pki.CertFile, KeyFile: pki.KeyFile}, "", "", tls.NoClientCert},
		{"CA only", tlsconfig.Files{CAFile: pki.CAFile}, "needs cert_file", "", 0},
		{"cert without key", tlsconfig.Files{CertFile: pki.CertFile}, "go together", "go together", 0},
		{"missing CA file", tlsconfig.Files{CAFile: "/nonexistent/ca.pem"}, "read CA", "read CA", 0},
		{"CA file without certificates", tlsconfig.Files{CAFile: junk}, "no certificates", "no certificates", 0},
		{"key pair that does not parse", tlsconfig.Files{CertFile: junk, KeyFile: junk}, "key pair", "key pair", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.files.Enabled() {
				t.Fatal("Enabled() = false with files set")
			}
			sc, err := tt.files.Server()
			if tt.serverErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.serverErr) {
					t.Fatalf("Server() err = %v, want %q", err, tt.serverErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if sc.ClientAuth != tt.clientAuth || sc.MinVersion != tls.VersionTLS13 {
				t.Fatalf("server config: client auth %v, min version %x", sc.ClientAuth, sc.MinVersion)
			}
			_, err = tt.files.Client()
			if tt.clientErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.clientErr) {
					t.Fatalf("Client() err = %v, want %q", err, tt.clientErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
		})
	}
	if (tlsconfig.Files{}).Enabled() {
		t.Fatal("empty Files enabled")
	}
}
