// Package containerdcfg points a node's containerd at the Shoal agent:
// it writes one hosts.toml per mirrored registry into containerd's registry
// config_path, keeping whatever was there so that Restore puts it back
// byte for byte.
package containerdcfg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/shoal-project/shoal/pkg/atomicfile"
)

// ErrNoConfigPath: containerd's config does not set a registry
// config_path, so hosts.toml files would be ignored.
var ErrNoConfigPath = errors.New("containerd config sets no registry config_path; add it (e.g. config_path = \"/etc/containerd/certs.d\") and restart containerd first")

// marker starts every file we write, so Restore never deletes an
// operator's own hosts.toml.
const marker = "# Written by shoal-agent containerd configure; undo with shoal-agent containerd restore.\n"

const backupSuffix = ".shoal-backup"

// ConfigPath reads containerd's config.toml and returns its registry
// config_path: the CRI plugin's (containerd 1.x, config version 2) or the
// images plugin's (containerd 2.x, version 3).
func ConfigPath(configFile string) (string, error) {
	raw, err := os.ReadFile(configFile)
	if err != nil {
		return "", fmt.Errorf("containerd config: %w", err)
	}
	var cfg struct {
		Plugins map[string]struct {
			Registry struct {
				ConfigPath string `toml:"config_path"`
			} `toml:"registry"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("containerd config %s: %w", configFile, err)
	}
	for _, plugin := range []string{"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"} {
		if p := cfg.Plugins[plugin].Registry.ConfigPath; p != "" {
			// config_path may list several directories; the first is where
			// containerd looks first.
			return strings.Split(p, ":")[0], nil
		}
	}
	return "", ErrNoConfigPath
}

// Mirror sends pulls of Registry to the agent at Agent (host:port) first.
type Mirror struct {
	Registry string
	Agent    string
}

func (m Mirror) server() string {
	if m.Registry == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + m.Registry
}

// HostsTOML is the file for m: the agent first, the registry itself when
// the agent answers 404 or is down.
func (m Mirror) HostsTOML() []byte {
	return fmt.Appendf(nil, "%sserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		marker, m.server(), "http://"+m.Agent)
}

func validRegistry(r string) error {
	if r == "" || strings.ContainsAny(r, "/\\ ") || r == "." || r == ".." {
		return fmt.Errorf("registry %q: not a host name", r)
	}
	return nil
}

// Configure writes dir/<registry>/hosts.toml for every mirror. An existing
// file that is not ours is kept as hosts.toml.shoal-backup first (once:
// running Configure again does not overwrite the backup with our own file).
func Configure(dir string, mirrors []Mirror) error {
	for _, m := range mirrors {
		if err := validRegistry(m.Registry); err != nil {
			return err
		}
		rdir := filepath.Join(dir, m.Registry)
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			return err
		}
		path := filepath.Join(rdir, "hosts.toml")
		old, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return err
		case !bytes.HasPrefix(old, []byte(marker)):
			if _, err := os.Stat(path + backupSuffix); errors.Is(err, os.ErrNotExist) {
				mode := os.FileMode(0o644)
				if fi, err := os.Stat(path); err == nil {
					mode = fi.Mode().Perm()
				}
				if err := atomicfile.WriteFile(path+backupSuffix, old, mode); err != nil {
					return fmt.Errorf("back up %s: %w", path, err)
				}
			}
		}
		if err := atomicfile.WriteFile(path, m.HostsTOML(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// Restore undoes Configure for the registries: a backed-up file comes
// back exactly; a file of ours with no backup is removed, and its
// directory too if that leaves it empty. Files not written by us are left
// alone.
func Restore(dir string, registries []string) error {
	var errs []error
	for _, r := range registries {
		if err := validRegistry(r); err != nil {
			errs = append(errs, err)
			continue
		}
		rdir := filepath.Join(dir, r)
		path := filepath.Join(rdir, "hosts.toml")
		if _, err := os.Stat(path + backupSuffix); err == nil {
			if err := atomicfile.Install(path+backupSuffix, path); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", path, err))
			}
			continue
		}
		cur, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !bytes.HasPrefix(cur, []byte(marker)) {
			continue // the operator's own file
		}
		if err := os.Remove(path); err != nil {
			errs = append(errs, err)
			continue
		}
		os.Remove(rdir) // only succeeds if empty
	}
	return errors.Join(errs...)
}
