package recorder_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/recorder"
)

// readerFromSpy is a ResponseWriter that tells whether ReadFrom reached it.
type readerFromSpy struct {
	http.ResponseWriter
	used bool
}

func (s *readerFromSpy) ReadFrom(r io.Reader) (int64, error) {
	s.used = true
	return io.Copy(s.ResponseWriter, r)
}

type sink struct {
	h    http.Header
	body strings.Builder
	code int
}

func (s *sink) Header() http.Header         { return s.h }
func (s *sink) Write(b []byte) (int, error) { return s.body.Write(b) }
func (s *sink) WriteHeader(c int)           { s.code = c }

func TestRecords(t *testing.T) {
	tests := []struct {
		name     string
		handler  func(w http.ResponseWriter)
		code     int
		bytes    int64
		readFrom bool
	}{
		{"nothing", func(w http.ResponseWriter) {}, 0, 0, false},
		{"write", func(w http.ResponseWriter) { io.WriteString(w, "hello") }, 200, 5, false},
		{"status then copy", func(w http.ResponseWriter) {
			w.WriteHeader(206)
			w.WriteHeader(500)                                        // only the first counts
			io.Copy(w, struct{ io.Reader }{strings.NewReader("abc")}) // no WriterTo: ReadFrom is used
		}, 206, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spy := &readerFromSpy{ResponseWriter: &sink{h: http.Header{}}}
			w := recorder.New(spy)
			tt.handler(w)
			if w.Code != tt.code || w.Bytes != tt.bytes || spy.used != tt.readFrom {
				t.Fatalf("code %d bytes %d readFrom %v, want %d %d %v", w.Code, w.Bytes, spy.used, tt.code, tt.bytes, tt.readFrom)
			}
			if tt.code == 0 && w.Status() != http.StatusOK {
				t.Fatalf("Status() = %d for an empty response", w.Status())
			}
		})
	}
}

// Through a real server, a file copied into the recorder is counted and
// arrives whole (the sendfile path).
func TestFileBody(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blob")
	want := strings.Repeat("shoal", 100_000)
	os.WriteFile(path, []byte(want), 0o644)
	got := make(chan int64, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := recorder.New(w)
		f, _ := os.Open(path)
		defer f.Close()
		f.Seek(5, io.SeekStart)
		io.CopyN(rw, f, int64(len(want)-5))
		got <- rw.Bytes
	})}
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != want[5:] || <-got != int64(len(want)-5) {
		t.Fatalf("body %d bytes", len(body))
	}
}
