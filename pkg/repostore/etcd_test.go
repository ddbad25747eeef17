package repostore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/repostore/storetest"
)

func dg(s string) digest.Digest { return digest.FromBytes([]byte(s)) }

// The etcd index passes the same conformance suite as the local one; every
// subtest gets its own key prefix on one embedded etcd.
func TestEtcd(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Embedded(t))
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) repostore.Store {
		return repostore.NewEtcd(cli, repostore.EtcdConfig{Prefix: fmt.Sprintf("/test/%d/", n.Add(1))})
	})
}

// Tags on a 3-member Debian etcd cluster: origins talking to different
// members see one tag history, and compare-and-swap lets exactly one of
// many concurrent writers move a tag from a given revision.
func TestEtcdTagsAcrossMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	c := etcdtest.StartCluster(t, 3)
	stores := make([]*repostore.Etcd, 3)
	for i, ep := range c.Endpoints {
		stores[i] = repostore.NewEtcd(etcdtest.Client(t, []string{ep}), repostore.EtcdConfig{})
	}
	ctx := context.Background()

	tests := []struct {
		name    string
		rev     func(cur int64) int64
		swapped bool
	}{
		{"create needs revision 0", func(int64) int64 { return 0 }, true},
		{"create again fails", func(int64) int64 { return 0 }, false},
		{"stale revision fails", func(cur int64) int64 { return cur - 1 }, false},
		{"current revision swaps", func(cur int64) int64 { return cur }, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, cur, _ := stores[0].GetTagRevision(ctx, "app", "latest")
			d := dg(fmt.Sprint(i))
			ok, err := stores[i%3].CompareAndSwapTag(ctx, "app", "latest", tt.rev(cur), d)
			if err != nil || ok != tt.swapped {
				t.Fatalf("CAS = %v, %v; want %v", ok, err, tt.swapped)
			}
			if !ok {
				return
			}
			// Linearizable reads: every member answers with the new
			// digest at once.
			for j, s := range stores {
				if got, err := s.GetTag(ctx, "app", "latest"); err != nil || got != d {
					t.Fatalf("member %d reads %s, %v; want %s", j, got, err, d)
				}
			}
		})
	}

	_, rev, err := stores[0].GetTagRevision(ctx, "app", "latest")
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			ok, err := stores[i%3].CompareAndSwapTag(ctx, "app", "latest", rev, dg(fmt.Sprint("racer", i)))
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent CAS from one revision won, want exactly 1", wins.Load())
	}
}

// WatchTags reports puts, swaps and deletes in order, from any client,
// and closes when its context ends.
func TestEtcdWatchTags(t *testing.T) {
	eps := etcdtest.Embedded(t)
	writer := repostore.NewEtcd(etcdtest.Client(t, eps), repostore.EtcdConfig{})
	watcher := repostore.NewEtcd(etcdtest.Client(t, eps), repostore.EtcdConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	events := watcher.WatchTags(ctx)
	// The watch is registered asynchronously; give it a moment so the
	// first write is not missed.
	time.Sleep(100 * time.Millisecond)

	if err := writer.PutTag(ctx, "team/app", "v1", dg("one")); err != nil {
		t.Fatal(err)
	}
	_, rev, _ := writer.GetTagRevision(ctx, "team/app", "v1")
	if ok, err := writer.CompareAndSwapTag(ctx, "team/app", "v1", rev, dg("two")); !ok || err != nil {
		t.Fatalf("CAS: %v %v", ok, err)
	}
	if err := writer.DeleteTag(ctx, "team/app", "v1"); err != nil {
		t.Fatal(err)
	}
	want := []repostore.TagEvent{
		{Repo: "team/app", Tag: "v1", Digest: dg("one")},
		{Repo: "team/app", Tag: "v1", Digest: dg("two")},
		{Repo: "team/app", Tag: "v1"},
	}
	var lastRev int64
	for i, w := range want {
		select {
		case ev := <-events:
			if ev.Repo != w.Repo || ev.Tag != w.Tag || ev.Digest != w.Digest || ev.Revision <= lastRev {
				t.Fatalf("event %d = %+v, want %+v after revision %d", i, ev, w, lastRev)
			}
			lastRev = ev.Revision
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d not seen", i)
		}
	}
	cancel()
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch channel not closed after cancel")
	}
}
