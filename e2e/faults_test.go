package e2e

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"
)

// pushBlob puts random bytes into team/app on the origin.
func pushBlob(t *testing.T, origin string, size int) ([]byte, string) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	request(t, nil, "POST", "http://"+origin+"/v2/team/app/blobs/uploads/?digest="+sha(b), "application/octet-stream", b)
	return b, sha(b)
}

func waitMetric(t *testing.T, addr, name string, atLeast float64, within time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if v := metric(t, addr, name); v >= atLeast {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s stayed under %.0f for %s", name, addr, atLeast, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An agent killed mid-download resumes from the pieces it verified.
func TestAgentResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	dir := t.TempDir()
	tr := startTracker(t, dir)
	// 8 MiB/s of seeding makes a 32 MiB blob take about 4 s.
	origin := startOrigin(t, dir, tr.etcd, "--upload-rate", "8388608")
	blob, d := pushBlob(t, origin, 32<<20)

	a := startAgent(t, dir, "agent", tr.grpc, origin, "")
	go a.get(d) // cut short by the kill
	got := waitMetric(t, a.addr, "shoal_agent_peer_bytes_total", 12<<20, 30*time.Second)
	time.Sleep(600 * time.Millisecond) // past one state save
	a.Kill()
	t.Logf("killed after %.1f MiB of 32", got/(1<<20))

	a.restart(t)
	body, err := a.get(d)
	if err != nil || !bytes.Equal(body, blob) {
		t.Fatalf("after restart: %v, %d bytes", err, len(body))
	}
	again := metric(t, a.addr, "shoal_agent_peer_bytes_total") + metric(t, a.addr, "shoal_agent_origin_bytes_total")
	t.Logf("after restart fetched %.1f MiB of 32", again/(1<<20))
	if again > float64(len(blob))-8<<20 {
		t.Fatalf("restart fetched %.1f MiB of 32: the %.1f MiB verified before the kill were not reused", again/(1<<20), got/(1<<20))
	}
}

// A tracker killed mid-download: agents finish from the peers they have
// and the origin.
func TestTrackerLossMidDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	dir := t.TempDir()
	tr := startTracker(t, dir)
	origin := startOrigin(t, dir, tr.etcd, "--upload-rate", "8388608")
	blob, d := pushBlob(t, origin, 24<<20)

	// One agent holds the blob and seeds it slowly; two more start.
	seedCap := "upload_rate: 8388608\nswarm:\n  stall_timeout: 3s\n"
	first := startAgent(t, dir, "first", tr.grpc, origin, seedCap)
	if body, err := first.get(d); err != nil || !bytes.Equal(body, blob) {
		t.Fatalf("first agent: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // announced complete
	late := []agentProc{
		startAgent(t, dir, "b", tr.grpc, origin, seedCap),
		startAgent(t, dir, "c", tr.grpc, origin, seedCap),
	}
	results := make(chan error, len(late))
	for _, a := range late {
		go func() {
			body, err := a.get(d)
			if err == nil && !bytes.Equal(body, blob) {
				err = errBytes
			}
			results <- err
		}()
	}
	waitMetric(t, late[0].addr, "shoal_agent_peer_bytes_total", 4<<20, 30*time.Second)
	tr.Kill()
	start := time.Now()
	for range late {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("agents did not finish after the tracker died")
		}
	}
	for _, a := range late {
		t.Logf("%s: %.1f MiB from peers, %.1f MiB from the origin's /v2", a.dir,
			metric(t, a.addr, "shoal_agent_peer_bytes_total")/(1<<20), metric(t, a.addr, "shoal_agent_origin_bytes_total")/(1<<20))
	}
	t.Logf("finished %s after the tracker died", time.Since(start).Round(time.Millisecond))
}

var errBytes = bytesError("wrong bytes")

type bytesError string

func (e bytesError) Error() string { return string(e) }
