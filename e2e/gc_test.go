package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/proctest"
)

// gcGrace is the grace period of the GC tests' origins: short, so a test
// waits little, and far above the time a push here takes.
const gcGrace = 2 * time.Second

// gcOrigin is one origin of a GC test cluster.
type gcOrigin struct {
	*proctest.Proc
	id, addr, dir, config string
	args                  []string
}

// gcCluster runs three origins with real etcd (Debian etcd processes),
// two owners per blob, and a short grace period; gcYAML is more of the
// origins' `gc:` section.
type gcCluster struct {
	origins []*gcOrigin
	secret  string
}

func startGCCluster(t *testing.T, gcYAML string, extra ...string) *gcCluster {
	t.Helper()
	etcd := etcdtest.StartCluster(t, 1)
	dir := t.TempDir()
	c := &gcCluster{secret: clusterSecret(t, dir)}
	for i := range 3 {
		o := &gcOrigin{id: fmt.Sprintf("o%d", i), addr: proctest.FreeAddr(t), dir: filepath.Join(dir, fmt.Sprintf("o%d", i))}
		if err := os.MkdirAll(o.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		o.config = filepath.Join(o.dir, "origin.yaml")
		cfg := fmt.Sprintf("member_ttl: 5s\ngc:\n  grace: %s\n%s", gcGrace, gcYAML)
		if err := os.WriteFile(o.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		o.args = []string{"--config", o.config, "--id", o.id, "--addr", o.addr, "--advertise", o.addr,
			"--data-dir", filepath.Join(o.dir, "data"), "--etcd-endpoints", strings.Join(etcd.Endpoints, ","),
			"--replicas", "2", "--cluster-secret-file", c.secret}
		o.args = append(o.args, extra...)
		o.start(t)
		c.origins = append(c.origins, o)
	}
	// Every origin sees the others before the test pushes.
	for _, o := range c.origins {
		waitMetric(t, o.addr, "shoal_origin_cluster_members", 3, 30*time.Second)
	}
	return c
}

func (o *gcOrigin) start(t *testing.T) {
	t.Helper()
	o.Proc = proctest.Start(t, proctest.Binary(t, "origin"), o.args...)
	o.WaitReady("http://"+o.addr+"/readyz", 30*time.Second)
}

// holds reports whether the origin's store has d.
func (o *gcOrigin) holds(t *testing.T, d digest.Digest) bool {
	return holdsBlob(t, filepath.Join(o.dir, "data"), string(d))
}

// gc runs `shoal-origin gc` against origin i and returns its output.
func (c *gcCluster) gc(t *testing.T, i int, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"gc", "--origin", c.origins[i].addr, "--cluster-secret-file", c.secret}, extra...)
	out, err := exec.Command(proctest.Binary(t, "origin"), args...).CombinedOutput()
	return string(out), err
}

// gcImage is a pushed image: its manifest and the blobs it references.
type gcImage struct {
	repo, tag string
	manifest  digest.Digest
	blobs     []digest.Digest
}

func randomBlob(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// putBlob uploads b to repo unless the repository already has it (HEAD
// first, as crane and containerd's pushers do).
func putBlob(addr, repo string, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	resp, err := http.Head("http://" + addr + "/v2/" + repo + "/blobs/" + string(d))
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return d, nil
	}
	resp, err = http.Post("http://"+addr+"/v2/"+repo+"/blobs/uploads/?digest="+string(d), "application/octet-stream", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("upload %s: %s: %s", d, resp.Status, msg)
	}
	return d, nil
}

// mounts counts mountBlob's outcomes: linked by the mount, or uploaded
// because the source repository had lost the blob.
var mounts struct{ linked, uploaded atomic.Int64 }

// mountBlob links b into repo from repository from with a cross-repository
// mount; when from no longer has it (GC took it) the origin opens an
// upload session instead, and b is uploaded into it.
func mountBlob(addr, repo, from string, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	resp, err := http.Post("http://"+addr+"/v2/"+repo+"/blobs/uploads/?mount="+string(d)+"&from="+from, "", nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		mounts.linked.Add(1)
		return d, nil
	case http.StatusAccepted:
		mounts.uploaded.Add(1)
	default:
		return "", fmt.Errorf("mount %s: %s", d, resp.Status)
	}
	loc := resp.Header.Get("Location")
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+loc+"?digest="+string(d), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("upload %s after a refused mount: %s", d, resp.Status)
	}
	return d, nil
}

