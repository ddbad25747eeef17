// Package deploy_test checks that what deploy/ ships runs: every systemd
// unit's command line and example config start the real binary, healthy.
package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"net/http"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/shoal-project/shoal/pkg/proctest"
)

// unit reads the ExecStart arguments and StateDirectory of a unit file.
func unit(t *testing.T, path string) (bin string, args []string, state string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			fields := strings.Fields(v)
			bin, args = fields[0], fields[1:]
		}
		if v, ok := strings.CutPrefix(line, "StateDirectory="); ok {
			state = v
		}
	}
	if bin == "" {
		t.Fatalf("%s: no ExecStart", path)
	}
	return bin, args, state
}

// configIn is config/<component>.yaml with its /etc/shoal/ files moved to
// dir, written under dir.
func configIn(t *testing.T, dir, component string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("config", component+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, component+".yaml")
	if err := os.WriteFile(p, bytes.ReplaceAll(raw, []byte("/etc/shoal/"), []byte(dir+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSystemdUnitsStartTheirBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	for _, c := range []string{"origin", "tracker", "agent"} {
		t.Run(c, func(t *testing.T) {
			bin, args, state := unit(t, filepath.Join("systemd", "shoal-"+c+".service"))
			if filepath.Base(bin) != "shoal-"+c || len(args) != 2 || args[0] != "--config" || args[1] != "/etc/shoal/"+c+".yaml" {
				t.Fatalf("ExecStart %s %v: want shoal-%s --config /etc/shoal/%s.yaml", bin, args, c, c)
			}
			// The unit's state directory is the config's data dir.
			example := filepath.Join("config", c+".yaml")
			raw, err := os.ReadFile(example)
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				DataDir string `yaml:"data_dir"`
			}
			yaml.Unmarshal(raw, &cfg)
			if cfg.DataDir != "/var/lib/"+state {
				t.Fatalf("unit StateDirectory=%s but %s has data_dir %s", state, example, cfg.DataDir)
			}

			// Start it as the unit would, on the example config; flags move
			// ports and directories into the test's reach, and the files
			// under /etc/shoal/ are made in dir as the config comments say.
			dir := t.TempDir()
			addr := proctest.FreeAddr(t)
			proctest.Documented(t, filepath.Join("config", "origin.yaml"), "The cluster CA and one certificate per component", dir)
			proctest.Documented(t, filepath.Join("config", "agent.yaml"), "The cluster's private-network key", dir)
			ca, err := os.ReadFile(filepath.Join(dir, "tls", "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(ca)
			// WaitReady's client: the example origin serves HTTPS only.
			http.DefaultTransport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
			argv := []string{"--config", configIn(t, dir, c), "--data-dir", dir}
			// The capability key pair as the example config says to make it.
			capKey, capPub := filepath.Join(dir, "capability.key"), filepath.Join(dir, "capability.pub")
			for _, a := range [][]string{{"genpkey", "-algorithm", "ed25519", "-out", capKey}, {"pkey", "-in", capKey, "-pubout", "-out", capPub}} {
				if out, err := exec.Command("openssl", a...).CombinedOutput(); err != nil {
					t.Fatalf("openssl %v: %v\n%s", a, err, out)
				}
			}
			switch c {
			case "origin":
				hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
				htpasswd := filepath.Join(dir, "htpasswd")
				os.WriteFile(htpasswd, []byte("ci:"+string(hash)+"\n"), 0o600)
				secret := filepath.Join(dir, "cluster-secret")
				os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
				// The example origin joins the etcd of a tracker on its host.
				etcd := "https://" + proctest.FreeAddr(t)
				tr := proctest.FreeAddr(t)
				trHTTP := proctest.FreeAddr(t)
				tp := proctest.Start(t, proctest.Binary(t, "tracker"), "--config", configIn(t, dir, "tracker"),
					"--data-dir", t.TempDir(), "--grpc-addr", tr, "--advertise", tr, "--http-addr", trHTTP,
					"--embedded-etcd-client-url", etcd, "--embedded-etcd-peer-url", "https://"+proctest.FreeAddr(t))
				tp.WaitReady("http://"+trHTTP+"/readyz", time.Minute)
				argv = append(argv, "--addr", addr, "--advertise", addr, "--htpasswd", htpasswd,
					"--etcd-endpoints", etcd, "--cluster-secret-file", secret, "--capability-key-file", capKey)
			case "tracker":
				grpc := proctest.FreeAddr(t)
				argv = append(argv, "--grpc-addr", grpc, "--advertise", grpc, "--http-addr", addr,
					"--embedded-etcd-client-url", "https://"+proctest.FreeAddr(t), "--embedded-etcd-peer-url", "https://"+proctest.FreeAddr(t))
			case "agent":
				argv = append(argv, "--addr", addr, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--capability-public-key-file", capPub)
			}
			p := proctest.Start(t, proctest.Binary(t, c), argv...)
			scheme := "http://"
			if c == "origin" {
				scheme = "https://"
			}
			p.WaitReady(scheme+addr+"/readyz", time.Minute)
			if err := p.Stop(30 * time.Second); err != nil {
				t.Fatalf("SIGTERM: %v\n%s", err, p.Logs())
			}
		})
	}
}

// The Grafana dashboard is valid JSON and queries only metrics the
// components export.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana/shoal-rollout.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	// Every metric name the code registers.
	var names []byte
	files, _ := filepath.Glob("../pkg/*/metrics.go")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		names = append(names, b...)
	}
	re := regexp.MustCompile(`shoal_[a-z_]+`)
	if len(dash.Panels) < 6 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				m = strings.TrimSuffix(m, "_bucket")
				if !bytes.Contains(names, []byte(`"`+m+`"`)) {
					t.Errorf("panel %q queries %s, which no component exports", p.Title, m)
				}
			}
		}
	}
}
