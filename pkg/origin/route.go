package origin

import (
	"errors"
	"strings"

	"github.com/shoal-project/shoal/pkg/ocierr"
	"github.com/shoal-project/shoal/pkg/reference"
)

// kind is the endpoint a /v2 path names.
type kind int

const (
	kindBase kind = iota + 1
	kindCatalog
	kindTags
	kindManifest
	kindBlob
	kindUploadStart
	kindUpload
	kindReferrers
)

var kindNames = map[kind]string{
	kindBase: "base", kindCatalog: "catalog", kindTags: "tags", kindManifest: "manifest",
	kindBlob: "blob", kindUploadStart: "upload_start", kindUpload: "upload", kindReferrers: "referrers",
}

func (k kind) String() string { return kindNames[k] }

// route is a parsed /v2 path. Arg is the last path element: a manifest
// reference, a digest or an upload id, still unvalidated (handlers parse it
// into the right type and pick the right error code).
type route struct {
	kind kind
	name string
	arg  string
	// client is who asks, for per-client limits; serveV2 sets it once
	// the request is authorized (see clientKey).
	client string
}

// maxPathLength bounds the path; a longer one cannot hold a valid name
// (255) plus a digest (sha512: 135) plus the fixed parts.
const maxPathLength = 1024

var errNotFound = errors.New("no such endpoint")

// parseRoute parses the escaped path of a /v2 request. It works on the
// escaped form so that an encoded slash ("%2F") stays inside its element and
// is rejected with the name, instead of silently splitting it.
func parseRoute(escapedPath string) (route, error) {
	if len(escapedPath) > maxPathLength {
		return route{}, ocierr.New(ocierr.NameInvalid, "path longer than %d bytes", maxPathLength)
	}
	rest, ok := strings.CutPrefix(escapedPath, "/v2")
	if !ok {
		return route{}, errNotFound
	}
	if rest == "" || rest == "/" {
		return route{kind: kindBase}, nil
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok {
		return route{}, errNotFound
	}
	if rest == "_catalog" {
		return route{kind: kindCatalog}, nil
	}
	seg := strings.Split(rest, "/")
	n := len(seg)
	var r route
	var nameSegs int
	switch {
	case n >= 3 && seg[n-2] == "tags" && seg[n-1] == "list":
		r, nameSegs = route{kind: kindTags}, n-2
	case n >= 4 && seg[n-3] == "blobs" && seg[n-2] == "uploads" && seg[n-1] == "":
		r, nameSegs = route{kind: kindUploadStart}, n-3
	case n >= 4 && seg[n-3] == "blobs" && seg[n-2] == "uploads":
		r, nameSegs = route{kind: kindUpload, arg: seg[n-1]}, n-3
	case n >= 3 && seg[n-2] == "blobs" && seg[n-1] == "uploads":
		r, nameSegs = route{kind: kindUploadStart}, n-2
	case n >= 3 && seg[n-2] == "blobs":
		r, nameSegs = route{kind: kindBlob, arg: seg[n-1]}, n-2
	case n >= 3 && seg[n-2] == "manifests":
		r, nameSegs = route{kind: kindManifest, arg: seg[n-1]}, n-2
	case n >= 3 && seg[n-2] == "referrers":
		r, nameSegs = route{kind: kindReferrers, arg: seg[n-1]}, n-2
	default:
		return route{}, errNotFound
	}
	r.name = strings.Join(seg[:nameSegs], "/")
	if strings.ContainsRune(r.name, '%') {
		return route{}, ocierr.New(ocierr.NameInvalid, "repository name must not contain escaped characters")
	}
	if err := reference.ValidateName(r.name); err != nil {
		return route{}, ocierr.Wrap(ocierr.NameInvalid, err)
	}
	if strings.ContainsRune(r.arg, '%') {
		// Nothing valid in the last element needs escaping.
		return route{}, ocierr.New(invalidArgCode(r.kind), "reference must not contain escaped characters")
	}
	return r, nil
}

// invalidArgCode is the code for a malformed last element of each kind.
func invalidArgCode(k kind) ocierr.Code {
	switch k {
	case kindManifest:
		return ocierr.ManifestInvalid
	case kindUpload:
		return ocierr.BlobUploadUnknown
	default:
		return ocierr.DigestInvalid
	}
}
