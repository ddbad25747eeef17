package uplink

import (
	"fmt"
	"testing"
	"time"
)

// op is one step against a gate: admit (owner, piece; with held set, by
// AdmitFrom: held-1 pieces, 0 meaning Unknown), next, done (owner) or
// withdraw (the ticket admitted at step k).
type op struct {
	kind  string
	owner uint64
	piece int
	held  int
	k     int
	want  string // "ok", "busy", "none", "bumped K" (the ticket of step K lost its place), or the "owner/piece" Next starts
}

func TestGate(t *testing.T) {
	tests := []struct {
		name         string
		slots, queue int
		ops          []op
	}{
		{"busy beyond slots plus queue", 1, 1, []op{
			{kind: "admit", owner: 1, piece: 5, want: "ok"},
			{kind: "admit", owner: 2, piece: 6, want: "ok"},
			{kind: "admit", owner: 3, piece: 7, want: "busy"},
			{kind: "next", want: "1/5"},
			{kind: "admit", owner: 3, piece: 7, want: "busy"}, // one sending, one waiting: still full
			{kind: "done", owner: 1},
			{kind: "admit", owner: 3, piece: 7, want: "ok"},
		}},
		{"lowest piece first, then oldest", 1, 8, []op{
			{kind: "admit", owner: 1, piece: 7, want: "ok"},
			{kind: "admit", owner: 2, piece: 2, want: "ok"},
			{kind: "admit", owner: 3, piece: 9, want: "ok"},
			{kind: "admit", owner: 4, piece: 2, want: "ok"},
			{kind: "next", want: "2/2"},
			{kind: "next", want: "none"}, // the only slot is taken
			{kind: "done", owner: 2},
			{kind: "next", want: "4/2"},
			{kind: "done", owner: 4},
			{kind: "next", want: "1/7"},
			{kind: "done", owner: 1},
			{kind: "next", want: "3/9"},
		}},
		{"an owner sends one piece at a time", 2, 8, []op{
			{kind: "admit", owner: 1, piece: 0, want: "ok"},
			{kind: "admit", owner: 1, piece: 1, want: "ok"},
			{kind: "admit", owner: 2, piece: 5, want: "ok"},
			{kind: "next", want: "1/0"},
			{kind: "next", want: "2/5"}, // not owner 1's second piece
			{kind: "next", want: "none"},
			{kind: "done", owner: 1},
			{kind: "next", want: "1/1"},
		}},
		{"a requester further behind takes the place of one further along", 1, 2, []op{
			{kind: "admit", owner: 1, piece: 0, held: 11, want: "ok"},
			{kind: "next", want: "1/0"},
			{kind: "admit", owner: 2, piece: 1, held: 31, want: "ok"},
			{kind: "admit", owner: 3, piece: 2, held: 21, want: "ok"},
			{kind: "admit", owner: 4, piece: 3, held: 41, want: "busy"},     // holds more than both waiting
			{kind: "admit", owner: 5, piece: 4, held: 21, want: "bumped 2"}, // takes owner 2's (30 held), the most
			{kind: "admit", owner: 6, piece: 5, held: 21, want: "busy"},     // equal is no reason
			{kind: "admit", owner: 7, piece: 6, held: 1, want: "bumped 3"},  // 0 held: owner 3's (20; owner 5 came later)
			{kind: "withdraw", k: 2, want: "none"},                          // gone with its place
			{kind: "done", owner: 1},
			{kind: "next", want: "5/4"}, // then lowest piece first, as ever
			{kind: "done", owner: 5},
			{kind: "next", want: "7/6"},
		}},
		{"a requester that does not say neither takes a place nor keeps one", 1, 1, []op{
			{kind: "admit", owner: 1, piece: 0, want: "ok"},
			{kind: "next", want: "1/0"},
			{kind: "admit", owner: 2, piece: 1, want: "ok"}, // waiting, held unknown
			{kind: "admit", owner: 3, piece: 2, want: "busy"},
			{kind: "admit", owner: 4, piece: 3, held: 1000, want: "bumped 2"},
			{kind: "admit", owner: 5, piece: 4, want: "busy"},
		}},
		{"withdrawn requests free their place", 1, 1, []op{
			{kind: "admit", owner: 1, piece: 0, want: "ok"},
			{kind: "admit", owner: 2, piece: 1, want: "ok"},
			{kind: "withdraw", k: 1, want: "ok"},
			{kind: "withdraw", k: 1, want: "none"}, // already gone
			{kind: "admit", owner: 3, piece: 2, want: "ok"},
			{kind: "next", want: "1/0"},
			{kind: "withdraw", k: 0, want: "none"}, // sending: too late
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New(tt.slots, tt.queue)
			tickets := map[int]Ticket{}
			for k, o := range tt.ops {
				var got string
				switch o.kind {
				case "admit":
					var tk, bumped Ticket
					var ok bool
					if o.held == 0 {
						tk, ok = g.Admit(o.owner, o.piece)
					} else {
						tk, bumped, _, ok = g.AdmitFrom(o.owner, o.piece, o.held-1)
					}
					got = map[bool]string{true: "ok", false: "busy"}[ok]
					for j, b := range tickets {
						if bumped != 0 && b == bumped {
							got = fmt.Sprintf("bumped %d", j)
						}
					}
					tickets[k] = tk
				case "next":
					got = "none"
					if tk, owner, ok := g.Next(); ok {
						got = formatStart(owner, tt.ops, tickets, tk)
					}
				case "done":
					g.Done(o.owner, time.Second)
					continue
				case "withdraw":
					got = map[bool]string{true: "ok", false: "none"}[g.Withdraw(tickets[o.k])]
				}
				if got != o.want {
					t.Fatalf("step %d %s: got %s, want %s", k, o.kind, got, o.want)
				}
			}
		})
	}
}

// formatStart names a started ticket as owner/piece from the admit step
// that produced it.
func formatStart(owner uint64, ops []op, tickets map[int]Ticket, tk Ticket) string {
	for k, o := range ops {
		if o.kind == "admit" && tickets[k] == tk {
			return fmt.Sprintf("%d/%d", owner, o.piece)
		}
	}
	return "?"
}

// The retry hint follows measured sends: one of the slots frees every
// piece-time ÷ slots.
func TestRetryAfter(t *testing.T) {
	g := New(2, 4)
	for o := range uint64(6) {
		g.Admit(o, int(o))
	}
	g.Next()
	g.Done(0, 4*time.Second)
	if got := g.RetryAfter(); got != 2*time.Second {
		t.Fatalf("retry after %s at 4s a piece over 2 slots", got)
	}
	if _, _, refused := g.Load(); refused != 0 {
		t.Fatalf("refused %d", refused)
	}
}
