// Package proctest runs Shoal's real executables in tests: build (or take
// the ones `make test` built), start, wait for health, signal, and keep
// their logs for failure messages.
package proctest

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the shoal-<component> executable: the one `make test`
// built (in $SHOAL_BIN), or a fresh build for a plain `go test`.
func Binary(t testing.TB, component string) string {
	t.Helper()
	name := "shoal-" + component
	if dir := os.Getenv("SHOAL_BIN"); dir != "" {
		return filepath.Join(dir, name)
	}
	out := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", out, "github.com/shoal-project/shoal/cmd/"+component)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", component, err, b)
	}
	return out
}

// FreeAddr returns a loopback host:port nothing listens on right now, for
// a process to bind later. The port comes from below the kernel's
// ephemeral range (ip_local_port_range), not from a ":0" listener: that
// range is where every outgoing connection and ":0" listener of the other
// tests and processes take theirs, and one of them took a port handed out
// here before its process bound it ("address already in use" in CI).
// Ports are handed out in turn from a random start, so test binaries
// running side by side rarely meet.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.lo == 0 {
		ports.lo, ports.hi = reservedPorts()
		ports.next = ports.lo + rand.IntN(ports.hi-ports.lo)
	}
	for range ports.hi - ports.lo {
		p := ports.next
		if ports.next++; ports.next >= ports.hi {
			ports.next = ports.lo
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	t.Fatalf("no free port in %d-%d", ports.lo, ports.hi)
	return ""
}

var ports struct {
	mu           sync.Mutex
	lo, hi, next int
}

// reservedPorts is the range FreeAddr hands out: from 20000 up to the
// kernel's ephemeral range (32768 by default).
func reservedPorts() (lo, hi int) {
	lo, hi = 20000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lo+1000 {
				hi = n
			}
		}
	}
	return lo, hi
}

// Proc is a running executable.
type Proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	logs   syncBuffer
	exited chan struct{}
	err    error
}

// Start runs bin with args; the test's cleanup kills it if still running.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// Logs is everything the process wrote so far.
func (p *Proc) Logs() string { return p.logs.String() }

// WaitReady polls url until it answers 200, failing the test if the
// process exits first or timeout passes.
func (p *Proc) WaitReady(url string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited before %s was ready: %v\n%s", p.cmd.Path, url, p.err, p.Logs())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready at %s after %s\n%s", p.cmd.Path, url, timeout, p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM and returns the exit error, failing the test if the
// process has not ended within timeout.
func (p *Proc) Stop(timeout time.Duration) error {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(timeout)
}

// Kill ends the process with SIGKILL, as a crash would.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Wait waits for the process to end on its own.
func (p *Proc) Wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %s\n%s", p.cmd.Path, timeout, p.Logs())
		return nil
	}
}

// syncBuffer lets the test read logs while the process writes them.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CPUTime is the user+system CPU the process has used so far, from
// /proc/<pid>/stat (Linux), so a benchmark can charge the server alone.
func (p *Proc) CPUTime() time.Duration {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("cpu time: %v", err)
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: utime and stime are the 12th and 13th of them.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		p.t.Fatalf("cpu time: short /proc stat %q", b)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// The kernel reports clock ticks; USER_HZ is 100 on Linux.
	return time.Duration(utime+stime) * (time.Second / 100)
}

// OpenFDs counts the open descriptors of the test process itself, for
// tests of servers run in process; it skips the test where /proc is
// missing.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// Documented runs, with bash, the commands a shipped config's comments
// give an operator: the first run of "#   " lines after the comment line
// of config containing marker, with /etc/shoal/ moved to dir. chown lines
// are left out (a test is not root and there is no shoal group);
// everything else runs as written, so a command that does not work fails
// the test.
func Documented(t testing.TB, config, marker, dir string) {
	t.Helper()
	f, err := os.Open(config)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var script []string
	found := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := strings.TrimSpace(sc.Text())
		if !found {
			found = strings.HasPrefix(line, "#") && strings.Contains(line, marker)
			continue
		}
		cmd, ok := strings.CutPrefix(line, "#   ")
		if !ok {
			if len(script) > 0 {
				break
			}
			continue // the rest of the comment's prose
		}
		if !strings.HasPrefix(strings.TrimSpace(cmd), "chown ") {
			script = append(script, strings.ReplaceAll(cmd, "/etc/shoal/", dir+"/"))
		}
	}
	if len(script) == 0 {
		t.Fatalf("%s has no commands after %q", config, marker)
	}
	if out, err := exec.Command("bash", "-euc", strings.Join(script, "\n")).CombinedOutput(); err != nil {
		t.Fatalf("the commands of %s:\n%s\n%v\n%s", config, strings.Join(script, "\n"), err, out)
	}
}
