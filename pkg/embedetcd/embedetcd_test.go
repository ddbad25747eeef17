package embedetcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/embedetcd"
	"github.com/shoal-project/shoal/pkg/membership"
	"github.com/shoal-project/shoal/pkg/proctest"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// TestConfigRefusesPlaintextBeyondLoopback: settings are checked before
// anything binds.
func TestConfigRefusesPlaintextBeyondLoopback(t *testing.T) {
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     embedetcd.Config
		wantErr string
	}{
		{"plain on all interfaces", embedetcd.Config{ClientURL: "http://0.0.0.0:2379"}, "plain http beyond loopback"},
		{"plain on a host name", embedetcd.Config{ClientURL: "http://tracker-0:2379"}, "plain http beyond loopback"},
		{"plain peer beyond loopback", embedetcd.Config{PeerURL: "http://10.1.2.3:2380"}, "plain http beyond loopback"},
		{"https without files", embedetcd.Config{ClientURL: "https://0.0.0.0:2379"}, "needs tls"},
		{"https without a CA", embedetcd.Config{ClientURL: "https://0.0.0.0:2379",
			TLS: tlsconfig.Files{CertFile: pki.CertFile, KeyFile: pki.KeyFile}}, "needs tls"},
		{"TLS files on an http URL", embedetcd.Config{ClientURL: "http://127.0.0.1:2379", TLS: pki}, "use https://"},
		{"another scheme", embedetcd.Config{ClientURL: "unix:///tmp/etcd"}, "want http or https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Dir = t.TempDir()
			s, err := embedetcd.Start(context.Background(), tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(tt.wantErr, "loopback") && !errors.Is(err, embedetcd.ErrPlaintextBeyondLoopback) {
				t.Fatalf("err = %v, want ErrPlaintextBeyondLoopback", err)
			}
		})
	}
}

// TestTLS: over TLS the embedded etcd serves clients that present a
// certificate from its CA, and no one else.
func TestTLS(t *testing.T) {
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := embedetcd.Start(ctx, embedetcd.Config{
		Dir:       t.TempDir(),
		ClientURL: "https://" + proctest.FreeAddr(t),
		PeerURL:   "https://" + proctest.FreeAddr(t),
		TLS:       pki,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if len(s.Endpoints) != 1 || !strings.HasPrefix(s.Endpoints[0], "https://") {
		t.Fatalf("endpoints %v", s.Endpoints)
	}
	plain := strings.Replace(s.Endpoints[0], "https://", "http://", 1)
	tests := []struct {
		name      string
		endpoints []string
		tls       tlsconfig.Files
		ok        bool
	}{
		{"client certificate from the CA", s.Endpoints, pki, true},
		{"no client certificate", s.Endpoints, tlsconfig.Files{CAFile: pki.CAFile}, false},
		{"certificate of another CA", s.Endpoints, tlsconfig.Files{CertFile: stranger.CertFile, KeyFile: stranger.KeyFile, CAFile: pki.CAFile}, false},
		{"plain HTTP", []string{plain}, tlsconfig.Files{}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cli, err := membership.Dial(ctx, membership.EtcdConfig{Endpoints: tt.endpoints, TLS: tt.tls, DialTimeout: 2 * time.Second})
			if !tt.ok {
				if err == nil {
					cli.Close()
					t.Fatal("dial succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			key := fmt.Sprintf("k%d", i)
			if _, err := cli.Put(ctx, key, "v"); err != nil {
				t.Fatal(err)
			}
			r, err := cli.Get(ctx, key)
			if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
				t.Fatalf("get: %v %v", r, err)
			}
		})
	}
}
