package agent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
)

// Eviction under pressure never takes a blob that is pinned (until its
// pin expires) or being served; it takes the least recent of the others.
func TestCacheEvictionSparesPinnedAndServed(t *testing.T) {
	// The real clock: a reopened cache restores pins by it.
	base := time.Now()
	tests := []struct {
		name string
		// pinA: how long a (the oldest blob) is pinned from base; 0 none.
		pinA time.Duration
		// serveA: a is open for reading during the pressure.
		serveA bool
		// advance moves the clock before the pressure.
		advance time.Duration
		// restart reopens the cache (a new agent process) before the
		// pressure; corrupt damages the pin file first.
		restart, corrupt bool
		wantA            bool
	}{
		{name: "unpinned oldest goes", wantA: false},
		{name: "pinned survives", pinA: time.Hour, wantA: true},
		{name: "served survives", serveA: true, wantA: true},
		{name: "expired pin goes", pinA: time.Minute, advance: 2 * time.Minute, wantA: false},
		{name: "pin before arrival holds", pinA: -time.Hour, wantA: true}, // negative: pin before adopt
		{name: "pin survives a restart", pinA: time.Hour, restart: true, wantA: true},
		{name: "expired pin not restored", pinA: time.Minute, advance: 2 * time.Minute, restart: true, wantA: false},
		{name: "unreadable pin file: starts without pins", pinA: time.Hour, restart: true, corrupt: true, wantA: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			store, err := blobstore.NewLocal(filepath.Join(dir, "cache"))
			if err != nil {
				t.Fatal(err)
			}
			now := base
			pins := filepath.Join(dir, "pins.json")
			open := func() *cache {
				c, err := newCache(ctx, store, 2500, pins, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			c := open()
			c.now = func() time.Time { return now }
			blob := func(fill byte) (*metainfo.MetaInfo, []byte) {
				data := bytes.Repeat([]byte{fill}, 1000)
				mi, err := metainfo.Compute(digest.FromBytes(data), bytes.NewReader(data), int64(len(data)))
				if err != nil {
					t.Fatal(err)
				}
				return mi, data
			}
			add := func(mi *metainfo.MetaInfo, data []byte) {
				p := filepath.Join(dir, "dl")
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := c.adopt(ctx, p, mi, nil); err != nil {
					t.Fatal(err)
				}
			}
			miA, dataA := blob('a')
			if tt.pinA < 0 {
				c.pin(miA.Digest, base.Add(-tt.pinA))
			}
			add(miA, dataA)
			if tt.pinA > 0 {
				c.pin(miA.Digest, base.Add(tt.pinA))
			}
			if tt.serveA {
				b, ok := c.open(ctx, miA.Digest)
				if !ok {
					t.Fatal("a not cached")
				}
				defer b.Close()
			}
			add(blob('b'))
			now = now.Add(tt.advance)
			if tt.restart {
				c.flushPins()
				if tt.corrupt {
					if err := os.WriteFile(pins, []byte("{not json"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				c = open()
				c.now = func() time.Time { return now }
			}
			// Pressure: ten more blobs through a cache that holds two.
			for f := byte('c'); f < 'm'; f++ {
				add(blob(f))
			}
			if got := c.has(miA.Digest); got != tt.wantA {
				t.Fatalf("a cached = %v, want %v", got, tt.wantA)
			}
			if _, err := store.Stat(ctx, miA.Digest); (err == nil) != tt.wantA {
				t.Fatalf("a on disk = %v, want %v", err == nil, tt.wantA)
			}
			// The limit holds apart from what is pinned or served.
			if limit := int64(2500) + map[bool]int64{true: 1000}[tt.wantA]; c.bytes() > limit {
				t.Fatalf("cache holds %d bytes, limit %d", c.bytes(), limit)
			}
		})
	}
}
