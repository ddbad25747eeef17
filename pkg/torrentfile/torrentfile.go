// Package torrentfile exports a blob as a standard BitTorrent v1 .torrent,
// for consumers outside the cluster (CI runners, edge sites, any
// BitTorrent client): one file named for the digest, SHA-1 piece hashes
// (what v1 clients check), and the origins as BEP 19 web seeds, so a
// stock client downloads and verifies the blob from the origins alone.
//
// The piece hashes are computed from the bytes as they are read, together
// with the blob's own digest: a .torrent is only made for bytes that match
// the digest they are exported under.
package torrentfile

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoal-project/shoal/pkg/digest"
)

// ContentType is what a .torrent is served as.
const ContentType = "application/x-bittorrent"

// ErrMismatch: the bytes read do not hash to the digest.
var ErrMismatch = errors.New("torrentfile: blob does not match its digest")

// Name is the file name a client saves blob d as: "sha256-<hex>".
func Name(d digest.Digest) string { return string(d.Algorithm()) + "-" + d.Hex() }

// Info hashes size bytes of blob d from r into a v1 info dictionary of
// pieceLength pieces, bencoded; it fails with ErrMismatch unless the bytes
// hash to d. The result depends only on the blob, so it can be kept.
func Info(r io.Reader, size int64, d digest.Digest, pieceLength int64) ([]byte, error) {
	if pieceLength < 16<<10 || pieceLength&(pieceLength-1) != 0 {
		return nil, fmt.Errorf("torrentfile: piece length %d is not a power of two of at least 16 KiB", pieceLength)
	}
	whole := d.Algorithm().Hash()
	if whole == nil {
		return nil, fmt.Errorf("torrentfile: %w", digest.ErrUnsupported)
	}
	n := (size + pieceLength - 1) / pieceLength
	pieces := make([]byte, 0, n*sha1.Size)
	buf := make([]byte, pieceLength)
	var read int64
	for read < size {
		p := buf[:min(pieceLength, size-read)]
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, fmt.Errorf("torrentfile: read %s at %d: %w", d, read, err)
		}
		whole.Write(p)
		sum := sha1.Sum(p)
		pieces = append(pieces, sum[:]...)
		read += int64(len(p))
	}
	if digest.FromHash(d.Algorithm(), whole) != d {
		return nil, fmt.Errorf("%w: %s", ErrMismatch, d)
	}
	info := metainfo.Info{Name: Name(d), Length: size, PieceLength: pieceLength, Pieces: pieces}
	return bencode.Marshal(info)
}

// File is a whole .torrent around an info dictionary from Info: webSeeds
// are URLs that serve the blob itself (BEP 19: a URL not ending in "/" is
// the file), tried by clients in any order.
func File(info []byte, webSeeds []string, created time.Time, comment string) ([]byte, error) {
	mi := metainfo.MetaInfo{
		InfoBytes:    info,
		UrlList:      webSeeds,
		CreationDate: created.Unix(),
		CreatedBy:    "shoal",
		Comment:      comment,
	}
	return bencode.Marshal(mi)
}
