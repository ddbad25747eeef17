// Package recorder wraps an http.ResponseWriter to record what a handler
// sent — status and body bytes — for metrics and logs, without hiding
// io.ReaderFrom: blob bodies copied from an *os.File still go out by
// sendfile(2), which a plain wrapper would silently turn into a copy
// through user space.
package recorder

import (
	"io"
	"net/http"
)

// Writer records a response. The zero Code means nothing was written yet.
type Writer struct {
	http.ResponseWriter
	Code  int
	Bytes int64
}

// New wraps w.
func New(w http.ResponseWriter) *Writer { return &Writer{ResponseWriter: w} }

// WriteHeader records the first status.
func (w *Writer) WriteHeader(code int) {
	if w.Code == 0 {
		w.Code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *Writer) Write(b []byte) (int, error) {
	if w.Code == 0 {
		w.Code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.Bytes += int64(n)
	return n, err
}

// ReadFrom hands src to the underlying writer's ReadFrom, which for a
// file and a TCP connection is sendfile.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.Code == 0 {
		w.Code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	w.Bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status is the status sent, 200 if the handler wrote nothing.
func (w *Writer) Status() int {
	if w.Code == 0 {
		return http.StatusOK
	}
	return w.Code
}
