package tracker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-project/shoal/pkg/digest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

const testToken = "0123456789abcdef-test"

func preheatServer(t *testing.T) *Server {
	t.Helper()
	s := New(Config{Preheat: PreheatConfig{PollInterval: time.Second, AssignTimeout: time.Minute}},
		WithPreheatToken(testToken), WithLogger(slog.New(slog.DiscardHandler)))
	return s
}

// seen makes agents known to the preheater as if they had polled at now.
func seen(s *Server, now time.Time, agents map[string][2]string) {
	for id, zr := range agents {
		s.preheat.agents[id] = &agentSeen{zone: zr[0], rack: zr[1], seen: now}
	}
}

// completeCopy announces every blob of ds complete for id, in the real
// swarm table.
func completeCopy(t *testing.T, s *Server, id string, ds []string, now time.Time) {
	t.Helper()
	for _, d := range ds {
		req := &shoalpb.AnnounceRequest{Digest: d, Peer: &shoalpb.Peer{Id: id}, Have: &shoalpb.AnnounceRequest_Complete{Complete: true}}
		if _, err := s.swarms.announce(d, req, "", nil, s.policy, now); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPickAgentsSpreadsOverZonesThenRacks(t *testing.T) {
	agents := map[string][2]string{
		"a1": {"a", "r1"}, "a2": {"a", "r1"}, "a3": {"a", "r2"},
		"b1": {"b", "r1"}, "b2": {"b", "r2"},
		"c1": {"c", "r1"},
	}
	tests := []struct {
		name string
		n    int
		sel  *shoalpb.Labels
		// zones: how many picks per zone; racks: distinct zone/racks.
		zones map[string]int
		racks int
	}{
		{name: "three over three zones", n: 3, zones: map[string]int{"a": 1, "b": 1, "c": 1}, racks: 3},
		{name: "five: two racks in a and b", n: 5, zones: map[string]int{"a": 2, "b": 2, "c": 1}, racks: 5},
		{name: "selector zone a: racks first", n: 2, sel: &shoalpb.Labels{Zone: "a"}, zones: map[string]int{"a": 2}, racks: 2},
		{name: "selector matches none", n: 2, sel: &shoalpb.Labels{Zone: "x"}, zones: map[string]int{}},
		{name: "more than there are", n: 10, zones: map[string]int{"a": 3, "b": 2, "c": 1}, racks: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 20 { // ties are broken at random: every draw must spread
				s := preheatServer(t)
				now := time.Unix(1000, 0)
				seen(s, now, agents)
				j := &preheatJob{sel: tt.sel, assigned: map[string]time.Time{}, replaced: map[string]bool{}}
				got := s.pickAgents(j, tt.n, now)
				zones, racks := map[string]int{}, map[string]bool{}
				for _, id := range got {
					a := s.preheat.agents[id]
					zones[a.zone]++
					racks[a.zone+"/"+a.rack] = true
				}
				if fmt.Sprint(zones) != fmt.Sprint(tt.zones) || len(got) > 0 && len(racks) != tt.racks {
					t.Fatalf("picked %v: zones %v racks %d, want %v, %d", got, zones, len(racks), tt.zones, tt.racks)
				}
			}
		})
	}
}

// A preheat's life on the real swarm table: one fetcher until the first
// copy (the origin's one copy), then the rest; an agent that stops polling
// is replaced; done at K; a second preheat of the same image is a no-op.
func TestPreheatStepPacesReplacesAndFinishes(t *testing.T) {
	s := preheatServer(t)
	now := time.Unix(1000, 0)
	seen(s, now, map[string][2]string{"a1": {"a", "r1"}, "a2": {"a", "r2"}, "b1": {"b", "r1"}, "b2": {"b", "r2"}})
	ds := []string{string(digest.FromBytes([]byte("layer"))), string(digest.FromBytes([]byte("config")))}
	req := &shoalpb.PreheatRequest{Repo: "team/app", Reference: "v1", Copies: 3}
	blobs := []digest.Digest{digest.Digest(ds[0]), digest.Digest(ds[1])}
	st, err := s.startPreheat(req, digest.Digest(fmt.Sprintf("sha256:%064x", 1)), blobs, now)
	if err != nil {
		t.Fatal(err)
	}
	j := s.preheat.jobs[st.GetId()]
	if len(j.assigned) != 1 {
		t.Fatalf("before any copy %d agents fetch, want 1 (the origin paced)", len(j.assigned))
	}
	first := slices.Collect(func(yield func(string) bool) {
		for id := range j.assigned {
			yield(id)
		}
	})[0]
	// A copy of one blob only is not a copy.
	completeCopy(t, s, first, ds[:1], now)
	s.stepLocked(j, now)
	if len(j.complete) != 0 {
		t.Fatalf("half an image counted as a copy: %v", j.complete)
	}
	completeCopy(t, s, first, ds, now)
	now = now.Add(time.Second)
	seen(s, now, map[string][2]string{"a1": {"a", "r1"}, "a2": {"a", "r2"}, "b1": {"b", "r1"}, "b2": {"b", "r2"}})
	s.stepLocked(j, now)
	if len(j.complete) != 1 || len(j.assigned) != 2 {
		t.Fatalf("after the first copy: complete %v, fetching %v; want 1 and 2", j.complete, j.assigned)
	}
	// One fetcher stops polling: after three intervals it is replaced by
	// the one agent left.
	var dead string
	for id := range j.assigned {
		dead = id
		break
	}
	now = now.Add(4 * time.Second)
	for id, a := range s.preheat.agents {
		if id != dead {
			a.seen = now
		}
	}
	s.stepLocked(j, now)
	if _, ok := j.assigned[dead]; ok || !j.replaced[dead] || len(j.assigned) != 2 {
		t.Fatalf("dead agent %s not replaced: fetching %v", dead, j.assigned)
	}
	for id := range j.assigned {
		completeCopy(t, s, id, ds, now)
	}
	s.stepLocked(j, now)
	if j.state != "done" || len(j.complete) != 3 || j.noop {
		t.Fatalf("state %s complete %v noop %v, want done with 3", j.state, j.complete, j.noop)
	}
	st, err = s.startPreheat(req, j.manifest, blobs, now)
	if err != nil {
		t.Fatal(err)
	}
	if !st.GetNoop() || st.GetState() != "done" || len(st.GetFetchingPeers()) != 0 {
		t.Fatalf("repeat: %v, want a no-op", st)
	}
	// No agent matches: the preheat waits and says why.
	st, err = s.startPreheat(&shoalpb.PreheatRequest{Repo: "team/app", Reference: "v1", Copies: 1, Selector: &shoalpb.Labels{Zone: "x"}},
		j.manifest, blobs, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetState() != "running" || !strings.Contains(st.GetError(), "no live agent") {
		t.Fatalf("preheat no agent can take: %v", st)
	}
}

// Preheat requests are hostile input: every bound answers InvalidArgument,
// and a missing or wrong token is refused before anything else.
func TestPreheatRefusesBadRequests(t *testing.T) {
	s := preheatServer(t)
	long := string(make([]byte, 300))
	auth := func(tok string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	}
	ok := func() *shoalpb.PreheatRequest {
		return &shoalpb.PreheatRequest{Repo: "team/app", Reference: "v1", Copies: 2}
	}
	tests := []struct {
		name string
		ctx  context.Context
		edit func(*shoalpb.PreheatRequest)
		want codes.Code
	}{
		{name: "no token", ctx: context.Background(), want: codes.Unauthenticated},
		{name: "wrong token", ctx: auth("0123456789abcdef-nope"), want: codes.Unauthenticated},
		{name: "bad repo", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.Repo = "../x" }, want: codes.InvalidArgument},
		{name: "zero copies", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.Copies = 0 }, want: codes.InvalidArgument},
		{name: "too many copies", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.Copies = maxCopies + 1 }, want: codes.InvalidArgument},
		{name: "long selector", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.Selector = &shoalpb.Labels{Zone: long} }, want: codes.InvalidArgument},
		{name: "long registry", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.Registry = long }, want: codes.InvalidArgument},
		{name: "negative pin", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.PinSeconds = -1 }, want: codes.InvalidArgument},
		{name: "bad reference", ctx: auth(testToken), edit: func(r *shoalpb.PreheatRequest) { r.Reference = "sha256:zz" }, want: codes.InvalidArgument},
		{name: "no origins to resolve", ctx: auth(testToken), want: codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok()
			if tt.edit != nil {
				tt.edit(r)
			}
			_, err := s.Preheat(tt.ctx, r)
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// Without a token file the API is off.
	off := New(Config{}, WithLogger(slog.New(slog.DiscardHandler)))
	if _, err := off.Preheat(auth(testToken), ok()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("no token configured: %v, want PermissionDenied", err)
	}
}

