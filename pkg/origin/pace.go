package origin

import (
	"context"
	"io"

	"golang.org/x/time/rate"
)

// take waits for n bytes of budget from lim, in steps no larger than its
// burst.
func take(ctx context.Context, lim *rate.Limiter, n int) error {
	for n > 0 {
		step := min(n, lim.Burst())
		if err := lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}

// pacedReader takes tokens for every read from a shared limiter.
type pacedReader struct {
	ctx   context.Context
	r     io.Reader
	lim   *rate.Limiter
	count func(float64)
}

func (p *pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.count(float64(n))
		if werr := take(p.ctx, p.lim, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// pacedWriter takes tokens before every write.
type pacedWriter struct {
	ctx context.Context
	w   io.Writer
	lim *rate.Limiter
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	if err := take(p.ctx, p.lim, len(b)); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}
