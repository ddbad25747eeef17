package httprange

import (
	"errors"
	"net/http"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		h    string
		size int64
		want Span
		err  error
	}{
		{"bytes=0-99", 1000, Span{0, 100}, nil},
		{"bytes=100-", 1000, Span{100, 900}, nil},
		{"bytes=-100", 1000, Span{900, 100}, nil},
		{"bytes=-5000", 1000, Span{0, 1000}, nil},
		{"bytes=990-5000", 1000, Span{990, 10}, nil},
		{"bytes=999-999", 1000, Span{999, 1}, nil},
		{"bytes=1000-", 1000, Span{}, ErrUnsatisfiable},
		{"bytes=1000-2000", 1000, Span{}, ErrUnsatisfiable},
		{"bytes=-0", 1000, Span{}, ErrUnsatisfiable},
		{"bytes=0-0", 0, Span{}, ErrUnsatisfiable},
		{"bytes=5-1", 1000, Span{}, ErrUnsatisfiable},
		{"bytes=0-1,5-6", 1000, Span{}, ErrMalformed},
		{"items=0-1", 1000, Span{}, ErrMalformed},
		{"bytes=a-b", 1000, Span{}, ErrMalformed},
		{"bytes=+1-2", 1000, Span{}, ErrMalformed},
		{"bytes=99999999999999999999-", 1000, Span{}, ErrMalformed},
		{"bytes=", 1000, Span{}, ErrMalformed},
		{"bytes 0-1", 1000, Span{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.h, func(t *testing.T) {
			got, err := ParseRange(tt.h, tt.size)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) || got != tt.want {
				t.Fatalf("ParseRange(%q, %d) = %+v, %v; want %+v, %v", tt.h, tt.size, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		h    string
		want Span
		err  error
	}{
		{"0-99", Span{0, 100}, nil},
		{"100-199", Span{100, 100}, nil},
		{"bytes 0-99/1000", Span{0, 100}, nil},
		{"bytes 0-99/*", Span{0, 100}, nil},
		{"bytes=0-99", Span{0, 100}, nil},
		{"99-0", Span{}, ErrMalformed},
		{"-1-5", Span{}, ErrMalformed},
		{"0-", Span{}, ErrMalformed},
		{"abc", Span{}, ErrMalformed},
		{"bytes 0-99/x", Span{}, ErrMalformed},
		{"", Span{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.h, func(t *testing.T) {
			got, err := ParseContentRange(tt.h)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) || got != tt.want {
				t.Fatalf("ParseContentRange(%q) = %+v, %v; want %+v, %v", tt.h, got, err, tt.want, tt.err)
			}
		})
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=7-", "bytes=1-2,3-4", "bytes=x"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		sp, err := ParseRange(h, size)
		if err != nil {
			return
		}
		if sp.Start < 0 || sp.Length <= 0 || sp.Start+sp.Length > size {
			t.Fatalf("ParseRange(%q, %d) = %+v outside the resource", h, size, sp)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-99", "bytes 5-9/10", "bytes 1-2/*", "9-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		sp, err := ParseContentRange(h)
		if err != nil {
			return
		}
		if sp.Start < 0 || sp.Length <= 0 {
			t.Fatalf("ParseContentRange(%q) = %+v", h, sp)
		}
	})
}

func TestSelect(t *testing.T) {
	tests := []struct {
		rng          string
		span         Span
		status       int
		contentRange string
		err          error
	}{
		{"", Span{0, 100}, http.StatusOK, "", nil},
		{"bytes=10-19", Span{10, 10}, http.StatusPartialContent, "bytes 10-19/100", nil},
		{"bytes=0-1,5-6", Span{0, 100}, http.StatusOK, "", nil}, // not understood: ignored
		{"pages=1-2", Span{0, 100}, http.StatusOK, "", nil},
		{"bytes=200-", Span{}, 0, "bytes */100", ErrUnsatisfiable},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if tt.rng != "" {
			r.Header.Set("Range", tt.rng)
		}
		h := http.Header{}
		span, status, err := Select(h, r, 100)
		if span != tt.span || status != tt.status || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) || h.Get("Content-Range") != tt.contentRange {
			t.Errorf("%q: %+v %d %v %q", tt.rng, span, status, err, h.Get("Content-Range"))
		}
	}
}
