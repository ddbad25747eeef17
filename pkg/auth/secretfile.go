package auth

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// maxSecretFile bounds a key or password file; real ones are tens of bytes.
const maxSecretFile = 64 << 10

// ReadSecretFile returns the secret held in the file at path: a token
// key, a cluster secret, a password. Secrets come from files (a mounted
// Kubernetes Secret, a 0600 file under /etc) because a command line is
// readable by every user of the host through /proc. Trailing CR/LF are
// dropped so that a secret written by echo or an editor matches one
// written by printf. A secret shorter than minLen bytes is refused.
// Errors wrap ErrConfig.
func ReadSecretFile(path string, minLen int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("auth: %w: %w", ErrConfig, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("auth: %w: secret file %s: %w", ErrConfig, path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("auth: %w: secret file %s is larger than %d bytes", ErrConfig, path, maxSecretFile)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < max(minLen, 1) {
		return "", fmt.Errorf("auth: %w: secret file %s holds %d bytes, need at least %d", ErrConfig, path, len(b), max(minLen, 1))
	}
	return string(b), nil
}
