package auth

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseHtpasswd(t *testing.T) {
	alice, bob := hashFor(t, "alice-pw"), hashFor(t, "bob-pw")
	y := "$2y$" + alice[4:] // htpasswd -B writes $2y$
	tests := []struct {
		name    string
		content string
		users   []string
		wantErr string // substring; "" for success
	}{
		{name: "empty", content: "", users: nil},
		{name: "one user", content: "alice:" + alice + "\n", users: []string{"alice"}},
		{name: "2y and no trailing newline", content: "alice:" + y, users: []string{"alice"}},
		{name: "comments blank lines CRLF", content: "# users\r\n\r\n  \nalice:" + alice + "\r\n# bob below\nbob:" + bob + "\r\n", users: []string{"alice", "bob"}},
		{name: "no colon", content: "alice:" + alice + "\nbob\n", wantErr: "line 2: want user:hash"},
		{name: "empty user", content: ":" + alice, wantErr: "line 1: invalid user name"},
		{name: "user with space", content: "al ice:" + alice, wantErr: "line 1: invalid user name"},
		{name: "empty hash", content: "alice:", wantErr: "line 1: user \"alice\": empty password hash"},
		{name: "duplicate", content: "alice:" + alice + "\n\nalice:" + bob, wantErr: "line 3: user \"alice\" already defined on line 1"},
		{name: "md5", content: "alice:$apr1$abc$def", wantErr: "line 1: user \"alice\": MD5 (apr1) password hash; only bcrypt"},
		{name: "sha1", content: "# x\nalice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", wantErr: "line 2: user \"alice\": SHA-1 password hash"},
		{name: "sha512 crypt", content: "alice:$6$salt$hash", wantErr: "SHA-crypt password hash"},
		{name: "des crypt", content: "alice:rl0uE2qyN/a9Y", wantErr: "crypt or plain-text password hash"},
		{name: "plain", content: "alice:secret", wantErr: "crypt or plain-text"},
		{name: "2x variant", content: "alice:$2x$" + alice[4:], wantErr: "unsupported bcrypt variant"},
		{name: "truncated bcrypt", content: "alice:" + alice[:59], wantErr: "bcrypt hash is 59 characters, want 60"},
		{name: "long bcrypt", content: "alice:" + alice + "x", wantErr: "bcrypt hash is 61 characters"},
		{name: "bad cost", content: "alice:" + alice[:4] + "99" + alice[6:], wantErr: "malformed bcrypt hash"},
		{name: "signed cost", content: "alice:" + alice[:4] + "+5" + alice[6:], wantErr: "malformed bcrypt hash"},
		{name: "bad salt char", content: "alice:" + alice[:10] + "!" + alice[11:], wantErr: "malformed bcrypt hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseHtpasswd([]byte(tt.content))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(h.users) != len(tt.users) {
				t.Fatalf("%d users, want %d", len(h.users), len(tt.users))
			}
			for _, u := range tt.users {
				if !h.has(u) {
					t.Errorf("user %q missing", u)
				}
			}
			if len(h.dummy) != bcryptHashLen {
				t.Errorf("dummy hash is %d bytes", len(h.dummy))
			}
		})
	}
}

func TestLoadHtpasswdErrors(t *testing.T) {
	tests := []struct {
		name string
		path string
	}{
		{"unset", ""},
		{"missing", filepath.Join(t.TempDir(), "nope")},
		{"malformed", writeFile(t, "htpasswd", "alice:$apr1$x$y\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := loadHtpasswd(tt.path); !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestHtpasswdVerify(t *testing.T) {
	h, err := loadHtpasswd(htpasswdFile(t, "alice", "alice-pw", "bob", "pw:with:colons"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, password string
		want           bool
	}{
		{"alice", "alice-pw", true},
		{"bob", "pw:with:colons", true},
		{"alice", "bob-pw", false},
		{"alice", "", false},
		{"bob", "alice-pw", false},
		{"carol", "alice-pw", false},
		{"", "", false},
		{"alic", "alice-pw", false},
		{"alicee", "alice-pw", false},
		{"ALICE", "alice-pw", false},
		{"alice", strings.Repeat("x", 10_000), false},
	}
	for _, tt := range tests {
		if got := h.verify(tt.user, tt.password); got != tt.want {
			t.Errorf("verify(%q, %.20q) = %v, want %v", tt.user, tt.password, got, tt.want)
		}
	}
}

// An unknown user must still cost a bcrypt comparison at the file's cost:
// the dummy hash is generated at the highest cost in the file.
func TestHtpasswdDummyCost(t *testing.T) {
	h, err := parseHtpasswd([]byte("alice:" + hashFor(t, "pw") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(h.dummy[4:6]); got != "04" {
		t.Errorf("dummy cost %s, want 04 (MinCost, as in the file)", got)
	}
}
