package origin_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
)

// rawRequest writes head and body on a fresh TCP connection, then closes
// the write side: how a client that dies mid-upload looks to the server.
// It returns the status line, or "" if the server just closed.
func rawRequest(t *testing.T, host, head string, body []byte) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	conn.Write(body)
	conn.(*net.TCPConn).CloseWrite()
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestBadUploadsLeaveStoreClean(t *testing.T) {
	c := newClient(t, origin.Config{MaxBlobSize: 4096})
	data := randomBytes(t, 2048)
	d := sha(data)
	// Committed blobs that must survive everything below untouched.
	c.pushBlob("r", []byte("keep me"))
	other := c.pushBlob("elsewhere", []byte(`{"architecture":"amd64","os":"linux"}`))
	before, _ := c.storeFiles()

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"wrong digest, monolithic", func(t *testing.T) {
			c.do("POST", "/v2/r/blobs/uploads/?digest="+sha([]byte("other")), nil, data).expect(t, 400, "DIGEST_INVALID")
		}},
		{"wrong digest, chunked", func(t *testing.T) {
			loc := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
			c.do("PATCH", loc, header{"Content-Range": "0-2047"}, data).expect(t, 202, "")
			c.do("PUT", withDigest(loc, sha([]byte("other"))), nil, nil).expect(t, 400, "DIGEST_INVALID")
			// The session is over: a retry with the right digest is refused.
			c.do("PUT", withDigest(loc, d), nil, nil).expect(t, 404, "BLOB_UPLOAD_UNKNOWN")
		}},
		{"malformed digest", func(t *testing.T) {
			for _, bad := range []string{"sha256:abc", "md5:" + strings.Repeat("0", 32), "sha256:" + strings.Repeat("G", 64), "", "sha256:" + strings.ToUpper(d[7:])} {
				c.do("POST", "/v2/r/blobs/uploads/?digest="+bad, nil, data).expect(t, 400, "DIGEST_INVALID")
			}
		}},
		{"oversized, declared", func(t *testing.T) {
			c.do("POST", "/v2/r/blobs/uploads/?digest="+d, nil, randomBytes(t, 5000)).expect(t, 400, "SIZE_INVALID")
		}},
		{"oversized, chunked past the limit", func(t *testing.T) {
			loc := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
			c.do("PATCH", loc, nil, randomBytes(t, 3000)).expect(t, 202, "")
			c.do("PATCH", loc, nil, randomBytes(t, 3000)).expect(t, 400, "SIZE_INVALID")
			c.do("GET", loc, nil, nil).expect(t, 404, "BLOB_UPLOAD_UNKNOWN")
		}},
		{"oversized, streamed without length", func(t *testing.T) {
			// Chunked transfer encoding hides the size until the body ends.
			head := "POST /v2/r/blobs/uploads/?digest=" + d + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
			body := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 5000, strings.Repeat("a", 5000))
			if got := rawRequest(t, c.o.Host, head, []byte(body)); !strings.Contains(got, "400") {
				t.Fatalf("status line %q", got)
			}
		}},
		{"truncated body", func(t *testing.T) {
			head := fmt.Sprintf("POST /v2/r/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", d, len(data))
			rawRequest(t, c.o.Host, head, data[:1000])
		}},
		{"truncated chunk", func(t *testing.T) {
			loc := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
			head := fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Range: 0-2047\r\nContent-Length: 2048\r\n\r\n", loc)
			rawRequest(t, c.o.Host, head, data[:100])
			// A torn chunk ends the session: resuming it could store a
			// blob with a hole.
			waitFor(t, "condition", 5*time.Second, func() bool { return c.do("GET", loc, nil, nil).StatusCode == 404 })
		}},
		{"body longer than Content-Range", func(t *testing.T) {
			loc := c.do("POST", "/v2/r/blobs/uploads/", nil, nil).expect(t, 202, "").Header.Get("Location")
			c.do("PUT", withDigest(loc, d), header{"Content-Range": "0-9"}, data).expect(t, 416, "RANGE_INVALID")
			c.do("DELETE", loc, nil, nil).expect(t, 204, "")
		}},
		{"manifest references blob of another repository", func(t *testing.T) {
			m := mustJSON(t, map[string]any{
				"schemaVersion": 2, "mediaType": mtOCIManifest,
				"config": descriptor{MediaType: mtOCIConfig, Digest: other, Size: 36}, "layers": []descriptor{},
			})
			c.do("PUT", "/v2/r/manifests/x", header{"Content-Type": mtOCIManifest}, m).expect(t, 400, "MANIFEST_BLOB_UNKNOWN")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			waitFor(t, "condition", 5*time.Second, func() bool { _, tmp := c.storeFiles(); return len(tmp) == 0 })
			c.assertStoreUnchanged(before)
		})
	}
}

