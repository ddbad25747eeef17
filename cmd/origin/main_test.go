package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/config"
)

// The shipped example config must parse strictly into the real config type.
func TestExampleConfigParses(t *testing.T) {
	var fc fileConfig
	if err := config.Load("../../deploy/config/origin.yaml", &fc); err != nil {
		t.Fatal(err)
	}
	if fc.Addr != ":5000" || fc.Auth.Mode != "htpasswd" || !fc.Auth.AnonymousPull || fc.MaxBlobSize != 64<<30 ||
		fc.ID != "origin-0" || fc.Cluster.Replicas != 3 || fc.Cluster.Replication != "sync" || fc.MemberTTL != 10*time.Second {
		t.Fatalf("parsed %+v", fc)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("addr: :1\ndata_dri: /x\n"), 0o644)
	err := run([]string{"--config", p})
	if err == nil || !strings.Contains(err.Error(), "data_dri") {
		t.Fatalf("run with a typo = %v, want an error naming the key", err)
	}
}
