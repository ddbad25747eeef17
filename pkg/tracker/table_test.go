package tracker

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/ring"
	shoalpb "github.com/shoal-project/shoal/proto"
)

func tableRun(t *testing.T, cfg PolicyConfig) (handed [][]string, origins int) {
	t.Helper()
	tb := NewTable(cfg)
	org := []ring.Member{{ID: "o", PeerID: "origin"}}
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	now := time.Unix(1000, 0)
	for round := range 3 {
		for i := range 200 {
			req := &shoalpb.AnnounceRequest{Digest: d, Peer: &shoalpb.Peer{Id: fmt.Sprint("agent", i)},
				Have: &shoalpb.AnnounceRequest_Bitfield{Bitfield: []byte{byte(i)}}}
			resp, err := tb.Announce(d, req, org, now.Add(time.Duration(round)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, p := range resp.GetPeers() {
				ids = append(ids, p.GetId())
				if p.GetOrigin() && round == 0 {
					origins++
				}
			}
			handed = append(handed, ids)
		}
	}
	return handed, origins
}

// A Table hands out what the tracker would: the origin to at most
// OriginFanout agents at once, the rest from the swarm; with a seed, the
// same hand-out every time.
func TestTable(t *testing.T) {
	def := DefaultPolicy()
	if def.Interval != 3*time.Second || def.DefaultPeers != 30 || def.OriginFanout != 4 || def.SeederTarget != 2 {
		t.Errorf("DefaultPolicy() = %+v", def)
	}
	a, origins := tableRun(t, PolicyConfig{Interval: time.Second, Seed: 42})
	if origins != def.OriginFanout {
		t.Errorf("%d agents were handed the origin in the first round, want %d", origins, def.OriginFanout)
	}
	if n := len(a[len(a)-1]); n != def.DefaultPeers {
		t.Errorf("the last announce got %d peers, want %d", n, def.DefaultPeers)
	}
	b, _ := tableRun(t, PolicyConfig{Interval: time.Second, Seed: 42})
	if !reflect.DeepEqual(a, b) {
		t.Error("two tables with one seed handed out different peers")
	}
	c, _ := tableRun(t, PolicyConfig{Interval: time.Second, Seed: 43})
	if reflect.DeepEqual(a, c) {
		t.Error("seeds 42 and 43 handed out the same peers")
	}
}
