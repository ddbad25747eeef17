// Command image builds Shoal's container image without Docker and without a
// base image: the three binaries, built static, in an OCI image index with
// one image per platform, written as an OCI layout (and pushed on request).
//
//	go run ./tools/image build --out bin/image --version 0.1.0 --commit <sha> --epoch <unix>
//	go run ./tools/image push --layout bin/image host/repo:tag
//
// Every input that could differ between two builds of one commit is fixed:
// -trimpath and no VCS stamping in the binaries, every time (file mtimes,
// config and history dates) is the commit's, tar entries are sorted with
// fixed owners and modes, and gzip headers carry no name or time. Two builds
// of a commit therefore give the same index digest, which `make image-check`
// and this package's test verify.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// The image's unprivileged user: the origin and tracker run as it; the
	// agent's pod asks for root only for its containerd configure step and
	// its hostPath cache (the Helm chart sets that per container).
	nonrootUID = 65532
	binDir     = "usr/local/bin"
	versionPkg = "github.com/shoal-project/shoal/pkg/version"
	refNameKey = "org.opencontainers.image.ref.name"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		log.Error("image", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: image build|push [flags]")
	}
	switch args[0] {
	case "build":
		var o buildOptions
		fs := flag.NewFlagSet("image build", flag.ContinueOnError)
		fs.StringVar(&o.Out, "out", "bin/image", "OCI layout directory to write (replaced)")
		fs.StringVar(&o.Version, "version", "", "release version: image tag and --version of every binary")
		fs.StringVar(&o.Commit, "commit", "", "git commit the binaries are built from")
		fs.Int64Var(&o.Epoch, "epoch", -1, "SOURCE_DATE_EPOCH: the commit time, used for every timestamp")
		fs.StringVar(&o.Source, "source", "https://github.com/shoal-project/shoal", "org.opencontainers.image.source")
		fs.StringVar(&o.Licenses, "licenses", "NOASSERTION", "org.opencontainers.image.licenses (SPDX expression)")
		platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
		commands := fs.String("commands", "origin,tracker,agent", "commands under ./cmd to include")
		fs.StringVar(&o.Module, "module", ".", "directory of Shoal's go.mod")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Version == "" || o.Commit == "" || o.Epoch < 0 {
			return errors.New("build needs --version, --commit and --epoch")
		}
		o.Platforms = strings.Split(*platforms, ",")
		o.Commands = strings.Split(*commands, ",")
		res, err := build(ctx, o)
		if err != nil {
			return err
		}
		res.print(stdout)
		return nil
	case "push":
		fs := flag.NewFlagSet("image push", flag.ContinueOnError)
		dir := fs.String("layout", "bin/image", "OCI layout written by build")
		insecure := fs.Bool("insecure", false, "allow plain HTTP to registries other than localhost")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: image push [--layout DIR] [--insecure] host/repo:tag")
		}
		return push(ctx, *dir, fs.Arg(0), *insecure, stdout)
	}
	return fmt.Errorf("unknown subcommand %q (build or push)", args[0])
}

type buildOptions struct {
	Out, Version, Commit, Source, Licenses, Module string
	Epoch                                          int64
	Platforms, Commands                            []string
}

type platformResult struct {
	Platform     string
	Digest       v1.Hash
	Size         int64 // the image's compressed layers + config + manifest
	Uncompressed int64
}

type buildResult struct {
	Index     v1.Hash
	Platforms []platformResult
}

func (r buildResult) print(w io.Writer) {
	fmt.Fprintf(w, "index %s\n", r.Index)
	for _, p := range r.Platforms {
		fmt.Fprintf(w, "  %-12s %s  %6.1f MiB compressed, %6.1f MiB unpacked\n",
			p.Platform, p.Digest, float64(p.Size)/(1<<20), float64(p.Uncompressed)/(1<<20))
	}
}

