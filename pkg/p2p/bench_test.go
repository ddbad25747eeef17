package p2p_test

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/p2p"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const benchPieces, benchPieceLen = 64, 4 << 20 // 256 MiB in 4 MiB pieces

func report(b *testing.B, c0 time.Duration, t0 time.Time) {
	bytes := float64(b.N) * benchPieces * benchPieceLen
	b.ReportMetric(bytes/time.Since(t0).Seconds()/1e6, "MB/s")
	b.ReportMetric((cpuTime()-c0).Seconds()/(bytes/1e9), "cpu-s/GB")
}

// BenchmarkPiecesLibp2p moves a 256 MiB blob as 4 MiB pieces on one
// /shoal/pieces/1 stream (TCP + TLS 1.3 + yamux); BenchmarkRawTCP is the
// baseline in the same run: the same bytes over a plain loopback socket.
func BenchmarkPiecesLibp2p(b *testing.B) {
	seeder, leecher := newHost(b, p2p.HostConfig{}), newHost(b, p2p.HostConfig{})
	piece := make([]byte, benchPieceLen)
	pieces := make([][]byte, benchPieces)
	for i := range pieces {
		pieces[i] = piece
	}
	serve(seeder, pieces)
	ctx := context.Background()
	if err := connect(ctx, leecher, seeder); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchPieces * benchPieceLen)
	c0, t0 := cpuTime(), time.Now()
	b.ResetTimer()
	for range b.N {
		fetch(ctx, b, leecher, seeder.ID(), benchPieces, benchPieceLen, true)
	}
	b.StopTimer()
	report(b, c0, t0)
}

func BenchmarkRawTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	piece := make([]byte, benchPieceLen)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range benchPieces {
					if _, err := c.Write(piece); err != nil {
						return
					}
				}
			}()
		}
	}()
	buf := make([]byte, benchPieceLen)
	b.SetBytes(benchPieces * benchPieceLen)
	c0, t0 := cpuTime(), time.Now()
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		for range benchPieces {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
	}
	b.StopTimer()
	report(b, c0, t0)
}
