package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/reference"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// Preheat orders reach an agent through its poll of the tracker
// (PreheatPoll, signed like an announce): the answer lists the orders
// assigned to this node, again on every poll until the tracker has seen
// this node announce every blob of the order complete. So an order lost
// to a restart, on either side, is simply received again. The agent pins
// the blobs, fetches those it lacks through the swarm like any download,
// and announces them complete at once (the tracker counts copies from
// announces, and the seed loop would take up to its interval).

// Bounds on an order, which comes from the network.
const (
	maxOrders          = 64
	maxOrderDigests    = 1000
	maxOrderPin        = 7 * 24 * time.Hour
	preheatRerunPeriod = 30 * time.Second
)

// orderState is one order this agent has run or is running.
type orderState struct {
	running bool
	ended   time.Time
}

// preheatLoop polls the tracker for orders until ctx ends.
func (a *Agent) preheatLoop(ctx context.Context) {
	orders := map[string]*orderState{}
	var mu sync.Mutex // orders: the loop and the order goroutines
	interval := a.cfg.PreheatPollInterval
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := a.poller.PreheatPoll(pctx, &shoalpb.PreheatPollRequest{Peer: a.self()})
		cancel()
		if err != nil {
			a.log.Debug("preheat poll", "err", err)
		} else {
			if s := time.Duration(resp.GetIntervalSeconds()) * time.Second; s > 0 && s <= time.Minute {
				interval = s
			}
			ordered := map[string]bool{}
			mu.Lock()
			for i, o := range resp.GetOrders() {
				if i >= maxOrders {
					break
				}
				ordered[o.GetId()] = true
				st := orders[o.GetId()]
				// An order still sent after it ended: the tracker has
				// not seen the copy (an announce lost, or the blobs
				// evicted since); run it again, at most every period.
				if st != nil && (st.running || time.Since(st.ended) < preheatRerunPeriod) {
					continue
				}
				st = &orderState{running: true}
				orders[o.GetId()] = st
				a.wg.Go(func() {
					err := a.runOrder(ctx, o)
					mu.Lock()
					st.running, st.ended = false, time.Now()
					mu.Unlock()
					res := "done"
					if err != nil {
						res = "failed"
						a.log.Warn("preheat order failed", "order", o.GetId(), "err", err)
					}
					a.metrics.preheatOrders.WithLabelValues(res).Inc()
				})
			}
			for id, st := range orders {
				if !ordered[id] && !st.running {
					delete(orders, id)
				}
			}
			mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// runOrder pins and fetches an order's blobs, then announces them.
func (a *Agent) runOrder(ctx context.Context, o *shoalpb.PreheatOrder) error {
	if err := reference.ValidateName(o.GetRepo()); err != nil {
		return fmt.Errorf("order repo: %w", err)
	}
	if len(o.GetDigests()) == 0 || len(o.GetDigests()) > maxOrderDigests {
		return fmt.Errorf("order names %d blobs", len(o.GetDigests()))
	}
	up, ok := a.cfg.Registries[o.GetRegistry()]
	if !ok && o.GetRegistry() == "" && len(a.cfg.Registries) == 1 {
		for _, u := range a.cfg.Registries {
			up, ok = u, true
		}
	}
	if !ok {
		return fmt.Errorf("no registry %q configured", o.GetRegistry())
	}
	pin := min(max(time.Duration(o.GetPinSeconds())*time.Second, time.Minute), maxOrderPin)
	until := a.cache.now().Add(pin)
	ds := make([]digest.Digest, 0, len(o.GetDigests()))
	for _, s := range o.GetDigests() {
		d, err := digest.Parse(s)
		if err != nil {
			return fmt.Errorf("order digest: %w", err)
		}
		if !a.cache.pin(d, until) {
			return errors.New("too many pinned blobs")
		}
		ds = append(ds, d)
	}
	start := time.Now()
	a.log.Info("preheat order", "order", o.GetId(), "repo", o.GetRepo(), "blobs", len(ds), "pin", pin)
	var fs []*inflight
	for _, d := range ds {
		if !a.cache.has(d) {
			fs = append(fs, a.fetch(d, o.GetRepo(), up))
		}
	}
	var errs []error
	for _, f := range fs {
		select {
		case <-f.done:
			errs = append(errs, f.err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if a.tracker != nil {
		batch := &shoalpb.AnnounceBatchRequest{}
		for _, d := range ds {
			batch.Announces = append(batch.Announces, &shoalpb.AnnounceRequest{
				Digest: d.String(), Peer: a.self(), Have: &shoalpb.AnnounceRequest_Complete{Complete: true}})
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := a.tracker.AnnounceBatch(actx, batch)
		cancel()
		if err != nil {
			// The seed loop announces them within its interval anyway.
			a.log.Debug("preheat announce", "err", err)
		}
	}
	a.log.Info("preheat order done", "order", o.GetId(), "fetched", len(fs), "took", time.Since(start).Round(time.Millisecond))
	if o.GetContainerd() && a.cfg.Containerd.Address != "" {
		// After the announce: the copy counts for the preheat while
		// containerd unpacks.
		return a.pullIntoContainerd(ctx, o)
	}
	return nil
}
