package upstream

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/tlsconfig"
	"github.com/shoal-project/shoal/pkg/upstream/registrytest"
)

// fakeClock is the time a Registry sees; tests move it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestTagTTLAndBackgroundRefresh, against a real docker-registry: a tag is
// asked once per TTL; in the last quarter of the TTL a pull is answered
// from memory while the tag is asked again in the background, which picks
// up a tag moved upstream; past the TTL with the upstream gone, the last
// digest is served.
func TestTagTTLAndBackgroundRefresh(t *testing.T) {
	reg := registrytest.Start(t)
	first := reg.Push("library/app", "1", 1<<10)
	set, err := NewSet([]Config{{
		Namespace: "registry.test", URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile}, TagTTL: time.Hour,
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	r, urepo, ok := set.Lookup("registry.test/library/app")
	if !ok || urepo != "library/app" {
		t.Fatalf("Lookup: %v %q", ok, urepo)
	}
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	r.now = clock.now
	ctx := context.Background()
	none := func(context.Context) (digest.Digest, bool) { return "", false }
	heads := func() int { return reg.Requests("HEAD", "/manifests/1") }
	resolve := func(want string) {
		t.Helper()
		d, err := r.ResolveTag(ctx, urepo, "1", none)
		if err != nil || d.String() != want {
			t.Fatalf("ResolveTag: %s %v, want %s", d, err, want)
		}
	}

	steps := []struct {
		name    string
		advance time.Duration
		push    bool // move the tag upstream first
		want    func() string
		heads   int // upstream HEADs after the step (background ones waited for)
	}{
		// Two: the registry's Basic challenge, then the HEAD with
		// credentials, which are sent up front from then on.
		{"first pull asks", 0, false, func() string { return first.Manifest }, 2},
		{"within the TTL: memory", 30 * time.Minute, false, func() string { return first.Manifest }, 2},
		{"last quarter: memory, refreshed behind", 16 * time.Minute, true, func() string { return first.Manifest }, 3},
	}
	var second *registrytest.Image
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.add(st.advance)
			if st.push {
				second = reg.Push("library/app", "1", 2<<10)
			}
			resolve(st.want())
			deadline := time.Now().Add(10 * time.Second)
			for heads() < st.heads && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := heads(); got != st.heads {
				t.Fatalf("%d upstream HEADs, want %d", got, st.heads)
			}
		})
	}
	// The refresh saw the moved tag; wait for it to land, then no request.
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, _ := r.ResolveTag(ctx, urepo, "1", none)
		if d.String() == second.Manifest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background refresh did not pick up the moved tag: %s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := heads(); got != 3 {
		t.Fatalf("%d HEADs after the refresh, want 3", got)
	}
	reg.Stop()
	clock.add(2 * time.Hour)
	resolve(second.Manifest) // upstream gone: the last digest known
}

// FetchBlob asks whether the blob is held inside the shared fetch, before
// the upstream: an ask right after a fetch stored it costs no second GET.
func TestFetchBlobHeld(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.Push("library/app", "1", 1<<10)
	set, err := NewSet([]Config{{
		Namespace: "registry.test", URL: reg.URL, Username: reg.User, PasswordFile: reg.PasswordFile,
		TLS: tlsconfig.Files{CAFile: reg.CAFile},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	r, urepo, _ := set.Lookup("registry.test/library/app")
	d := digest.Digest(img.Layers[0])
	stored := map[digest.Digest][]byte{}
	held := func(_ context.Context, d digest.Digest) bool { _, ok := stored[d]; return ok }
	store := func(_ context.Context, d digest.Digest, body io.Reader, _ int64) error {
		b, err := io.ReadAll(body)
		stored[d] = b
		return err
	}
	gets := 0
	for k := range 3 {
		if err := r.FetchBlob(t.Context(), urepo, d, held, store); err != nil {
			t.Fatalf("fetch %d: %v", k, err)
		}
		if k == 0 {
			// Its first request may be answered 401 and asked again
			// with credentials.
			gets = reg.BlobGETs(string(d))
		}
	}
	if n := reg.BlobGETs(string(d)); gets == 0 || n != gets || !bytes.Equal(stored[d], img.Blobs[string(d)]) {
		t.Errorf("a blob held after the first fetch: %d upstream GETs after it, %d after two more", gets, n)
	}
}
