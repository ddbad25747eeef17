package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// diskUse is what the agents' data directories held during a pull,
// against their cache_bytes: the cache's limit should hold however a
// rollout loads it, counting what is still downloading, not only what the
// cache's own gauge counts, and files an agent deleted but still has
// open (an evicted blob still being read takes its space until closed).
type diskUse struct {
	LimitBytes int64 `json:"limit_bytes"`
	// MaxBytes is the most blob data one agent held in any sample: its
	// cached blobs, its downloads' .part files and the deleted ones it
	// still had open — what cache_bytes bounds.
	MaxBytes int64 `json:"max_bytes"`
	// MaxMetaBytes is the most one agent held besides (metainfo, download
	// state, its key): bytes per blob, not counted against the limit, or
	// a cache full to the byte would be "over" by a few hundred.
	MaxMetaBytes int64 `json:"max_meta_bytes"`
	// MaxUnlinkedBytes is the most one agent held in deleted files it
	// still had open, in any sample (part of MaxBytes then).
	MaxUnlinkedBytes int64 `json:"max_unlinked_bytes"`
	Samples          int   `json:"samples"`
	// OverLimit counts samples in which some agent held more than the
	// limit.
	OverLimit int `json:"over_limit_samples"`
}

// diskSource is one agent as the watch samples it: its data directory,
// and its process (which changes when it is restarted; 0: none).
type diskSource struct {
	dir string
	pid func() int
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

func watchDisk(dirs []diskSource, limit int64) *diskWatch {
	for i, d := range dirs {
		// /proc names open files by their resolved path.
		if real, err := filepath.EvalSymlinks(d.dir); err == nil {
			dirs[i].dir = real
		}
	}
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

func (w *diskWatch) sample(dirs []diskSource) {
	over := false
	for _, d := range dirs {
		var gone int64
		if d.pid != nil {
			gone = unlinkedBytes(d.pid(), d.dir)
		}
		data, meta := dirBytes(d.dir)
		n := data + gone
		w.use.MaxBytes = max(w.use.MaxBytes, n)
		w.use.MaxMetaBytes = max(w.use.MaxMetaBytes, meta)
		w.use.MaxUnlinkedBytes = max(w.use.MaxUnlinkedBytes, gone)
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

// dirBytes sums the regular files under dir: blob data (the cache's
// blobs, downloads' .part files) and the rest. Files that vanish during
// the walk (a finished download renamed into the cache) are skipped.
func dirBytes(dir string) (data, meta int64) {
	blobs := filepath.Join(dir, "cache", "blobs") + string(filepath.Separator)
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		if strings.HasPrefix(p, blobs) || strings.HasSuffix(p, ".part") {
			data += info.Size()
		} else {
			meta += info.Size()
		}
		return nil
	})
	return data, meta
}

// unlinkedBytes sums the files under dir that process pid has open but
// that are deleted: their space is not free until the process closes
// them, yet no walk of dir sees them. Each file counts once, however many
// times it is open.
func unlinkedBytes(pid int, dir string) int64 {
	if pid <= 0 {
		return 0
	}
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fds)
	if err != nil {
		return 0
	}
	var n int64
	seen := map[uint64]bool{}
	for _, e := range ents {
		p := filepath.Join(fds, e.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasSuffix(target, " (deleted)") || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		info, err := os.Stat(p) // the open file itself
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				continue
			}
			seen[st.Ino] = true
		}
		n += info.Size()
	}
	return n
}
