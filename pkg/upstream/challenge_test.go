package upstream

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Challenge
		bad  bool
	}{
		{name: "docker hub", in: `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"`,
			want: []Challenge{{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/debian:pull"}}}},
		{name: "basic", in: `Basic realm="Registry Realm"`, want: []Challenge{{"basic", map[string]string{"realm": "Registry Realm"}}}},
		{name: "bare scheme", in: `Negotiate`, want: []Challenge{{"negotiate", map[string]string{}}}},
		{name: "two challenges", in: `Basic realm="a", Bearer realm="https://t/x",service=s`,
			want: []Challenge{{"basic", map[string]string{"realm": "a"}}, {"bearer", map[string]string{"realm": "https://t/x", "service": "s"}}}},
		{name: "token68 then params", in: `Negotiate abc==, Basic realm=x`,
			want: []Challenge{{"negotiate", map[string]string{}}, {"basic", map[string]string{"realm": "x"}}}},
		{name: "escapes and case", in: `BEARER Realm="a\"b\\c", SCOPE="repository:x:pull,push"`,
			want: []Challenge{{"bearer", map[string]string{"realm": `a"b\c`, "scope": "repository:x:pull,push"}}}},
		{name: "spaces around =", in: `Bearer realm = "r" , service = s`, want: []Challenge{{"bearer", map[string]string{"realm": "r", "service": "s"}}}},
		{name: "empty", in: ``, bad: true},
		{name: "only commas", in: ` , ,`, bad: true},
		{name: "unterminated quote", in: `Bearer realm="abc`, bad: true},
		{name: "control char", in: "Bearer realm=\"a\x01b\"", bad: true},
		{name: "duplicate param", in: `Bearer realm="a",realm="b"`, bad: true},
		{name: "garbage after value", in: `Bearer realm="a" junk`, bad: true},
		{name: "empty value", in: `Bearer realm=, service=x`, bad: true},
		{name: "non-token scheme", in: `"Bearer" realm=x`, bad: true},
		{name: "too long", in: `Bearer realm="` + strings.Repeat("a", maxChallengeHeader) + `"`, bad: true},
		{name: "too many params", in: "Bearer " + manyParams(maxParams+1), bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChallenges(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseChallenges(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseChallenges(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseChallenges(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("p")
		b.WriteString(strings.Repeat("x", i+1))
		b.WriteString("=v,")
	}
	return b.String()
}

// FuzzParseChallenges: any header parses or errs, never panics, stays
// bounded, and what parses has lowercase token schemes.
func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"`,
		`Basic realm="x"`, `Negotiate abc==, Basic realm=x`, `Bearer realm="a\"b"`, `,,`, `Bearer realm="`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		chs, err := ParseChallenges(h)
		if err != nil {
			return
		}
		if len(chs) == 0 {
			t.Fatal("no challenges without an error")
		}
		for _, ch := range chs {
			if ch.Scheme == "" || ch.Scheme != strings.ToLower(ch.Scheme) {
				t.Fatalf("scheme %q", ch.Scheme)
			}
			for k := range ch.Params {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("param name %q", k)
				}
			}
		}
	})
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"17", 17 * time.Second},
		{"0", time.Second},
		{"-3", 0},
		{"99999999999", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), time.Second},
		{"soon", 0},
		{strings.Repeat("9", 100), 0},
	}
	for _, tc := range tests {
		if got := retryAfter(tc.in, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
