package origin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/origin"
)

// These tests walk the OCI distribution spec v1.1 endpoint by endpoint
// against a real listening origin: the ground the official conformance
// suite covers, so CI catches what it would.

func TestBase(t *testing.T) {
	c := newClient(t, origin.Config{})
	for _, m := range []string{"GET", "HEAD"} {
		r := c.do(m, "/v2/", nil, nil).expect(t, http.StatusOK, "")
		if got := r.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
			t.Errorf("%s /v2/: API version header %q", m, got)
		}
	}
	c.do("GET", "/v2/nope/nothing", nil, nil).expect(t, http.StatusNotFound, "UNSUPPORTED")
	c.do("POST", "/v2/", nil, nil).expect(t, http.StatusMethodNotAllowed, "UNSUPPORTED")
}

func TestBlobPullAndRange(t *testing.T) {
	c := newClient(t, origin.Config{})
	data := randomBytes(t, 10000)
	d := c.pushBlob("lib/app", data)
	path := "/v2/lib/app/blobs/" + d

	head := c.do("HEAD", path, nil, nil).expect(t, http.StatusOK, "")
	if head.ContentLength != int64(len(data)) || head.Header.Get("Docker-Content-Digest") != d || len(head.body) != 0 {
		t.Errorf("HEAD: length %d digest %q body %d bytes", head.ContentLength, head.Header.Get("Docker-Content-Digest"), len(head.body))
	}
	get := c.do("GET", path, nil, nil).expect(t, http.StatusOK, "")
	if string(get.body) != string(data) {
		t.Fatal("GET body differs from what was pushed")
	}

	ranges := []struct {
		spec       string
		status     int
		start, end int // inclusive, for 206
	}{
		{"bytes=0-0", 206, 0, 0},
		{"bytes=100-199", 206, 100, 199},
		{"bytes=9990-", 206, 9990, 9999},
		{"bytes=-10", 206, 9990, 9999},
		{"bytes=5000-99999", 206, 5000, 9999}, // end clamped to the size
		{"bytes=10000-", 416, 0, 0},
		{"bytes=20000-20001", 416, 0, 0},
		{"bytes=500-0", 416, 0, 0}, // invalid: RFC 9110 says SHOULD 416
	}
	for _, tc := range ranges {
		t.Run(tc.spec, func(t *testing.T) {
			r := c.do("GET", path, header{"Range": tc.spec}, nil).expect(t, tc.status, "")
			if tc.status == 416 {
				if got := r.Header.Get("Content-Range"); got != fmt.Sprintf("bytes */%d", len(data)) {
					t.Errorf("416 Content-Range %q", got)
				}
				return
			}
			want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, len(data))
			if got := r.Header.Get("Content-Range"); got != want {
				t.Errorf("Content-Range %q, want %q", got, want)
			}
			if string(r.body) != string(data[tc.start:tc.end+1]) {
				t.Errorf("range body differs")
			}
		})
	}
	// A malformed Range header is ignored as RFC 9110 allows: full body.
	if r := c.do("GET", path, header{"Range": "bytes=abc"}, nil); r.StatusCode != 200 && r.StatusCode != 416 {
		t.Errorf("malformed Range: status %d", r.StatusCode)
	}

	unknown := sha([]byte("never pushed"))
	c.do("GET", "/v2/lib/app/blobs/"+unknown, nil, nil).expect(t, http.StatusNotFound, "BLOB_UNKNOWN")
	c.do("HEAD", "/v2/lib/app/blobs/"+unknown, nil, nil).expect(t, http.StatusNotFound, "")
	// A blob in the store is still unknown to a repository it was not pushed to.
	c.do("GET", "/v2/other/repo/blobs/"+d, nil, nil).expect(t, http.StatusNotFound, "BLOB_UNKNOWN")
	c.do("GET", "/v2/lib/app/blobs/sha256:1234", nil, nil).expect(t, http.StatusBadRequest, "DIGEST_INVALID")
}

