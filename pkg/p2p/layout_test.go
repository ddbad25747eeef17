package p2p_test

import (
	"bytes"
	"testing"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/metainfo"
	"github.com/shoal-project/shoal/pkg/p2p"
)

// Peers holding a blob's whole metainfo and peers holding a prefix of its
// chain (a blob still arriving at its origin) agree on the layout; a
// different blob, size or piece length does not.
func TestMetaInfoHashIsTheLayout(t *testing.T) {
	b := bytes.Repeat([]byte("shoal"), 700_000) // three pieces
	full, err := metainfo.Compute(digest.FromBytes(b), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := p2p.MetaInfoHash(full)
	with := func(f func(m *metainfo.MetaInfo)) *metainfo.MetaInfo {
		m := *full
		f(&m)
		return &m
	}
	for _, tt := range []struct {
		name string
		mi   *metainfo.MetaInfo
		same bool
	}{
		{"whole", full, true},
		{"prefix", with(func(m *metainfo.MetaInfo) { m.Chain = m.Chain[:1] }), true},
		{"no chain yet", with(func(m *metainfo.MetaInfo) { m.Chain = nil }), true},
		{"other blob", with(func(m *metainfo.MetaInfo) { m.Digest = digest.FromBytes([]byte("x")) }), false},
		{"other size", with(func(m *metainfo.MetaInfo) { m.Size-- }), false},
		{"other piece length", with(func(m *metainfo.MetaInfo) { m.PieceLength *= 2 }), false},
	} {
		got, err := p2p.MetaInfoHash(tt.mi)
		if err != nil || bytes.Equal(got, want) != tt.same {
			t.Errorf("%s: same layout %v, want %v (%v)", tt.name, bytes.Equal(got, want), tt.same, err)
		}
	}
}
