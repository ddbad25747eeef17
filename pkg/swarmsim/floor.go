package swarmsim

import (
	"math"
	"time"
)

// FirstByteFloor is the earliest the agent at percentile p (nearest rank)
// of a fleet of n can hold its first piece, when the pieces start at the
// origins alone and every transfer is limited by the sender's uplink: a
// host can pass a whole piece to one other host per piece time, so the
// hosts holding any first piece at most double each piece time, plus the
// origins' fanout (their uplink over an agent's: how many pieces they send
// per piece time). After m piece times at most fanout × (2^m − 1) agents
// hold one, so the agent of rank k waits ceil(log2(k/fanout + 1)) piece
// times. It is a floor no schedule beats, whatever its piece order or
// priorities: 2 piece times for the first three agents, 4 for the median
// of 25, 9 for the median of 1,000.
func FirstByteFloor(n int, p float64, pieceTime time.Duration, fanout float64) time.Duration {
	if n <= 0 || pieceTime <= 0 {
		return 0
	}
	fanout = max(fanout, 1)
	k := max(1, min(n, int(math.Ceil(p/100*float64(n)))))
	m := math.Ceil(math.Log2(float64(k)/fanout + 1))
	return time.Duration(m) * pieceTime
}

// PieceTime is how long a piece of pieceBytes takes at bps bytes per
// second, the unit of FirstByteFloor.
func PieceTime(pieceBytes, bps int64) time.Duration {
	if bps <= 0 {
		return 0
	}
	return time.Duration(float64(pieceBytes) / float64(bps) * float64(time.Second))
}
