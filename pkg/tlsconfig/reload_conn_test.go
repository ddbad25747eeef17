package tlsconfig_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// handshakes is a real TLS listener that completes each handshake, notes
// the certificate the client presented and hangs up, so every attempt of
// a client is a new handshake.
type handshakes struct {
	addr string
	mu   sync.Mutex
	last []byte // leaf the last client presented
}

func recordHandshakes(t *testing.T, cfg *tls.Config) *handshakes {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &handshakes{addr: ln.Addr().String()}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"} // gRPC and etcd insist on ALPN h2
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			h.mu.Lock()
			h.last = cs.PeerCertificates[0].Raw
			h.mu.Unlock()
		}
		return nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Cleanup
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tls.Server(c, cfg).Handshake()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return h
}

func (h *handshakes) lastLeaf() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// leaf is the DER of the certificate in f's cert file.
func leaf(t *testing.T, f tlsconfig.Files) []byte {
	t.Helper()
	b, err := os.ReadFile(f.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	return blk.Bytes
}

// replace swaps dst for a copy of src the way a Secret update does: a new
// file renamed into place.
func replace(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// pool trusts every CA in files.
func pool(t *testing.T, files ...tlsconfig.Files) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		p.AppendCertsFromPEM(b)
	}
	return p
}

// rotatingPKI: two key pairs from two CAs, and live files that start as
// a's and that the test replaces with b's.
func rotatingPKI(t *testing.T) (a, b, live tlsconfig.Files) {
	t.Helper()
	var err error
	if a, err = tlsconfig.WriteTestPKI(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if b, err = tlsconfig.WriteTestPKI(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	live = tlsconfig.Files{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), CAFile: a.CAFile}
	replace(t, a.CertFile, live.CertFile)
	replace(t, a.KeyFile, live.KeyFile)
	return a, b, live
}

// waitFor calls attempt until seen returns want (a new handshake presented
// the certificate), at most 20 s: the reloader looks at the files every
// ReloadInterval, and gRPC clients back off between reconnects.
func waitFor(t *testing.T, what string, attempt func(), seen func() []byte, want []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !bytes.Equal(seen(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no handshake presented the expected certificate within 20 s", what)
		}
		attempt()
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClientCertificateReloaded: the clients Shoal builds on Files.Client —
// crypto/tls (HTTP), gRPC (agent and tracker to trackers) and etcd's
// clientv3 (origins and trackers) — present a renewed certificate on
// their next handshake, with no new client: the files are replaced under
// a running one, as Kubernetes updates a mounted Secret.
func TestClientCertificateReloaded(t *testing.T) {
	clients := []struct {
		name string
		// start builds one long-lived client on cfg to addr and returns
		// what makes it open a connection.
		start func(t *testing.T, cfg *tls.Config, addr string) (attempt func())
	}{
		{"crypto/tls", func(t *testing.T, cfg *tls.Config, addr string) func() {
			return func() {
				c, err := tls.Dial("tcp", addr, cfg)
				if err == nil {
					c.Close()
				}
			}
		}},
		{"grpc", func(t *testing.T, cfg *tls.Config, addr string) func() {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			return func() {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				conn.Invoke(ctx, "/shoal.Tracker/Announce", nil, nil)
			}
		}},
		{"etcd clientv3", func(t *testing.T, cfg *tls.Config, addr string) func() {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + addr}, TLS: cfg, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			return func() {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				cli.Status(ctx, "https://"+addr)
			}
		}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			a, b, live := rotatingPKI(t)
			// The server trusts both CAs: which certificate the client
			// presents is the only thing that changes.
			srv := recordHandshakes(t, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				kp, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
				return &kp, err
			}, ClientCAs: pool(t, a, b), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
			cfg, err := live.Client()
			if err != nil {
				t.Fatal(err)
			}
			attempt := c.start(t, cfg, srv.addr)
			waitFor(t, "before the renewal", attempt, srv.lastLeaf, leaf(t, a))
			replace(t, b.KeyFile, live.KeyFile)
			replace(t, b.CertFile, live.CertFile)
			waitFor(t, "after the renewal", attempt, srv.lastLeaf, leaf(t, b))
		})
	}
}

// TestServerCertificateReloaded: a server on Files.Server (the tracker's
// gRPC) presents a renewed certificate on the next handshake without a
// restart.
func TestServerCertificateReloaded(t *testing.T) {
	a, b, live := rotatingPKI(t)
	sc, err := live.Server()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	cc, err := a.Client() // the server wants a client certificate from CA a
	if err != nil {
		t.Fatal(err)
	}
	cc.RootCAs = pool(t, a, b)
	var mu sync.Mutex
	var seen []byte
	attempt := func() {
		c, err := tls.Dial("tcp", ln.Addr().String(), cc)
		if err != nil {
			return
		}
		mu.Lock()
		seen = c.ConnectionState().PeerCertificates[0].Raw
		mu.Unlock()
		c.Close()
	}
	get := func() []byte { mu.Lock(); defer mu.Unlock(); return seen }
	waitFor(t, "before the renewal", attempt, get, leaf(t, a))
	replace(t, b.KeyFile, live.KeyFile)
	replace(t, b.CertFile, live.CertFile)
	waitFor(t, "after the renewal", attempt, get, leaf(t, b))
}
