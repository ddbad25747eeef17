// Package digest parses and computes OCI content digests ("algorithm:hex").
//
// Digests arrive from the network in URL paths, query strings, headers and
// manifests, so Parse is strict: only the registered algorithms, only lower
// case hex of the exact length. Anything else is ErrInvalid, never a panic.
package digest

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// ErrInvalid is returned (wrapped) for a digest that is malformed.
var ErrInvalid = errors.New("invalid digest")

// ErrUnsupported is returned (wrapped) for a well-formed digest whose
// algorithm Shoal does not implement.
var ErrUnsupported = errors.New("unsupported digest algorithm")

// Algorithm names a hash function of the OCI image spec.
type Algorithm string

// The algorithms Shoal implements. SHA256 is canonical: it is what Shoal
// computes for content it creates.
const (
	SHA256 Algorithm = "sha256"
	SHA512 Algorithm = "sha512"
)

// hexLen is the length of the encoded part for each algorithm.
func (a Algorithm) hexLen() int {
	switch a {
	case SHA256:
		return 64
	case SHA512:
		return 128
	}
	return 0
}

// Available reports whether Shoal can compute a.
func (a Algorithm) Available() bool { return a.hexLen() > 0 }

// Hash returns a new hash.Hash for a; it panics for an unavailable algorithm,
// which Parse never produces.
func (a Algorithm) Hash() hash.Hash {
	switch a {
	case SHA256:
		return sha256.New()
	case SHA512:
		return sha512.New()
	}
	panic(fmt.Sprintf("digest: algorithm %q not available", string(a)))
}

// Digest is a validated "algorithm:hex" string. The zero value is empty and
// means "no digest".
type Digest string

// maxLen bounds the input Parse looks at; nothing valid is longer.
const maxLen = 256

// Parse validates s as a digest of an available algorithm.
func Parse(s string) (Digest, error) {
	if len(s) > maxLen {
		return "", fmt.Errorf("%w: %d bytes long", ErrInvalid, len(s))
	}
	alg, enc, ok := strings.Cut(s, ":")
	if !ok || alg == "" || enc == "" {
		return "", fmt.Errorf("%w: %q has no algorithm:hex form", ErrInvalid, s)
	}
	if !validAlgorithmName(alg) {
		return "", fmt.Errorf("%w: bad algorithm %q", ErrInvalid, alg)
	}
	a := Algorithm(alg)
	if !a.Available() {
		if !validEncoded(enc) {
			return "", fmt.Errorf("%w: bad encoding %q", ErrInvalid, enc)
		}
		return "", fmt.Errorf("%w: %q", ErrUnsupported, alg)
	}
	if len(enc) != a.hexLen() {
		return "", fmt.Errorf("%w: %s hex must be %d characters, got %d", ErrInvalid, alg, a.hexLen(), len(enc))
	}
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("%w: non-hex character %q in %s digest", ErrInvalid, c, alg)
		}
	}
	return Digest(s), nil
}

// validAlgorithmName follows the image spec grammar:
// algorithm-component ([+._-] algorithm-component)*, components [a-z0-9]+.
func validAlgorithmName(s string) bool {
	prevSep := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			prevSep = false
		case c == '+' || c == '.' || c == '_' || c == '-':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return !prevSep
}

// validEncoded follows the image spec grammar for the encoded part: [a-zA-Z0-9=_-]+.
func validEncoded(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '=' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// Algorithm returns the algorithm part.
func (d Digest) Algorithm() Algorithm {
	alg, _, _ := strings.Cut(string(d), ":")
	return Algorithm(alg)
}

// Hex returns the encoded part.
func (d Digest) Hex() string {
	_, enc, _ := strings.Cut(string(d), ":")
	return enc
}

// String returns the digest in "algorithm:hex" form.
func (d Digest) String() string { return string(d) }

// FromBytes returns the sha256 digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return NewDigest(SHA256, sum[:])
}

// NewDigest formats a raw hash sum as a digest of algorithm a.
func NewDigest(a Algorithm, sum []byte) Digest {
	return Digest(string(a) + ":" + fmt.Sprintf("%x", sum))
}

// FromHash formats the current sum of h as a digest of algorithm a.
func FromHash(a Algorithm, h hash.Hash) Digest { return NewDigest(a, h.Sum(nil)) }
