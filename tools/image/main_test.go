package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestReproducible builds the image twice from this tree, for one platform
// and one command to keep it cheap (make image checks the full index), and
// wants the same index digest; then it reads the layout back and checks what
// the chart and the README rely on: platform, non-root user, annotations,
// the binary's --version, and tar entries owned by root with fixed times.
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary twice")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	const epoch = 1700000000
	var digests []string
	var outs []string
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "layout")
		var stdout bytes.Buffer
		err := run(context.Background(), []string{"build", "--out", out, "--module", "../..",
			"--version", "9.8.7-test", "--commit", "0123456789abcdef", "--epoch", "1700000000",
			"--platforms", "linux/amd64", "--commands", "agent"}, &stdout)
		if err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		t.Logf("build %d:\n%s", i, stdout.String())
		idx, err := builtIndex(out)
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stdout.String(), d.String()) {
			t.Errorf("build printed %q, layout holds %s", stdout.String(), d)
		}
		digests = append(digests, d.String())
		outs = append(outs, out)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of one tree: index %s then %s", digests[0], digests[1])
	}

	idx, err := builtIndex(outs[0])
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.Annotations["org.opencontainers.image.revision"] != "0123456789abcdef" ||
		im.Annotations["org.opencontainers.image.version"] != "9.8.7-test" ||
		im.Annotations["org.opencontainers.image.created"] != "2023-11-14T22:13:20Z" ||
		im.Annotations["org.opencontainers.image.source"] == "" || im.Annotations["org.opencontainers.image.licenses"] == "" {
		t.Errorf("index annotations %v", im.Annotations)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil ||
		im.Manifests[0].Platform.OS != "linux" || im.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("index manifests %+v", im.Manifests)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 2 {
		t.Errorf("config rootfs %+v", cfg.RootFS)
	}
	if cfg.Config.User != "65532:65532" || cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.Created.Unix() != epoch {
		t.Errorf("config user %q os/arch %s/%s created %v", cfg.Config.User, cfg.OS, cfg.Architecture, cfg.Created)
	}
	agent := readLayers(t, img, epoch)
	if agent == nil {
		t.Fatal("no usr/local/bin/shoal-agent in the image")
	}
	// The binary is the host's platform here: run it.
	bin := filepath.Join(t.TempDir(), "shoal-agent")
	if err := writeExec(bin, agent); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("shoal-agent --version: %v\n%s", err, got)
	}
	if want := "shoal-agent 9.8.7-test (commit 0123456789abcdef, linux/amd64)"; strings.TrimSpace(string(got)) != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
}

// readLayers checks every tar entry's time and owner and returns the
// agent binary.
func readLayers(t *testing.T, img v1.Image, epoch int64) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var agent []byte
	var names []string
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			if h.ModTime.Unix() != epoch {
				t.Errorf("%s: mtime %v", h.Name, h.ModTime)
			}
			if h.Uid != 0 && h.Uid != nonrootUID {
				t.Errorf("%s: uid %d", h.Name, h.Uid)
			}
			if h.Name == "usr/local/bin/shoal-agent" {
				if h.Mode != 0o755 {
					t.Errorf("%s: mode %o", h.Name, h.Mode)
				}
				if agent, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
			}
		}
		rc.Close()
	}
	t.Logf("entries: %v", names)
	return agent
}

func writeExec(p string, b []byte) error {
	return os.WriteFile(p, b, 0o755)
}
