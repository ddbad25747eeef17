package reference

import (
	"errors"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/digest"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"library/busybox", true},
		{"a", true},
		{"a/b/c/d", true},
		{"foo.bar_baz__qux---x", true},
		{"0abc/9", true},
		{"", false},
		{"Foo", false},
		{"foo/", false},
		{"/foo", false},
		{"foo//bar", false},
		{"..", false},
		{"foo/../bar", false},
		{"foo/.", false},
		{"foo___bar", false},
		{"foo._bar", false},
		{"-foo", false},
		{"foo-", false},
		{"foo%2Fbar", false},
		{"foo bar", false},
		{"_catalog", false},
		{"foo/_tags", false},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrNameInvalid)) {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestParseRef(t *testing.T) {
	d := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		in   string
		want Ref
		err  error
	}{
		{"latest", Ref{Tag: "latest"}, nil},
		{"v1.2.3-rc_1", Ref{Tag: "v1.2.3-rc_1"}, nil},
		{"_x", Ref{Tag: "_x"}, nil},
		{d, Ref{Digest: digest.Digest(d)}, nil},
		{".hidden", Ref{}, ErrTagInvalid},
		{"-x", Ref{}, ErrTagInvalid},
		{strings.Repeat("t", 129), Ref{}, ErrTagInvalid},
		{"sha256:zz", Ref{}, digest.ErrInvalid},
		{"a/b", Ref{}, ErrTagInvalid},
		{"", Ref{}, ErrTagInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRef(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) || got != tt.want {
				t.Fatalf("ParseRef(%q) = %+v, %v", tt.in, got, err)
			}
		})
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"library/busybox", "a__b/c-d.e", "../x", "a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName(s) != nil {
			return
		}
		for comp := range strings.SplitSeq(s, "/") {
			if comp == "" || comp == "." || comp == ".." || strings.HasPrefix(comp, "_") || strings.ContainsAny(comp, "%\\ ") {
				t.Fatalf("ValidateName accepted %q", s)
			}
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"latest", "sha256:" + strings.Repeat("a", 64), "a:b", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.IsDigest() == (r.Tag != "") || strings.ContainsAny(r.Tag, "/:%") {
			t.Fatalf("ParseRef(%q) = %+v", s, r)
		}
	})
}
