package origin_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/origin"
	"github.com/shoal-project/shoal/pkg/origin/origintest"
)

// BenchmarkOrigin1GiB pushes and pulls one blob (1 GiB, or
// SHOAL_BENCH_SIZE bytes) through a real origin on loopback and, in the same
// run, moves the same bytes over a bare loopback TCP socket. Machines are
// noisy, so the figure that matters is the ratio printed at the end, not the
// absolute MB/s. CPU is for the whole process (client and server both), per
// GB moved.
func BenchmarkOrigin1GiB(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("SHOAL_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("SHOAL_BENCH_SIZE=%q", s)
		}
		size = n
	}
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	sum := sha256.Sum256(data)
	dgst := "sha256:" + hex.EncodeToString(sum[:])

	cfg := origin.Config{MaxBlobSize: size, DataDir: b.TempDir()}
	o := origintest.Start(b, cfg)
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	b.Cleanup(hc.CloseIdleConnections)

	type result struct{ mbps, cpuPerGB float64 }
	results := map[string]result{}
	var order []string
	measure := func(name string, setup, op func(b *testing.B)) {
		order = append(order, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			var cpu time.Duration
			var elapsed time.Duration
			for range b.N {
				if setup != nil {
					b.StopTimer()
					setup(b)
					b.StartTimer()
				}
				c0, t0 := cpuTime(), time.Now()
				op(b)
				elapsed += time.Since(t0)
				cpu += cpuTime() - c0
			}
			gb := float64(size) * float64(b.N) / 1e9
			r := result{mbps: gb * 1e3 / elapsed.Seconds(), cpuPerGB: cpu.Seconds() / gb}
			results[name] = r
			b.ReportMetric(r.cpuPerGB, "cpu-s/GB")
		})
	}

	// Baselines: a bare TCP connection on loopback carrying the same bytes;
	// into memory, through sha256, and into a file that is fsynced (what a
	// durable push cannot beat).
	measure("raw", nil, func(b *testing.B) { rawTCP(b, bytes.NewReader(data), discard{}) })
	tmp := b.TempDir()
	measure("raw-fsync", nil, func(b *testing.B) {
		f, err := os.Create(filepath.Join(tmp, "sink"))
		if err != nil {
			b.Fatal(err)
		}
		rawTCP(b, bytes.NewReader(data), f)
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(f.Name())
	})
	measure("raw-sha256", nil, func(b *testing.B) {
		h := sha256.New()
		rawTCP(b, bytes.NewReader(data), h)
		if !bytes.Equal(h.Sum(nil), sum[:]) {
			b.Fatal("raw copy corrupted the bytes")
		}
	})

	// The origin: monolithic push (hash, piece hashes, fsync, rename), then
	// pulls with and without the client checking the digest. The stored blob
	// is removed before each push so every iteration does the full commit.
	blobFile := blobPath(o.DataDir, dgst)
	push := func(b *testing.B) {
		req, _ := http.NewRequest("POST", o.URL+"/v2/bench/blob/blobs/uploads/?digest="+dgst, bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("push: %s", resp.Status)
		}
	}
	measure("push", func(b *testing.B) { os.Remove(blobFile) }, push)
	// Pulls need the blob; -bench may have skipped push.
	stored := func(b *testing.B) {
		if _, err := os.Stat(blobFile); err != nil {
			push(b)
		}
	}
	pull := func(b *testing.B, w io.Writer) {
		resp, err := hc.Get(o.URL + "/v2/bench/blob/blobs/" + dgst)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.CopyBuffer(w, resp.Body, make([]byte, 256<<10))
		if err != nil || n != size || resp.StatusCode != 200 {
			b.Fatalf("pull: %s, %d bytes, %v", resp.Status, n, err)
		}
	}
	measure("pull", stored, func(b *testing.B) { pull(b, discard{}) })
	measure("pull-verify", stored, func(b *testing.B) {
		h := sha256.New()
		pull(b, h)
		if !bytes.Equal(h.Sum(nil), sum[:]) {
			b.Fatal("pulled bytes do not match the digest")
		}
	})

	// A restarted origin has verified nothing yet: its first pull hashes the
	// blob while sending it, where later ones use sendfile.
	parent := b
	measure("pull-cold", func(b *testing.B) {
		stored(b)
		if err := o.Stop(); err != nil {
			b.Fatal(err)
		}
		hc.CloseIdleConnections()
		o = origintest.Start(parent, cfg)
	}, func(b *testing.B) { pull(b, discard{}) })

	var report strings.Builder
	fmt.Fprintf(&report, "\n%-12s %8s %20s %9s\n", "", "MB/s", "vs baseline", "cpu-s/GB")
	baseline := map[string]string{
		"raw-sha256": "raw", "raw-fsync": "raw", "push": "raw-fsync",
		"pull": "raw", "pull-verify": "raw-sha256", "pull-cold": "raw-sha256",
	}
	for _, name := range order {
		r, ok := results[name]
		if !ok {
			continue
		}
		ratio := ""
		if base, ok := results[baseline[name]]; ok {
			ratio = fmt.Sprintf("%.2f × %s", r.mbps/base.mbps, baseline[name])
		}
		fmt.Fprintf(&report, "%-12s %8.0f %20s %9.2f\n", name, r.mbps, ratio, r.cpuPerGB)
	}
	fmt.Print(report.String())
}

// rawTCP copies src through a fresh loopback TCP connection into dst.
func rawTCP(b *testing.B, src io.Reader, dst io.Writer) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	sent := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- err
			return
		}
		_, err = io.Copy(c, src)
		c.Close()
		sent <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := io.CopyBuffer(dst, c, make([]byte, 256<<10)); err != nil {
		b.Fatal(err)
	}
	if err := <-sent; err != nil {
		b.Fatal(err)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discard is io.Discard without ReadFrom, whose 8 KiB buffer would make
// every read a small syscall; real clients read in large buffers.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
