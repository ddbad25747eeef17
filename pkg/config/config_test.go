package config_test

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/config"
)

type cfg struct {
	Addr      string        `yaml:"addr"`
	Interval  time.Duration `yaml:"interval"`
	Endpoints []string      `yaml:"endpoints"`
	Nested    struct {
		N int `yaml:"n"`
	} `yaml:"nested"`
	config.Logging `yaml:",inline"`
}

func parse(args []string) (cfg, error) {
	var c cfg
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	fs.StringVar(&c.Addr, "addr", ":1", "")
	fs.DurationVar(&c.Interval, "interval", time.Second, "")
	config.ListVar(fs, &c.Endpoints, "endpoints", "")
	fs.IntVar(&c.Nested.N, "n", 7, "")
	c.Logging.Flags(fs)
	err := config.Parse(fs, args, &c)
	return c, err
}

// Defaults < file < flags, key by key.
func TestParseLayers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("addr: \":2\"\ninterval: 5s\nendpoints: [a, b]\nlog_format: json\n"), 0o644)
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("adr: \":2\"\n"), 0o644)

	tests := []struct {
		name    string
		args    []string
		want    cfg
		wantErr string
	}{
		{"defaults", nil, cfg{Addr: ":1", Interval: time.Second, Logging: config.Logging{LogLevel: "info", LogFormat: "text"}}, ""},
		{"file over defaults", []string{"--config", file},
			cfg{Addr: ":2", Interval: 5 * time.Second, Endpoints: []string{"a", "b"}, Logging: config.Logging{LogLevel: "info", LogFormat: "json"}}, ""},
		{"flags over file", []string{"--config", file, "--addr", ":3", "--endpoints", " c ,, d", "--log-level", "debug"},
			cfg{Addr: ":3", Interval: 5 * time.Second, Endpoints: []string{"c", "d"}, Logging: config.Logging{LogLevel: "debug", LogFormat: "json"}}, ""},
		{"flag order does not matter", []string{"--addr", ":3", "--config", file},
			cfg{Addr: ":3", Interval: 5 * time.Second, Endpoints: []string{"a", "b"}, Logging: config.Logging{LogLevel: "info", LogFormat: "json"}}, ""},
		{"unknown key", []string{"--config", typo}, cfg{}, "adr"},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, cfg{}, "no such file"},
		{"bad flag", []string{"--nope"}, cfg{}, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Nested.N = 7
			if got.Addr != tt.want.Addr || got.Interval != tt.want.Interval || !slices.Equal(got.Endpoints, tt.want.Endpoints) ||
				got.Logging != tt.want.Logging || got.Nested.N != 7 {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	for _, tt := range []struct {
		level, format string
		ok            bool
	}{{"info", "text", true}, {"DEBUG", "json", true}, {"warn", "", true}, {"loud", "text", false}, {"info", "xml", false}} {
		if _, err := config.NewLogger(tt.level, tt.format); (err == nil) != tt.ok {
			t.Errorf("NewLogger(%q, %q) err = %v", tt.level, tt.format, err)
		}
	}
}
