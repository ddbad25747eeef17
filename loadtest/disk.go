package main

import (
	"io/fs"
	"path/filepath"
	"sync"
	"time"
)

// diskUse is what the agents' data directories held during a pull,
// against their cache_bytes: the cache's limit should hold however a
// rollout loads it, counting what is still downloading, not only what the
// cache's own gauge counts.
type diskUse struct {
	LimitBytes int64 `json:"limit_bytes"`
	// MaxBytes is the most one agent's directory held in any sample.
	MaxBytes int64 `json:"max_bytes"`
	Samples  int   `json:"samples"`
	// OverLimit counts samples in which some agent held more than the
	// limit.
	OverLimit int `json:"over_limit_samples"`
}

// diskWatch samples directories until stopped.
type diskWatch struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	use   diskUse
}

// diskSampleEvery is often enough to see a layer's worth of growth at
// the load test's link speeds, and a walk of a few files is cheap.
const diskSampleEvery = 250 * time.Millisecond

func watchDisk(dirs []string, limit int64) *diskWatch {
	w := &diskWatch{stopc: make(chan struct{}), use: diskUse{LimitBytes: limit}}
	w.wg.Go(func() {
		t := time.NewTicker(diskSampleEvery)
		defer t.Stop()
		for {
			w.sample(dirs)
			select {
			case <-w.stopc:
				return
			case <-t.C:
			}
		}
	})
	return w
}

func (w *diskWatch) sample(dirs []string) {
	over := false
	for _, d := range dirs {
		n := dirBytes(d)
		w.use.MaxBytes = max(w.use.MaxBytes, n)
		over = over || n > w.use.LimitBytes
	}
	w.use.Samples++
	if over {
		w.use.OverLimit++
	}
}

// stop ends the sampling, with one last sample, and reports.
func (w *diskWatch) stop() *diskUse {
	close(w.stopc)
	w.wg.Wait()
	return &w.use
}

// dirBytes sums the regular files under dir; files that vanish during the
// walk (a finished download renamed into the cache) are skipped.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
		return nil
	})
	return n
}