func TestUploadModes(t *testing.T) {
	data := randomBytes(t, 3*1024+17)
	d := sha(data)
	chunks := [][]byte{data[:1024], data[1024:2048], data[2048:]}

	tests := []struct {
		name   string
		upload func(c *client) response // ends with the committing request
	}{
		{"monolithic POST", func(c *client) response {
			return c.do("POST", "/v2/r/blobs/uploads/?digest="+d, header{"Content-Type": "application/octet-stream"}, data)
		}},
		{"POST then single PUT", func(c *client) response {
			loc := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
			return c.do("PUT", withDigest(loc, d), header{"Content-Type": "application/octet-stream"}, data)
		}},
		{"chunked", func(c *client) response {
			loc := c.do("POST", "/v2/r/blobs/uploads/", header{"Content-Length": "0"}, nil).expect(t, 202, "").Header.Get("Location")
			off := 0
			for _, ch := range chunks[:2] {
				r := c.do("PATCH", loc, header{
					"Content-Type":  "application/octet-stream",
					"Content-Range": fmt.Sprintf("%d-%d", off, off+len(ch)-1),
				}, ch).expect(t, 202, "")
				off += len(ch)
				if got := r.Header.Get("Range"); got != fmt.Sprintf("0-%d", off-1) {
					t.Fatalf("after chunk: Range %q", got)
				}
				loc = r.Header.Get("Location")
			}
			st := c.do("GET", loc, nil, nil).expect(t, http.StatusNoContent, "")
			if got := st.Header.Get("Range"); got != fmt.Sprintf("0-%d", off-1) {
				t.Fatalf("status: Range %q", got)
			}
			return c.do("PUT", withDigest(loc, d), header{
				"Content-Type":  "application/octet-stream",
				"Content-Range": fmt.Sprintf("%d-%d", off, len(data)-1),
			}, chunks[2])
		}},
		{"streamed", func(c *client) response {
			loc := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
			loc = c.do("PATCH", loc, header{"Content-Type": "application/octet-stream"}, data).expect(t, 202, "").Header.Get("Location")
			return c.do("PUT", withDigest(loc, d), nil, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, origin.Config{})
			r := tc.upload(c).expect(t, http.StatusCreated, "")
			if r.Header.Get("Location") != "/v2/r/blobs/"+d || r.Header.Get("Docker-Content-Digest") != d {
				t.Errorf("201 headers: Location %q digest %q", r.Header.Get("Location"), r.Header.Get("Docker-Content-Digest"))
			}
			got := c.do("GET", "/v2/r/blobs/"+d, nil, nil).expect(t, 200, "")
			if string(got.body) != string(data) {
				t.Fatal("pulled blob differs")
			}
			if _, tmp := c.storeFiles(); len(tmp) != 0 {
				t.Errorf("temp files after commit: %v", tmp)
			}
		})
	}
}

func withDigest(loc, d string) string {
	if strings.Contains(loc, "?") {
		return loc + "&digest=" + d
	}
	return loc + "?digest=" + d
}

