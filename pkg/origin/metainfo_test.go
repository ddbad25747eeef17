package origin_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
)

// A pushed blob's metainfo is computed on commit and served as protobuf
// that validates and matches an independent computation.
func TestMetaInfoEndpoint(t *testing.T) {
	o := origintest.Start(t, origin.Config{})
	blob := make([]byte, 2*metainfo.MinPieceLength+1000)
	rand.Read(blob)
	d := digest.FromBytes(blob)
	resp, err := http.Post(o.URL+"/v2/m/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(blob))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %v %v", resp.Status, err)
	}
	resp.Body.Close()

	tests := []struct {
		name   string
		path   string
		status int
	}{
		{"committed", d.String(), http.StatusOK},
		{"unknown", digest.FromBytes([]byte("nope")).String(), http.StatusNotFound},
		{"malformed", "sha256:xyz", http.StatusBadRequest},
		{"traversal", "..%2F..%2Fetc", http.StatusBadRequest},
		{"long", strings.Repeat("a", 5000), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(o.URL + origin.MetaInfoPath + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.status != http.StatusOK {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != origin.MetaInfoContentType {
				t.Fatalf("Content-Type %q", ct)
			}
			mi, err := metainfo.Unmarshal(body)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := metainfo.Compute(d, bytes.NewReader(blob), int64(len(blob)))
			if mi.NumPieces() != 3 || mi.Digest != d {
				t.Fatalf("metainfo: %d pieces, digest %s", mi.NumPieces(), mi.Digest)
			}
			if !mi.Equal(want) {
				t.Fatal("metainfo differs from one computed from the blob")
			}
		})
	}
}
