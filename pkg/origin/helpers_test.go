package origin_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
)

// client speaks raw HTTP to a real listening origin, so the tests see
// exactly the status codes, headers and bodies a registry client sees.
type client struct {
	t    *testing.T
	o    *origintest.Origin
	hc   *http.Client
	user string
	pass string
}

func newClient(t *testing.T, cfg origin.Config) *client {
	t.Helper()
	o := origintest.Start(t, cfg)
	// No redirects: Location headers are part of what we check.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(hc.CloseIdleConnections)
	return &client{t: t, o: o, hc: hc}
}

// response is a finished exchange: the body is read, the connection freed.
type response struct {
	*http.Response
	body []byte
}

type header map[string]string

// do sends a request; path may be relative to the origin or absolute.
func (c *client) do(method, path string, h header, body []byte) response {
	c.t.Helper()
	url := path
	if !strings.HasPrefix(path, "http") {
		url = c.o.URL + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{resp, b}
}

// expect fails the test unless the response has the status and, for error
// statuses, the OCI error code.
func (r response) expect(t *testing.T, status int, code string) response {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	if code != "" {
		if got := errorCode(r.body); got != code {
			t.Fatalf("%s %s: error code %q, want %q; body %s", r.Request.Method, r.Request.URL.Path, got, code, r.body)
		}
	}
	return r
}

// errorCode returns the first code of an OCI error body.
func errorCode(body []byte) string {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// pushBlob uploads b monolithically into repo and returns its digest.
func (c *client) pushBlob(repo string, b []byte) string {
	c.t.Helper()
	d := sha(b)
	c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d, header{"Content-Type": "application/octet-stream"}, b).
		expect(c.t, http.StatusCreated, "")
	return d
}

// descriptor is the JSON of an OCI descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int               `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     map[string]string `json:"platform,omitempty"`
}

const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCIConfig      = "application/vnd.oci.image.config.v1+json"
	mtDockerConfig   = "application/vnd.docker.container.image.v1+json"
	mtOCILayer       = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mtEmpty          = "application/vnd.oci.empty.v1+json"
)

// image pushes a config and n layers into repo and returns the manifest
// body (not pushed) of the given media type.
func (c *client) image(repo, mediaType string, layers int) []byte {
	c.t.Helper()
	cfgMT, layerMT := mtOCIConfig, mtOCILayer
	if mediaType == mtDockerManifest {
		cfgMT, layerMT = mtDockerConfig, mtDockerLayer
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaType,
		"config":        descriptor{MediaType: cfgMT, Digest: c.pushBlob(repo, cfg), Size: len(cfg)},
	}
	var ls []descriptor
	for range layers {
		b := randomBytes(c.t, 1000)
		ls = append(ls, descriptor{MediaType: layerMT, Digest: c.pushBlob(repo, b), Size: len(b)})
	}
	m["layers"] = ls
	return mustJSON(c.t, m)
}

// putManifest pushes body under ref and returns its digest.
func (c *client) putManifest(repo, ref, mediaType string, body []byte) string {
	c.t.Helper()
	r := c.do("PUT", "/v2/"+repo+"/manifests/"+ref, header{"Content-Type": mediaType}, body).
		expect(c.t, http.StatusCreated, "")
	if got, want := r.Header.Get("Docker-Content-Digest"), sha(body); got != want {
		c.t.Fatalf("Docker-Content-Digest %s, want %s", got, want)
	}
	return sha(body)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storeFiles lists the files of the origin's blob store: committed blobs
// and anything left in its temp directory. Bad input must not add to it.
func (c *client) storeFiles() (blobs, tmp []string) {
	c.t.Helper()
	root := filepath.Join(c.o.DataDir, "blobstore")
	walk := func(dir string) []string {
		var out []string
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				out = append(out, filepath.Base(p))
			}
			return nil
		})
		if err != nil {
			c.t.Fatal(err)
		}
		return out
	}
	return walk("blobs"), walk("tmp")
}

// assertStoreUnchanged fails if the store holds other blobs than before, or
// any temp file.
func (c *client) assertStoreUnchanged(before []string) {
	c.t.Helper()
	blobs, tmp := c.storeFiles()
	if len(tmp) != 0 {
		c.t.Errorf("temp files left behind: %v", tmp)
	}
	if strings.Join(blobs, ",") != strings.Join(before, ",") {
		c.t.Errorf("store changed: before %v, after %v", before, blobs)
	}
}
