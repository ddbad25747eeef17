package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// fleet starts Shoal's binaries as separate processes, logs each to a file
// in its run directory, and stops every one of them at the end.
type fleet struct {
	bin string // directory of shoal-* binaries
	dir string // run directory: data and logs

	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	pl   *place
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (f *fleet) start(pl *place, name, component string, args ...string) (*proc, error) {
	return f.startArgv(pl, name, append([]string{filepath.Join(f.bin, "shoal-"+component)}, args...))
}

// startArgv starts any program as one of the fleet's processes (the
// upstream registry of --upstream is not one of Shoal's).
func (f *fleet) startArgv(pl *place, name string, argv []string) (*proc, error) {
	logPath := filepath.Join(f.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	argv = pl.wrap(argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C to the load test reaches us, and we
	// stop the fleet in order rather than having it die half-way.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{pl: pl, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p, nil
}

// kill ends a process abruptly, as a crash would.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stopAll sends SIGTERM to every process, then SIGKILL to what is left
// after a grace period.
func (f *fleet) stopAll() {
	f.mu.Lock()
	procs := f.procs
	f.procs = nil
	f.mu.Unlock()
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(10 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// waitReady polls url until it answers 200, the process exits, or ctx ends.
func waitReady(ctx context.Context, p *proc, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		resp, err := p.pl.client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited before it was ready:\n%s", p.name, tail(b, 2000))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w", p.name, url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// freeAddr is a loopback host:port nothing listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
