package swarm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/p2p"
	"github.com/shoal-project/shoal/pkg/p2p/p2ptest"
	"github.com/shoal-project/shoal/pkg/peerproof"
	"github.com/shoal-project/shoal/pkg/piecefile"
	"github.com/shoal-project/shoal/pkg/swarm"
	"github.com/shoal-project/shoal/pkg/tracker"
	"github.com/shoal-project/shoal/pkg/tracker/trackertest"
	shoalpb "github.com/shoal-project/shoal/proto"
)

// seed starts a host serving blob and announces it complete.
func seed(t *testing.T, tr shoalpb.TrackerClient, blob *p2ptest.Blob) host.Host {
	return seedAs(t, tr, blob.MI.Digest, blob)
}

// seedAs starts a host serving b as d and announces it complete.
func seedAs(t *testing.T, tr shoalpb.TrackerClient, d digest.Digest, b p2p.Blob) host.Host {
	t.Helper()
	h := p2ptest.NewHost(t, p2p.HostConfig{})
	p2p.NewSeeder(h, p2ptest.Blobs{d: b}, nil, nil)
	_, err := peerproof.NewClient(tr, h.Peerstore().PrivKey(h.ID())).Announce(context.Background(), &shoalpb.AnnounceRequest{
		Digest: d.String(),
		Peer:   &shoalpb.Peer{Id: h.ID().String(), Addrs: p2p.Addrs(h)},
		Have:   &shoalpb.AnnounceRequest_Complete{Complete: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// memOrigin serves ranges of a blob, each after delay; it counts what it
// sent.
type memOrigin struct {
	data  []byte
	delay time.Duration
	sent  atomic.Int64
}

func (o *memOrigin) ReadRange(_ context.Context, off, n int64) (io.ReadCloser, error) {
	time.Sleep(o.delay)
	o.sent.Add(n)
	return io.NopCloser(bytes.NewReader(o.data[off : off+n])), nil
}

func fetch(t *testing.T, tr shoalpb.TrackerClient, blob *p2ptest.Blob, origin swarm.Origin, cfg swarm.Config) (swarm.Stats, error) {
	t.Helper()
	h := p2ptest.NewHost(t, p2p.HostConfig{})
	d := &swarm.Downloader{Host: h, Tracker: peerproof.NewClient(tr, h.Peerstore().PrivKey(h.ID())), Self: &shoalpb.Peer{Addrs: p2p.Addrs(h)}, Cfg: cfg}
	pf, err := piecefile.Open(t.TempDir(), blob.MI)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := d.Fetch(ctx, blob.MI, pf, origin, swarm.Hints{})
	if err == nil {
		got, _ := os.ReadFile(pf.Path())
		if !bytes.Equal(got, blob.Data) {
			t.Fatal("downloaded bytes differ")
		}
	}
	return st, err
}

func newTracker(t *testing.T) shoalpb.TrackerClient {
	return trackertest.Start(t, nil, tracker.Config{Interval: time.Second}, nil).Client
}

// From three seeders at once, all from peers, none from the origin.
func TestFetchFromSwarm(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(3<<20+5, 256<<10)
	for range 3 {
		seed(t, tr, blob)
	}
	origin := &memOrigin{data: blob.Data}
	st, err := fetch(t, tr, blob, origin, swarm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if st.FromPeers < blob.MI.Size || st.FromOrigin != 0 || origin.sent.Load() != 0 || st.Peers != 3 {
		t.Fatalf("stats %+v, origin sent %d", st, origin.sent.Load())
	}
}

// A lying seeder is banned at its first bad piece; the honest ones finish.
func TestFetchBansLiar(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(2<<20, 128<<10)
	liar := *blob
	liar.Corrupt = true
	seed(t, tr, &liar)
	seed(t, tr, blob)
	st, err := fetch(t, tr, blob, nil, swarm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if st.BadPieces > 4 { // at most the requests in flight when the first bad one landed
		t.Fatalf("%d bad pieces taken from the liar", st.BadPieces)
	}
	t.Logf("stats %+v", st)
}

// Only a liar in the swarm: no progress, so the origin delivers.
func TestFetchFallsBackWhenStalled(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(1<<20, 128<<10)
	liar := *blob
	liar.Corrupt = true
	seed(t, tr, &liar)
	origin := &memOrigin{data: blob.Data}
	st, err := fetch(t, tr, blob, origin, swarm.Config{StallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if st.BadPieces == 0 || st.FromOrigin != blob.MI.Size {
		t.Fatalf("stats %+v", st)
	}
}

// pausingBlob is a seeder's blob that stops for pause once, at piece at.
type pausingBlob struct {
	*p2ptest.Blob
	at    int64
	pause time.Duration
	once  sync.Once
}

func (b *pausingBlob) ReadAt(p []byte, off int64) (int, error) {
	if off == b.at*b.MI.PieceLength {
		b.once.Do(func() { time.Sleep(b.pause) })
	}
	return b.Blob.ReadAt(p, off)
}

// The only seeder pauses long enough to stall the download: the stall
// takes pieces from the origin one at a time only while the seeder is
// quiet, and the swarm carries on, instead of the rest of the blob coming
// from the origin.
func TestStallTopsUpFromOrigin(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(8<<20, 128<<10) // 64 pieces
	const piece = 128 << 10
	seedAs(t, tr, blob.MI.Digest, &pausingBlob{Blob: blob, at: 4, pause: 3 * time.Second})
	// The peer's requests expire into the pause, it rests, the swarm goes
	// quiet; a real origin takes a while per piece (300ms here), so in
	// what is left of the pause a few pieces come. The pause is long
	// enough for a quiet limit stretched by deadlines measured on a loaded
	// machine (CI under -race), which outlasted a 1.5s pause.
	origin := &memOrigin{data: blob.Data, delay: 300 * time.Millisecond}
	st, err := fetch(t, tr, blob, origin, swarm.Config{StallTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// At most the pause's worth of origin pieces (10) and the one in
	// flight at each end.
	if st.FromOrigin < piece || st.FromOrigin > 12*piece || st.FromPeers < blob.MI.Size-12*piece || st.Stalls < 1 || st.Stalls > 2 {
		t.Fatalf("stats %+v: want a stall, at most the pause's worth of pieces from the origin, the rest from the peer", st)
	}
}

// No tracker: straight to the origin; no origin either: an error, soon.
func TestFetchWithoutTracker(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	conn, err := grpc.NewClient(dead, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tr := shoalpb.NewTrackerClient(conn)
	blob := p2ptest.NewBlob(500_000, 64<<10)
	origin := &memOrigin{data: blob.Data}
	st, err := fetch(t, tr, blob, origin, swarm.Config{AnnounceTimeout: time.Second})
	if err != nil || st.FromOrigin != blob.MI.Size {
		t.Fatalf("stats %+v, err %v", st, err)
	}
	start := time.Now()
	if _, err := fetch(t, tr, blob, nil, swarm.Config{AnnounceTimeout: time.Second}); err == nil {
		t.Fatal("no tracker and no origin, yet no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failing took %s", d)
	}
}

// The node's download limit paces a download: 2 MiB at 4 MiB/s, with the
// burst already spent, takes about half a second.
func TestFetchPacedByDownloadLimit(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(2<<20, 256<<10)
	seed(t, tr, blob)
	h := p2ptest.NewHost(t, p2p.HostConfig{})
	lim := rate.NewLimiter(4<<20, 1<<20)
	lim.WaitN(context.Background(), 1<<20)
	d := &swarm.Downloader{Host: h, Tracker: peerproof.NewClient(tr, h.Peerstore().PrivKey(h.ID())), Self: &shoalpb.Peer{Addrs: p2p.Addrs(h)}, Limit: lim}
	pf, err := piecefile.Open(t.TempDir(), blob.MI)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	start := time.Now()
	if _, err := d.Fetch(context.Background(), blob.MI, pf, nil, swarm.Hints{}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("2 MiB at 4 MiB/s took %s", took)
	}
}

// A download served to peers must stay open however many streams end: the
// seeder closes blobs that are io.Closers.
func TestPartialIsNotACloser(t *testing.T) {
	var b p2p.Blob = swarm.Partial{}
	if _, ok := b.(io.Closer); ok {
		t.Fatal("swarm.Partial is an io.Closer: seeders would close the download's file")
	}
}

// failOnceBlob is a seeder's blob whose read of piece at fails once: the
// seeder answers "unavailable" and ends the stream, as when a finishing
// download's file went away under it.
type failOnceBlob struct {
	*p2ptest.Blob
	at   int64
	once sync.Once
}

func (b *failOnceBlob) ReadAt(p []byte, off int64) (n int, err error) {
	if off == b.at*b.MI.PieceLength {
		failed := false
		b.once.Do(func() { failed = true })
		if failed {
			return 0, errors.New("file already closed")
		}
	}
	return b.Blob.ReadAt(p, off)
}

// A peer whose stream ended without breaking the protocol is dialled
// again on a later hand-out: with no origin to fall back to, the download
// can only finish if the one seeder is taken back.
func TestRedialsAPeerWhoseStreamEnded(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(2<<20, 128<<10)
	seedAs(t, tr, blob.MI.Digest, &failOnceBlob{Blob: blob, at: 5})
	st, err := fetch(t, tr, blob, nil, swarm.Config{StallTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if st.Peers < 2 || st.FromPeers < blob.MI.Size {
		t.Fatalf("stats %+v: want the peer connected twice and everything from it", st)
	}
}

// alwaysBusy is an origin whose uplink is always full.
type alwaysBusy struct{ asked atomic.Int64 }

func (o *alwaysBusy) ReadRange(context.Context, int64, int64) (io.ReadCloser, error) {
	o.asked.Add(1)
	return nil, &swarm.BusyError{RetryAfter: 200 * time.Millisecond}
}

// The swarm goes quiet (its only seeder pauses 4s) and the origin says
// busy to every read: the download waits its turn at the origin, at the
// pace the origin asks, keeps the peer, and finishes from it. (The pause
// leaves room for a quiet limit stretched by deadlines measured on a
// loaded machine, which at 2s sometimes outlasted it.)
func TestOriginBusyKeepsTheSwarm(t *testing.T) {
	tr := newTracker(t)
	blob := p2ptest.NewBlob(2<<20, 128<<10)
	seedAs(t, tr, blob.MI.Digest, &pausingBlob{Blob: blob, at: 4, pause: 4 * time.Second})
	origin := &alwaysBusy{}
	st, err := fetch(t, tr, blob, origin, swarm.Config{StallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// At most 3.7s quiet, one read per 200-300ms hint: a handful, not a
	// storm.
	if n := origin.asked.Load(); n < 1 || n > 20 {
		t.Fatalf("origin asked %d times in at most 3.7s of quiet with a 200ms hint", n)
	}
	// One quiet spell, or two when the first ends in the pause and the
	// quiet limit runs out again before the seeder is back.
	if st.FromOrigin != 0 || st.FromPeers < blob.MI.Size || st.Stalls < 1 || st.Stalls > 2 {
		t.Fatalf("stats %+v", st)
	}
}
