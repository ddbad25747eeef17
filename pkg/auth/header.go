package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"
)

// maxAuthHeader bounds the Authorization header we look at. Real ones are
// a few hundred bytes of Basic or under 2 KiB of JWT; anything longer is
// refused before it is decoded or parsed.
const maxAuthHeader = 8 << 10

// Errors of header parsing, wrapped into ErrUnauthorized by the callers.
var (
	errHeaderTooLong   = errors.New("authorization header too long")
	errHeaderMalformed = errors.New("malformed authorization header")
	errHeaderMultiple  = errors.New("more than one authorization header")
)

// credentials is a parsed Authorization header.
type credentials struct {
	scheme string // lower case: "basic", "bearer", ...
	value  string // the rest, without surrounding spaces
}

// authorization returns the request's credentials; present is false when
// there is no Authorization header at all. A header that is there but
// unusable is an error, never "anonymous".
func authorization(r *http.Request) (c credentials, present bool, err error) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return credentials{}, false, nil
	case 1:
	default:
		return credentials{}, true, errHeaderMultiple
	}
	c, err = parseAuthorization(values[0])
	return c, true, err
}

// parseAuthorization splits "<scheme> <value>".
func parseAuthorization(h string) (credentials, error) {
	if len(h) > maxAuthHeader {
		return credentials{}, errHeaderTooLong
	}
	scheme, value, ok := strings.Cut(strings.TrimSpace(h), " ")
	value = strings.TrimSpace(value)
	if !ok || scheme == "" || value == "" {
		return credentials{}, errHeaderMalformed
	}
	return credentials{scheme: strings.ToLower(scheme), value: value}, nil
}

// maxUser bounds a username, in htpasswd files and in Basic credentials.
const maxUser = 256

// validUser reports whether name can be an htpasswd user: non-empty,
// bounded, valid UTF-8, without colons, spaces or control characters.
func validUser(name string) bool {
	if name == "" || len(name) > maxUser || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r <= ' ' || r == ':' || r == 0x7f {
			return false
		}
	}
	return true
}

// parseBasic decodes the value of a Basic Authorization header into user
// and password. The password may contain colons; the user may not.
func parseBasic(value string) (user, password string, err error) {
	if len(value) > maxAuthHeader {
		return "", "", errHeaderTooLong
	}
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return "", "", errHeaderMalformed
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok || !validUser(user) {
		return "", "", errHeaderMalformed
	}
	return user, password, nil
}
