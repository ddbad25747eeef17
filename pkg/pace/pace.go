// Package pace spends byte budgets from token buckets: the upload and
// download caps of agents and origins, and the origin's repair bandwidth.
package pace

import (
	"context"
	"io"

	"golang.org/x/time/rate"
)

// maxBurst caps a limiter's burst: one second of budget, but never more
// than a few pieces, so a cap holds over short spans too.
const maxBurst = 16 << 20

// NewLimiter is a byte-rate limiter for bytesPerSec, or nil (no limit)
// when it is not positive.
func NewLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), int(min(bytesPerSec, maxBurst)))
}

// Wait takes n bytes from lim, in steps no larger than its burst. A nil
// lim does not wait.
func Wait(ctx context.Context, lim *rate.Limiter, n int) error {
	if lim == nil {
		return nil
	}
	for n > 0 {
		step := min(n, lim.Burst())
		if err := lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}

// Reader takes budget for every read; Count, if set, is told of the bytes.
type Reader struct {
	Ctx   context.Context
	R     io.Reader
	Lim   *rate.Limiter
	Count func(float64)
}

func (p *Reader) Read(b []byte) (int, error) {
	n, err := p.R.Read(b)
	if n > 0 {
		if p.Count != nil {
			p.Count(float64(n))
		}
		if werr := Wait(p.Ctx, p.Lim, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Writer takes budget before every write.
type Writer struct {
	Ctx context.Context
	W   io.Writer
	Lim *rate.Limiter
}

func (p *Writer) Write(b []byte) (int, error) {
	if err := Wait(p.Ctx, p.Lim, len(b)); err != nil {
		return 0, err
	}
	return p.W.Write(b)
}