func TestUploadErrors(t *testing.T) {
	c := newClient(t, origin.Config{})
	data := randomBytes(t, 2048)
	start := func() string {
		return c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
	}

	t.Run("out of order chunk", func(t *testing.T) {
		loc := start()
		c.do("PATCH", loc, header{"Content-Range": "0-1023"}, data[:1024]).expect(t, 202, "")
		r := c.do("PATCH", loc, header{"Content-Range": "2000-2047"}, data[2000:]).expect(t, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
		if got := r.Header.Get("Range"); got != "0-1023" {
			t.Errorf("416 Range %q, want where the upload is", got)
		}
		// The session survives a rejected chunk and can go on.
		c.do("PATCH", loc, header{"Content-Range": "1024-2047"}, data[1024:]).expect(t, 202, "")
		c.do("PUT", withDigest(loc, sha(data)), nil, nil).expect(t, 201, "")
	})
	t.Run("malformed Content-Range", func(t *testing.T) {
		loc := start()
		for _, cr := range []string{"abc", "5-1", "-1-5", "0-", "bytes 0-10/11x"} {
			c.do("PATCH", loc, header{"Content-Range": cr}, data[:10]).expect(t, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
		}
	})
	t.Run("Content-Range disagrees with length", func(t *testing.T) {
		c.do("PATCH", start(), header{"Content-Range": "0-99"}, data[:10]).expect(t, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
	})
	t.Run("status and cancel", func(t *testing.T) {
		loc := start()
		c.do("GET", loc, nil, nil).expect(t, http.StatusNoContent, "")
		c.do("DELETE", loc, nil, nil).expect(t, http.StatusNoContent, "")
		c.do("GET", loc, nil, nil).expect(t, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		c.do("PATCH", loc, nil, data).expect(t, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		c.do("DELETE", loc, nil, nil).expect(t, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	})
	t.Run("session of another repository", func(t *testing.T) {
		loc := start()
		other := strings.Replace(loc, "/v2/r/", "/v2/other/", 1)
		c.do("GET", other, nil, nil).expect(t, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	})
	t.Run("PUT without digest", func(t *testing.T) {
		c.do("PUT", start(), nil, data).expect(t, http.StatusBadRequest, "DIGEST_INVALID")
	})
	t.Run("unknown session", func(t *testing.T) {
		c.do("PUT", "/v2/r/blobs/uploads/00000000000000000000000000000000?digest="+sha(data), nil, data).expect(t, 404, "BLOB_UPLOAD_UNKNOWN")
	})
}

func TestMount(t *testing.T) {
	c := newClient(t, origin.Config{})
	data := randomBytes(t, 500)
	d := c.pushBlob("src/repo", data)

	r := c.do("POST", "/v2/dst/repo/blobs/uploads/?mount="+d+"&from=src/repo", nil, nil).expect(t, http.StatusCreated, "")
	if r.Header.Get("Location") != "/v2/dst/repo/blobs/"+d {
		t.Errorf("mount Location %q", r.Header.Get("Location"))
	}
	c.do("GET", "/v2/dst/repo/blobs/"+d, nil, nil).expect(t, 200, "")

	// Not in the source: the spec says fall back to an upload session.
	missing := sha([]byte("not there"))
	r = c.do("POST", "/v2/dst/repo/blobs/uploads/?mount="+missing+"&from=src/repo", nil, nil).expect(t, http.StatusAccepted, "")
	if !strings.HasPrefix(r.Header.Get("Location"), "/v2/dst/repo/blobs/uploads/") {
		t.Errorf("fallback Location %q", r.Header.Get("Location"))
	}
	// Without from, the blob is not mounted from a repository the client
	// may not read.
	c.do("POST", "/v2/third/blobs/uploads/?mount="+d, nil, nil).expect(t, http.StatusAccepted, "")
	c.do("POST", "/v2/dst/repo/blobs/uploads/?mount="+d+"&from=Bad..Name", nil, nil).expect(t, http.StatusBadRequest, "NAME_INVALID")
}

func TestManifestKinds(t *testing.T) {
	c := newClient(t, origin.Config{})
	oci := c.image("app", mtOCIManifest, 2)
	docker := c.image("app", mtDockerManifest, 2)
	ociD := c.putManifest("app", "oci", mtOCIManifest, oci)
	dockerD := c.putManifest("app", "docker", mtDockerManifest, docker)

	index := mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIIndex,
		"manifests": []descriptor{{MediaType: mtOCIManifest, Digest: ociD, Size: len(oci), Platform: map[string]string{"os": "linux", "architecture": "amd64"}}},
	})
	list := mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mtDockerList,
		"manifests": []descriptor{{MediaType: mtDockerManifest, Digest: dockerD, Size: len(docker), Platform: map[string]string{"os": "linux", "architecture": "arm64"}}},
	})
	emptyCfg := []byte("{}")
	art := mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest, "artifactType": "application/vnd.example.sbom",
		"config": descriptor{MediaType: mtEmpty, Digest: c.pushBlob("app", emptyCfg), Size: 2},
		"layers": []descriptor{{MediaType: "application/json", Digest: c.pushBlob("app", []byte(`{"sbom":1}`)), Size: 10}},
	})

	kinds := []struct {
		name, tag, mediaType string
		body                 []byte
	}{
		{"OCI manifest", "oci", mtOCIManifest, oci},
		{"Docker manifest", "docker", mtDockerManifest, docker},
		{"OCI index", "index", mtOCIIndex, index},
		{"Docker list", "list", mtDockerList, list},
		{"artifact", "sbom", mtOCIManifest, art},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			d := c.putManifest("app", k.tag, k.mediaType, k.body)
			for _, ref := range []string{k.tag, d} {
				for _, m := range []string{"GET", "HEAD"} {
					r := c.do(m, "/v2/app/manifests/"+ref, header{"Accept": k.mediaType}, nil).expect(t, 200, "")
					if r.Header.Get("Content-Type") != k.mediaType || r.Header.Get("Docker-Content-Digest") != d {
						t.Errorf("%s %s: Content-Type %q digest %q", m, ref, r.Header.Get("Content-Type"), r.Header.Get("Docker-Content-Digest"))
					}
					if r.ContentLength != int64(len(k.body)) {
						t.Errorf("%s %s: Content-Length %d, want %d", m, ref, r.ContentLength, len(k.body))
					}
					if m == "GET" && string(r.body) != string(k.body) {
						t.Errorf("GET %s: body differs", ref)
					}
				}
			}
			// Pushing by digest is idempotent.
			r := c.do("PUT", "/v2/app/manifests/"+d, header{"Content-Type": k.mediaType}, k.body).expect(t, 201, "")
			if r.Header.Get("Location") != "/v2/app/manifests/"+d {
				t.Errorf("Location %q", r.Header.Get("Location"))
			}
		})
	}
}

