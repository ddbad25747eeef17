package torrentfile_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/torrentfile"
)

func TestInfoAndFile(t *testing.T) {
	const pl = 16 << 10
	tests := []struct {
		name   string
		size   int
		pieces int
	}{
		{"empty", 0, 0},
		{"one byte", 1, 1},
		{"one piece exactly", pl, 1},
		{"a piece and a bit", pl + 1, 2},
		{"several", 5*pl + 123, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := make([]byte, tc.size)
			rand.Read(b)
			s := sha256.Sum256(b)
			d := digest.Digest("sha256:" + hex.EncodeToString(s[:]))
			info, err := torrentfile.Info(bytes.NewReader(b), int64(len(b)), d, pl)
			if err != nil {
				t.Fatal(err)
			}
			file, err := torrentfile.File(info, []string{"http://o/v2/r/blobs/" + d.String()}, time.Unix(1, 0), d.String())
			if err != nil {
				t.Fatal(err)
			}
			// Read back as a BitTorrent client would.
			mi, err := metainfo.Load(bytes.NewReader(file))
			if err != nil {
				t.Fatal(err)
			}
			var got metainfo.Info
			if err := bencode.Unmarshal(mi.InfoBytes, &got); err != nil {
				t.Fatal(err)
			}
			if got.Length != int64(tc.size) || got.NumPieces() != tc.pieces || got.Name != "sha256-"+d.Hex() || len(mi.UrlList) != 1 {
				t.Fatalf("info %+v, url-list %v", got, mi.UrlList)
			}
			for i := range tc.pieces {
				end := min((i+1)*pl, tc.size)
				sum := sha1.Sum(b[i*pl : end])
				h := got.Piece(i).V1Hash().Value
				if !bytes.Equal(h[:], sum[:]) {
					t.Fatalf("piece %d hash differs", i)
				}
			}
		})
	}
}

func TestInfoRefusesWrongBytes(t *testing.T) {
	b := []byte("the real blob")
	s := sha256.Sum256(b)
	d := digest.Digest("sha256:" + hex.EncodeToString(s[:]))
	tests := []struct {
		name string
		data []byte
		size int64
		pl   int64
		want error
	}{
		{"flipped byte", []byte("the reel blob"), 13, 16 << 10, torrentfile.ErrMismatch},
		{"short read", b[:5], 13, 16 << 10, nil},
		{"bad piece length", b, 13, 1000, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := torrentfile.Info(bytes.NewReader(tc.data), tc.size, d, tc.pl)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}