type desc struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int           `json:"size"`
}

// pushGCImage pushes config and layers (each uploaded unless present) and an
// OCI manifest for them under tag, with subject when not nil.
func pushGCImage(addr, repo, tag string, config []byte, layers [][]byte, subject *desc) (gcImage, error) {
	return pushGCImageFrom(addr, repo, tag, "", config, layers, subject)
}

// pushGCImageFrom is pushGCImage that mounts the layers from repository
// from when it is not empty.
func pushGCImageFrom(addr, repo, tag, from string, config []byte, layers [][]byte, subject *desc) (gcImage, error) {
	img := gcImage{repo: repo, tag: tag}
	cd, err := putBlob(addr, repo, config)
	if err != nil {
		return img, err
	}
	m := map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{"application/vnd.oci.image.config.v1+json", cd, len(config)},
	}
	img.blobs = append(img.blobs, cd)
	var ls []desc
	for _, l := range layers {
		put := putBlob
		if from != "" {
			put = func(addr, repo string, b []byte) (digest.Digest, error) { return mountBlob(addr, repo, from, b) }
		}
		ld, err := put(addr, repo, l)
		if err != nil {
			return img, err
		}
		ls = append(ls, desc{"application/vnd.oci.image.layer.v1.tar", ld, len(l)})
		img.blobs = append(img.blobs, ld)
	}
	m["layers"] = ls
	if subject != nil {
		m["subject"] = subject
		m["artifactType"] = "application/vnd.example.signature"
	}
	body, _ := json.Marshal(m)
	img.manifest = digest.FromBytes(body)
	ref := tag
	if ref == "" {
		ref = string(img.manifest)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return img, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		return img, fmt.Errorf("put manifest %s: %s: %s", ref, resp.Status, msg)
	}
	return img, nil
}

func deleteManifest(t *testing.T, addr, repo string, d digest.Digest) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, "http://"+addr+"/v2/"+repo+"/manifests/"+string(d), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete %s@%s: %s", repo, d, resp.Status)
	}
}

// readable checks, through origin addr's /v2, that img's manifest and
// every blob of it are served whole and hash to their digests.
func readable(addr string, img gcImage) error {
	for _, d := range append([]digest.Digest{img.manifest}, img.blobs...) {
		kind := "blobs"
		if d == img.manifest {
			kind = "manifests"
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/"+img.repo+"/"+kind+"/"+string(d), nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s via %s: %s %v", kind, d, addr, resp.Status, err)
		}
		if digest.FromBytes(b) != d {
			return fmt.Errorf("%s %s via %s: bytes hash to %s", kind, d, addr, digest.FromBytes(b))
		}
	}
	return nil
}