func TestManifestErrors(t *testing.T) {
	c := newClient(t, origin.Config{})
	good := c.image("app", mtOCIManifest, 1)
	missingBlob := mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest,
		"config": descriptor{MediaType: mtOCIConfig, Digest: sha([]byte("no config")), Size: 9},
		"layers": []descriptor{},
	})
	missingChild := mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIIndex,
		"manifests": []descriptor{{MediaType: mtOCIManifest, Digest: sha([]byte("no child")), Size: 8}},
	})
	huge := make([]byte, 4<<20+1)

	tests := []struct {
		name, ref, mediaType string
		body                 []byte
		status               int
		code                 string
	}{
		{"not JSON", "t", mtOCIManifest, []byte("{not json"), 400, "MANIFEST_INVALID"},
		{"empty body", "t", mtOCIManifest, []byte{}, 400, "MANIFEST_INVALID"},
		{"unknown media type", "t", "text/plain", good, 400, "MANIFEST_INVALID"},
		{"media type mismatch", "t", mtDockerManifest, good, 400, "MANIFEST_INVALID"},
		{"schemaVersion 1", "t", mtOCIManifest, []byte(`{"schemaVersion":1,"mediaType":"` + mtOCIManifest + `"}`), 400, "MANIFEST_INVALID"},
		{"bad descriptor digest", "t", mtOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"` + mtOCIManifest + `","config":{"mediaType":"` + mtOCIConfig + `","digest":"sha256:zz","size":1},"layers":[]}`), 400, "MANIFEST_INVALID"},
		{"missing blob", "t", mtOCIManifest, missingBlob, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"missing child manifest", "t", mtOCIIndex, missingChild, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"digest mismatch", sha([]byte("other")), mtOCIManifest, good, 400, "DIGEST_INVALID"},
		{"invalid tag", "-bad", mtOCIManifest, good, 400, "MANIFEST_INVALID"},
		{"tag too long", strings.Repeat("a", 129), mtOCIManifest, good, 400, "MANIFEST_INVALID"},
		{"too large", "t", mtOCIManifest, huge, http.StatusRequestEntityTooLarge, "MANIFEST_INVALID"},
	}
	before, _ := c.storeFiles()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.do("PUT", "/v2/app/manifests/"+tc.ref, header{"Content-Type": tc.mediaType}, tc.body).expect(t, tc.status, tc.code)
		})
	}
	c.assertStoreUnchanged(before)
	c.do("GET", "/v2/app/manifests/t", nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")
	c.do("GET", "/v2/app/manifests/"+sha([]byte("x")), nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")
	c.do("HEAD", "/v2/app/manifests/missing", nil, nil).expect(t, 404, "")
	c.do("GET", "/v2/app/manifests/sha256:abc", nil, nil).expect(t, 400, "DIGEST_INVALID")
}

func TestReferrers(t *testing.T) {
	c := newClient(t, origin.Config{})
	img := c.image("app", mtOCIManifest, 1)
	subject := c.putManifest("app", "v1", mtOCIManifest, img)
	emptyD := c.pushBlob("app", []byte("{}"))

	referrer := func(artifactType, note string) (string, []byte) {
		b := mustJSON(t, map[string]any{
			"schemaVersion": 2, "mediaType": mtOCIManifest, "artifactType": artifactType,
			"config":      descriptor{MediaType: mtEmpty, Digest: emptyD, Size: 2},
			"layers":      []descriptor{{MediaType: mtEmpty, Digest: emptyD, Size: 2}},
			"subject":     descriptor{MediaType: mtOCIManifest, Digest: subject, Size: len(img)},
			"annotations": map[string]string{"note": note},
		})
		r := c.do("PUT", "/v2/app/manifests/"+sha(b), header{"Content-Type": mtOCIManifest}, b).expect(t, 201, "")
		if r.Header.Get("OCI-Subject") != subject {
			t.Errorf("OCI-Subject %q, want %q", r.Header.Get("OCI-Subject"), subject)
		}
		return sha(b), b
	}
	sig, _ := referrer("application/vnd.example.signature", "a")
	sbom, sbomBody := referrer("application/vnd.example.sbom", "b")

	list := func(query string) (response, []descriptor) {
		r := c.do("GET", "/v2/app/referrers/"+subject+query, nil, nil).expect(t, 200, "")
		if r.Header.Get("Content-Type") != mtOCIIndex {
			t.Errorf("referrers Content-Type %q", r.Header.Get("Content-Type"))
		}
		var idx struct {
			SchemaVersion int          `json:"schemaVersion"`
			MediaType     string       `json:"mediaType"`
			Manifests     []descriptor `json:"manifests"`
		}
		if err := json.Unmarshal(r.body, &idx); err != nil || idx.SchemaVersion != 2 || idx.MediaType != mtOCIIndex {
			t.Fatalf("referrers body %s: %v", r.body, err)
		}
		return r, idx.Manifests
	}
	_, all := list("")
	digests := []string{}
	for _, m := range all {
		digests = append(digests, m.Digest)
	}
	slices.Sort(digests)
	want := []string{sig, sbom}
	slices.Sort(want)
	if !slices.Equal(digests, want) {
		t.Fatalf("referrers %v, want %v", digests, want)
	}
	r, filtered := list("?artifactType=application/vnd.example.sbom")
	if len(filtered) != 1 || filtered[0].Digest != sbom || filtered[0].ArtifactType != "application/vnd.example.sbom" ||
		filtered[0].Size != len(sbomBody) || filtered[0].Annotations["note"] != "b" {
		t.Errorf("filtered referrers %+v", filtered)
	}
	if r.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied %q", r.Header.Get("OCI-Filters-Applied"))
	}
	// A subject with no referrers, even an unknown one, has an empty list.
	r = c.do("GET", "/v2/app/referrers/"+sha([]byte("lonely")), nil, nil).expect(t, 200, "")
	if !strings.Contains(string(r.body), `"manifests":[]`) {
		t.Errorf("empty referrers body %s", r.body)
	}
	c.do("GET", "/v2/app/referrers/sha256:nope", nil, nil).expect(t, 400, "DIGEST_INVALID")

	// Deleting a referrer removes it from the list.
	c.do("DELETE", "/v2/app/manifests/"+sig, nil, nil).expect(t, 202, "")
	if _, left := list(""); len(left) != 1 || left[0].Digest != sbom {
		t.Errorf("after delete: %+v", left)
	}
}

func TestTagsAndCatalogPagination(t *testing.T) {
	c := newClient(t, origin.Config{})
	body := c.image("a/b", mtOCIManifest, 1)
	tags := []string{"v1", "v2", "v3", "latest", "alpha"}
	for _, tag := range tags {
		c.putManifest("a/b", tag, mtOCIManifest, body)
	}
	for _, repo := range []string{"c", "d/e", "f"} {
		c.putManifest(repo, "x", mtOCIManifest, c.image(repo, mtOCIManifest, 0))
	}
	sorted := slices.Clone(tags)
	slices.Sort(sorted)

	type tagList struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	pages := []struct {
		query string
		want  []string
		link  bool
	}{
		{"", sorted, false},
		{"?n=2", sorted[:2], true},
		{"?n=2&last=" + sorted[1], sorted[2:4], true},
		{"?n=2&last=" + sorted[3], sorted[4:], false},
		{"?last=" + sorted[4], []string{}, false},
		{"?n=0", []string{}, false},
		{"?n=100", sorted, false},
	}
	for _, p := range pages {
		t.Run("tags"+p.query, func(t *testing.T) {
			r := c.do("GET", "/v2/a/b/tags/list"+p.query, nil, nil).expect(t, 200, "")
			var tl tagList
			if err := json.Unmarshal(r.body, &tl); err != nil {
				t.Fatal(err)
			}
			if tl.Name != "a/b" || !slices.Equal(tl.Tags, p.want) {
				t.Errorf("got %+v, want %v", tl, p.want)
			}
			link := r.Header.Get("Link")
			if (link != "") != p.link {
				t.Errorf("Link %q, want present=%v", link, p.link)
			}
			if link != "" && !strings.Contains(link, `rel="next"`) {
				t.Errorf("Link %q lacks rel=next", link)
			}
		})
	}
	// Following Link headers visits every tag once.
	var seen []string
	next := "/v2/a/b/tags/list?n=2"
	for i := 0; next != "" && i < 10; i++ {
		r := c.do("GET", next, nil, nil).expect(t, 200, "")
		var tl tagList
		json.Unmarshal(r.body, &tl)
		seen = append(seen, tl.Tags...)
		next = ""
		if l := r.Header.Get("Link"); l != "" {
			next = l[strings.Index(l, "<")+1 : strings.Index(l, ">")]
		}
	}
	if !slices.Equal(seen, sorted) {
		t.Errorf("walking Link pages: %v, want %v", seen, sorted)
	}
	c.do("GET", "/v2/a/b/tags/list?n=-1", nil, nil).expect(t, 400, "")
	c.do("GET", "/v2/no/such/tags/list", nil, nil).expect(t, 404, "NAME_UNKNOWN")

	r := c.do("GET", "/v2/_catalog?n=2", nil, nil).expect(t, 200, "")
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	json.Unmarshal(r.body, &cat)
	if !slices.Equal(cat.Repositories, []string{"a/b", "c"}) || r.Header.Get("Link") == "" {
		t.Errorf("catalog page 1: %v, Link %q", cat.Repositories, r.Header.Get("Link"))
	}
	r = c.do("GET", "/v2/_catalog?n=10&last=c", nil, nil).expect(t, 200, "")
	json.Unmarshal(r.body, &cat)
	if !slices.Equal(cat.Repositories, []string{"d/e", "f"}) {
		t.Errorf("catalog page 2: %v", cat.Repositories)
	}
}

func TestDeletion(t *testing.T) {
	c := newClient(t, origin.Config{})
	body := c.image("app", mtOCIManifest, 1)
	d := c.putManifest("app", "v1", mtOCIManifest, body)
	c.putManifest("app", "v2", mtOCIManifest, body)

	// Deleting a tag leaves the manifest and the other tag.
	c.do("DELETE", "/v2/app/manifests/v1", nil, nil).expect(t, 202, "")
	c.do("GET", "/v2/app/manifests/v1", nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")
	c.do("GET", "/v2/app/manifests/v2", nil, nil).expect(t, 200, "")
	c.do("DELETE", "/v2/app/manifests/v1", nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")

	// Deleting by digest removes the manifest and every tag pointing at it.
	c.do("DELETE", "/v2/app/manifests/"+d, nil, nil).expect(t, 202, "")
	c.do("GET", "/v2/app/manifests/"+d, nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")
	c.do("GET", "/v2/app/manifests/v2", nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")
	c.do("DELETE", "/v2/app/manifests/"+d, nil, nil).expect(t, 404, "MANIFEST_UNKNOWN")

	blob := c.pushBlob("app", []byte("layer"))
	c.do("DELETE", "/v2/app/blobs/"+blob, nil, nil).expect(t, 202, "")
	c.do("GET", "/v2/app/blobs/"+blob, nil, nil).expect(t, 404, "BLOB_UNKNOWN")
	c.do("DELETE", "/v2/app/blobs/"+blob, nil, nil).expect(t, 404, "BLOB_UNKNOWN")
}

func TestInvalidNames(t *testing.T) {
	c := newClient(t, origin.Config{})
	d := sha([]byte("x"))
	names := []string{
		"..", "a/../b", "a/..", "./a", "Upper", "a//b", "a/", "-a", "a-", "a__b_", "a%2Fb", "a%2fb/c", "a%00b",
		"%2e%2e", "a/%2e%2e/b", strings.Repeat("a", 256), "a b",
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			for _, p := range []string{"/blobs/" + d, "/manifests/latest", "/tags/list", "/blobs/uploads/"} {
				method := "GET"
				if p == "/blobs/uploads/" {
					method = "POST"
				}
				r := c.do(method, "/v2/"+n+p, nil, nil)
				if r.StatusCode != 400 {
					t.Fatalf("%s %s: status %d", method, p, r.StatusCode)
				}
				if code := errorCode(r.body); code != "NAME_INVALID" {
					t.Fatalf("%s %s: code %q (%s)", method, p, code, r.body)
				}
			}
		})
	}
	if files, _ := c.storeFiles(); len(files) != 0 {
		t.Errorf("blobs stored: %v", files)
	}
	// A valid name with every allowed separator works.
	c.pushBlob("a.b/c-d/e__f/g_h", []byte("ok"))
	c.do("GET", "/v2/a.b/c-d/e__f/g_h/blobs/"+sha([]byte("ok")), nil, nil).expect(t, 200, "")
}
