package origin

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/auth"
)

func TestClientKey(t *testing.T) {
	tests := []struct {
		name   string
		id     auth.Identity
		remote string
		want   string
	}{
		{"user", auth.Identity{Subject: "ci"}, "10.0.0.1:5555", "user:ci"},
		{"user from anywhere", auth.Identity{Subject: "ci"}, "10.9.9.9:1", "user:ci"},
		{"anonymous v4", auth.Identity{Anonymous: true}, "10.0.0.1:5555", "ip:10.0.0.1"},
		{"anonymous token with a subject", auth.Identity{Subject: "x", Anonymous: true}, "10.0.0.1:1", "ip:10.0.0.1"},
		{"v4-mapped v6", auth.Identity{Anonymous: true}, "[::ffff:10.0.0.1]:80", "ip:10.0.0.1"},
		{"v6 counts as its /64", auth.Identity{Anonymous: true}, "[2001:db8:1:2:aaaa::1]:80", "ip:2001:db8:1:2::/64"},
		{"same /64", auth.Identity{Anonymous: true}, "[2001:db8:1:2:ffff::9]:80", "ip:2001:db8:1:2::/64"},
		{"zoned v6", auth.Identity{Anonymous: true}, "[fe80::1%eth0]:80", "ip:fe80::/64"},
		{"no port", auth.Identity{Anonymous: true}, "10.0.0.1", "ip:10.0.0.1"},
		{"not an address", auth.Identity{Anonymous: true}, "@unix", "addr:@unix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clientKey(tt.id, tt.remote); got != tt.want {
				t.Fatalf("clientKey(%+v, %q) = %q, want %q", tt.id, tt.remote, got, tt.want)
			}
		})
	}
}

// clientKey reads RemoteAddr, which net/http fills from the socket; the
// fuzz target holds it to its contract on any string: no panic, one of the
// three kinds of key, and every address of an IPv6 /64 one client.
func FuzzClientKey(f *testing.F) {
	for _, s := range []string{"10.0.0.1:5555", "[2001:db8::1]:80", "[::ffff:1.2.3.4]:1", "[fe80::1%eth0]:80", "@", "", "1.2.3.4"} {
		f.Add(s, "")
		f.Add(s, "ci")
	}
	f.Fuzz(func(t *testing.T, remote, user string) {
		key := clientKey(auth.Identity{Subject: user, Anonymous: user == ""}, remote)
		switch {
		case user != "":
			if key != "user:"+user {
				t.Fatalf("user %q got key %q", user, key)
			}
		case strings.HasPrefix(key, "ip:"), strings.HasPrefix(key, "addr:"):
		default:
			t.Fatalf("clientKey(%q) = %q", remote, key)
		}
		host, _, err := net.SplitHostPort(remote)
		if err != nil {
			return
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Unmap().Is6() {
			return
		}
		// Another address of the same /64 is the same client.
		b := ip.As16()
		b[15] ^= 0xff
		other := netip.AddrFrom16(b)
		if got := clientKey(auth.Identity{Anonymous: true}, net.JoinHostPort(other.String(), "1")); got != clientKey(auth.Identity{Anonymous: true}, remote) {
			t.Fatalf("%s and %s, one /64, are different clients: %q", ip, other, got)
		}
	})
}
