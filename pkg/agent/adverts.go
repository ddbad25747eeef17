package agent

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/reference"
	"github.com/shoal-project/shoal/pkg/upstream"
)

// advertised is where an upstream namespace that origins pull through
// lives: the registry entry of the origin cluster that advertised it, and
// the repository prefix there.
type advertised struct {
	registry string
	prefix   string
}

// adverts maps upstream namespaces (docker.io, ghcr.io) to the origin
// clusters that pull them through, as the origins list them on
// upstream.AdvertisePath: agents keep no table of their own.
type adverts struct {
	mu     sync.RWMutex
	byNS   map[string]advertised
	loaded bool
}

func (v *adverts) lookup(ns string) (advertised, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	a, ok := v.byNS[ns]
	return a, ok
}

// maxAdverts bounds what one origin may advertise.
const maxAdverts = 1024

// refreshAdverts asks every configured origin cluster for the namespaces
// it pulls through. A cluster that cannot answer keeps what it advertised
// before; a namespace configured by hand in Registries wins over any
// advert, and of two clusters advertising one namespace the first by name
// wins.
func (a *Agent) refreshAdverts(ctx context.Context) {
	names := make([]string, 0, len(a.cfg.Registries))
	for name := range a.cfg.Registries {
		names = append(names, name)
	}
	sort.Strings(names)
	a.adverts.mu.RLock()
	next := make(map[string]advertised, len(a.adverts.byNS))
	old := a.adverts.byNS
	a.adverts.mu.RUnlock()
	for _, name := range names {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.OriginTimeout)
		b, err := a.originBody(cctx, a.cfg.Registries[name], upstream.AdvertisePath, 1<<20)
		cancel()
		var list upstream.Adverts
		if err == nil {
			err = json.Unmarshal(b, &list)
		}
		if err != nil {
			a.log.Debug("origin advertises no upstreams", "registry", name, "err", err)
			for ns, adv := range old {
				if adv.registry == name {
					if _, taken := next[ns]; !taken {
						next[ns] = adv
					}
				}
			}
			continue
		}
		for i, u := range list.Upstreams {
			if i >= maxAdverts {
				break
			}
			if _, mine := a.cfg.Registries[u.Namespace]; mine || u.Namespace == "" || reference.ValidateName(u.Prefix) != nil {
				continue
			}
			if _, taken := next[u.Namespace]; !taken {
				next[u.Namespace] = advertised{registry: name, prefix: u.Prefix}
			}
		}
	}
	a.adverts.mu.Lock()
	a.adverts.byNS, a.adverts.loaded = next, true
	a.adverts.mu.Unlock()
	a.metrics.upstreamNamespaces.Set(float64(len(next)))
}

// advertLoop refreshes the adverts at once and then every interval, until
// ctx ends.
func (a *Agent) advertLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.UpstreamRefresh)
	defer t.Stop()
	for {
		a.refreshAdverts(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
