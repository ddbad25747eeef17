package tlsconfig

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ReloadInterval is how often a Reloader looks at its files at most: a
// renewed certificate (cert-manager, a Secret update) is served within
// seconds, and a busy server does not stat two files per handshake.
const ReloadInterval = 2 * time.Second

// Reloader serves a key pair from files and picks up new versions of them
// without a restart. Safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	interval          time.Duration
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp // of the files cert was loaded from
	checked time.Time
}

// fileStamp is what tells a replaced file from the one loaded: Kubernetes
// swaps a Secret's files by renaming a directory, which changes both.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// NewReloader loads certFile and keyFile; a pair that does not load is an
// error here, and a reason to keep the old one later (logged to log).
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("tls: cert_file and key_file go together")
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, interval: ReloadInterval, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.checked = r.now()
	return r, nil
}

// load reads the pair; the caller holds mu (or owns r alone).
func (r *Reloader) load() error {
	// Stamps first: a file replaced between stat and read is seen as
	// changed again at the next check, never missed.
	cs, err := stampOf(r.certFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	ks, err := stampOf(r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load key pair: %w", err)
	}
	r.cert, r.stamp = &c, [2]fileStamp{cs, ks}
	return nil
}

// current returns the pair, reloading it first if the files changed since
// it was loaded and the last look is ReloadInterval old.
func (r *Reloader) current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < r.interval {
		return r.cert
	}
	r.checked = now
	cs, err1 := stampOf(r.certFile)
	ks, err2 := stampOf(r.keyFile)
	if err1 == nil && err2 == nil && [2]fileStamp{cs, ks} == r.stamp {
		return r.cert
	}
	// A half-written pair (cert renewed, key not yet) fails to load: keep
	// serving the old one and try again at the next check.
	if err := r.load(); err != nil {
		r.log.Warn("keeping the previous TLS certificate", "cert_file", r.certFile, "err", err)
		return r.cert
	}
	r.log.Info("TLS certificate reloaded", "cert_file", r.certFile)
	return r.cert
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.current(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.current(), nil
}