// TestGCCluster: on three origins, a deleted image's blobs, a referrer of
// it (with its own blobs), an upload nobody referenced and a leaked
// upload temp file are removed from every origin; the image that is still
// tagged, sharing a layer with the deleted one, stays on its owners and
// pulls with crane. A dry run first removes nothing.
func TestGCCluster(t *testing.T) {
	c := startGCCluster(t, "  temp_max_age: 1s\n  deletes_per_second: -1\n  retention:\n    - repositories: team/ci\n      keep_last: 1\n")
	o0 := c.origins[0].addr
	ci1, err := pushGCImage(o0, "team/ci", "build-1", randomBlob(202), [][]byte{randomBlob(4500)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ci2, err := pushGCImage(o0, "team/ci", "build-2", randomBlob(203), [][]byte{randomBlob(4600)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	shared := randomBlob(3000)
	a, err := pushGCImage(o0, "team/app", "a", randomBlob(200), [][]byte{randomBlob(5000), shared}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pushGCImage(c.origins[1].addr, "team/app", "b", randomBlob(201), [][]byte{shared, randomBlob(7000)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := pushGCImage(o0, "team/app", "", randomBlob(100), [][]byte{randomBlob(300)},
		&desc{"application/vnd.oci.image.manifest.v1+json", b.manifest, 0})
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := putBlob(c.origins[2].addr, "team/app", randomBlob(4000))
	if err != nil {
		t.Fatal(err)
	}
	leaked := filepath.Join(c.origins[1].dir, "data", "blobstore", "tmp", "blob-leaked")
	if err := os.WriteFile(leaked, randomBlob(1000), 0o644); err != nil {
		t.Fatal(err)
	}
	deleteManifest(t, o0, "team/app", b.manifest)

	keep := append([]digest.Digest{a.manifest, ci2.manifest}, append(a.blobs, ci2.blobs...)...)
	gone := []digest.Digest{b.manifest, b.blobs[0], b.blobs[2], sig.manifest, orphan, ci1.manifest}
	gone = append(gone, sig.blobs...)
	gone = append(gone, ci1.blobs...)
	time.Sleep(gcGrace + 500*time.Millisecond)

	// The internal endpoint wants the cluster secret.
	wrong := filepath.Join(t.TempDir(), "wrong-secret")
	os.WriteFile(wrong, []byte(rand.Text()+"\n"), 0o600)
	refused, err := exec.Command(proctest.Binary(t, "origin"), "gc", "--origin", o0, "--cluster-secret-file", wrong).CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "401") {
		t.Errorf("gc with a wrong secret: %v\n%s", err, refused)
	}

	out, err := c.gc(t, 0, "--dry-run")
	t.Logf("gc --dry-run:\n%s", out)
	if err != nil {
		t.Fatalf("gc --dry-run: %v", err)
	}
	if !strings.Contains(out, "dry run: nothing was removed") || !strings.Contains(out, "manifest team/app@"+string(sig.manifest)) {
		t.Errorf("dry run output lacks the dry-run line or the referrer")
	}
	for _, d := range gone {
		n := 0
		for _, o := range c.origins {
			if o.holds(t, d) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("dry run removed %s", d)
		}
		if !strings.Contains(out, string(d)) && d != b.manifest && d != ci1.manifest {
			t.Errorf("dry run does not list %s", d)
		}
	}
	if _, err := os.Stat(leaked); err != nil {
		t.Errorf("dry run removed the leaked temp file: %v", err)
	}

	out, err = c.gc(t, 0)
	t.Logf("gc:\n%s", out)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	for _, d := range gone {
		for _, o := range c.origins {
			if o.holds(t, d) {
				t.Errorf("%s still holds %s after gc", o.id, d)
			}
		}
	}
	for _, d := range keep {
		n := 0
		for _, o := range c.origins {
			if o.holds(t, d) {
				n++
			}
		}
		if n < 2 {
			t.Errorf("%s is on %d origins after gc, want its 2 owners", d, n)
		}
	}
	if _, err := os.Stat(leaked); !os.IsNotExist(err) {
		t.Errorf("leaked temp file still there: %v", err)
	}
	for _, o := range c.origins {
		for _, img := range []gcImage{a, ci2} {
			if err := readable(o.addr, img); err != nil {
				t.Errorf("kept image: %v", err)
			}
		}
		pulled := filepath.Join(t.TempDir(), "a.tar")
		if out, err := exec.Command("crane", "pull", o.addr+"/team/app:a", pulled).CombinedOutput(); err != nil {
			t.Errorf("crane pull from %s: %v\n%s", o.id, err, out)
		}
	}
	if out, err := exec.Command("crane", "manifest", o0+"/team/app:b").CombinedOutput(); err == nil {
		t.Errorf("deleted tag b still resolves: %s", out)
	}
	var deleted, reclaimed, runs float64
	for _, o := range c.origins {
		deleted += metric(t, o.addr, "shoal_origin_gc_blobs_deleted_total")
		reclaimed += metric(t, o.addr, "shoal_origin_gc_bytes_reclaimed_total")
		runs += metric(t, o.addr, "shoal_origin_gc_runs_total")
		if metric(t, o.addr, "shoal_origin_gc_last_success_timestamp_seconds") == 0 {
			t.Errorf("%s: no last success time", o.id)
		}
	}
	if want := float64(len(gone)); deleted < want {
		t.Errorf("gc_blobs_deleted_total over the cluster = %v, want at least one copy of each of %v victims", deleted, want)
	}
	if reclaimed < 7000 || runs != 6 {
		t.Errorf("bytes reclaimed %v (want ≥ 7000), runs %v (want 6: dry run and pass on 3 origins)", reclaimed, runs)
	}
	for _, want := range []string{"retention: 1 tags, 2 manifests removed", "tag      team/ci:build-1",
		"manifest team/app@" + string(sig.manifest), "manifest team/ci@" + string(ci1.manifest)} {
		if !strings.Contains(out, want) {
			t.Errorf("gc output lacks %q", want)
		}
	}
	logged := false
	for _, o := range c.origins {
		logged = logged || strings.Contains(o.Logs(), "keep_last=1")
	}
	if !logged {
		t.Error("no origin logged the rule that removed team/ci:build-1's manifest")
	}
}

// TestGCRacesPushes runs a pass, slowed to a few deletions a second,
// while 20 clients push images made of the pass's victims (half HEAD and
// upload what is missing, half mount it from the repository being
// emptied; then PUT the manifest, again on MANIFEST_BLOB_UNKNOWN), then
// checks every blob of every pushed image, through every origin, and
// again after a second pass.
func TestGCRacesPushes(t *testing.T) {
	// In sync mode a push returns once the owners hold its blobs; in
	// async mode the copies follow from a queue, racing the sweep too.
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) { racePushes(t, mode) })
	}
}

func racePushes(t *testing.T, replication string) {
	c := startGCCluster(t, "  deletes_per_second: 15\n", "--replication", replication)
	const victimsN, pushers, pushesEach = 20, 20, 15
	var layers [][]byte
	for i := range victimsN {
		l0, l1 := randomBlob(2000+i), randomBlob(3000+i)
		img, err := pushGCImage(c.origins[i%3].addr, "team/old", fmt.Sprintf("v%d", i), randomBlob(100+i), [][]byte{l0, l1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		deleteManifest(t, c.origins[0].addr, "team/old", img.manifest)
		layers = append(layers, l0, l1)
	}
	time.Sleep(gcGrace + 500*time.Millisecond)

	mounts.linked.Store(0)
	mounts.uploaded.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu              sync.Mutex
		pushed          []gcImage
		retries, failed atomic.Int64
		wg              sync.WaitGroup
	)
	for p := range pushers {
		wg.Go(func() {
			// Pushes while the pass runs, at most pushesEach: enough to
			// overlap its sweep on every origin.
			for n := 0; ctx.Err() == nil && n < pushesEach; n++ {
				addr := c.origins[(p+n)%3].addr
				reuse := [][]byte{layers[(p+n)%len(layers)], layers[(p+3*n+7)%len(layers)]}
				var img gcImage
				var err error
				for try := range 5 {
					// Odd pushers mount the layers from the repository
					// GC is emptying, as a CI job copying an image does.
					from := ""
					if p%2 == 1 {
						from = "team/old"
					}
					img, err = pushGCImageFrom(addr, "team/new", fmt.Sprintf("p%d-%d", p, n), from, randomBlob(64), reuse, nil)
					if err == nil {
						break
					}
					if try < 4 {
						retries.Add(1)
					}
				}
				if err != nil {
					failed.Add(1)
					t.Errorf("pusher %d: %v", p, err)
					return
				}
				mu.Lock()
				pushed = append(pushed, img)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	out, err := c.gc(t, 0)
	took := time.Since(start)
	cancel()
	wg.Wait()
	t.Logf("gc during pushes (%s):\n%s", took.Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	check := func(when string) {
		t.Helper()
		bad := 0
		for _, img := range pushed {
			for _, o := range c.origins {
				if err := readable(o.addr, img); err != nil {
					bad++
					t.Errorf("%s: %s:%s: %v", when, img.repo, img.tag, err)
				}
			}
		}
		t.Logf("%s: %d images pushed during the pass, %d blob references checked on 3 origins, %d unreadable",
			when, len(pushed), len(pushed)*4, bad)
	}
	check("after the racing pass")
	var kept float64
	for _, o := range c.origins {
		kept += metric(t, o.addr, "shoal_origin_gc_kept_total")
	}
	t.Logf("pushes %d (layers mounted %d, mount refused and uploaded %d), push retries %d, failed %d, victims kept because used again: %v",
		len(pushed), mounts.linked.Load(), mounts.uploaded.Load(), retries.Load(), failed.Load(), kept)
	if len(pushed) < pushers {
		t.Fatalf("only %d pushes during the pass", len(pushed))
	}
	time.Sleep(gcGrace + 500*time.Millisecond)
	if out, err := c.gc(t, 1); err != nil {
		t.Fatalf("second gc: %v\n%s", err, out)
	}
	check("after a second pass")
}

// TestGCKilledMidSweep kills (-9) the origin running a pass once it has
// deleted a few blobs; restarted, the next pass finishes the job and the
// tagged image is still whole everywhere.
func TestGCKilledMidSweep(t *testing.T) {
	c := startGCCluster(t, "  deletes_per_second: 8\n")
	o0 := c.origins[0]
	keep, err := pushGCImage(o0.addr, "team/app", "keep", randomBlob(300), [][]byte{randomBlob(6000), randomBlob(6001)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var victims []digest.Digest
	for i := range 10 {
		img, err := pushGCImage(c.origins[i%3].addr, "team/app", fmt.Sprintf("old%d", i), randomBlob(100+i), [][]byte{randomBlob(2000 + i), randomBlob(2100 + i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		deleteManifest(t, o0.addr, "team/app", img.manifest)
		victims = append(victims, append(img.blobs, img.manifest)...)
	}
	time.Sleep(gcGrace + 500*time.Millisecond)
	done := make(chan string, 1)
	go func() { out, _ := c.gc(t, 0); done <- out }()
	waitMetric(t, o0.addr, "shoal_origin_gc_blobs_deleted_total", 3, time.Minute)
	o0.Kill()
	out := <-done
	t.Logf("gc cut by kill -9 of %s:\n%s", o0.id, out)
	left := 0
	for _, d := range victims {
		for _, o := range c.origins {
			if o.holds(t, d) {
				left++
			}
		}
	}
	if left == 0 {
		t.Fatal("the pass finished before the kill; nothing to resume")
	}
	t.Logf("%d victim copies left after the kill", left)
	o0.start(t)
	for _, o := range c.origins {
		waitMetric(t, o.addr, "shoal_origin_cluster_members", 3, 30*time.Second)
	}
	// The ring changed twice (o0 left on its lease, came back): repair
	// copies blobs, garbage too, to their owners again. Let it settle, so
	// the pass below sees a store no repair adds to afterwards.
	c.settle(t)
	out, err = c.gc(t, 0)
	t.Logf("gc after restart:\n%s", out)
	if err != nil {
		t.Fatalf("gc after restart: %v", err)
	}
	for _, d := range victims {
		for _, o := range c.origins {
			if o.holds(t, d) {
				t.Errorf("%s still holds %s", o.id, d)
			}
		}
	}
	for _, o := range c.origins {
		if err := readable(o.addr, keep); err != nil {
			t.Errorf("kept image after the kill: %v", err)
		}
	}
}

// settle waits until no origin has copied a blob for two seconds.
func (c *gcCluster) settle(t *testing.T) {
	t.Helper()
	sum := func() float64 {
		var n float64
		for _, o := range c.origins {
			n += metric(t, o.addr, "shoal_origin_replications_total") + metric(t, o.addr, "shoal_origin_replication_queue")
		}
		return n
	}
	last, quiet := sum(), time.Now()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if n := sum(); n != last {
			last, quiet = n, time.Now()
		}
		if time.Since(quiet) > 2*time.Second {
			return
		}
	}
	t.Fatal("origins kept replicating for a minute")
}

// TestGCScheduled: with gc.interval every origin collects on its own, with
// no command; a deleted image leaves all of them, the tagged one stays.
func TestGCScheduled(t *testing.T) {
	c := startGCCluster(t, "  interval: 1s\n  deletes_per_second: -1\n")
	o0 := c.origins[0].addr
	keep, err := pushGCImage(o0, "team/app", "keep", randomBlob(300), [][]byte{randomBlob(3300)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	old, err := pushGCImage(o0, "team/app", "old", randomBlob(301), [][]byte{randomBlob(3301)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deleteManifest(t, o0, "team/app", old.manifest)
	victims := append([]digest.Digest{old.manifest}, old.blobs...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := 0
		for _, o := range c.origins {
			for _, d := range victims {
				if o.holds(t, d) {
					left++
				}
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d victim copies left after 30 s of scheduled passes", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, o := range c.origins {
		if err := readable(o.addr, keep); err != nil {
			t.Errorf("kept image: %v", err)
		}
		if metric(t, o.addr, "shoal_origin_gc_last_success_timestamp_seconds") == 0 {
			t.Errorf("%s: no scheduled pass succeeded", o.id)
		}
	}
}
