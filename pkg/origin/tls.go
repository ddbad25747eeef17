package origin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"

	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// TLSConfig is the origin's HTTPS: its certificate, and the cluster CA
// that signs the certificates of the other origins.
type TLSConfig struct {
	// CertFile and KeyFile are the origin's PEM key pair; set, the origin
	// serves HTTPS only. They are read again when they change (checked
	// every few seconds), so a renewed certificate needs no restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is the cluster CA. Set, the internal endpoints (origin
	// to origin) need a client certificate it signed besides the cluster
	// secret, and this origin presents its own certificate to the others
	// and trusts the CA (with the system roots) for theirs. /v2 keeps
	// asking for credentials, not certificates: CI pushes with a password
	// or token.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientNames, with ClientCAFile, narrows the internal endpoints to
	// client certificates valid for one of these names (the origins' own,
	// e.g. their Service name): the CA also signs other components'
	// certificates, and an agent's must not open them.
	ClientNames []string `yaml:"client_names"`
}

// Enabled reports whether the origin serves HTTPS.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate reports settings that do not go together.
func (c TLSConfig) Validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("origin: tls.cert_file and tls.key_file go together")
	}
	if len(c.ClientNames) > 0 && c.ClientCAFile == "" {
		return errors.New("origin: tls.client_names needs tls.client_ca_file")
	}
	if c.ClientCAFile != "" && !c.Enabled() {
		return errors.New("origin: tls.client_ca_file needs tls.cert_file and tls.key_file")
	}
	return nil
}

// originTLS is the loaded TLS material: nil for a plain-HTTP origin.
type originTLS struct {
	cert      *tlsconfig.Reloader
	clientCAs *x509.CertPool // nil: internal endpoints need no certificate
	peerRoots *x509.CertPool // what the peer client trusts; nil: the system's
}

func (s *Server) loadTLS() error {
	c := s.cfg.TLS
	if err := c.Validate(); err != nil {
		return err
	}
	if !c.Enabled() {
		return nil
	}
	r, err := tlsconfig.NewReloader(c.CertFile, c.KeyFile, s.log)
	if err != nil {
		return err
	}
	t := &originTLS{cert: r}
	if c.ClientCAFile != "" {
		if t.clientCAs, err = tlsconfig.CertPool(c.ClientCAFile, false); err != nil {
			return err
		}
		if t.peerRoots, err = tlsconfig.CertPool(c.ClientCAFile, true); err != nil {
			return err
		}
	}
	s.tls = t
	return nil
}

// serverConfig asks for a client certificate but does not require one at
// the handshake: CI and agents reach /v2 without one, and the internal
// endpoints then insist (internalCertOK).
func (t *originTLS) serverConfig() *tls.Config {
	c := &tls.Config{GetCertificate: t.cert.GetCertificate, MinVersion: tls.VersionTLS12}
	if t.clientCAs != nil {
		c.ClientCAs, c.ClientAuth = t.clientCAs, tls.VerifyClientCertIfGiven
	}
	return c
}

// peerClient is the HTTPS client origins call each other with: it
// presents this origin's certificate, reloaded like the server's.
func (t *originTLS) peerClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		RootCAs: t.peerRoots, GetClientCertificate: t.cert.GetClientCertificate, MinVersion: tls.VersionTLS12,
	}
	return &http.Client{Transport: tr}
}

// internalCertOK reports whether r may reach an internal endpoint as far
// as TLS goes: with a cluster CA, only over a connection whose client
// certificate the CA verified.
func (s *Server) internalCertOK(r *http.Request) error {
	if s.tls == nil || s.tls.clientCAs == nil {
		return nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return ocierr.New(ocierr.Unauthorized, "internal endpoint needs a client certificate from the cluster CA")
	}
	names := s.cfg.TLS.ClientNames
	if len(names) == 0 {
		return nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	for _, n := range names {
		if leaf.VerifyHostname(n) == nil {
			return nil
		}
	}
	return ocierr.New(ocierr.Unauthorized, "internal endpoint: client certificate is not an origin's")
}
