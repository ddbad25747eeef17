package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shoal-project/shoal/pkg/tlsconfig"
)

// EtcdConfig says how a component reaches etcd.
type EtcdConfig struct {
	// Endpoints are etcd client URLs; empty means no cluster.
	Endpoints []string `yaml:"endpoints"`
	// TLS is the client certificate and CA for etcd, when it uses TLS.
	TLS tlsconfig.Files `yaml:"tls"`
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
}

// Dial connects to etcd and checks that one endpoint answers, so a wrong
// address fails at start rather than at the first registration.
func Dial(ctx context.Context, cfg EtcdConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("membership: no etcd endpoints")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cc := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		// The client's own zap logs repeat what our errors already say.
		Logger: zap.NewNop(),
		// Without keepalives a half-open connection to a dead etcd member
		// would hide lease loss for minutes.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	}
	if cfg.TLS.Enabled() {
		tc, err := cfg.TLS.Client()
		if err != nil {
			return nil, fmt.Errorf("membership: etcd TLS: %w", err)
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("membership: etcd client: %w", err)
	}
	var lastErr error
	for _, ep := range cfg.Endpoints {
		sctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		_, lastErr = cli.Status(sctx, ep)
		cancel()
		if lastErr == nil {
			return cli, nil
		}
	}
	cli.Close()
	return nil, fmt.Errorf("membership: no etcd endpoint of %v answers: %w", cfg.Endpoints, lastErr)
}

// AdvertiseAddr is the host:port a member registers: advertise if the
// operator gave one, else the bound address with a wildcard host replaced
// by the hostname, so other members can dial it.
func AdvertiseAddr(advertise string, bound net.Addr) (string, error) {
	if advertise != "" {
		if _, _, err := net.SplitHostPort(advertise); err != nil {
			return "", fmt.Errorf("advertise %q: %w", advertise, err)
		}
		return advertise, nil
	}
	host, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("advertise: %w", err)
		}
	}
	return net.JoinHostPort(host, port), nil
}
