package digest

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	hex64 := strings.Repeat("a1", 32)
	tests := []struct {
		in   string
		want error
	}{
		{"sha256:" + hex64, nil},
		{"sha512:" + strings.Repeat("0f", 64), nil},
		{"", ErrInvalid},
		{"sha256", ErrInvalid},
		{"sha256:", ErrInvalid},
		{":" + hex64, ErrInvalid},
		{"sha256:" + hex64[:63], ErrInvalid},
		{"sha256:" + hex64 + "0", ErrInvalid},
		{"sha256:" + strings.ToUpper(hex64), ErrInvalid},
		{"sha256:" + hex64[:62] + "g0", ErrInvalid},
		{"SHA256:" + hex64, ErrInvalid},
		{"sha256:../../../etc/passwd", ErrInvalid},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", ErrUnsupported},
		{"multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", ErrUnsupported},
		{"sha256+:abc", ErrInvalid},
		{"sha256:abc/def", ErrInvalid},
		{strings.Repeat("a", 300) + ":00", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := Parse(tt.in)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, err, tt.want)
			}
			if err == nil && d.String() != tt.in {
				t.Fatalf("round trip %q -> %q", tt.in, d)
			}
		})
	}
}

func TestFromBytes(t *testing.T) {
	const empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := FromBytes(nil); got != empty {
		t.Fatalf("FromBytes(nil) = %s", got)
	}
	if d := FromBytes(nil); d.Algorithm() != SHA256 || d.Hex() != empty[7:] {
		t.Fatalf("parts = %s %s", d.Algorithm(), d.Hex())
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("ab", 32), "sha512:" + strings.Repeat("cd", 64), "md5:x", "a:b:c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		if !d.Algorithm().Available() || len(d.Hex()) != d.Algorithm().hexLen() || strings.ContainsAny(d.Hex(), "/.") {
			t.Fatalf("Parse accepted %q", s)
		}
	})
}
