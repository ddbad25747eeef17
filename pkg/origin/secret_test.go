package origin_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/origin"
)

// A cluster never starts without a secret, and the secret comes whole out
// of its file.
func TestClusterSecret(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const good = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name    string
		cc      origin.ClusterConfig
		want    string
		wantErr string
	}{
		{name: "none", wantErr: "cluster mode needs a cluster secret"},
		{name: "file", cc: origin.ClusterConfig{SecretFile: file("ok", good+"\n")}, want: good},
		{name: "file wins", cc: origin.ClusterConfig{Secret: "in-process-secret-value", SecretFile: file("ok2", good)}, want: good},
		{name: "in process", cc: origin.ClusterConfig{Secret: good}, want: good},
		{name: "missing file", cc: origin.ClusterConfig{SecretFile: filepath.Join(dir, "nope")}, wantErr: "no such file"},
		{name: "empty file", cc: origin.ClusterConfig{SecretFile: file("empty", "\n")}, wantErr: "need at least"},
		{name: "short file", cc: origin.ClusterConfig{SecretFile: file("short", "s3cret\n")}, wantErr: "need at least"},
		{name: "short in process", cc: origin.ClusterConfig{Secret: "s3cret"}, wantErr: "need at least"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cc.LoadSecret()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Secret != tt.want {
				t.Fatalf("secret %q, want %q", got.Secret, tt.want)
			}
		})
	}
	if _, err := (origin.ClusterConfig{}).LoadSecret(); !errors.Is(err, origin.ErrNoClusterSecret) {
		t.Fatalf("no secret: %v, want ErrNoClusterSecret", err)
	}
}
