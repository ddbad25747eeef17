package auth

import (
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseBasic(t *testing.T) {
	tests := []struct {
		name     string
		value    string
		user, pw string
		wantErr  error
	}{
		{name: "ok", value: b64("alice:pw"), user: "alice", pw: "pw"},
		{name: "colons in password", value: b64("alice:a:b:c"), user: "alice", pw: "a:b:c"},
		{name: "empty password", value: b64("alice:"), user: "alice", pw: ""},
		{name: "utf8 user", value: b64("zoë:pw"), user: "zoë", pw: "pw"},
		{name: "no colon", value: b64("alice"), wantErr: errHeaderMalformed},
		{name: "empty user", value: b64(":pw"), wantErr: errHeaderMalformed},
		{name: "control char user", value: b64("al\x00ice:pw"), wantErr: errHeaderMalformed},
		{name: "invalid utf8 user", value: b64("\xff\xfe:pw"), wantErr: errHeaderMalformed},
		{name: "long user", value: b64(strings.Repeat("a", maxUser+1) + ":pw"), wantErr: errHeaderMalformed},
		{name: "not base64", value: "!!!!", wantErr: errHeaderMalformed},
		{name: "unpadded", value: strings.TrimRight(b64("alice:p"), "="), wantErr: errHeaderMalformed},
		{name: "empty", value: "", wantErr: errHeaderMalformed},
		{name: "huge", value: strings.Repeat("A", 1<<20), wantErr: errHeaderTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pw, err := parseBasic(tt.value)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if user != tt.user || pw != tt.pw {
				t.Fatalf("got %q %q, want %q %q", user, pw, tt.user, tt.pw)
			}
		})
	}
}

func TestAuthorizationHeader(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		present bool
		scheme  string
		wantErr error
	}{
		{name: "none", present: false},
		{name: "basic", headers: []string{"Basic abc"}, present: true, scheme: "basic"},
		{name: "scheme case", headers: []string{"bEaReR  tok "}, present: true, scheme: "bearer"},
		{name: "scheme only", headers: []string{"Bearer"}, present: true, wantErr: errHeaderMalformed},
		{name: "scheme and spaces", headers: []string{"Bearer   "}, present: true, wantErr: errHeaderMalformed},
		{name: "empty value", headers: []string{""}, present: true, wantErr: errHeaderMalformed},
		{name: "two headers", headers: []string{"Basic a", "Basic b"}, present: true, wantErr: errHeaderMultiple},
		{name: "1 MiB", headers: []string{"Basic " + strings.Repeat("A", 1<<20)}, present: true, wantErr: errHeaderTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v2/", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			c, present, err := authorization(r)
			if present != tt.present || !errors.Is(err, tt.wantErr) {
				t.Fatalf("present %v err %v, want %v %v", present, err, tt.present, tt.wantErr)
			}
			if err == nil && c.scheme != tt.scheme {
				t.Fatalf("scheme %q, want %q", c.scheme, tt.scheme)
			}
		})
	}
}

// FuzzParseBasic checks that any header value is either refused or yields
// a user that could be in an htpasswd file, and never panics.
func FuzzParseBasic(f *testing.F) {
	for _, s := range []string{
		"Basic " + b64("alice:pw"), "Basic " + b64(":"), "Basic " + b64("a:b:c"),
		"basic ====", "Basic", "Bearer x.y.z", "Basic " + b64("\x00:\xff"), "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		c, err := parseAuthorization(h)
		if err != nil {
			return
		}
		if c.scheme == "" || c.value == "" || len(h) > maxAuthHeader {
			t.Fatalf("accepted %q as %+v", h, c)
		}
		user, pw, err := parseBasic(c.value)
		if err != nil {
			return
		}
		if !validUser(user) {
			t.Fatalf("accepted invalid user %q", user)
		}
		if got, _ := base64.StdEncoding.DecodeString(c.value); string(got) != user+":"+pw {
			t.Fatalf("decoded %q, split into %q and %q", got, user, pw)
		}
	})
}
