// Package tlsconfig loads the cluster TLS material every Shoal component
// uses to talk to the others: its own certificate and the cluster CA. With
// a CA, both sides verify each other (mutual TLS).
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files; all empty means plaintext.
type Files struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
	// ServerName, for a client, is the name verified in the server's
	// certificate instead of the host dialled: trackers dial each other
	// by pod IP, which no certificate issued before the pods can name.
	ServerName string `yaml:"server_name"`
}

// Enabled reports whether any TLS file is set.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" }

// load returns a Reloader for the key pair (nil without one) and the CA
// pool (nil without a CA file).
func (f Files) load() (*Reloader, *x509.CertPool, error) {
	var cert *Reloader
	if f.CertFile != "" || f.KeyFile != "" {
		var err error
		if cert, err = NewReloader(f.CertFile, f.KeyFile, nil); err != nil {
			return nil, nil, err
		}
	}
	var pool *x509.CertPool
	if f.CAFile != "" {
		var err error
		if pool, err = CertPool(f.CAFile, false); err != nil {
			return nil, nil, err
		}
	}
	return cert, pool, nil
}

// Server returns a server config: it presents CertFile and, with a CA,
// requires clients to present a certificate the CA signed. The key pair
// is read again when its files change (see Reloader), so a renewed
// certificate reaches new handshakes without a restart; the CA is read
// once.
func (f Files) Server() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	if cert == nil {
		return nil, errors.New("tls: a server needs cert_file and key_file")
	}
	c := &tls.Config{GetCertificate: cert.GetCertificate, MinVersion: tls.VersionTLS13}
	if pool != nil {
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Client returns a client config that trusts the CA (the system roots
// without one) and presents CertFile when set, read again when its files
// change as Server's is: gRPC, HTTP and etcd clients built on it present
// a renewed certificate on their next connection without a restart.
func (f Files) Client() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: f.ServerName}
	if cert != nil {
		c.GetClientCertificate = cert.GetClientCertificate
	}
	return c, nil
}

// CertPool reads the PEM certificates in file into a pool; with system,
// on top of the system's roots (an origin with a public certificate for
// CI and the cluster CA for its peers verifies both).
func CertPool(file string, system bool) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls: read CA: %w", err)
	}
	var pool *x509.CertPool
	if system {
		if pool, err = x509.SystemCertPool(); err != nil {
			pool = x509.NewCertPool()
		}
	} else {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: no certificates in %s", file)
	}
	return pool, nil
}