func TestHugeHeaders(t *testing.T) {
	c := newClient(t, origin.Config{MaxHeaderBytes: 8 << 10})
	head := "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Junk: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
	if got := rawRequest(t, c.o.Host, head, nil); !strings.Contains(got, "431") {
		t.Fatalf("status line %q, want 431", got)
	}
	// The server is still serving.
	c.do("GET", "/v2/", nil, nil).expect(t, 200, "")
}

func TestConcurrentUploadsOfSameBlob(t *testing.T) {
	c := newClient(t, origin.Config{})
	data := randomBytes(t, 256<<10)
	d := sha(data)
	corrupt := append([]byte(nil), data...)
	corrupt[len(corrupt)/2] ^= 0xff

	const writers = 12
	var wg sync.WaitGroup
	statuses := make([]int, writers)
	for i := range writers {
		wg.Go(func() {
			body, repo := data, fmt.Sprintf("r%d", i%3)
			if i%4 == 3 { // a quarter of them lie about their bytes
				body = corrupt
			}
			// Chunked, so sessions interleave on the server.
			loc := c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil).Header.Get("Location")
			half := len(body) / 2
			c.do("PATCH", loc, header{"Content-Range": fmt.Sprintf("0-%d", half-1)}, body[:half])
			statuses[i] = c.do("PUT", withDigest(loc, d), header{"Content-Range": fmt.Sprintf("%d-%d", half, len(body)-1)}, body[half:]).StatusCode
		})
	}
	wg.Wait()
	for i, st := range statuses {
		want := 201
		if i%4 == 3 {
			want = 400
		}
		if st != want {
			t.Errorf("writer %d: status %d, want %d", i, st, want)
		}
	}
	blobs, tmp := c.storeFiles()
	if len(blobs) != 1 || len(tmp) != 0 {
		t.Errorf("store: blobs %v tmp %v, want exactly one blob", blobs, tmp)
	}
	for _, repo := range []string{"r0", "r1", "r2"} {
		if got := c.do("GET", "/v2/"+repo+"/blobs/"+d, nil, nil).expect(t, 200, ""); string(got.body) != string(data) {
			t.Errorf("%s: stored blob differs", repo)
		}
	}
}

func TestHostileRequests(t *testing.T) {
	c := newClient(t, origin.Config{})
	d := c.pushBlob("r", []byte("content"))
	tests := []struct {
		method, path string
		h            header
		status       int
		code         string
	}{
		// RFC 9110 lets a server ignore a Range it will not serve: the
		// client gets the whole, verified blob rather than an error.
		{"GET", "/v2/r/blobs/" + d, header{"Range": "bytes=0-1,3-4"}, 200, ""},
		{"GET", "/v2/r/blobs/" + d, header{"Range": "bytes=99999999999999999999-"}, 200, ""},
		{"GET", "/v2/r/blobs/../../etc/passwd", nil, 404, "UNSUPPORTED"},
		{"GET", "/v2/r/blobs/sha256:" + strings.Repeat("0", 63) + "/", nil, 404, "UNSUPPORTED"},
		{"GET", "/v2/r/manifests/" + strings.Repeat("x", 100), nil, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/r/manifests/" + strings.Repeat("x", 5000), nil, 400, "NAME_INVALID"},
		{"GET", "/v2/_catalog?n=abc", nil, 400, "UNSUPPORTED"},
		{"PATCH", "/v2/r/blobs/uploads/..%2F..%2Fx", nil, 404, ""},
		{"POST", "/v2/r/blobs/uploads/?mount=sha256:xyz&from=other", nil, 400, "DIGEST_INVALID"},
		{"PUT", "/v2/r/blobs/" + d, nil, 405, "UNSUPPORTED"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
			r := c.do(tc.method, tc.path, tc.h, nil)
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.StatusCode, tc.status, r.body)
			}
			if tc.code != "" && errorCode(r.body) != tc.code {
				t.Fatalf("code %q, want %q", errorCode(r.body), tc.code)
			}
		})
	}
}

// waitFor polls cond for up to five seconds: the server notices a dropped
// connection asynchronously.
