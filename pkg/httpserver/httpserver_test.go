package httpserver_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/httpserver"
	"github.com/shoal-project/shoal/pkg/httpserver/httpservertest"
)

// serve runs h on a loopback listener with timeouts t until the test ends.
func serve(t *testing.T, to httpserver.Timeouts, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := to.Server(h, slog.New(slog.DiscardHandler))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

var short = httpserver.Timeouts{ReadHeader: 300 * time.Millisecond, Read: 300 * time.Millisecond,
	Write: 300 * time.Millisecond, Idle: 300 * time.Millisecond}

func TestWithDefaults(t *testing.T) {
	def := httpserver.Timeouts{ReadHeader: 1, Read: 2, Write: 3, Idle: 4}
	got := httpserver.Timeouts{Read: 20, Idle: -1}.WithDefaults(def)
	if want := (httpserver.Timeouts{ReadHeader: 1, Read: 20, Write: 3, Idle: 4}); got != want {
		t.Fatalf("WithDefaults = %+v, want %+v", got, want)
	}
}

func TestClosesIdleConnections(t *testing.T) {
	addr := serve(t, short, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	httpservertest.AssertClosesIdle(t, addr, "/", 250*time.Millisecond, 3*time.Second)
}

// A body that streams for longer than the read and write timeouts goes
// through whole when the handler opens a Stream, and is cut when it does
// not; a client that stops reading is still let go after a write timeout.
func TestStreamOutlivesWholeResponseLimits(t *testing.T) {
	const chunk, chunks = 10 << 10, 12 // 12 × 100 ms: four times the timeouts
	tests := []struct {
		name      string
		stream    bool
		stall     bool // the client stops reading after the headers
		wantWhole bool
	}{
		{"stream", true, false, true},
		{"plain handler", false, false, false},
		{"stream to a stalled client", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ended := make(chan error, 1)
			addr := serve(t, short, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var st *httpserver.Stream
				if tt.stream {
					st = httpserver.NewStream(w, short.Write)
				}
				if tt.stall {
					// Far more than the socket buffers hold.
					_, err := st.Copy(w, io.LimitReader(zeros{}, 256<<20), 256<<20)
					ended <- err
					return
				}
				for range chunks {
					time.Sleep(100 * time.Millisecond)
					var err error
					if st != nil {
						_, err = st.Copy(w, strings.NewReader(strings.Repeat("x", chunk)), chunk)
					} else {
						_, err = w.Write([]byte(strings.Repeat("x", chunk)))
					}
					if err == nil {
						err = r.Context().Err()
					}
					if err != nil {
						ended <- err
						return
					}
					w.(http.Flusher).Flush()
				}
				ended <- nil
			}))
			resp, err := http.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if tt.stall {
				select {
				case err := <-ended:
					if err == nil {
						t.Fatal("256 MiB went to a client that read nothing")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a stalled client held the handler past 5 s")
				}
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			var herr error
			select {
			case herr = <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("handler did not end")
			}
			whole := n == chunk*chunks && herr == nil
			if whole != tt.wantWhole {
				t.Fatalf("read %d of %d bytes, handler ended with %v; want whole = %v", n, chunk*chunks, herr, tt.wantWhole)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
