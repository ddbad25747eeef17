package tracker

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
)

// An unknown digest is answered from memory for the negative TTL, then
// asked of the origins again (a blob pushed meanwhile is found).
func TestNegativeCacheExpires(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := newMetaInfoCache(Config{MetaInfoNegativeTTL: 30 * time.Second}.withDefaults(), http.DefaultClient)
	c.now = func() time.Time { return now }
	d := digest.Digest("sha256:" + strings.Repeat("a", 64))
	other := digest.Digest("sha256:" + strings.Repeat("b", 64))
	c.remember(d)
	steps := []struct {
		at   time.Duration
		d    digest.Digest
		want bool
	}{
		{0, d, true},
		{0, other, false},
		{29 * time.Second, d, true},
		{30 * time.Second, d, false},
		{31 * time.Second, d, false},
	}
	start := now
	for _, s := range steps {
		now = start.Add(s.at)
		if got := c.knownMissing(s.d); got != s.want {
			t.Fatalf("at %s, knownMissing(%s) = %v, want %v", s.at, s.d, got, s.want)
		}
	}
	if len(c.missing) != 0 {
		t.Fatalf("expired entries kept: %v", c.missing)
	}
}

// Misses are charged to the client that starts them: one client's flood
// uses its own burst, not another's, and the bucket refills at the rate.
func TestFetchLimits(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := newMetaInfoCache(Config{}.withDefaults(), http.DefaultClient) // 2/s, burst 8 per client
	c.now = func() time.Time { return now }
	steps := []struct {
		advance time.Duration
		client  string
		calls   int
		want    int // admitted
	}{
		{0, "10.0.0.1", 20, 8},
		{0, "10.0.0.2", 3, 3},
		{time.Second, "10.0.0.1", 20, 2},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		got := 0
		for range s.calls {
			if c.admit(s.client) {
				got++
			}
		}
		if got != s.want {
			t.Fatalf("step %d: %s admitted %d of %d, want %d", i, s.client, got, s.calls, s.want)
		}
	}
}
