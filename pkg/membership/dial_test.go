package membership_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/membership"
)

func TestAdvertiseAddr(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		advertise string
		bound     string
		want      string
		wantErr   bool
	}{
		{"", "127.0.0.1:7000", "127.0.0.1:7000", false},
		{"", "0.0.0.0:7000", net.JoinHostPort(host, "7000"), false},
		{"", "[::]:7000", net.JoinHostPort(host, "7000"), false},
		{"tracker-0.tracker:7000", "0.0.0.0:7000", "tracker-0.tracker:7000", false},
		{"no-port", "0.0.0.0:7000", "", true},
	}
	for _, tt := range tests {
		bound, err := net.ResolveTCPAddr("tcp", tt.bound)
		if err != nil {
			t.Fatal(err)
		}
		got, err := membership.AdvertiseAddr(tt.advertise, bound)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("AdvertiseAddr(%q, %s) = %q, %v; want %q", tt.advertise, tt.bound, got, err, tt.want)
		}
	}
}

func TestDial(t *testing.T) {
	eps := etcdtest.Embedded(t)
	cli, err := membership.Dial(context.Background(), membership.EtcdConfig{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()

	// Nothing listens there: Dial must say so at start, quickly.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	start := time.Now()
	if _, err := membership.Dial(context.Background(), membership.EtcdConfig{Endpoints: []string{dead}, DialTimeout: 500 * time.Millisecond}); err == nil {
		t.Fatal("Dial to a dead endpoint succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Dial to a dead endpoint took %s", d)
	}
	if _, err := membership.Dial(context.Background(), membership.EtcdConfig{}); err == nil {
		t.Fatal("Dial with no endpoints succeeded")
	}
}
