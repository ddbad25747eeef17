// Package membership keeps a live view of a set of cluster members (origins
// or trackers) in etcd. A member registers a key under a lease it keeps
// alive; when the process dies the lease expires and the key goes, so the
// others stop routing to it within one TTL. Every Group watches the prefix
// and exposes the current set as a ring.Ring.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-project/shoal/pkg/ring"
)

// Prefixes under which Shoal components register.
const (
	OriginPrefix  = "/shoal/members/origins/"
	TrackerPrefix = "/shoal/members/trackers/"
)

// Config configures Join.
type Config struct {
	// Prefix is the etcd key prefix of the group, ending in "/".
	Prefix string
	// Self is registered under Prefix+Self.ID; nil only watches.
	Self *ring.Member
	// TTL is the lease time: how long a dead member stays listed.
	// Default 10s.
	TTL time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Group is a live view of a member set.
type Group struct {
	cli  *clientv3.Client
	cfg  Config
	log  *slog.Logger
	ring atomic.Pointer[ring.Ring]

	mu      sync.Mutex
	members map[string]ring.Member
	subs    []chan struct{}
	lease   clientv3.LeaseID

	cancel context.CancelFunc
	done   chan struct{}
}

// Join registers cfg.Self (if any), loads the current members and keeps
// both up to date until Close.
func Join(ctx context.Context, cli *clientv3.Client, cfg Config) (*Group, error) {
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("membership: prefix %q must end in /", cfg.Prefix)
	}
	if cfg.Self != nil && (cfg.Self.ID == "" || strings.Contains(cfg.Self.ID, "/")) {
		return nil, fmt.Errorf("membership: member ID %q must be non-empty and contain no /", cfg.Self.ID)
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("membership: TTL %s below etcd's one-second granularity", cfg.TTL)
	}
	g := &Group{cli: cli, cfg: cfg, log: cfg.Logger, members: map[string]ring.Member{}, done: make(chan struct{})}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.ring.Store(ring.New(nil))
	var keepAlive <-chan *clientv3.LeaseKeepAliveResponse
	runCtx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	if cfg.Self != nil {
		var err error
		if keepAlive, err = g.register(ctx, runCtx); err != nil {
			cancel()
			return nil, err
		}
	}
	rev, err := g.load(ctx)
	if err != nil {
		cancel()
		g.revoke()
		return nil, err
	}
	go g.run(runCtx, rev, keepAlive)
	return g, nil
}

// Ring is the current member set.
func (g *Group) Ring() *ring.Ring { return g.ring.Load() }

// Subscribe returns a channel that receives (without blocking the group)
// after every change of the member set.
func (g *Group) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	g.mu.Lock()
	g.subs = append(g.subs, ch)
	g.mu.Unlock()
	return ch
}

// Close stops watching and revokes the lease, so others see this member
// leave now rather than after the TTL.
func (g *Group) Close() error {
	g.cancel()
	<-g.done
	return g.revoke()
}

func (g *Group) revoke() error {
	g.mu.Lock()
	lease := g.lease
	g.mu.Unlock()
	if lease == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := g.cli.Revoke(ctx, lease); err != nil {
		return fmt.Errorf("membership: revoke lease: %w", err)
	}
	return nil
}

// register puts Self under a fresh lease and starts keeping it alive for
// as long as runCtx lives.
func (g *Group) register(ctx, runCtx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	val, err := json.Marshal(g.cfg.Self)
	if err != nil {
		return nil, err
	}
	lease, err := g.cli.Grant(ctx, int64((g.cfg.TTL+time.Second-1)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("membership: grant lease: %w", err)
	}
	if _, err := g.cli.Put(ctx, g.cfg.Prefix+g.cfg.Self.ID, string(val), clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("membership: register %s: %w", g.cfg.Self.ID, err)
	}
	ka, err := g.cli.KeepAlive(runCtx, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("membership: keep lease alive: %w", err)
	}
	g.mu.Lock()
	g.lease = lease.ID
	g.mu.Unlock()
	return ka, nil
}

// load reads the whole member set and returns the revision it reflects.
func (g *Group) load(ctx context.Context) (int64, error) {
	resp, err := g.cli.Get(ctx, g.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("membership: list %s: %w", g.cfg.Prefix, err)
	}
	members := map[string]ring.Member{}
	for _, kv := range resp.Kvs {
		if m, ok := g.decode(kv.Key, kv.Value); ok {
			members[m.ID] = m
		}
	}
	g.mu.Lock()
	g.members = members
	g.mu.Unlock()
	g.publish()
	return resp.Header.Revision, nil
}

func (g *Group) decode(key, val []byte) (ring.Member, bool) {
	var m ring.Member
	if err := json.Unmarshal(val, &m); err != nil || m.ID == "" || g.cfg.Prefix+m.ID != string(key) {
		g.log.Warn("ignoring malformed member entry", "key", string(key), "err", err)
		return ring.Member{}, false
	}
	return m, true
}

func (g *Group) publish() {
	g.mu.Lock()
	ms := make([]ring.Member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	subs := g.subs
	g.mu.Unlock()
	g.ring.Store(ring.New(ms))
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// run follows the watch and the lease until ctx ends. A broken watch
// (compaction, lost connection) is resumed from a fresh list; a lost lease
// (etcd unreachable longer than the TTL) is re-registered.
func (g *Group) run(ctx context.Context, rev int64, keepAlive <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(g.done)
	watch := g.cli.Watch(clientv3.WithRequireLeader(ctx), g.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	backoff := newBackoff()
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-watch:
			if !ok || resp.Err() != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Warn("member watch broke; relisting", "prefix", g.cfg.Prefix, "err", watchErr(resp, ok))
				if !backoff.wait(ctx) {
					return
				}
				r, err := g.load(ctx)
				if err != nil {
					g.log.Warn("relist members", "err", err)
					continue
				}
				backoff.reset()
				watch = g.cli.Watch(clientv3.WithRequireLeader(ctx), g.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(r+1))
				continue
			}
			g.apply(resp.Events)
		case _, ok := <-keepAlive:
			if ok {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			g.log.Warn("membership lease lost; registering again", "member", g.cfg.Self.ID)
			keepAlive = nil
			for keepAlive == nil {
				if !backoff.wait(ctx) {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				ka, err := g.register(rctx, ctx)
				cancel()
				if err != nil {
					g.log.Warn("re-register", "err", err)
					continue
				}
				keepAlive = ka
			}
			backoff.reset()
		}
	}
}

func watchErr(resp clientv3.WatchResponse, ok bool) error {
	if !ok {
		return errors.New("watch channel closed")
	}
	return resp.Err()
}

func (g *Group) apply(events []*clientv3.Event) {
	g.mu.Lock()
	for _, ev := range events {
		id := strings.TrimPrefix(string(ev.Kv.Key), g.cfg.Prefix)
		switch ev.Type {
		case clientv3.EventTypeDelete:
			delete(g.members, id)
		case clientv3.EventTypePut:
			if m, ok := g.decode(ev.Kv.Key, ev.Kv.Value); ok {
				g.members[m.ID] = m
			}
		}
	}
	g.mu.Unlock()
	g.publish()
}

// backoff is exponential with full jitter, 100ms to 10s.
type backoff struct{ next time.Duration }

func newBackoff() *backoff { return &backoff{next: 100 * time.Millisecond} }

func (b *backoff) reset() { b.next = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) bool {
	d := time.Duration(rand.Int64N(int64(b.next)) + 1)
	b.next = min(2*b.next, 10*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
