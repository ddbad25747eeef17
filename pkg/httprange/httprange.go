// Package httprange parses the byte-range headers a registry receives: Range
// on blob reads (RFC 9110) and Content-Range on chunked uploads (the
// distribution spec's "<start>-<end>" form, and the RFC form some clients send).
//
// Both come straight from the network, so the parsers bound their input and
// reject anything odd with an error rather than guess.
package httprange

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// ErrMalformed means the header is not a byte range Shoal understands. For
// Range, RFC 9110 lets a server ignore such a header and send the whole body.
var ErrMalformed = errors.New("malformed range")

// ErrUnsatisfiable means the range is well formed but lies outside the
// resource: answer 416 with "Content-Range: bytes */size".
var ErrUnsatisfiable = errors.New("range not satisfiable")

// maxHeader bounds the header length looked at; real ranges are short.
const maxHeader = 512

// Span is a byte span [Start, Start+Length).
type Span struct {
	Start, Length int64
}

// End is the inclusive last byte, as written in Content-Range.
func (s Span) End() int64 { return s.Start + s.Length - 1 }

// ContentRange formats the span as a Content-Range value for a resource of size.
func (s Span) ContentRange(size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", s.Start, s.End(), size)
}

// Select answers the Range header of a request r for a body of size bytes,
// as a blob server does: the whole body with 200 when there is no Range or
// one it does not understand (RFC 9110 lets a server ignore it), else the
// span with 206 and its Content-Range set in h. An unsatisfiable range is
// ErrUnsatisfiable, with "Content-Range: bytes */size" set for the 416.
func Select(h http.Header, r *http.Request, size int64) (Span, int, error) {
	whole := Span{Start: 0, Length: size}
	rng := r.Header.Get("Range")
	if rng == "" {
		return whole, http.StatusOK, nil
	}
	sp, err := ParseRange(rng, size)
	switch {
	case err == nil:
		h.Set("Content-Range", sp.ContentRange(size))
		return sp, http.StatusPartialContent, nil
	case errors.Is(err, ErrUnsatisfiable):
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		return Span{}, 0, err
	}
	return whole, http.StatusOK, nil
}

// ParseRange parses a Range header for a resource of size bytes. Only a single
// range is supported; a list of ranges is ErrMalformed (callers serve the whole
// body, as the RFC allows). Suffix ranges ("bytes=-500") and open ranges
// ("bytes=500-") are supported. A range whose end precedes its start is
// ErrUnsatisfiable: RFC 9110 asks for a 416 when a supported unit carries an
// invalid range.
func ParseRange(header string, size int64) (Span, error) {
	if len(header) > maxHeader {
		return Span{}, fmt.Errorf("%w: header too long", ErrMalformed)
	}
	unit, spec, ok := strings.Cut(header, "=")
	if !ok || strings.TrimSpace(unit) != "bytes" {
		return Span{}, fmt.Errorf("%w: unit must be bytes", ErrMalformed)
	}
	spec = strings.TrimSpace(spec)
	if strings.Contains(spec, ",") {
		return Span{}, fmt.Errorf("%w: multiple ranges", ErrMalformed)
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return Span{}, fmt.Errorf("%w: no dash in %q", ErrMalformed, spec)
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// Suffix range: the last n bytes.
		n, err := parseUint(last)
		if err != nil {
			return Span{}, err
		}
		if n == 0 || size == 0 {
			return Span{}, fmt.Errorf("%w: empty suffix range", ErrUnsatisfiable)
		}
		n = min(n, size)
		return Span{Start: size - n, Length: n}, nil
	}
	start, err := parseUint(first)
	if err != nil {
		return Span{}, err
	}
	end := size - 1
	if last != "" {
		if end, err = parseUint(last); err != nil {
			return Span{}, err
		}
		if end < start {
			return Span{}, fmt.Errorf("%w: end %d before start %d", ErrUnsatisfiable, end, start)
		}
	}
	if start >= size {
		return Span{}, fmt.Errorf("%w: start %d beyond size %d", ErrUnsatisfiable, start, size)
	}
	end = min(end, size-1)
	return Span{Start: start, Length: end - start + 1}, nil
}

// ParseContentRange parses the Content-Range of an upload chunk. The
// distribution spec form is "<start>-<end>"; the RFC form
// "bytes <start>-<end>/<size or *>" is accepted too. Both ends are inclusive.
func ParseContentRange(header string) (Span, error) {
	if len(header) > maxHeader {
		return Span{}, fmt.Errorf("%w: header too long", ErrMalformed)
	}
	s := strings.TrimSpace(header)
	if rest, ok := strings.CutPrefix(s, "bytes"); ok {
		s = strings.TrimLeft(rest, " =")
		if i := strings.IndexByte(s, '/'); i >= 0 {
			if total := s[i+1:]; total != "*" {
				if _, err := parseUint(total); err != nil {
					return Span{}, err
				}
			}
			s = s[:i]
		}
	}
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		return Span{}, fmt.Errorf("%w: no dash in %q", ErrMalformed, header)
	}
	start, err := parseUint(first)
	if err != nil {
		return Span{}, err
	}
	end, err := parseUint(last)
	if err != nil {
		return Span{}, err
	}
	if end < start {
		return Span{}, fmt.Errorf("%w: end %d before start %d", ErrMalformed, end, start)
	}
	return Span{Start: start, Length: end - start + 1}, nil
}

// parseUint accepts only decimal digits (no sign, no spaces) that fit in an
// int64 with room for +1.
func parseUint(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, fmt.Errorf("%w: bad number %q", ErrMalformed, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: bad number %q", ErrMalformed, s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return n, nil
}
