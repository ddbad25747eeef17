package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalidScope is returned (wrapped) by ParseScope.
var ErrInvalidScope = errors.New("invalid scope")

// Limits on token requests: a docker push asks for two or three scopes, a
// cross-repository copy a few more.
const (
	maxScopeLen = 1024
	maxScopes   = 32
)

// ResourceActions is one resource of a scope, and one entry of a token's
// "access" claim (the Docker token spec's JSON shape).
type ResourceActions struct {
	Type    string   `json:"type"`
	Class   string   `json:"class,omitempty"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// String renders ra in scope syntax, "type[(class)]:name:action,action".
func (ra ResourceActions) String() string {
	t := ra.Type
	if ra.Class != "" {
		t += "(" + ra.Class + ")"
	}
	return t + ":" + ra.Name + ":" + strings.Join(ra.Actions, ",")
}

// ParseScope parses one Docker token resource scope,
// "type[(class)]:name:action[,action...]", e.g. "repository:foo/bar:pull,push"
// or "registry:catalog:*". The name ends at the last colon, so a name with a
// registry port ("repository:host:5000/foo:pull") parses. Types and actions
// are not checked against what the origin knows: granting is the issuer's
// business. Errors wrap ErrInvalidScope.
func ParseScope(s string) (ResourceActions, error) {
	if len(s) > maxScopeLen {
		return ResourceActions{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidScope, maxScopeLen)
	}
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 {
		return ResourceActions{}, fmt.Errorf("%w: %q is not type:name:actions", ErrInvalidScope, s)
	}
	name, acts := rest[:i], rest[i+1:]
	var ra ResourceActions
	if t, class, hasClass := strings.Cut(typ, "("); hasClass {
		class, closed := strings.CutSuffix(class, ")")
		if !closed || !lowerAlnum(class) {
			return ResourceActions{}, fmt.Errorf("%w: malformed resource class in %q", ErrInvalidScope, s)
		}
		typ, ra.Class = t, class
	}
	if !lowerAlnum(typ) {
		return ResourceActions{}, fmt.Errorf("%w: malformed resource type in %q", ErrInvalidScope, s)
	}
	if !validScopeName(name) {
		return ResourceActions{}, fmt.Errorf("%w: malformed resource name in %q", ErrInvalidScope, s)
	}
	ra.Type, ra.Name = typ, name
	for a := range strings.SplitSeq(acts, ",") {
		if a != "*" && !lowerAlpha(a) {
			return ResourceActions{}, fmt.Errorf("%w: malformed action %q", ErrInvalidScope, a)
		}
		if !slices.Contains(ra.Actions, a) {
			ra.Actions = append(ra.Actions, a)
		}
	}
	return ra, nil
}

// parseScopes parses the scope query parameters of a token request. Each
// may hold several space-separated scopes (docker joins them; others
// repeat the parameter).
func parseScopes(params []string) ([]ResourceActions, error) {
	var out []ResourceActions
	for _, p := range params {
		for s := range strings.FieldsSeq(p) {
			if len(out) == maxScopes {
				return nil, fmt.Errorf("%w: more than %d scopes", ErrInvalidScope, maxScopes)
			}
			ra, err := ParseScope(s)
			if err != nil {
				return nil, err
			}
			out = append(out, ra)
		}
	}
	return out, nil
}

// scopeFor renders what access needs as the scope parameter of a Bearer
// challenge: one scope per resource with its actions merged
// ("repository:foo:pull,push"), separated by spaces; the catalog is
// "registry:catalog:*" as clients expect.
func scopeFor(access []Access) string {
	var out []ResourceActions
	for _, a := range access {
		act := string(a.Action)
		if a.Type == TypeRegistry && a.Name == "catalog" {
			act = "*"
		}
		i := slices.IndexFunc(out, func(ra ResourceActions) bool { return ra.Type == a.Type && ra.Name == a.Name })
		if i < 0 {
			out = append(out, ResourceActions{Type: a.Type, Name: a.Name})
			i = len(out) - 1
		}
		if !slices.Contains(out[i].Actions, act) {
			out[i].Actions = append(out[i].Actions, act)
		}
	}
	parts := make([]string, len(out))
	for i, ra := range out {
		parts[i] = ra.String()
	}
	return strings.Join(parts, " ")
}

func lowerAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func lowerAlpha(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// validScopeName accepts the characters of the spec's resourcename
// (hostname, port and path components): letters, digits and "._-/:".
// Anything else, notably spaces, quotes and control characters, would not
// survive being echoed in a challenge or a log line.
func validScopeName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-/:", c) >= 0) {
			return false
		}
	}
	return true
}
