package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The preheat command refuses what it cannot send before it dials.
func TestPreheatCommandRefusesBadArguments(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"neither tag nor digest", []string{"--repo", "a/b", "--token-file", tok}, "one of --tag and --digest"},
		{"both tag and digest", []string{"--repo", "a/b", "--tag", "v1", "--digest", "sha256:00", "--token-file", tok}, "one of --tag and --digest"},
		{"no token file", []string{"--repo", "a/b", "--tag", "v1"}, "--token-file is required"},
		{"missing token file", []string{"--repo", "a/b", "--tag", "v1", "--token-file", tok + ".none"}, "no such file"},
		{"bad selector", []string{"--repo", "a/b", "--tag", "v1", "--token-file", tok, "--selector", "color=red"}, "want zone=, rack= or node="},
		{"unknown flag", []string{"--nope"}, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runPreheat(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("runPreheat(%v) = %v, want %q", tt.args, err, tt.want)
			}
		})
	}
}
