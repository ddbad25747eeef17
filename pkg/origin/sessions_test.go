package origin_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-project/shoal/pkg/auth"
	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
	"github.com/shoal-project/shoal/pkg/proctest"
)

// httpFrom is a client whose connections come from the loopback address
// ip, so one test process can be several clients by address.
func httpFrom(t *testing.T, ip string, conns int) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	hc := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: conns},
	}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// flooder opens upload sessions and never uses them.
type flooder struct {
	ip, user, pass string
	posts          int
}

// flood sends f.posts POSTs over a few connections and counts the answers.
// Every refusal must be a proper OCI 429 with a Retry-After.
func flood(t *testing.T, base string, f flooder) (accepted, refused int) {
	t.Helper()
	const workers = 8
	hc := httpFrom(t, f.ip, workers)
	var ok, no atomic.Int64
	var wg sync.WaitGroup
	next := make(chan struct{}, f.posts)
	for range f.posts {
		next <- struct{}{}
	}
	close(next)
	for range workers {
		wg.Go(func() {
			for range next {
				req, _ := http.NewRequest("POST", base+"/v2/flood/blobs/uploads/", nil)
				if f.user != "" {
					req.SetBasicAuth(f.user, f.pass)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("POST: %v", err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusAccepted:
					ok.Add(1)
				case http.StatusTooManyRequests:
					if code := errorCode(body); code != "TOOMANYREQUESTS" {
						t.Errorf("429 with error code %q: %s", code, body)
						return
					}
					if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
						t.Errorf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
						return
					}
					no.Add(1)
				default:
					t.Errorf("POST: status %d: %s", resp.StatusCode, body)
					return
				}
			}
		})
	}
	wg.Wait()
	hc.CloseIdleConnections()
	return int(ok.Load()), int(no.Load())
}

// pushAndPull uploads a blob in two chunks (so the session is parked and
// taken back between requests) and reads it back.
func pushAndPull(t *testing.T, hc *http.Client, base, user, pass string) error {
	t.Helper()
	blob := bytes.Repeat([]byte("a layer after the flood "), 40_000)
	d := sha(blob)
	send := func(method, url string, body []byte, h header) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := send("POST", base+"/v2/app/blobs/uploads/", nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		return &statusError{"POST", resp.StatusCode, body}
	}
	loc := base + resp.Header.Get("Location")
	half := len(blob) / 2
	resp, body = send("PATCH", loc, blob[:half], header{"Content-Type": "application/octet-stream",
		"Content-Range": "0-" + strconv.Itoa(half-1)})
	if resp.StatusCode != http.StatusAccepted {
		return &statusError{"PATCH", resp.StatusCode, body}
	}
	loc = base + resp.Header.Get("Location")
	resp, body = send("PUT", loc+"?digest="+d, blob[half:], header{"Content-Type": "application/octet-stream",
		"Content-Range": strconv.Itoa(half) + "-" + strconv.Itoa(len(blob)-1)})
	if resp.StatusCode != http.StatusCreated {
		return &statusError{"PUT", resp.StatusCode, body}
	}
	resp, body = send("GET", base+"/v2/app/blobs/"+d, nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		return &statusError{"GET", resp.StatusCode, nil}
	}
	return nil
}

type statusError struct {
	op     string
	status int
	body   []byte
}

func (e *statusError) Error() string {
	return e.op + ": status " + strconv.Itoa(e.status) + ": " + string(e.body)
}

// The flood of issue #13: many sessions opened and left idle. Each holds no
// descriptor, the excess is refused with an OCI 429, and pushes and pulls
// still work afterwards — at once for another client, after the idle
// timeout when the flood filled the whole origin.
func TestUploadSessionFlood(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("flood:"+string(hash)+"\nci:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const perClient, total = 200, 600
	tests := []struct {
		name     string
		auth     auth.Config
		flood    []flooder
		accepted int
		// then: who pushes, and whether the push must wait for the
		// flood's sessions to expire.
		pushIP, pushUser string
		// idle is the session idle timeout: long enough that no flood
		// session expires while the flood is counted.
		idle     time.Duration
		waitIdle bool
	}{
		{
			name:     "anonymous, one address",
			flood:    []flooder{{ip: "127.0.0.2", posts: 2000}},
			accepted: perClient,
			pushIP:   "127.0.0.3", idle: time.Minute,
		},
		{
			name: "one authenticated user",
			auth: auth.Config{Mode: auth.ModeHtpasswd, Htpasswd: htpasswd, AnonymousPull: true},
			// Fewer posts: each checks a bcrypt password.
			flood: []flooder{{ip: "127.0.0.2", user: "flood", pass: "pw", posts: perClient + 50}},
			// Same address, another user: the cap is per user.
			accepted: perClient, pushIP: "127.0.0.2", pushUser: "ci", idle: time.Minute,
		},
		{
			name: "many addresses fill the origin",
			flood: []flooder{{ip: "127.0.0.4", posts: perClient}, {ip: "127.0.0.5", posts: perClient},
				{ip: "127.0.0.6", posts: perClient}, {ip: "127.0.0.7", posts: perClient}},
			accepted: total,
			pushIP:   "127.0.0.8", idle: 5 * time.Second, waitIdle: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := origintest.Start(t, origin.Config{
				Auth: tt.auth, MaxUploadSessions: total, MaxUploadSessionsPerClient: perClient,
				UploadIdleTimeout: tt.idle,
			})
			before := proctest.OpenFDs(t)
			accepted, refused, posts := 0, 0, 0
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for _, f := range tt.flood {
				a, r := flood(t, o.URL, f)
				accepted, refused, posts = accepted+a, refused+r, posts+f.posts
			}
			if t.Failed() || ctx.Err() != nil {
				t.Fatalf("flood did not finish cleanly (%v)", ctx.Err())
			}
			if accepted != tt.accepted || accepted+refused != posts {
				t.Fatalf("%d sessions accepted, %d refused of %d; want %d accepted", accepted, refused, posts, tt.accepted)
			}
			if got := counterSum(t, o, "shoal_origin_upload_sessions_refused_total"); got != float64(refused) {
				t.Errorf("refusals counted %v, want %d", got, refused)
			}
			// Each session holds its temp file on disk, not open.
			if grown := proctest.OpenFDs(t) - before; grown > 48 {
				t.Fatalf("%d idle sessions hold %d more descriptors", accepted, grown)
			}
			hc := httpFrom(t, tt.pushIP, 2)
			if tt.waitIdle {
				err := pushAndPull(t, hc, o.URL, tt.pushUser, "pw")
				if se, ok := err.(*statusError); !ok || se.status != http.StatusTooManyRequests {
					t.Fatalf("a new client while the origin was full: %v, want a 429", err)
				}
				for ctx.Err() == nil && gauge(t, o, "shoal_origin_uploads_in_progress") > 0 {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if err := pushAndPull(t, hc, o.URL, tt.pushUser, "pw"); err != nil {
				t.Fatalf("push and pull after the flood: %v", err)
			}
		})
	}
}

// counterSum adds up every series of a counter in the origin's registry.
func counterSum(t *testing.T, o *origintest.Origin, name string) float64 {
	t.Helper()
	mfs, err := o.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
