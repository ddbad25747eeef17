package origin

import (
	"errors"
	"time"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/upstream"
)

// Config configures an origin. Zero values take the defaults of
// applyDefaults.
type Config struct {
	// Addr is the listen address of the registry, metrics and health.
	Addr string `yaml:"addr"`
	// DataDir holds blobs, metainfo and the repository index.
	DataDir string `yaml:"data_dir"`
	// Auth decides who may push and pull.
	Auth auth.Config `yaml:"auth"`
	// TokenPath is where the built-in token issuer is served in token
	// mode when an htpasswd file is configured; empty disables it.
	TokenPath string `yaml:"token_path"`
	// MaxBlobSize bounds one blob upload.
	MaxBlobSize int64 `yaml:"max_blob_size"`
	// UploadIdleTimeout expires upload sessions with no activity.
	UploadIdleTimeout time.Duration `yaml:"upload_idle_timeout"`
	// MaxUploadSessions bounds the upload sessions open at once (default
	// 2048), MaxUploadSessionsPerClient those of one client (default 128):
	// one authenticated user, or one address (an IPv6 /64) without
	// credentials. A session past either gets 429 TOOMANYREQUESTS with a
	// Retry-After.
	MaxUploadSessions          int `yaml:"max_upload_sessions"`
	MaxUploadSessionsPerClient int `yaml:"max_upload_sessions_per_client"`
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight requests.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxHeaderBytes bounds request headers; real registry clients send a
	// few KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// BlobReaders bounds the /v2 blob bodies sent at once; more readers
	// get 429 with a Retry-After. 0: as many as the upload budget gives
	// 4 MiB/s each (at least 2), or 64 with no budget.
	BlobReaders int `yaml:"blob_readers"`
	// TLS makes the origin serve HTTPS; see TLSConfig.
	TLS TLSConfig `yaml:"tls"`
	// CapabilityKeyFile is the cluster's Ed25519 capability key (PKCS #8
	// PEM, the same file on every origin). With it the origin issues
	// capabilities at capability.HTTPPath and its seeder serves pieces only
	// to peers that present one; without it the swarm is open to any
	// peer that reaches it.
	CapabilityKeyFile string `yaml:"capability_key_file"`
	// CapabilityTTL is how long an issued capability lasts (default 10m).
	CapabilityTTL time.Duration `yaml:"capability_ttl"`
	// Upstreams are registries pulled through, each under a repository
	// prefix of its own (see pkg/upstream).
	Upstreams []upstream.Config `yaml:"upstreams"`
	// Cluster configures replication when the origin is one of several
	// (see WithCluster); ignored for an origin alone.
	Cluster ClusterConfig `yaml:"cluster"`
}

// applyDefaults returns a copy with defaults filled in.
func (c Config) applyDefaults() Config {
	if c.Addr == "" {
		c.Addr = ":5000"
	}
	if c.MaxBlobSize == 0 {
		c.MaxBlobSize = 64 << 30
	}
	if c.UploadIdleTimeout == 0 {
		c.UploadIdleTimeout = time.Hour
	}
	if c.MaxUploadSessions <= 0 {
		c.MaxUploadSessions = 2048
	}
	if c.MaxUploadSessionsPerClient <= 0 {
		c.MaxUploadSessionsPerClient = 128
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = time.Minute
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.TokenPath == "" {
		c.TokenPath = "/auth/token"
	}
	return c
}

func (c Config) validate() error {
	if c.DataDir == "" {
		return errors.New("origin: data_dir is required")
	}
	if c.MaxBlobSize < 0 {
		return errors.New("origin: max_blob_size must be positive")
	}
	return nil
}
