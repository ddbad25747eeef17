// Package ocierr is the one place where errors become OCI distribution-spec
// error responses: a fixed table of codes with their HTTP status, an Error
// type that carries a code, and Write, which renders any error as the spec's
// JSON body.
package ocierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Code is an OCI distribution-spec error code.
type Code string

// The codes of the distribution spec (section "Error Codes"), plus
// RANGE_INVALID which distribution and its clients use for bad Content-Range.
const (
	BlobUnknown         Code = "BLOB_UNKNOWN"
	BlobUploadInvalid   Code = "BLOB_UPLOAD_INVALID"
	BlobUploadUnknown   Code = "BLOB_UPLOAD_UNKNOWN"
	DigestInvalid       Code = "DIGEST_INVALID"
	ManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	ManifestInvalid     Code = "MANIFEST_INVALID"
	ManifestUnknown     Code = "MANIFEST_UNKNOWN"
	NameInvalid         Code = "NAME_INVALID"
	NameUnknown         Code = "NAME_UNKNOWN"
	SizeInvalid         Code = "SIZE_INVALID"
	Unauthorized        Code = "UNAUTHORIZED"
	Denied              Code = "DENIED"
	Unsupported         Code = "UNSUPPORTED"
	TooManyRequests     Code = "TOOMANYREQUESTS"
	RangeInvalid        Code = "RANGE_INVALID"
	Unavailable         Code = "UNAVAILABLE"
)

// info is one row of the table: the status a code is sent with and the
// spec's message for it.
type info struct {
	status  int
	message string
}

var table = map[Code]info{
	BlobUnknown:         {http.StatusNotFound, "blob unknown to registry"},
	BlobUploadInvalid:   {http.StatusBadRequest, "blob upload invalid"},
	BlobUploadUnknown:   {http.StatusNotFound, "blob upload unknown to registry"},
	DigestInvalid:       {http.StatusBadRequest, "provided digest did not match uploaded content"},
	ManifestBlobUnknown: {http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"},
	ManifestInvalid:     {http.StatusBadRequest, "manifest invalid"},
	ManifestUnknown:     {http.StatusNotFound, "manifest unknown to registry"},
	NameInvalid:         {http.StatusBadRequest, "invalid repository name"},
	NameUnknown:         {http.StatusNotFound, "repository name not known to registry"},
	SizeInvalid:         {http.StatusBadRequest, "provided length did not match content length"},
	Unauthorized:        {http.StatusUnauthorized, "authentication required"},
	Denied:              {http.StatusForbidden, "requested access to the resource is denied"},
	Unsupported:         {http.StatusMethodNotAllowed, "the operation is unsupported"},
	TooManyRequests:     {http.StatusTooManyRequests, "too many requests"},
	RangeInvalid:        {http.StatusRequestedRangeNotSatisfiable, "invalid content range"},
	Unavailable:         {http.StatusServiceUnavailable, "service unavailable"},
}

// Error is an error with an OCI code. Detail is sent to the client; Err is
// the underlying cause, kept for errors.Is and logs.
type Error struct {
	Code   Code
	Status int // overrides the table's status when non-zero
	Detail string
	Err    error
}

func (e *Error) Error() string {
	msg := string(e.Code)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the status the error is sent with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if i, ok := table[e.Code]; ok {
		return i.status
	}
	return http.StatusInternalServerError
}

// New returns an Error with a code and a formatted detail.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with a code whose detail is err's text.
func Wrap(code Code, err error) *Error { return &Error{Code: code, Detail: err.Error(), Err: err} }

// WithStatus returns e with the status overridden (e.g. DIGEST_INVALID on a
// manifest PUT is 400 but on a blob upload some clients expect 400 too; the
// spec leaves a few codes status-free).
func (e *Error) WithStatus(status int) *Error { e.Status = status; return e }

// body is the spec's error document.
type body struct {
	Errors []entry `json:"errors"`
}

type entry struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// Write sends err as an OCI error response. Errors without a code are
// internal: the client sees a generic message, never the cause.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	var oe *Error
	if !errors.As(err, &oe) {
		oe = &Error{Code: "UNKNOWN", Status: http.StatusInternalServerError, Detail: "internal error"}
	}
	msg := "internal error"
	if i, ok := table[oe.Code]; ok {
		msg = i.message
	}
	b, _ := json.Marshal(body{Errors: []entry{{Code: oe.Code, Message: msg, Detail: nullable(oe.Detail)}}})
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", fmt.Sprint(len(b)))
	h.Del("Docker-Content-Digest")
	w.WriteHeader(oe.HTTPStatus())
	if r == nil || r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
