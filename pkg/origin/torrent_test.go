package origin_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/proctest"
)

// TestTorrentDownloadsWithAria2: a blob exported as a .torrent is
// downloaded by a real BitTorrent client (Debian's aria2) from the torrent
// file alone, with the origin as its only (BEP 19 web) seed, and the bytes
// match the digest. Malformed and unknown requests answer as the registry
// does.
func TestTorrentDownloadsWithAria2(t *testing.T) {
	aria2, err := exec.LookPath("aria2c")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("aria2c missing; .ci/run installs Debian aria2")
		}
		t.Skip("aria2c not installed (apt-get install aria2)")
	}
	c := newClient(t, origin.Config{})
	blob := randomBytes(t, 9<<20+12345) // three 4 MiB pieces, the last short
	d := c.pushBlob("team/app", blob)

	r := c.do("GET", origin.TorrentPath+"team/app/"+d+".torrent", nil, nil).expect(t, 200, "")
	if r.Header.Get("Content-Type") != "application/x-bittorrent" {
		t.Fatalf("Content-Type %q", r.Header.Get("Content-Type"))
	}
	dir := t.TempDir()
	tf := filepath.Join(dir, "blob.torrent")
	if err := os.WriteFile(tf, r.body, 0o644); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(proctest.FreeAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, aria2, "--dir", filepath.Join(dir, "out"), "--seed-time=0",
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
		"--listen-port="+port, "--dht-listen-port="+port, "--no-conf", "--console-log-level=warn", "--summary-interval=0", tf).CombinedOutput()
	if err != nil {
		t.Fatalf("aria2c: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out", "sha256-"+strings.TrimPrefix(d, "sha256:")))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !bytes.Equal(got, blob) || sha(got) != d {
		t.Fatalf("aria2 downloaded %d bytes hashing to %s, want %s", len(got), sha(got), d)
	}
	sent := metric(t, c.o.Registry, "shoal_origin_bytes_sent_total")
	t.Logf("aria2 took the %d-byte blob from the web seed alone: origin sent %.0f bytes (%.2f copies)", len(blob), sent, sent/float64(len(blob)))

	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"unknown blob", "team/app/" + sha([]byte("nope")) + ".torrent", 404, "BLOB_UNKNOWN"},
		{"other repository", "team/other/" + d + ".torrent", 404, "BLOB_UNKNOWN"},
		{"bad digest", "team/app/sha256:xyz.torrent", 400, "DIGEST_INVALID"},
		{"bad name", "Team/app/" + d + ".torrent", 400, "NAME_INVALID"},
		{"no suffix", "team/app/" + d, 404, "UNSUPPORTED"},
		{"no repository", d + ".torrent", 404, "UNSUPPORTED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.do("GET", origin.TorrentPath+tc.path, nil, nil).expect(t, tc.status, tc.code)
		})
	}
}
