package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestBasicAuthorize(t *testing.T) {
	file := htpasswdFile(t, "alice", "alice-pw", "agent", "agent-pw", "ci", "ci-pw")
	users := map[string]UserPolicy{
		"agent": {Actions: []Action{Pull}},
		"ci":    {Actions: []Action{Pull, Push}, Repositories: []string{"team/*"}},
	}
	const challenge = `Basic realm="my \"registry\""`
	tests := []struct {
		name     string
		anonPull bool
		authz    string
		access   []Access
		want     error // nil, ErrUnauthorized or ErrDenied
		subject  string
	}{
		{name: "valid push", authz: basic("alice", "alice-pw"), access: []Access{repo("foo/bar", Pull), repo("foo/bar", Push)}, subject: "alice"},
		{name: "valid base check", authz: basic("alice", "alice-pw"), subject: "alice"},
		{name: "valid catalog", authz: basic("alice", "alice-pw"), access: []Access{catalog}, subject: "alice"},
		{name: "wrong password", authz: basic("alice", "nope"), access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "unknown user", authz: basic("mallory", "alice-pw"), access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "no credentials", access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "bearer scheme", authz: "Bearer abc", access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "malformed basic", authz: "Basic !!!", access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "1 MiB header", authz: "Basic " + strings.Repeat("QUFB", 1<<18), access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "1 MiB password", authz: basic("alice", strings.Repeat("p", 1<<20)), access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},

		{name: "anon pull", anonPull: true, access: []Access{repo("foo", Pull)}},
		{name: "anon catalog", anonPull: true, access: []Access{catalog}},
		{name: "anon push challenged", anonPull: true, access: []Access{repo("foo", Pull), repo("foo", Push)}, want: ErrUnauthorized},
		{name: "anon delete challenged", anonPull: true, access: []Access{repo("foo", Delete)}, want: ErrUnauthorized},
		{name: "anon base check challenged", anonPull: true, want: ErrUnauthorized},
		{name: "anon pull bad creds", anonPull: true, authz: basic("alice", "nope"), access: []Access{repo("foo", Pull)}, want: ErrUnauthorized},
		{name: "anon pull good creds", anonPull: true, authz: basic("alice", "alice-pw"), access: []Access{repo("foo", Delete)}, subject: "alice"},

		{name: "anon metainfo", anonPull: true, access: []Access{MetaInfo}},
		{name: "metainfo challenged without anon pull", access: []Access{MetaInfo}, want: ErrUnauthorized},
		{name: "metainfo for a pull-only user", authz: basic("agent", "agent-pw"), access: []Access{MetaInfo}, subject: "agent"},
		{name: "metainfo for a user limited to some repositories", authz: basic("ci", "ci-pw"), access: []Access{MetaInfo}, subject: "ci"},
		{name: "metainfo wrong password", anonPull: true, authz: basic("agent", "nope"), access: []Access{MetaInfo}, want: ErrUnauthorized},
		{name: "policy pull ok", authz: basic("agent", "agent-pw"), access: []Access{repo("foo", Pull)}, subject: "agent"},
		{name: "policy catalog ok", authz: basic("agent", "agent-pw"), access: []Access{catalog}, subject: "agent"},
		{name: "policy push denied", authz: basic("agent", "agent-pw"), access: []Access{repo("foo", Pull), repo("foo", Push)}, want: ErrDenied, subject: "agent"},
		{name: "policy prefix push", authz: basic("ci", "ci-pw"), access: []Access{repo("team/app", Push)}, subject: "ci"},
		{name: "policy nested prefix", authz: basic("ci", "ci-pw"), access: []Access{repo("team/a/b", Pull)}, subject: "ci"},
		{name: "policy other repo", authz: basic("ci", "ci-pw"), access: []Access{repo("teamx/app", Pull)}, want: ErrDenied, subject: "ci"},
		{name: "policy prefix itself", authz: basic("ci", "ci-pw"), access: []Access{repo("team", Pull)}, want: ErrDenied, subject: "ci"},
		{name: "policy delete", authz: basic("ci", "ci-pw"), access: []Access{repo("team/app", Delete)}, want: ErrDenied, subject: "ci"},
		{name: "policy no catalog", authz: basic("ci", "ci-pw"), access: []Access{catalog}, want: ErrDenied, subject: "ci"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Config{Mode: ModeHtpasswd, Realm: `my "registry"`, Htpasswd: file, AnonymousPull: tt.anonPull, Users: users})
			if err != nil {
				t.Fatal(err)
			}
			id, err := a.Authorize(request(tt.authz), tt.access...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if id.Subject != tt.subject || id.Anonymous != (tt.subject == "" && err == nil) {
				t.Fatalf("identity %+v, want subject %q", id, tt.subject)
			}
			if errors.Is(err, ErrUnauthorized) {
				if got := Challenge(err); got != challenge {
					t.Fatalf("challenge %q, want %q", got, challenge)
				}
			} else if got := Challenge(err); got != "" {
				t.Fatalf("challenge %q on %v", got, err)
			}
		})
	}
}

func TestModeNone(t *testing.T) {
	for _, mode := range []string{"", ModeNone} {
		a, err := New(Config{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		id, err := a.Authorize(request("Basic garbage"), repo("foo", Delete))
		if err != nil || !id.Anonymous {
			t.Fatalf("mode %q: %+v %v", mode, id, err)
		}
	}
}
