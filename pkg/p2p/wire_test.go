package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalpb "github.com/shoal-project/shoal/proto"
)

var testDigest = "sha256:" + strings.Repeat("ab", 32)

func hs(mod func(*shoalpb.Handshake)) *shoalpb.PieceMessage {
	h := &shoalpb.Handshake{Digest: testDigest, MetainfoHash: make([]byte, 32), Have: &shoalpb.Handshake_Bitfield{Bitfield: []byte{0x80}}}
	if mod != nil {
		mod(h)
	}
	return &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Handshake{Handshake: h}}
}

func have(i uint32) *shoalpb.PieceMessage {
	return &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Have{Have: &shoalpb.Have{Index: i}}}
}

func request(i uint32) *shoalpb.PieceMessage {
	return &shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Request{Request: &shoalpb.Request{Index: i}}}
}

// frame encodes a raw header the way a hostile peer might.
func frame(header []byte) []byte {
	var lb [binary.MaxVarintLen64]byte
	return append(lb[:binary.PutUvarint(lb[:], uint64(len(header)))], header...)
}

func marshal(m *shoalpb.PieceMessage) []byte {
	b, _ := proto.Marshal(m)
	return b
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewFrameWriter(&buf)
	payload := bytes.Repeat([]byte{7}, 100_000) // larger than the writer's buffer
	msgs := []*shoalpb.PieceMessage{hs(nil), have(3), request(2),
		{Msg: &shoalpb.PieceMessage_Cancel{Cancel: &shoalpb.Cancel{Index: 1}}},
		{Msg: &shoalpb.PieceMessage_Error{Error: &shoalpb.Error{Code: "busy", Message: "upload cap"}}}}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePiece(3, payload); err != nil {
		t.Fatal(err)
	}
	r := NewFrameReader(&buf)
	r.SetBlob(4, 1<<20)
	for _, want := range msgs {
		got, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	m, err := r.Next()
	if err != nil || m.GetPiece().GetIndex() != 3 || r.PayloadLen() != len(payload) {
		t.Fatalf("piece header %v %v", m, err)
	}
	if _, err := r.Next(); err == nil {
		t.Fatal("Next before the payload was read")
	}
	got := make([]byte, r.PayloadLen())
	if err := r.ReadPayload(got); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("payload: %v", err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("clean end: %v, want io.EOF", err)
	}
}

func TestRejects(t *testing.T) {
	piece := func(i, n uint32) []byte {
		return frame(marshal(&shoalpb.PieceMessage{Msg: &shoalpb.PieceMessage_Piece{Piece: &shoalpb.Piece{Index: i, Length: n}}}))
	}
	tests := []struct {
		name      string
		in        []byte
		setBlob   bool
		violation bool
	}{
		{"zero-length header", frame(nil), true, true},
		{"header over the limit", frame(make([]byte, maxHeader+1)), true, true},
		{"header length overflows", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, true, false},
		{"garbage protobuf", frame([]byte{0xff, 0xff, 0xff}), true, true},
		{"empty message", frame(marshal(&shoalpb.PieceMessage{})), true, true},
		{"handshake with a bad digest", frame(marshal(hs(func(h *shoalpb.Handshake) { h.Digest = "sha256:zz" }))), true, true},
		{"handshake with a short hash", frame(marshal(hs(func(h *shoalpb.Handshake) { h.MetainfoHash = []byte{1} }))), true, true},
		{"handshake with a huge bitfield", frame(marshal(hs(func(h *shoalpb.Handshake) {
			h.Have = &shoalpb.Handshake_Bitfield{Bitfield: make([]byte, maxBitfield+1)}
		}))), true, true},
		{"handshake without have", frame(marshal(hs(func(h *shoalpb.Handshake) { h.Have = nil }))), true, true},
		{"request before the blob is known", frame(marshal(request(0))), false, true},
		{"have out of range", frame(marshal(have(4))), true, true},
		{"request out of range", frame(marshal(request(1 << 31))), true, true},
		{"empty piece", piece(0, 0), true, true},
		{"piece over the piece length", piece(0, 1<<20+1), true, true},
		{"truncated header", frame(marshal(hs(nil)))[:10], true, false},
		{"truncated payload", append(piece(0, 100), make([]byte, 50)...), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewFrameReader(bytes.NewReader(tt.in))
			if tt.setBlob {
				r.SetBlob(4, 1<<20)
			}
			var err error
			for err == nil {
				_, err = r.Next()
				if err == nil && r.PayloadLen() > 0 {
					err = r.ReadPayload(make([]byte, r.PayloadLen()))
				}
			}
			if err == io.EOF {
				t.Fatal("accepted")
			}
			if errors.Is(err, ErrProtocol) != tt.violation {
				t.Fatalf("err = %v, protocol violation %v", err, tt.violation)
			}
		})
	}
}

