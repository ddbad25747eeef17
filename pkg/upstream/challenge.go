package upstream

import (
	"errors"
	"strings"
)

// Challenge is one challenge of a WWW-Authenticate header (RFC 9110 §11.6.1):
// a scheme and its auth-params, names lowercased. A token68 challenge keeps
// its scheme and no params.
type Challenge struct {
	Scheme string
	Params map[string]string
}

// maxChallengeHeader bounds what ParseChallenges reads: real registries send
// a few hundred bytes, and the header comes from a server we do not control.
const maxChallengeHeader = 8 << 10

// maxParams bounds the auth-params of one header.
const maxParams = 32

// errChallenge: the header is not a list of challenges.
var errChallenge = errors.New("upstream: malformed WWW-Authenticate")

// ParseChallenges parses a WWW-Authenticate value into its challenges, in
// order. It is strict where it must be (quoted strings, parameter names)
// and bounded in size, since the upstream is not trusted; a header it
// cannot parse is an error, never a partial guess.
func ParseChallenges(h string) ([]Challenge, error) {
	if len(h) > maxChallengeHeader {
		return nil, errChallenge
	}
	p := &challengeParser{s: h}
	var out []Challenge
	params := 0
	for {
		p.skipSpaceAndCommas()
		if p.done() {
			break
		}
		scheme := p.token()
		if scheme == "" {
			return nil, errChallenge
		}
		ch := Challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
		// After the scheme: nothing, a token68, or auth-params.
		if p.skipSpace() && !p.done() && p.peek() != ',' {
			if err := p.params(&ch, &params); err != nil {
				return nil, err
			}
		}
		out = append(out, ch)
	}
	if len(out) == 0 {
		return nil, errChallenge
	}
	return out, nil
}

type challengeParser struct {
	s string
	i int
}

func (p *challengeParser) done() bool { return p.i >= len(p.s) }
func (p *challengeParser) peek() byte { return p.s[p.i] }

// skipSpace skips spaces and tabs and reports whether there were any.
func (p *challengeParser) skipSpace() bool {
	start := p.i
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
	return p.i > start
}

func (p *challengeParser) skipSpaceAndCommas() {
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t' || p.peek() == ',') {
		p.i++
	}
}

// isTchar is RFC 9110's token character.
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func (p *challengeParser) token() string {
	start := p.i
	for !p.done() && isTchar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// params reads `name=value` pairs separated by commas until the next
// challenge's scheme (a token not followed by '=') or the end. A token68
// (a token with trailing '='s and nothing after) is skipped.
func (p *challengeParser) params(ch *Challenge, count *int) error {
	for {
		save := p.i
		name := p.token()
		if name == "" {
			return errChallenge
		}
		p.skipSpace()
		if p.done() || p.peek() != '=' {
			// Not a parameter: the scheme of the next challenge.
			if len(ch.Params) == 0 {
				return errChallenge
			}
			p.i = save
			return nil
		}
		p.i++ // '='
		// token68: name followed only by '='s to the end or a comma.
		eq := p.i
		for !p.done() && p.peek() == '=' {
			p.i++
		}
		p.skipSpace()
		if p.done() || p.peek() == ',' {
			if p.i > eq || len(ch.Params) == 0 {
				// "scheme abc=" or "scheme abc==": a token68, no params.
				return p.afterParam()
			}
			return errChallenge // "name=" with an empty value
		}
		var val string
		if p.peek() == '"' {
			v, err := p.quoted()
			if err != nil {
				return err
			}
			val = v
		} else {
			val = p.token()
			if val == "" {
				return errChallenge
			}
		}
		*count++
		if *count > maxParams {
			return errChallenge
		}
		key := strings.ToLower(name)
		if _, dup := ch.Params[key]; dup {
			return errChallenge // RFC 9110: each name at most once
		}
		ch.Params[key] = val
		p.skipSpace()
		if p.done() {
			return nil
		}
		if p.peek() != ',' {
			return errChallenge
		}
		// Commas, then either another param or the next challenge.
		p.skipSpaceAndCommas()
		if p.done() {
			return nil
		}
	}
}

// afterParam ends a token68 challenge at a comma or the end.
func (p *challengeParser) afterParam() error {
	p.skipSpace()
	if !p.done() && p.peek() != ',' {
		return errChallenge
	}
	return nil
}

// quoted reads a quoted-string, undoing backslash escapes. Control
// characters other than tab are refused.
func (p *challengeParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.peek()
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.done() {
				return "", errChallenge
			}
			c = p.peek()
			p.i++
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "", errChallenge
			}
			b.WriteByte(c)
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", errChallenge
		default:
			b.WriteByte(c)
		}
	}
	return "", errChallenge // unterminated
}
