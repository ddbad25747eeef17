package p2p

import (
	"slices"
	"testing"
	"time"
)

// Upload slots go to the lowest piece index waiting, then in arrival order.
func TestSlotsLowestPieceFirst(t *testing.T) {
	q := newSlots(1)
	q.acquire(0) // the only slot, taken
	order := make(chan int, 4)
	for k, piece := range []int{7, 2, 9, 2} {
		go func() { q.acquire(piece); order <- piece*10 + k }()
		for { // wait until it queues, so arrival order is known
			q.mu.Lock()
			n := len(q.waiters)
			q.mu.Unlock()
			if n == k+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	var got []int
	for range 4 {
		q.release()
		got = append(got, <-order)
	}
	if want := []int{21, 23, 70, 92}; !slices.Equal(got, want) {
		t.Fatalf("slots granted as %v, want %v (piece*10+arrival)", got, want)
	}
}
