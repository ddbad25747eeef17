// Package reference validates repository names, tags and manifest references
// as the distribution spec defines them. Names become directory paths in the
// store, so validation is also what keeps "..", encoded slashes and other path
// tricks out of the filesystem.
package reference

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shoal-project/shoal/pkg/digest"
)

// ErrNameInvalid and ErrTagInvalid are returned (wrapped) by the validators.
var (
	ErrNameInvalid = errors.New("invalid repository name")
	ErrTagInvalid  = errors.New("invalid tag")
)

// MaxNameLength bounds a repository name; distribution uses the same limit,
// which keeps "<host>/<name>:<tag>" references usable by every client.
const MaxNameLength = 255

// MaxTagLength is the spec's limit (one leading character plus 127).
const MaxTagLength = 128

// ValidateName checks name against the spec grammar:
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrNameInvalid, len(name), MaxNameLength)
	}
	for comp := range strings.SplitSeq(name, "/") {
		if !validComponent(comp) {
			return fmt.Errorf("%w: component %q", ErrNameInvalid, comp)
		}
	}
	return nil
}

// validComponent checks [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* by hand: a regexp
// would do, but this runs on every request.
func validComponent(c string) bool {
	if c == "" {
		return false
	}
	i := 0
	alnum := func() bool {
		start := i
		for i < len(c) && (c[i] >= 'a' && c[i] <= 'z' || c[i] >= '0' && c[i] <= '9') {
			i++
		}
		return i > start
	}
	if !alnum() {
		return false
	}
	for i < len(c) {
		switch c[i] {
		case '.':
			i++
		case '_':
			i++
			if i < len(c) && c[i] == '_' {
				i++
			}
		case '-':
			for i < len(c) && c[i] == '-' {
				i++
			}
		default:
			return false
		}
		if !alnum() {
			return false
		}
	}
	return true
}

// ValidateTag checks tag against [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidateTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLength {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrTagInvalid, len(tag), MaxTagLength)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if i > 0 {
			ok = ok || c == '.' || c == '-'
		}
		if !ok {
			return fmt.Errorf("%w: character %q at %d", ErrTagInvalid, c, i)
		}
	}
	return nil
}

// Ref is the <reference> of a manifest URL: a tag or a digest.
type Ref struct {
	Tag    string
	Digest digest.Digest
}

// IsDigest reports whether the reference names content by digest.
func (r Ref) IsDigest() bool { return r.Digest != "" }

func (r Ref) String() string {
	if r.IsDigest() {
		return r.Digest.String()
	}
	return r.Tag
}

// ParseRef parses a manifest reference. Anything with a colon is a digest
// (tags cannot contain one); errors wrap ErrTagInvalid or digest.ErrInvalid /
// digest.ErrUnsupported.
func ParseRef(s string) (Ref, error) {
	if strings.Contains(s, ":") {
		d, err := digest.Parse(s)
		if err != nil {
			return Ref{}, err
		}
		return Ref{Digest: d}, nil
	}
	if err := ValidateTag(s); err != nil {
		return Ref{}, err
	}
	return Ref{Tag: s}, nil
}
