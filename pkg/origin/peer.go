package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/shoal-project/shoal/pkg/digest"
)

// InternalBlobPath is where origins read and write each other's blobs by
// digest, outside any repository: GET and HEAD (with Range) serve a stored
// blob, PUT stores one after verifying its digest. Only callers with the
// cluster secret may use it.
const InternalBlobPath = "/internal/v1/blobs/"

// InternalMetaInfoPath serves a stored blob's metainfo to other origins.
// Like InternalBlobPath it answers only from this origin's own store, so
// origins asking each other never loop.
const InternalMetaInfoPath = "/internal/v1/metainfo/"

// errPeerMissing: the peer answered and does not hold the blob.
var errPeerMissing = errors.New("blob not on peer")

// peerClient talks to other origins' internal endpoints.
type peerClient struct {
	http   *http.Client
	scheme string // "http" or "https"
	secret string // bearer token for the internal endpoints
}

func (c *peerClient) url(addr, path string, d digest.Digest) string {
	return c.scheme + "://" + addr + path + d.String()
}

func (c *peerClient) do(ctx context.Context, method, url string, body io.Reader, size int64, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return c.http.Do(req)
}

// has reports whether the origin at addr holds d.
func (c *peerClient) has(ctx context.Context, addr string, d digest.Digest) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, c.url(addr, InternalBlobPath, d), nil, 0, nil)
	if err != nil {
		return false, fmt.Errorf("HEAD %s on %s: %w", d, addr, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("HEAD %s on %s: %s", d, addr, resp.Status)
}

// push sends size bytes of blob d to the origin at addr, which verifies
// and commits them.
func (c *peerClient) push(ctx context.Context, addr string, d digest.Digest, body io.Reader, size int64) error {
	resp, err := c.do(ctx, http.MethodPut, c.url(addr, InternalBlobPath, d), body, size, nil)
	if err != nil {
		return fmt.Errorf("PUT %s to %s: %w", d, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("PUT %s to %s: %s: %s", d, addr, resp.Status, msg)
	}
	return nil
}

// get starts a read of d (or of the part hdr's Range asks for) from the
// origin at path on addr. errPeerMissing means a clean 404.
func (c *peerClient) get(ctx context.Context, method, addr, path string, d digest.Digest, hdr http.Header) (*http.Response, error) {
	resp, err := c.do(ctx, method, c.url(addr, path, d), nil, 0, hdr)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, d, addr, err)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		return resp, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, errPeerMissing
	}
	resp.Body.Close()
	return nil, fmt.Errorf("%s %s on %s: %s", method, d, addr, resp.Status)
}

// contentLength is the response's declared length, or -1.
func contentLength(resp *http.Response) int64 {
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		return n
	}
	return -1
}
