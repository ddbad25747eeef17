package upstream

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/shoal-project/shoal/pkg/reference"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// Config is one upstream registry the origin pulls through.
type Config struct {
	// Namespace is the registry name clients use for it: what containerd
	// sends agents as ?ns= (docker.io, ghcr.io, registry.example.com:5000).
	Namespace string `yaml:"namespace"`
	// Prefix is where its repositories live on the origin:
	// <prefix>/<repository> (default: Namespace, which must then be a
	// valid repository path component, i.e. without a port).
	Prefix string `yaml:"prefix"`
	// URL is the upstream's base URL (https://registry-1.docker.io).
	URL string `yaml:"url"`
	// Username and PasswordFile are the origin's credentials there, used
	// for Basic auth and to ask the token realm; none pulls anonymously
	// (anonymous bearer tokens included, as Docker Hub requires).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// TLS: ca_file for a private CA, cert_file/key_file for a client
	// certificate.
	TLS tlsconfig.Files `yaml:"tls"`
	// TagTTL is how long a tag resolved at the upstream is trusted before
	// it is asked again (default 5m). When the upstream is down, the last
	// digest known is served however old.
	TagTTL time.Duration `yaml:"tag_ttl"`
	// MaxConcurrent bounds the requests in flight to the upstream, blob
	// bodies included (default 8); more wait.
	MaxConcurrent int `yaml:"max_concurrent"`
	// Bandwidth caps the blob bytes read from this upstream, in bytes per
	// second over all fetches (0: no cap): the origins' link to a public
	// registry is usually the fleet's thinnest.
	Bandwidth int64 `yaml:"bandwidth"`
	// Timeout bounds a metadata request and the wait for a blob's headers
	// (default 30s); a blob body is bounded only by the progress it makes.
	Timeout time.Duration `yaml:"timeout"`
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = c.Namespace
	}
	if c.TagTTL <= 0 {
		c.TagTTL = 5 * time.Minute
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 8
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	c.URL = strings.TrimRight(c.URL, "/")
	return c
}

func (c Config) validate() error {
	if c.Namespace == "" {
		return errors.New("namespace is required")
	}
	if strings.ContainsAny(c.Namespace, "/ ") {
		return fmt.Errorf("namespace %q: a registry host name, without a path", c.Namespace)
	}
	if err := reference.ValidateName(c.Prefix); err != nil {
		return fmt.Errorf("prefix %q (set one when the namespace has a port): %w", c.Prefix, err)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("url %q: an http(s) base URL without credentials in it", c.URL)
	}
	if c.Bandwidth < 0 {
		return errors.New("bandwidth must not be negative")
	}
	if (c.Username == "") != (c.PasswordFile == "") {
		return errors.New("username and password_file go together")
	}
	return nil
}
