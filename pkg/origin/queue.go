package origin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/shoal-project/shoal/pkg/atomicfile"
	"github.com/shoal-project/shoal/pkg/digest"
)

// replicationQueue is the set of blobs still owed to some owner. Each
// entry is an empty marker file, written atomically before the push is
// acknowledged, so a restart resumes the copies instead of forgetting them.
type replicationQueue struct {
	dir string
	mu  sync.Mutex
	set map[digest.Digest]bool
}

func openReplicationQueue(dir string) (*replicationQueue, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("replication queue: %w", err)
	}
	q := &replicationQueue{dir: dir, set: map[digest.Digest]bool{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("replication queue: %w", err)
	}
	for _, e := range ents {
		alg, hex, ok := strings.Cut(e.Name(), "-")
		if d, err := digest.Parse(alg + ":" + hex); ok && err == nil {
			q.set[d] = true
		} else {
			// A temp file from a crash mid-write: the push it belonged to
			// was never acknowledged.
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return q, nil
}

func (q *replicationQueue) path(d digest.Digest) string {
	return filepath.Join(q.dir, string(d.Algorithm())+"-"+d.Hex())
}

func (q *replicationQueue) add(d digest.Digest) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.set[d] {
		return nil
	}
	if err := atomicfile.WriteFile(q.path(d), nil, 0o644); err != nil {
		return err
	}
	q.set[d] = true
	return nil
}

func (q *replicationQueue) remove(d digest.Digest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := os.Remove(q.path(d)); err == nil || os.IsNotExist(err) {
		delete(q.set, d)
	}
}

func (q *replicationQueue) list() []digest.Digest {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]digest.Digest, 0, len(q.set))
	for d := range q.set {
		out = append(out, d)
	}
	return out
}

func (q *replicationQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.set)
}
