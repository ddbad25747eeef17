// Package httpserver holds what every Shoal HTTP server sets against slow
// and idle clients: net/http's server timeouts as one config block, and
// the way a handler streaming a long body keeps them from cutting it.
//
// net/http's ReadTimeout and WriteTimeout bound a whole request and a
// whole response. That is right for health checks and metrics, and wrong
// for a multi-gigabyte blob that streams for as long as the swarm takes:
// such a handler opens a Stream, which lifts the whole-request limits and
// instead gives each write WriteTimeout of its own, so what is bounded is
// a stall, not the size of the body.
package httpserver

import (
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Timeouts are a server's limits on its clients. Zero fields take the
// component's defaults (see WithDefaults).
type Timeouts struct {
	// ReadHeader bounds reading a request's headers, from a new
	// connection's first byte or a kept-alive one's next: a silent or
	// trickling client is cut off.
	ReadHeader time.Duration `yaml:"read_header_timeout"`
	// Read bounds reading a whole request, body included.
	Read time.Duration `yaml:"read_timeout"`
	// Write bounds writing a response; in a Stream, each write of at
	// most ChunkSize bytes.
	Write time.Duration `yaml:"write_timeout"`
	// Idle bounds how long a kept-alive connection waits for its next
	// request.
	Idle time.Duration `yaml:"idle_timeout"`
}

// WithDefaults returns t with its zero (or negative) fields taken from d.
func (t Timeouts) WithDefaults(d Timeouts) Timeouts {
	pick := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	pick(&t.ReadHeader, d.ReadHeader)
	pick(&t.Read, d.Read)
	pick(&t.Write, d.Write)
	pick(&t.Idle, d.Idle)
	return t
}

// MaxHeaderBytes bounds request headers on Shoal's servers: real clients
// send a few KiB, and net/http's default of 1 MiB lets one request carry
// thousands of byte ranges.
const MaxHeaderBytes = 64 << 10

// Server returns an http.Server for h with the timeouts t, logging its
// connection errors to log at warn level.
func (t Timeouts) Server(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// ChunkSize is the most a Stream writes under one write deadline: at a
// 30 s write timeout, a client must take at least ~35 KB/s.
const ChunkSize = 1 << 20

// Stream is a long response's hold on its connection's deadlines.
type Stream struct {
	rc    *http.ResponseController
	write time.Duration
}

// NewStream lifts the whole-request limits for the response w: the read
// deadline (when it passes, net/http cancels the request's context even
// though the request was read long ago) and the write deadline, which
// Progress then sets per write. write is the server's write timeout; 0
// means no write deadline at all.
func NewStream(w http.ResponseWriter, write time.Duration) *Stream {
	s := &Stream{rc: http.NewResponseController(w), write: write}
	// ErrNotSupported (a writer that hides the connection) leaves the
	// server's limits in place: a cut body, never a hang.
	_ = s.rc.SetReadDeadline(time.Time{})
	s.Progress()
	return s
}

// Progress gives the next write the write timeout from now.
func (s *Stream) Progress() {
	var dl time.Time
	if s.write > 0 {
		dl = time.Now().Add(s.write)
	}
	_ = s.rc.SetWriteDeadline(dl)
}

// Copy writes n bytes of src to w in chunks of at most ChunkSize, each
// with a fresh write deadline. w and src pass through to io.CopyN, so a
// file goes out by sendfile(2).
func (s *Stream) Copy(w io.Writer, src io.Reader, n int64) (int64, error) {
	var done int64
	for done < n {
		s.Progress()
		m, err := io.CopyN(w, src, min(ChunkSize, n-done))
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
