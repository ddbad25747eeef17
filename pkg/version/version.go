// Package version is what a Shoal binary says it is: the release from git
// describe and the commit, stamped at link time by `make build` and
// `make image` (-ldflags -X), so a running pod's binary can be traced to
// its source.
package version

import (
	"fmt"
	"runtime"
	"slices"
)

// Set with -ldflags "-X github.com/shoal-project/shoal/pkg/version.Version=…".
// A plain `go build` leaves the defaults, which say so.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the --version line: name, version, commit, and the platform the
// binary was built for (an index holds one per platform).
func String(name string) string {
	return fmt.Sprintf("%s %s (commit %s, %s/%s)", name, Version, Commit, runtime.GOOS, runtime.GOARCH)
}

// Requested reports whether args ask for the version. The commands check
// this before they parse their configuration, so --version answers even
// where a required setting (a data directory, a config file) is missing.
func Requested(args []string) bool {
	if i := slices.Index(args, "--"); i >= 0 {
		args = args[:i]
	}
	for _, a := range args {
		switch a {
		case "-version", "--version", "-version=true", "--version=true":
			return true
		}
	}
	return false
}