func build(ctx context.Context, o buildOptions) (buildResult, error) {
	created := time.Unix(o.Epoch, 0).UTC()
	annotations := map[string]string{
		"org.opencontainers.image.source":   o.Source,
		"org.opencontainers.image.revision": o.Commit,
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.licenses": o.Licenses,
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
		"org.opencontainers.image.title":    "shoal",
		"org.opencontainers.image.description": "Shoal: peer-to-peer container image distribution " +
			"(shoal-origin, shoal-tracker, shoal-agent)",
	}
	base, err := layerOf(baseFiles(), created)
	if err != nil {
		return buildResult{}, err
	}
	tmp, err := os.MkdirTemp("", "shoal-image-")
	if err != nil {
		return buildResult{}, err
	}
	defer os.RemoveAll(tmp)

	var res buildResult
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		goos, goarch, ok := strings.Cut(p, "/")
		if !ok {
			return buildResult{}, fmt.Errorf("platform %q: want os/arch", p)
		}
		bins, err := compile(ctx, o, goos, goarch, filepath.Join(tmp, goos+"_"+goarch))
		if err != nil {
			return buildResult{}, err
		}
		binLayer, err := layerOf(bins, created)
		if err != nil {
			return buildResult{}, err
		}
		img, err := image(goos, goarch, created, annotations, base, binLayer)
		if err != nil {
			return buildResult{}, fmt.Errorf("%s: %w", p, err)
		}
		pr, err := describe(img, p)
		if err != nil {
			return buildResult{}, err
		}
		res.Platforms = append(res.Platforms, pr)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: goos, Architecture: goarch}},
		})
	}
	idx = mutate.Annotations(idx, annotations).(v1.ImageIndex)
	if res.Index, err = idx.Digest(); err != nil {
		return buildResult{}, err
	}
	// A fresh directory: a layout appended to would keep the last build's
	// index next to this one.
	if err := os.RemoveAll(o.Out); err != nil {
		return buildResult{}, err
	}
	lp, err := layout.Write(o.Out, empty.Index)
	if err != nil {
		return buildResult{}, fmt.Errorf("write layout %s: %w", o.Out, err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameKey: o.Version})); err != nil {
		return buildResult{}, fmt.Errorf("write layout %s: %w", o.Out, err)
	}
	return res, nil
}

// compile builds the commands static for one platform and returns them as
// files for the binaries layer.
func compile(ctx context.Context, o buildOptions, goos, goarch, out string) ([]file, error) {
	ldflags := fmt.Sprintf("-s -w -buildid= -X %s.Version=%s -X %s.Commit=%s", versionPkg, o.Version, versionPkg, o.Commit)
	var files []file
	for _, c := range o.Commands {
		dst := filepath.Join(out, "shoal-"+c)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", dst, "./cmd/"+c)
		cmd.Dir = o.Module
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=-buildvcs=false")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s for %s/%s: %w\n%s", c, goos, goarch, err, b)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			return nil, err
		}
		files = append(files, file{Name: path.Join(binDir, "shoal-"+c), Mode: 0o755, Body: b})
	}
	return files, nil
}

// file is one tar entry; a nil Body with Dir set is a directory.
type file struct {
	Name     string
	Mode     int64
	UID, GID int
	Dir      bool
	Body     []byte
}

// baseFiles is what a distroless base would give: users for the non-root
// UID (so tools resolve it), a sticky /tmp, and the directories the chart
// mounts over.
func baseFiles() []file {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonrootUID, nonrootUID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonrootUID)
	return []file{
		{Name: "etc", Mode: 0o755, Dir: true},
		{Name: "etc/passwd", Mode: 0o644, Body: []byte(passwd)},
		{Name: "etc/group", Mode: 0o644, Body: []byte(group)},
		{Name: "home", Mode: 0o755, Dir: true},
		{Name: "home/nonroot", Mode: 0o700, Dir: true, UID: nonrootUID, GID: nonrootUID},
		{Name: "root", Mode: 0o700, Dir: true},
		{Name: "tmp", Mode: 0o1777, Dir: true},
		{Name: "usr", Mode: 0o755, Dir: true},
		{Name: "usr/local", Mode: 0o755, Dir: true},
		{Name: binDir, Mode: 0o755, Dir: true},
		{Name: "var", Mode: 0o755, Dir: true},
		{Name: "var/lib", Mode: 0o755, Dir: true},
		{Name: "var/lib/shoal", Mode: 0o755, Dir: true, UID: nonrootUID, GID: nonrootUID},
	}
}

