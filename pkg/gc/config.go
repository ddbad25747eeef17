package gc

import (
	"errors"
	"slices"
	"time"
)

// Config is the origin's `gc:` section.
type Config struct {
	// Interval runs a pass (retention, then this origin's sweep) every
	// Interval; 0 (the default) runs passes only when asked (`shoal-origin
	// gc`).
	Interval time.Duration `yaml:"interval"`
	// Grace protects a digest pushed (uploaded, mounted, referenced by a
	// pushed manifest) within this long from collection, and an untagged
	// manifest from retention (default 1h). It must outlast the longest
	// push: the time between a client's upload of a blob and its push of
	// the manifest that references it.
	Grace time.Duration `yaml:"grace"`
	// DryRun makes scheduled passes report what they would remove and
	// remove nothing.
	DryRun bool `yaml:"dry_run"`
	// DeletesPerSecond bounds the tag, manifest and blob deletions of a
	// pass (default 50; negative: unlimited), so a first pass over a large
	// store does not flood etcd or the disk.
	DeletesPerSecond float64 `yaml:"deletes_per_second"`
	// TempMaxAge removes upload temp files untouched for this long
	// (default 2 × the origin's upload idle timeout, set by the caller).
	TempMaxAge time.Duration `yaml:"temp_max_age"`
	// Retention rules, first match per repository.
	Retention []Rule `yaml:"retention"`
}

func (c Config) withDefaults() Config {
	if c.Grace == 0 {
		c.Grace = time.Hour
	}
	if c.DeletesPerSecond == 0 {
		c.DeletesPerSecond = 50
	}
	if c.TempMaxAge == 0 {
		c.TempMaxAge = 2 * time.Hour
	}
	return c
}

func (c *Config) validate() error {
	if c.Interval < 0 || c.Grace < 0 || c.TempMaxAge < 0 {
		return errors.New("gc: interval, grace and temp_max_age must not be negative")
	}
	for i := range c.Retention {
		if err := c.Retention[i].compile(); err != nil {
			return err
		}
	}
	return nil
}

// Validate reports a configuration New would refuse (a bad retention
// pattern or regular expression, a negative duration), so that
// `--check-config` catches it before the origin starts.
func (c Config) Validate() error {
	c = c.withDefaults()
	c.Retention = slices.Clone(c.Retention)
	return c.validate()
}
