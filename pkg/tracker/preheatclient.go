package tracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/metadata"

	shoalpb "github.com/shoal-project/shoal/proto"
)

// ErrPreheatFailed: the tracker gave up on a preheat (it timed out).
var ErrPreheatFailed = errors.New("preheat failed")

// RunPreheat starts a preheat on the tracker behind c and reports its
// progress to out every poll until it is done, it fails, or ctx ends
// (the preheat then goes on in the tracker). token is the tracker's
// preheat token.
func RunPreheat(ctx context.Context, c shoalpb.TrackerClient, token string, req *shoalpb.PreheatRequest, out io.Writer, poll time.Duration) (*shoalpb.PreheatStatusResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	start := time.Now()
	st, err := c.Preheat(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("preheat: %w", err)
	}
	fmt.Fprintf(out, "preheat %s: %s:%s → %s, %d blobs, %d copies wanted\n",
		st.GetId(), req.GetRepo(), req.GetReference(), st.GetManifestDigest(), len(st.GetDigests()), st.GetCopiesWanted())
	last := ""
	for {
		line := fmt.Sprintf("%6.1fs %s: %d/%d complete %v, fetching %v", time.Since(start).Seconds(), st.GetState(),
			len(st.GetCompletePeers()), st.GetCopiesWanted(), st.GetCompletePeers(), st.GetFetchingPeers())
		if st.GetState() == "running" && st.GetError() != "" {
			line += " (" + st.GetError() + ")"
		}
		if line[8:] != last {
			fmt.Fprintln(out, line)
			last = line[8:]
		}
		switch st.GetState() {
		case "done":
			if st.GetNoop() {
				fmt.Fprintln(out, "no-op: the copies were already there")
			}
			return st, nil
		case "failed":
			return st, fmt.Errorf("%w: %s", ErrPreheatFailed, st.GetError())
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("preheat %s still running: %w", st.GetId(), ctx.Err())
		case <-time.After(poll):
		}
		next, err := c.PreheatStatus(ctx, &shoalpb.PreheatStatusRequest{Id: st.GetId()})
		if err != nil {
			return st, fmt.Errorf("preheat status: %w", err)
		}
		st = next
	}
}
