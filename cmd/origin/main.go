// Command shoal-origin runs an origin: the authoritative OCI registry of a
// Shoal cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-project/shoal/pkg/config"
	"github.com/shoal-project/shoal/pkg/origin"
)

// fileConfig is the YAML file: the origin's config plus process settings.
type fileConfig struct {
	origin.Config `yaml:",inline"`
	LogLevel      string `yaml:"log_level"`
	LogFormat     string `yaml:"log_format"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-origin:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("shoal-origin", flag.ContinueOnError)
	var (
		cfgPath   = fs.String("config", "", "YAML config file; flags override it")
		addr      = fs.String("addr", ":5000", "listen address for /v2, /metrics and health")
		dataDir   = fs.String("data-dir", "", "directory for blobs, metainfo and the repository index")
		authMode  = fs.String("auth-mode", "none", "push/pull auth: none, htpasswd or token")
		htpasswd  = fs.String("htpasswd", "", "bcrypt htpasswd file (htpasswd mode and the token issuer)")
		anonPull  = fs.Bool("anonymous-pull", false, "allow pulls without credentials")
		maxBlob   = fs.Int64("max-blob-size", 64<<30, "largest blob accepted, in bytes")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text or json")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fc := fileConfig{LogLevel: "info", LogFormat: "text"}
	if err := config.Load(*cfgPath, &fc); err != nil {
		return err
	}
	for name := range config.Visited(fs) {
		switch name {
		case "addr":
			fc.Addr = *addr
		case "data-dir":
			fc.DataDir = *dataDir
		case "auth-mode":
			fc.Auth.Mode = *authMode
		case "htpasswd":
			fc.Auth.Htpasswd = *htpasswd
		case "anonymous-pull":
			fc.Auth.AnonymousPull = *anonPull
		case "max-blob-size":
			fc.MaxBlobSize = *maxBlob
		case "log-level":
			fc.LogLevel = *logLevel
		case "log-format":
			fc.LogFormat = *logFormat
		}
	}
	if fc.Addr == "" {
		fc.Addr = *addr
	}
	log, err := config.NewLogger(fc.LogLevel, fc.LogFormat)
	if err != nil {
		return err
	}
	srv, err := origin.New(fc.Config, origin.WithLogger(log))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return srv.Run(ctx, nil)
}
