package tlsconfig

import (
	"bytes"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestReloader steps a fake clock past the check interval and replaces the
// files in the ways a certificate renewal does.
func TestReloader(t *testing.T) {
	a, err := WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	live, err := WriteTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	copyFile := func(src, dst string) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(a.CertFile, live.CertFile)
	copyFile(a.KeyFile, live.KeyFile)
	r, err := NewReloader(live.CertFile, live.KeyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }
	leaf := func(f Files) []byte {
		t.Helper()
		c, err := NewReloader(f.CertFile, f.KeyFile, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return c.cert.Certificate[0]
	}
	steps := []struct {
		name    string
		change  func()
		advance time.Duration
		want    []byte
	}{
		{"unchanged", func() {}, time.Hour, leaf(a)},
		{"new cert, old key: keep the old pair", func() { copyFile(b.CertFile, live.CertFile) }, ReloadInterval, leaf(a)},
		{"key follows, but within the interval", func() { copyFile(b.KeyFile, live.KeyFile) }, ReloadInterval / 2, leaf(a)},
		{"interval passed: the new pair", func() {}, ReloadInterval, leaf(b)},
		{"files gone: keep serving", func() { os.Remove(live.CertFile) }, ReloadInterval, leaf(b)},
	}
	for _, s := range steps {
		s.change()
		now = now.Add(s.advance)
		got, err := r.GetCertificate(nil)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !bytes.Equal(got.Certificate[0], s.want) {
			t.Fatalf("%s: served the wrong certificate", s.name)
		}
		cc, _ := r.GetClientCertificate(nil)
		if cc != got {
			t.Fatalf("%s: client and server certificates differ", s.name)
		}
	}
	if _, err := NewReloader(live.CertFile, live.KeyFile, nil); err == nil {
		t.Fatal("NewReloader with a missing file succeeded")
	}
	if _, err := NewReloader("", live.KeyFile, nil); err == nil {
		t.Fatal("NewReloader without a cert file succeeded")
	}
}
