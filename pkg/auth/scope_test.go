package auth

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		in      string
		want    ResourceActions
		wantErr bool
	}{
		{in: "repository:foo:pull", want: ResourceActions{Type: "repository", Name: "foo", Actions: []string{"pull"}}},
		{in: "repository:foo/bar:pull,push", want: ResourceActions{Type: "repository", Name: "foo/bar", Actions: []string{"pull", "push"}}},
		{in: "repository:foo:push,pull,push", want: ResourceActions{Type: "repository", Name: "foo", Actions: []string{"push", "pull"}}},
		{in: "registry:catalog:*", want: ResourceActions{Type: "registry", Name: "catalog", Actions: []string{"*"}}},
		{in: "repository:localhost:5000/foo:pull", want: ResourceActions{Type: "repository", Name: "localhost:5000/foo", Actions: []string{"pull"}}},
		{in: "repository(plugin):foo:pull", want: ResourceActions{Type: "repository", Class: "plugin", Name: "foo", Actions: []string{"pull"}}},
		{in: "repository:Foo.Bar_baz-1:delete", want: ResourceActions{Type: "repository", Name: "Foo.Bar_baz-1", Actions: []string{"delete"}}},
		{in: "widget:foo:frobnicate", want: ResourceActions{Type: "widget", Name: "foo", Actions: []string{"frobnicate"}}},

		{in: "", wantErr: true},
		{in: "repository", wantErr: true},
		{in: "repository:foo", wantErr: true},
		{in: "repository::pull", wantErr: true},
		{in: ":foo:pull", wantErr: true},
		{in: "repository:foo:", wantErr: true},
		{in: "repository:foo:pull,", wantErr: true},
		{in: "repository:foo:,pull", wantErr: true},
		{in: "repository:foo:PULL", wantErr: true},
		{in: "repository:foo:pull push", wantErr: true},
		{in: "Repository:foo:pull", wantErr: true},
		{in: "repository(:foo:pull", wantErr: true},
		{in: "repository(plugin:foo:pull", wantErr: true},
		{in: "repository():foo:pull", wantErr: true},
		{in: "repository(a)(b):foo:pull", wantErr: true},
		{in: "repository:foo bar:pull", wantErr: true},
		{in: `repository:foo"bar:pull`, wantErr: true},
		{in: "repository:foo\\bar:pull", wantErr: true},
		{in: "repository:foo\x00:pull", wantErr: true},
		{in: "repository:foo\r\nX-Evil: 1:pull", wantErr: true},
		{in: "repository:fö:pull", wantErr: true},
		{in: "repository:" + strings.Repeat("a", maxScopeLen) + ":pull", wantErr: true},
		{in: "repository:foo:" + strings.Repeat("pull,", 300) + "pull", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 40)], func(t *testing.T) {
			got, err := ParseScope(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidScope) {
					t.Fatalf("err = %v, want ErrInvalidScope (got %+v)", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseScopes(t *testing.T) {
	tests := []struct {
		name    string
		params  []string
		want    int
		wantErr bool
	}{
		{name: "none", params: nil, want: 0},
		{name: "repeated", params: []string{"repository:a:pull", "repository:b:push"}, want: 2},
		{name: "space joined", params: []string{"repository:a:pull repository:b:pull,push  registry:catalog:*"}, want: 3},
		{name: "empty param", params: []string{""}, want: 0},
		{name: "one bad", params: []string{"repository:a:pull", "nonsense"}, wantErr: true},
		{name: "max", params: []string{strings.Repeat("repository:a:pull ", maxScopes)}, want: maxScopes},
		{name: "too many", params: []string{strings.Repeat("repository:a:pull ", maxScopes+1)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseScopes(tt.params)
			if (err != nil) != tt.wantErr || len(got) != tt.want {
				t.Fatalf("got %d scopes, err %v; want %d, error %v", len(got), err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestScopeFor(t *testing.T) {
	tests := []struct {
		name   string
		access []Access
		want   string
	}{
		{"none", nil, ""},
		{"pull", []Access{repo("foo", Pull)}, "repository:foo:pull"},
		{"merged", []Access{repo("foo", Pull), repo("foo", Push), repo("foo", Pull)}, "repository:foo:pull,push"},
		{"two repos", []Access{repo("a", Pull), repo("b", Push)}, "repository:a:pull repository:b:push"},
		{"catalog", []Access{catalog}, "registry:catalog:*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scopeFor(tt.access); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzParseScope checks that ParseScope never panics, that what it accepts
// round-trips through String, and that an accepted scope holds nothing
// that could break out of a quoted challenge parameter or a header.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"repository:foo/bar:pull,push", "registry:catalog:*", "repository:localhost:5000/a:pull",
		"repository(plugin):x:pull", "repository:foo:", "::", ":::", "a:b:c,d,c", "repository(:x:y",
		"repository:foo\"bar:pull", "repository:a:pull\x00", strings.Repeat(":", 100),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ra, err := ParseScope(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidScope) {
				t.Fatalf("error %v does not wrap ErrInvalidScope", err)
			}
			return
		}
		if ra.Type == "" || ra.Name == "" || len(ra.Actions) == 0 {
			t.Fatalf("accepted %q as %+v", s, ra)
		}
		if strings.ContainsAny(ra.String(), " \"\\\r\n\x00") {
			t.Fatalf("accepted unsafe characters in %q", s)
		}
		again, err := ParseScope(ra.String())
		if err != nil || !reflect.DeepEqual(again, ra) {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, ra, ra.String(), again, err)
		}
	})
}
