// Package config loads a component's YAML configuration file strictly: an
// unknown key is an error, so a typo in a deployment fails at start instead
// of silently falling back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// maxFile bounds a config file; real ones are a few KiB.
const maxFile = 1 << 20

// Load decodes the YAML file at path into dst. An empty path leaves dst as is.
func Load(path string, dst any) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > maxFile {
		return fmt.Errorf("config %s: larger than %d bytes", path, maxFile)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}
