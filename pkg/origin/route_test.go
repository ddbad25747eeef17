package origin

import (
	"errors"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/ocierr"
)

func TestParseRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		path string
		want route
		code ocierr.Code // expected error code; "" = success
		nf   bool        // expected errNotFound
	}{
		{path: "/v2/", want: route{kind: kindBase}},
		{path: "/v2", want: route{kind: kindBase}},
		{path: "/v2/_catalog", want: route{kind: kindCatalog}},
		{path: "/v2/library/busybox/tags/list", want: route{kind: kindTags, name: "library/busybox"}},
		{path: "/v2/a/manifests/latest", want: route{kind: kindManifest, name: "a", arg: "latest"}},
		{path: "/v2/a/b/c/manifests/" + d, want: route{kind: kindManifest, name: "a/b/c", arg: d}},
		{path: "/v2/a/blobs/" + d, want: route{kind: kindBlob, name: "a", arg: d}},
		{path: "/v2/a/blobs/uploads/", want: route{kind: kindUploadStart, name: "a"}},
		{path: "/v2/a/blobs/uploads", want: route{kind: kindUploadStart, name: "a"}},
		{path: "/v2/a/blobs/uploads/0123abc", want: route{kind: kindUpload, name: "a", arg: "0123abc"}},
		{path: "/v2/a/referrers/" + d, want: route{kind: kindReferrers, name: "a", arg: d}},
		// A repository may be named like an endpoint keyword.
		{path: "/v2/manifests/manifests/latest", want: route{kind: kindManifest, name: "manifests", arg: "latest"}},
		{path: "/v2/blobs/blobs/uploads/", want: route{kind: kindUploadStart, name: "blobs"}},
		{path: "/v2/tags/tags/list", want: route{kind: kindTags, name: "tags"}},
		{path: "/v2/foo%2Fbar/manifests/latest", code: ocierr.NameInvalid},
		{path: "/v2/foo%2fbar/blobs/" + d, code: ocierr.NameInvalid},
		{path: "/v2/../etc/manifests/latest", code: ocierr.NameInvalid},
		{path: "/v2/a/../b/manifests/latest", code: ocierr.NameInvalid},
		{path: "/v2/UPPER/manifests/latest", code: ocierr.NameInvalid},
		{path: "/v2//manifests/latest", code: ocierr.NameInvalid},
		{path: "/v2/a/manifests/la%74est", code: ocierr.ManifestInvalid},
		{path: "/v2/" + strings.Repeat("a/", 600) + "manifests/x", code: ocierr.NameInvalid},
		{path: "/v2/a/unknown/x", nf: true},
		{path: "/v3/a/manifests/x", nf: true},
		{path: "/v2x/a", nf: true},
		{path: "/v2/a", nf: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := parseRoute(tt.path)
			switch {
			case tt.nf:
				if !errors.Is(err, errNotFound) {
					t.Fatalf("parseRoute = %+v, %v; want errNotFound", got, err)
				}
			case tt.code != "":
				var oe *ocierr.Error
				if !errors.As(err, &oe) || oe.Code != tt.code {
					t.Fatalf("parseRoute = %+v, %v; want %s", got, err, tt.code)
				}
			default:
				if err != nil || got != tt.want {
					t.Fatalf("parseRoute = %+v, %v; want %+v", got, err, tt.want)
				}
			}
		})
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/latest", "/v2/a/blobs/uploads/x", "/v2/_catalog", "/v2/a%2F/tags/list", "/v2/../x/blobs/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := parseRoute(p)
		if err != nil {
			var oe *ocierr.Error
			if !errors.Is(err, errNotFound) && !errors.As(err, &oe) {
				t.Fatalf("parseRoute(%q) returned an uncoded error %v", p, err)
			}
			return
		}
		if strings.Contains(r.name, "..") || strings.Contains(r.name, "%") || strings.HasPrefix(r.name, "/") || strings.Contains(r.arg, "/") {
			t.Fatalf("parseRoute(%q) = %+v", p, r)
		}
	})
}
