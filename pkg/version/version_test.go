package version

import (
	"strings"
	"testing"
)

func TestRequested(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--version"}, true},
		{[]string{"-version"}, true},
		{[]string{"--config", "a.yaml", "--version=true"}, true},
		{[]string{"--version=false"}, false},
		{[]string{"--", "--version"}, false},
		{[]string{"--config", "version"}, false},
	} {
		if got := Requested(tc.args); got != tc.want {
			t.Errorf("Requested(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	s := String("shoal-agent")
	if !strings.HasPrefix(s, "shoal-agent "+Version+" (commit "+Commit) {
		t.Fatalf("String = %q", s)
	}
}
