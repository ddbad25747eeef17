package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/pkg/agent"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/ring"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// TestHTTPSOrigin: an origin that serves HTTPS only is reached by the
// tracker (metainfo) and the agent (manifests, blobs) with the CA of its
// certificate; an agent without that CA gets nothing.
func TestHTTPSOrigin(t *testing.T) {
	pki, err := tlsconfig.WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := origintest.Start(t, origin.Config{TLS: origin.TLSConfig{CertFile: pki.CertFile, KeyFile: pki.KeyFile}})
	caPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	layer := random(3<<20 + 5)
	manifest, mt := imageWith(t, hc, o.URL, layer)

	tr := trackertest.Start(t, nil, tracker.Config{}, []tracker.Option{
		tracker.WithOrigins(ring.New([]ring.Member{{ID: "origin", Addr: o.Host}})),
		tracker.WithOriginHTTPS(), tracker.WithHTTPClient(hc)})
	r, err := tr.Client.GetMetaInfo(context.Background(), &shoalpb.GetMetaInfoRequest{Digest: sha(layer)})
	if err != nil || r.GetMetainfo().GetDigest() != sha(layer) {
		t.Fatalf("tracker metainfo from the https origin: %v %v", r, err)
	}

	tests := []struct {
		name string
		tls  tlsconfig.Files
		ok   bool
	}{
		{"with the origin's CA", tlsconfig.Files{CAFile: pki.CAFile}, true},
		{"without it", tlsconfig.Files{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := agent.Upstream{Origins: []string{o.URL}, TLS: tt.tls}
			a, err := agent.New(agent.Config{
				DataDir: t.TempDir(), Tracker: tr.Addr,
				Registries: map[string]agent.Upstream{"": up},
				P2P:        p2p.HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}},
			}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx, ln) }()
			t.Cleanup(func() { cancel(); <-done })
			base := "http://" + ln.Addr().String()

			resp, body := do(t, "GET", base+"/v2/team/app/manifests/v1", map[string]string{"Accept": mt}, nil)
			if got := resp.StatusCode == http.StatusOK && bytes.Equal(body, manifest); got != tt.ok {
				t.Fatalf("manifest: %d, want ok=%v", resp.StatusCode, tt.ok)
			}
			if !tt.ok {
				return
			}
			resp, body = do(t, "GET", base+"/v2/team/app/blobs/"+sha(layer), nil, nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
				t.Fatalf("layer: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}