// FuzzFrameReader: any byte stream ends in a clean error, never a panic,
// and never makes the reader hold more than its limits.
func FuzzFrameReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewFrameWriter(&buf)
	w.Write(hs(nil))
	w.Write(have(1))
	w.WritePiece(2, []byte("piece bytes"))
	f.Add(buf.Bytes())
	f.Add(frame([]byte{0x0a, 0x00}))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewFrameReader(bytes.NewReader(in))
		r.SetBlob(8, 64)
		for range 1000 {
			m, err := r.Next()
			if err != nil {
				return
			}
			if m.GetMsg() == nil {
				t.Fatal("nil message accepted")
			}
			if n := r.PayloadLen(); n > 0 {
				if n > 64 {
					t.Fatalf("payload of %d accepted with a 64-byte piece length", n)
				}
				if r.ReadPayload(make([]byte, n)) != nil {
					return
				}
			}
		}
	})
}

// failingAt reads data, failing every read that reaches past limit.
type failingAt struct {
	data  []byte
	limit int64
}

func (f failingAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.limit {
		return 0, errors.New("disk error")
	}
	return copy(p, f.data[off:]), nil
}

// A piece streamed from a reader through a small buffer, its first bytes
// read by the caller or not, arrives as the same frame as one written
// whole; one whose reads fail after the header went out says so, since
// the stream is then out of step.
func TestWritePieceFrom(t *testing.T) {
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tests := []struct {
		name    string
		off     int64
		length  int
		buf     int
		filled  bool  // the caller read the first chunk
		failAt  int64 // reads past this fail
		wantErr error
	}{
		{"one chunk", 1000, 5000, 8192, true, int64(len(data)), nil},
		{"one chunk, nothing read", 1000, 5000, 8192, false, int64(len(data)), nil},
		{"chunk size divides the piece", 0, 65536, 4096, true, int64(len(data)), nil},
		{"odd chunks", 17, 299_983, 7777, true, int64(len(data)), nil},
		{"odd chunks, nothing read", 17, 299_983, 7777, false, int64(len(data)), nil},
		{"breaks off", 0, 10_000, 4096, true, 5000, errMidPiece},
		{"unreadable", 0, 10_000, 4096, false, 0, errMidPiece},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := failingAt{data, tt.failAt}
			buf := make([]byte, tt.buf)
			filled := 0
			if tt.filled {
				filled = min(tt.length, tt.buf)
				copy(buf, data[tt.off:tt.off+int64(filled)])
			}
			var out bytes.Buffer
			err := NewFrameWriter(&out).WritePieceFrom(9, src, tt.off, tt.length, buf, filled)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			var whole bytes.Buffer
			if err := NewFrameWriter(&whole).WritePiece(9, data[tt.off:tt.off+int64(tt.length)]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), whole.Bytes()) {
				t.Fatalf("streamed frame differs from the whole one (%d vs %d bytes)", out.Len(), whole.Len())
			}
		})
	}
}