// Polls are hostile input too: bounds first, then the proof.
func TestPreheatPollRefusesBadPolls(t *testing.T) {
	s := preheatServer(t)
	long := string(make([]byte, 300))
	tests := []struct {
		name string
		peer *shoalpb.Peer
		want codes.Code
	}{
		{name: "no id", peer: &shoalpb.Peer{}, want: codes.InvalidArgument},
		{name: "long id", peer: &shoalpb.Peer{Id: long}, want: codes.InvalidArgument},
		{name: "too many addrs", peer: &shoalpb.Peer{Id: "p", Addrs: make([]string, maxAddrs+1)}, want: codes.InvalidArgument},
		{name: "long addr", peer: &shoalpb.Peer{Id: "p", Addrs: []string{long}}, want: codes.InvalidArgument},
		{name: "long label", peer: &shoalpb.Peer{Id: "p", Labels: &shoalpb.Labels{Rack: long}}, want: codes.InvalidArgument},
		{name: "no caller address", peer: &shoalpb.Peer{Id: "p"}, want: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.PreheatPoll(context.Background(), &shoalpb.PreheatPollRequest{Peer: tt.peer})
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if len(s.preheat.agents) != 0 {
		t.Fatalf("refused polls registered agents: %v", s.preheat.agents)
	}
}
