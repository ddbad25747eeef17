package origin_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/origin"
)

// TestManifestPutTagParameter: a manifest PUT with ?tag= tags the manifest
// with every value and answers one OCI-Tag header per tag applied
// (distribution-spec after 1.1); a bad tag refuses the whole PUT.
func TestManifestPutTagParameter(t *testing.T) {
	c := newClient(t, origin.Config{})
	body := c.image("app", mtOCIManifest, 1)
	d := sha(body)

	tests := []struct {
		name     string
		ref      string
		query    string
		status   int
		code     string
		wantTags []string // OCI-Tag headers, in order
	}{
		{"digest with two tags", d, "?tag=v1&tag=latest", 201, "", []string{"v1", "latest"}},
		{"tag and a repeat", "v2", "?tag=v2&tag=stable", 201, "", []string{"v2", "stable"}},
		{"no parameter, no header", "v3", "", 201, "", nil},
		{"invalid tag", d, "?tag=ok&tag=-bad", 400, "MANIFEST_INVALID", nil},
		{"too long tag", d, "?tag=" + strings.Repeat("a", 129), 400, "MANIFEST_INVALID", nil},
		{"too many tags", d, "?" + strings.Repeat("tag=a&", 65), 400, "MANIFEST_INVALID", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do("PUT", "/v2/app/manifests/"+tc.ref+tc.query, header{"Content-Type": mtOCIManifest}, body).expect(t, tc.status, tc.code)
			if got := r.Header.Values("OCI-Tag"); !slices.Equal(got, tc.wantTags) {
				t.Errorf("OCI-Tag %q, want %q", got, tc.wantTags)
			}
			for _, tag := range tc.wantTags {
				g := c.do("GET", "/v2/app/manifests/"+tag, header{"Accept": mtOCIManifest}, nil).expect(t, 200, "")
				if g.Header.Get("Docker-Content-Digest") != d {
					t.Errorf("tag %s → %s, want %s", tag, g.Header.Get("Docker-Content-Digest"), d)
				}
			}
		})
	}
	// The refused PUTs tagged nothing.
	c.do("GET", "/v2/app/manifests/ok", nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")
	r := c.do("GET", "/v2/app/tags/list", nil, nil).expect(t, 200, "")
	for _, tag := range []string{"v1", "latest", "v2", "stable", "v3"} {
		if !strings.Contains(string(r.body), `"`+tag+`"`) {
			t.Errorf("tag list %s lacks %s", r.body, tag)
		}
	}
}

// TestUploadDigestAlgorithm: POST …/blobs/uploads/?digest-algorithm= opens a
// session only for an algorithm the origin verifies; anything else is
// DIGEST_INVALID before a session or a byte is stored.
func TestUploadDigestAlgorithm(t *testing.T) {
	c := newClient(t, origin.Config{})
	blob := []byte("digest algorithm test blob")
	tests := []struct {
		name   string
		query  string
		body   []byte
		status int
		code   string
	}{
		{"unknown algorithm", "?digest-algorithm=md5", nil, 400, "DIGEST_INVALID"},
		{"malformed algorithm", "?digest-algorithm=SHA256%00", nil, 400, "DIGEST_INVALID"},
		{"empty algorithm", "?digest-algorithm=", nil, 400, "DIGEST_INVALID"},
		{"monolithic, contradicting", "?digest-algorithm=sha512&digest=" + sha([]byte("x")), []byte("x"), 400, "DIGEST_INVALID"},
		{"monolithic, matching", "?digest-algorithm=sha256&digest=" + sha(blob), blob, http.StatusCreated, ""},
		{"sha256 session", "?digest-algorithm=sha256", nil, http.StatusAccepted, ""},
		{"sha512 session", "?digest-algorithm=sha512", nil, http.StatusAccepted, ""},
	}
	// Refusals first: the sessions that open leave their temp files.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := c.storeFiles()
			c.do("POST", "/v2/app/blobs/uploads/"+tc.query, header{"Content-Type": "application/octet-stream"}, tc.body).expect(t, tc.status, tc.code)
			if tc.status >= 400 {
				c.assertStoreUnchanged(before)
			}
		})
	}
}
