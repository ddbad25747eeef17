// Package httpservertest checks, over real connections, that a Shoal HTTP
// server lets go of clients that hold a connection and say nothing.
package httpservertest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// AssertClosesIdle dials addr twice: once to send nothing at all, once to
// GET path and then stay idle. The server must close each connection
// after at least atLeast and within within: its read-header timeout and its idle
// timeout, as the caller configured them.
func AssertClosesIdle(t *testing.T, addr, path string, atLeast, within time.Duration) {
	t.Helper()
	tests := []struct {
		name    string
		request bool
	}{
		{"silent connection", false},
		{"idle after a request", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			if tt.request {
				if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Close {
					t.Fatalf("GET %s: status %d, close %v; want a 200 kept alive", path, resp.StatusCode, resp.Close)
				}
			}
			start := time.Now()
			conn.SetReadDeadline(start.Add(within))
			_, err = br.ReadByte()
			took := time.Since(start)
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatalf("connection still open after %s", within)
			case err == nil:
				t.Fatal("the server sent bytes nobody asked for")
			case took < atLeast:
				t.Fatalf("closed after %s, before the %s configured", took, atLeast)
			}
		})
	}
}

// NonLoopbackIP is an IPv4 address of this machine that other machines
// could reach, for checking what a server shows beyond loopback; the test
// is skipped on a machine without one.
func NonLoopbackIP(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to test from")
	return nil
}

// Status GETs url and returns the status, or the error of a request that
// got none (a refused connection, say).
func Status(url string) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
