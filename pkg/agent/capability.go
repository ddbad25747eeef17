package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-project/shoal/pkg/capability"
	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// fetchCapability asks the origins for this node's capability to fetch d
// from the swarm, as a node allowed to pull it from repo. It asks with the
// agent's own credentials: by now the client has passed its pull check.
// errNotFound: the origins issue none (no key configured) or repo does not
// hold d.
func (a *Agent) fetchCapability(ctx context.Context, up Upstream, repo string, d digest.Digest) (*shoalpb.Capability, error) {
	b, err := a.originBody(ctx, up, capability.HTTPPath+repo+"/"+d.String()+"?peer="+a.host.ID().String(), 4<<10)
	if err != nil {
		return nil, fmt.Errorf("capability for %s: %w", d, err)
	}
	var c shoalpb.Capability
	if err := proto.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("capability for %s: %w", d, err)
	}
	if c.GetDigest() != d.String() || string(c.GetPeerId()) != string(a.host.ID()) {
		return nil, fmt.Errorf("capability for %s: issued for another blob or peer", d)
	}
	return &c, nil
}

// capHolder keeps one download's capability fresh. Dials ask it for the
// capability to present; it renews one past half its lifetime, so a long
// download never presents an expired one, and after a failure it waits
// before asking again, so a download does not hammer an origin that is
// down (the swarm falls back to the origin's /v2 meanwhile).
type capHolder struct {
	ctx     context.Context
	timeout time.Duration
	fetch   func(ctx context.Context) (*shoalpb.Capability, error)
	log     *slog.Logger
	count   func(result string)
	now     func() time.Time // time.Now when nil; tests set it

	mu   sync.Mutex
	cur  *shoalpb.Capability
	got  time.Time // when cur was fetched
	next time.Time // no fetch before this
}

// Retry delays after a failed fetch: an origin that issues none is not
// going to start within a download; one that failed might.
const (
	capRetryNone  = 5 * time.Minute
	capRetryError = 5 * time.Second
)

func (h *capHolder) get() *shoalpb.Capability {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if h.now != nil {
		now = h.now()
	}
	if h.cur != nil {
		exp := time.Unix(h.cur.GetExpiresUnix(), 0)
		if now.Before(h.got.Add(exp.Sub(h.got) / 2)) {
			return h.cur
		}
	}
	if now.Before(h.next) {
		return h.cur
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()
	c, err := h.fetch(ctx)
	switch {
	case err == nil:
		h.cur, h.got = c, now
		h.count("fetched")
	case errors.Is(err, errNotFound):
		h.next = now.Add(capRetryNone)
		h.count("none")
		h.log.Debug("no capability issued", "err", err)
	default:
		h.next = now.Add(capRetryError)
		h.count("error")
		h.log.Warn("capability", "err", err)
	}
	return h.cur
}
