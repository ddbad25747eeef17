package origin

import (
	"context"

	"github.com/shoal-project/shoal/pkg/blobstore"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/growing"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
)

// Seedable is the origin's store as the piece protocol sees it: every
// blob held here, complete. Serve it with p2p.NewSeeder on the origin's
// own host and upload limit; the tracker hands the origin out only while
// agents that could seed instead are scarce.
func (s *Server) Seedable() p2p.Blobs { return seedable{s} }

// CountSeeded adds n piece bytes to the origin's seeded-bytes counter;
// hand it to the seeder as its Uploaded hook.
func (s *Server) CountSeeded(n int) { s.metrics.seeded.Add(float64(n)) }

// CountBusy counts a piece request the seeder refused (uplink full);
// hand it to the seeder as its Busy hook.
func (s *Server) CountBusy() { s.metrics.busySent.Inc() }

type seedable struct{ s *Server }

func (o seedable) Lookup(d digest.Digest) (p2p.Blob, bool) {
	ctx := context.Background()
	mi, err := o.s.blobs.MetaInfo(ctx, d)
	if err != nil {
		return o.arriving(d)
	}
	rd, err := o.s.blobs.Open(ctx, d)
	if err != nil {
		return nil, false
	}
	return &seedBlob{mi: mi, rd: rd}, true
}

type seedBlob struct {
	mi *metainfo.MetaInfo
	rd blobstore.Reader
}

func (b *seedBlob) MetaInfo() *metainfo.MetaInfo            { return b.mi }
func (b *seedBlob) Bitfield() ([]byte, bool)                { return nil, true }
func (b *seedBlob) ReadAt(p []byte, off int64) (int, error) { return b.rd.ReadAt(p, off) }
func (b *seedBlob) Close() error                            { return b.rd.Close() }

// arriving is a blob still arriving from its upstream, seeded for the
// pieces published so far: agents fetch those while the rest arrives.
func (o seedable) arriving(d digest.Digest) (p2p.Blob, bool) {
	if o.s.arriving == nil {
		return nil, false
	}
	g, _ := o.s.arriving.get(d)
	if g == nil {
		return nil, false
	}
	return arrivingSeed{g}, true
}

// arrivingSeed is a growing.Blob as the piece protocol sees it; the
// seeder closes it when the stream ends, which drops its reference.
type arrivingSeed struct{ g *growing.Blob }

func (b arrivingSeed) MetaInfo() *metainfo.MetaInfo {
	mi, _ := b.g.MetaInfo()
	return mi
}
func (b arrivingSeed) Bitfield() ([]byte, bool)                { return b.g.Bitfield() }
func (b arrivingSeed) ReadAt(p []byte, off int64) (int, error) { return b.g.ReadAt(p, off) }
func (b arrivingSeed) Changed() <-chan struct{}                { return b.g.Changed() }
func (b arrivingSeed) Close() error                            { b.g.Release(); return nil }
