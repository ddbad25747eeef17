package agent

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	shoalpb "github.com/shoal-project/shoal/proto"
)

// A download's capability is fetched at its first dial, renewed past half
// its lifetime (so a long download never presents an expired one), kept
// while a renewal fails, and not asked for again at once after a failure.
func TestCapHolderRenews(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const ttl = 10 * time.Minute
	type step struct {
		at      time.Duration // since t0
		fail    error         // what the origin answers, nil: a capability
		fetched bool          // whether this get asks the origin
		expires time.Duration // of the capability presented; 0: none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"renewed at half-life", []step{
			{at: 0, fetched: true, expires: ttl},
			{at: 4 * time.Minute, expires: ttl},
			{at: 5*time.Minute + time.Second, fetched: true, expires: 5*time.Minute + time.Second + ttl},
			{at: 9 * time.Minute, expires: 5*time.Minute + time.Second + ttl},
		}},
		{"a failed renewal keeps the old one and waits", []step{
			{at: 0, fetched: true, expires: ttl},
			{at: 6 * time.Minute, fail: errors.New("origin down"), fetched: true, expires: ttl},
			{at: 6*time.Minute + time.Second, expires: ttl},
			{at: 6*time.Minute + capRetryError, fetched: true, expires: 6*time.Minute + capRetryError + ttl},
		}},
		{"origins that issue none are not asked again soon", []step{
			{at: 0, fail: errNotFound, fetched: true},
			{at: time.Minute},
			{at: capRetryNone, fetched: true, expires: capRetryNone + ttl},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var now time.Time
			var fail error
			fetches := 0
			h := &capHolder{ctx: context.Background(), timeout: time.Second, log: slog.New(slog.DiscardHandler),
				count: func(string) {}, now: func() time.Time { return now },
				fetch: func(context.Context) (*shoalpb.Capability, error) {
					fetches++
					if fail != nil {
						return nil, fail
					}
					return &shoalpb.Capability{ExpiresUnix: now.Add(ttl).Unix()}, nil
				}}
			for i, s := range tt.steps {
				now, fail = t0.Add(s.at), s.fail
				before := fetches
				c := h.get()
				if got := fetches > before; got != s.fetched {
					t.Fatalf("step %d (%s): fetched %v, want %v", i, s.at, got, s.fetched)
				}
				var exp time.Duration
				if c != nil {
					exp = time.Unix(c.GetExpiresUnix(), 0).Sub(t0)
				}
				if exp != s.expires {
					t.Fatalf("step %d (%s): presents one expiring at +%s, want +%s", i, s.at, exp, s.expires)
				}
			}
		})
	}
}
