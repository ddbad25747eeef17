package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// place is where one process of the fleet runs: the loopback of this
// machine, or a network namespace of its own.
type place struct {
	// ip is where other processes reach it.
	ip string
	// wrap turns the process's argv into the command to run.
	wrap func(argv []string) []string
	// client reaches the place from the harness: its loopback and ip;
	// dial is its dialer, for the harness's other clients (gRPC).
	client *http.Client
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	// port gives a port for a listener: a free one on a shared loopback,
	// the fixed one in a namespace of its own.
	port func(fixed int) (int, error)
}

func (p *place) addr(port int) string { return net.JoinHostPort(p.ip, strconv.Itoa(port)) }

// topology hands out places.
type topology interface {
	place(name string) (*place, error)
	close()
}

// loopback runs everything on this machine's loopback; links are capped by
// the processes' own token buckets.
type loopback struct{}

func (loopback) place(string) (*place, error) {
	return &place{
		ip:     "127.0.0.1",
		wrap:   func(argv []string) []string { return argv },
		client: http.DefaultClient,
		dial:   (&net.Dialer{}).DialContext,
		port: func(int) (int, error) {
			a, err := freeAddr()
			if err != nil {
				return 0, err
			}
			_, p, _ := net.SplitHostPort(a)
			return strconv.Atoi(p)
		},
	}, nil
}

func (loopback) close() {}

// namespaces gives every process its own network namespace behind a veth
// pair on one bridge, itself in a namespace of its own, with tc tbf capping
// each host's link both ways. Nothing is added to the host's namespace;
// close removes every namespace, which removes the links.
type namespaces struct {
	prefix string
	rate   int64 // bytes/s per link; 0: uncapped

	mu    sync.Mutex
	hosts []string
	n     int
	arp   map[string]string // ARP limits to restore
}

const bridgeNS = "-br"

func newNamespaces(ctx context.Context, rate int64, hosts int) (*namespaces, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("--netns needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("--netns needs iproute2 (ip, tc)")
	}
	n := &namespaces{prefix: fmt.Sprintf("shoal-lt%d", os.Getpid()), rate: rate}
	if hosts*hosts > 512 {
		// The kernel's neighbour (ARP) table is one for all namespaces,
		// and a fleet fills it with about hosts² entries (every host
		// talks to every other): past the default gc_thresh3 of 1024,
		// new entries fail ("neighbor table overflow" in dmesg) and
		// hosts get "no route to host" — seen at 50 agents.
		n.arp = map[string]string{}
		for i, v := range []string{"4096", "8192", "16384"} {
			key := fmt.Sprintf("/proc/sys/net/ipv4/neigh/default/gc_thresh%d", i+1)
			old, err := os.ReadFile(key)
			if err != nil {
				return nil, err
			}
			n.arp[key] = strings.TrimSpace(string(old))
			if err := os.WriteFile(key, []byte(v), 0o644); err != nil {
				return nil, err
			}
		}
	}
	br := n.prefix + bridgeNS
	for _, argv := range [][]string{
		{"ip", "netns", "add", br},
		{"ip", "-n", br, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", br, "link", "set", "br0", "up"},
	} {
		if err := sh(ctx, argv...); err != nil {
			n.close()
			return nil, err
		}
	}
	return n, nil
}

func sh(ctx context.Context, argv ...string) error { return shIn(ctx, "", argv...) }

// shIn runs argv with stdin as its input (a batch of commands for ip).
func shIn(ctx context.Context, stdin string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s%s", strings.Join(argv, " "), err, stdin, out)
	}
	return nil
}

func (n *namespaces) place(name string) (*place, error) {
	n.mu.Lock()
	i := n.n
	n.n++
	ns := fmt.Sprintf("%s-%s", n.prefix, name)
	n.hosts = append(n.hosts, ns)
	n.mu.Unlock()
	if i >= 250*250 {
		return nil, errors.New("too many hosts")
	}
	ip := fmt.Sprintf("10.77.%d.%d", 1+i/250, 1+i%250)
	host, peer := fmt.Sprintf("h%d", i), fmt.Sprintf("b%d", i)
	br := n.prefix + bridgeNS
	ctx := context.Background()
	// Five processes a host (three ip batches, two tc): a fleet of 50 is
	// placed in about a second rather than several.
	type step struct {
		argv  []string
		batch string // stdin
	}
	steps := []step{
		{[]string{"ip", "-batch", "-"}, fmt.Sprintf("netns add %s\nlink add %s netns %s type veth peer name %s netns %s\n", ns, host, ns, peer, br)},
		{[]string{"ip", "-n", ns, "-batch", "-"}, fmt.Sprintf("link set lo up\naddr add %s/16 dev %s\nlink set %s up\n", ip, host, host)},
		{[]string{"ip", "-n", br, "-batch", "-"}, fmt.Sprintf("link set %s master br0\nlink set %s up\n", peer, peer)},
	}
	if n.rate > 0 {
		rate := strconv.FormatInt(n.rate*8, 10) + "bit"
		// Egress of the host's side is its uplink; egress of the bridge's
		// side towards it is its downlink.
		tbf := []string{"qdisc", "add", "dev", "", "root", "tbf", "rate", rate, "burst", "128kb", "latency", "50ms"}
		up, down := slices.Clone(tbf), slices.Clone(tbf)
		up[3], down[3] = host, peer
		steps = append(steps, step{append([]string{"tc", "-n", ns}, up...), ""}, step{append([]string{"tc", "-n", br}, down...), ""})
	}
	for _, st := range steps {
		if err := shIn(ctx, st.batch, st.argv...); err != nil {
			return nil, err
		}
	}
	dial := dialIn(ns)
	return &place{
		ip:     ip,
		wrap:   func(argv []string) []string { return append([]string{"ip", "netns", "exec", ns}, argv...) },
		client: &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 8}},
		dial:   dial,
		port:   func(fixed int) (int, error) { return fixed, nil },
	}, nil
}

func (n *namespaces) close() {
	n.mu.Lock()
	hosts := n.hosts
	n.hosts = nil
	n.mu.Unlock()
	for _, ns := range append(hosts, n.prefix+bridgeNS) {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	for k, v := range n.arp {
		os.WriteFile(k, []byte(v), 0o644)
	}
}

// dialIn dials from inside network namespace ns: the socket is created on
// a thread switched into it, and stays there after the thread switches
// back.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			// If switching back fails, the thread dies with the goroutine
			// instead of returning to the pool in the wrong namespace.
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer self.Close()
			target, err := os.Open("/var/run/netns/" + ns)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
