package ring

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func members(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("origin-%d", i), Addr: fmt.Sprintf("10.0.0.%d:5000", i)}
	}
	return ms
}

func key(i int) string { return fmt.Sprintf("sha256:%064x", i) }

func ids(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestOwnersBasics(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		n       int
		want    int
	}{
		{"empty ring", nil, 3, 0},
		{"n zero", members(5), 0, 0},
		{"n negative", members(5), -1, 0},
		{"capped by size", members(2), 3, 2},
		{"exact", members(3), 3, 3},
		{"fewer than size", members(10), 3, 3},
		{"duplicates collapse", append(members(2), members(2)...), 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.members)
			for i := range 100 {
				got := r.Owners(key(i), tt.n)
				if len(got) != tt.want {
					t.Fatalf("Owners(%d) = %d members, want %d", tt.n, len(got), tt.want)
				}
				seen := map[string]bool{}
				for _, m := range got {
					if seen[m.ID] {
						t.Fatalf("owner %s twice: %v", m.ID, ids(got))
					}
					seen[m.ID] = true
				}
			}
		})
	}
	var nilRing *Ring
	if nilRing.Len() != 0 || nilRing.Owners("k", 1) != nil {
		t.Fatal("nil ring is not empty")
	}
	if _, ok := nilRing.Owner("k"); ok {
		t.Fatal("nil ring has an owner")
	}
}

// Every process must compute the same owners whatever order it learned the
// members in.
func TestDeterministic(t *testing.T) {
	ms := members(7)
	a := New(ms)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	b := New(rev)
	for i := range 1000 {
		if !slices.Equal(ids(a.Owners(key(i), 3)), ids(b.Owners(key(i), 3))) {
			t.Fatalf("key %d: owners depend on member order", i)
		}
	}
	// Owners(n) is a prefix of Owners(n+1): the primary stays primary.
	for i := range 1000 {
		o3 := ids(a.Owners(key(i), 3))
		if o1 := ids(a.Owners(key(i), 1)); o1[0] != o3[0] {
			t.Fatalf("key %d: Owner %v not first of %v", i, o1, o3)
		}
	}
}

func TestSpread(t *testing.T) {
	const keys = 60000
	for _, n := range []int{5, 20} {
		for _, replicas := range []int{1, 3} {
			t.Run(fmt.Sprintf("%d members R=%d", n, replicas), func(t *testing.T) {
				r := New(members(n))
				count := map[string]int{}
				for i := range keys {
					for _, m := range r.Owners(key(i), replicas) {
						count[m.ID]++
					}
				}
				want := float64(keys*replicas) / float64(n)
				// Allow 4.5 standard deviations of a fair binomial draw.
				tol := 4.5 * math.Sqrt(want) / want
				for id, c := range count {
					if dev := math.Abs(float64(c)-want) / want; dev > tol {
						t.Errorf("%s owns %d keys, expected %.0f (%.1f%% off)", id, c, want, dev*100)
					}
				}
				if len(count) != n {
					t.Errorf("only %d of %d members own keys", len(count), n)
				}
			})
		}
	}
}

// A member joining takes about R/(N+1) of the key-owner slots and nothing
// else moves; a member leaving gives up only what it held.
func TestMinimalMovement(t *testing.T) {
	const keys, replicas = 30000, 3
	before := New(members(10))
	grown := New(members(11))
	newcomer := "origin-10"
	changed := 0
	for i := range keys {
		old, now := ids(before.Owners(key(i), replicas)), ids(grown.Owners(key(i), replicas))
		if slices.Equal(old, now) {
			continue
		}
		changed++
		if !slices.Contains(now, newcomer) {
			t.Fatalf("key %d moved between old members: %v -> %v", i, old, now)
		}
		// The rest keep their relative order; exactly one old owner drops.
		kept := slices.DeleteFunc(slices.Clone(now), func(id string) bool { return id == newcomer })
		if !slices.Equal(kept, old[:replicas-1]) && !isSubsequence(kept, old) {
			t.Fatalf("key %d: %v -> %v", i, old, now)
		}
	}
	want := float64(keys) * replicas / 11
	if frac := float64(changed) / want; frac < 0.9 || frac > 1.1 {
		t.Errorf("join moved %d keys, expected about %.0f", changed, want)
	}

	// Removing a member: only keys it owned change.
	shrunk := New(members(10)[1:])
	for i := range keys {
		old, now := ids(before.Owners(key(i), replicas)), ids(shrunk.Owners(key(i), replicas))
		if !slices.Contains(old, "origin-0") && !slices.Equal(old, now) {
			t.Fatalf("key %d not owned by the leaver moved: %v -> %v", i, old, now)
		}
	}
}

func isSubsequence(sub, of []string) bool {
	j := 0
	for _, s := range of {
		if j < len(sub) && sub[j] == s {
			j++
		}
	}
	return j == len(sub)
}

func TestWeights(t *testing.T) {
	ms := members(4)
	ms[0].Weight = 3 // a node with three times the disk
	r := New(ms)
	count := map[string]int{}
	const keys = 60000
	for i := range keys {
		o, _ := r.Owner(key(i))
		count[o.ID]++
	}
	// Shares 3:1:1:1 of 6.
	for id, c := range count {
		want := keys / 6.0
		if id == "origin-0" {
			want = keys / 2.0
		}
		if dev := math.Abs(float64(c)-want) / want; dev > 0.05 {
			t.Errorf("%s owns %d, want about %.0f", id, c, want)
		}
	}
}

func TestMemberAndIsOwner(t *testing.T) {
	r := New(members(5))
	m, ok := r.Member("origin-3")
	if !ok || m.Addr != "10.0.0.3:5000" {
		t.Fatalf("Member = %+v, %v", m, ok)
	}
	if _, ok := r.Member("nope"); ok {
		t.Fatal("unknown member found")
	}
	o := r.Owners(key(1), 2)
	if !r.IsOwner(key(1), o[1].ID, 2) || r.IsOwner(key(1), o[1].ID, 1) {
		t.Fatal("IsOwner disagrees with Owners")
	}
}

func BenchmarkOwners(b *testing.B) {
	for _, n := range []int{3, 50, 1000} {
		r := New(members(n))
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			k := key(42)
			for b.Loop() {
				r.Owners(k, 3)
			}
		})
	}
}
