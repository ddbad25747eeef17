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

// A client verifies ServerName, not the host it dials: trackers dial each
// other by pod IP with certificates that name their Service.
func TestClientServerName(t *testing.T) {
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pki.Server()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	tests := []struct {
		serverName string
		ok         bool
	}{
		{"", true},          // the dialled 127.0.0.1 is in the certificate
		{"localhost", true}, // so is localhost
		{"tracker.example", false},
	}
	for _, tt := range tests {
		f := pki
		f.ServerName = tt.serverName
		cc, err := f.Client()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cc)
		if err == nil {
			c.Close()
		}
		if (err == nil) != tt.ok {
			t.Errorf("server_name %q: dial err %v, want ok=%v", tt.serverName, err, tt.ok)
		}
	}
	pool, err := tlsconfig.CertPool(pki.CAFile, true)
	if err != nil || pool == nil {
		t.Fatalf("CertPool with system roots: %v", err)
	}
}
