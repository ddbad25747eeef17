package config

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Parse fills dst from three layers, each over the one before: the flag
// defaults (flags must be bound to dst's fields, e.g. with fs.StringVar),
// the YAML file named by --config, and the flags given in args. It defines
// --config itself.
func Parse(fs *flag.FlagSet, args []string, dst any) error {
	path := fs.String("config", "", "YAML config file; flags override it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := Load(*path, dst); err != nil {
		return err
	}
	// Parsing again re-applies only the flags actually given, so they win
	// over the file while the file wins over the defaults.
	return fs.Parse(args)
}

// ListVar defines a comma-separated list flag; a value given replaces the
// list, it does not append.
func ListVar(fs *flag.FlagSet, p *[]string, name, usage string) {
	fs.Var((*listValue)(p), name, usage)
}

type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(s string) error {
	*l = SplitList(s)
	return nil
}

// SplitList splits a comma-separated value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Logging is the log settings every component shares; embed it inline.
type Logging struct {
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
}

// Flags binds --log-level and --log-format.
func (l *Logging) Flags(fs *flag.FlagSet) {
	fs.StringVar(&l.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&l.LogFormat, "log-format", "text", "text or json")
}

// Logger is a structured logger to stderr as configured.
func (l Logging) Logger() (*slog.Logger, error) { return NewLogger(l.LogLevel, l.LogFormat) }

// NewLogger returns a structured logger for a component at the named level
// ("debug", "info", "warn", "error") in "text" or "json" format.
func NewLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
