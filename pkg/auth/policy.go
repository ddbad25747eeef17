package auth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/shoal-project/shoal/pkg/reference"
)

// UserPolicy limits what one htpasswd user may do. The common case is a
// pull-only account for agents next to a CI account that pushes:
//
//	users:
//	  agents: {actions: [pull]}
//	  ci-team-a: {actions: [pull, push], repositories: ["team-a/*"]}
type UserPolicy struct {
	// Actions the user may perform on the repositories below: pull, push
	// and/or delete. Must not be empty.
	Actions []Action `yaml:"actions"`
	// Repositories the actions apply to: exact names, or "prefix/*" for
	// every repository below prefix, or "*" for all. Empty means all. Only
	// a user with pull on all repositories may list the catalog, since the
	// catalog names every repository.
	Repositories []string `yaml:"repositories"`
}

// policy is the validated Config.Users. A nil policy allows every
// authenticated user everything.
type policy map[string]UserPolicy

// newPolicy validates users against the htpasswd file they refer to, so a
// misspelt user name fails at start instead of leaving the real user
// unrestricted.
func newPolicy(users map[string]UserPolicy, h *htpasswd) (policy, error) {
	if len(users) == 0 {
		return nil, nil
	}
	p := policy{}
	for name, up := range users {
		if !h.has(name) {
			return nil, fmt.Errorf("auth: %w: users: %q is not in the htpasswd file", ErrConfig, name)
		}
		if len(up.Actions) == 0 {
			return nil, fmt.Errorf("auth: %w: users: %q has no actions", ErrConfig, name)
		}
		for _, a := range up.Actions {
			if !slices.Contains(allActions[:], a) {
				return nil, fmt.Errorf("auth: %w: users: %q: unknown action %q (want pull, push or delete)", ErrConfig, name, a)
			}
		}
		for _, pat := range up.Repositories {
			if pat == "*" {
				continue
			}
			if err := reference.ValidateName(strings.TrimSuffix(pat, "/*")); err != nil {
				return nil, fmt.Errorf("auth: %w: users: %q: repository pattern %q: %w", ErrConfig, name, pat, err)
			}
		}
		p[name] = UserPolicy{Actions: slices.Clone(up.Actions), Repositories: slices.Clone(up.Repositories)}
	}
	return p, nil
}

// allowed returns the actions user may perform on the resource typ:name, in
// allActions order. For the catalog and metainfo it returns [Pull] or
// nothing.
func (p policy) allowed(user, typ, name string) []Action {
	up, limited := p[user]
	switch typ {
	case TypeRepository:
		if !limited {
			return allActions[:]
		}
		if !up.covers(name) {
			return nil
		}
		var out []Action
		for _, a := range allActions {
			if slices.Contains(up.Actions, a) {
				out = append(out, a)
			}
		}
		return out
	case TypeRegistry:
		switch name {
		case "catalog":
			if !limited || (up.allRepositories() && slices.Contains(up.Actions, Pull)) {
				return []Action{Pull}
			}
		case MetaInfo.Name:
			if !limited || slices.Contains(up.Actions, Pull) {
				return []Action{Pull}
			}
		}
	}
	return nil
}

// permits reports whether user may perform a.
func (p policy) permits(user string, a Access) bool {
	return slices.Contains(p.allowed(user, a.Type, a.Name), a.Action)
}

func (up UserPolicy) allRepositories() bool {
	return len(up.Repositories) == 0 || slices.Contains(up.Repositories, "*")
}

// covers reports whether the repository name matches one of the patterns.
func (up UserPolicy) covers(name string) bool {
	if up.allRepositories() {
		return true
	}
	for _, pat := range up.Repositories {
		if prefix, ok := strings.CutSuffix(pat, "/*"); ok {
			if strings.HasPrefix(name, prefix+"/") {
				return true
			}
		} else if pat == name {
			return true
		}
	}
	return false
}