// layerOf writes files as a gzip tar layer: entries sorted by name, every
// mtime the commit's, owners and modes as given (never the build host's).
func layerOf(files []file, mtime time.Time) (v1.Layer, error) {
	files = append([]file(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range files {
		h := &tar.Header{
			Name: f.Name, Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: mtime,
			Typeflag: tar.TypeReg, Size: int64(len(f.Body)), Format: tar.FormatPAX,
		}
		if f.Dir {
			h.Name += "/"
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Body); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	// compress/gzip with a zero header (no name, no mtime) is
	// deterministic for a given Go release.
	var gb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gb, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	gz := gb.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

func image(goos, goarch string, created time.Time, annotations map[string]string, layers ...v1.Layer) (v1.Image, error) {
	labels := map[string]string{}
	for k, v := range annotations {
		labels[k] = v
	}
	cfg := &v1.ConfigFile{
		OS: goos, Architecture: goarch, Created: v1.Time{Time: created},
		// Append fills in the diff IDs, not the type the spec requires.
		RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       fmt.Sprintf("%d:%d", nonrootUID, nonrootUID),
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			WorkingDir: "/",
			// No entrypoint: the image holds three commands and the
			// chart names one per container. Alone it says what it is.
			Cmd:    []string{"/" + binDir + "/shoal-agent", "--version"},
			Labels: labels,
		},
	}
	img, err := mutate.ConfigFile(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), cfg)
	if err != nil {
		return nil, err
	}
	by := []string{"shoal tools/image: users, /tmp, directories", "shoal tools/image: shoal-origin, shoal-tracker, shoal-agent (CGO_ENABLED=0 -trimpath)"}
	for i, l := range layers {
		if img, err = mutate.Append(img, mutate.Addendum{
			Layer: l, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: created}, CreatedBy: by[i%len(by)]},
		}); err != nil {
			return nil, err
		}
	}
	return mutate.Annotations(img, annotations).(v1.Image), nil
}

func describe(img v1.Image, platform string) (platformResult, error) {
	pr := platformResult{Platform: platform}
	var err error
	if pr.Digest, err = img.Digest(); err != nil {
		return pr, err
	}
	m, err := img.Manifest()
	if err != nil {
		return pr, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return pr, err
	}
	pr.Size = int64(len(raw)) + m.Config.Size
	layers, err := img.Layers()
	if err != nil {
		return pr, err
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return pr, err
		}
		pr.Size += n
		rc, err := l.Uncompressed()
		if err != nil {
			return pr, err
		}
		u, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return pr, err
		}
		pr.Uncompressed += u
	}
	return pr, nil
}

// builtIndex is the index build wrote: the one entry of the layout's
// index.json.
func builtIndex(dir string) (v1.ImageIndex, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("layout %s (run make image first): %w", dir, err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("layout %s holds %d entries, want the one index build writes", dir, len(m.Manifests))
	}
	return top.ImageIndex(m.Manifests[0].Digest)
}

// push sends the layout's index, unchanged, to ref: the digest pushed is
// the digest built.
func push(ctx context.Context, dir, ref string, insecure bool, stdout io.Writer) error {
	idx, err := builtIndex(dir)
	if err != nil {
		return err
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return fmt.Errorf("reference %q: %w", ref, err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push %s: %w", r, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pushed %s@%s\n", r, d)
	return nil
}
