package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/pkg/atomicfile"
)

// HostConfig configures a peer's libp2p host.
type HostConfig struct {
	// ListenAddrs are multiaddrs (default /ip4/0.0.0.0/tcp/4001).
	ListenAddrs []string `yaml:"listen_addrs"`
	// KeyFile holds the peer's private key; created on first start, so the
	// peer ID survives restarts.
	KeyFile string `yaml:"key_file"`
	// PSKFile, when set, is the cluster's private-network key (libp2p
	// /key/swarm/psk/1.0.0/ format): hosts without it cannot connect.
	PSKFile string `yaml:"psk_file"`
	// QUIC adds a QUIC transport (it cost 3× the CPU of TCP+TLS here, and
	// cannot be used with a private-network key).
	QUIC bool `yaml:"quic"`
	// LowConns and HighConns are the connection manager's water marks
	// (defaults 200 and 400).
	LowConns  int `yaml:"low_conns"`
	HighConns int `yaml:"high_conns"`
}

// NewHost starts a host: TCP with TLS 1.3 and yamux, identity from
// KeyFile, libp2p's resource and connection managers for limits, and
// libp2p's metrics on reg (if not nil).
func NewHost(cfg HostConfig, reg prometheus.Registerer) (host.Host, error) {
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = []string{"/ip4/0.0.0.0/tcp/4001"}
	}
	if cfg.LowConns <= 0 {
		cfg.LowConns = 200
	}
	if cfg.HighConns <= cfg.LowConns {
		cfg.HighConns = 2 * cfg.LowConns
	}
	key, err := LoadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.LowConns, cfg.HighConns)
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		// Peers are found through the tracker: no relays, NAT traversal
		// or address discovery beyond identify.
		libp2p.DisableRelay(),
	}
	if reg != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(reg))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if cfg.QUIC {
		opts = append(opts, libp2p.Transport(libp2pquic.NewTransport))
	}
	if cfg.PSKFile != "" {
		if cfg.QUIC {
			return nil, errors.New("p2p: a private-network key cannot be used with QUIC")
		}
		psk, err := loadPSK(cfg.PSKFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, libp2p.PrivateNetwork(psk))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: host: %w", err)
	}
	return h, nil
}

// LoadOrCreateKey reads an Ed25519 key from path or, if there is none,
// creates one there (mode 0600, written atomically). An empty path gives
// a fresh key each time.
func LoadOrCreateKey(path string) (crypto.PrivKey, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err == nil {
			k, err := crypto.UnmarshalPrivateKey(b)
			if err != nil {
				return nil, fmt.Errorf("p2p: key %s: %w", path, err)
			}
			return k, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("p2p: key: %w", err)
		}
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: generate key: %w", err)
	}
	if path == "" {
		return k, nil
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("p2p: key dir: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("p2p: write key: %w", err)
	}
	return k, nil
}

func loadPSK(path string) (pnet.PSK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: private-network key: %w", err)
	}
	defer f.Close()
	psk, err := pnet.DecodeV1PSK(f)
	if err != nil {
		return nil, fmt.Errorf("p2p: private-network key %s: %w", path, err)
	}
	return psk, nil
}

// WritePSK writes a new random private-network key to path.
func WritePSK(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, fmt.Appendf(nil, "/key/swarm/psk/1.0.0/\n/base16/\n%x\n", key), 0o600)
}

// Addrs are the host's listen multiaddrs as strings, the form announces
// and ring entries carry.
func Addrs(h host.Host) []string {
	var out []string
	for _, a := range h.Addrs() {
		out = append(out, a.String())
	}
	return out
}
