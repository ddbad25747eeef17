package repostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/shoal-project/shoal/pkg/atomicfile"
	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/reference"
)

// Local keeps the index in a directory tree:
//
//	<root>/<repo>/_blobs/<alg>/<hex>                      empty marker
//	<root>/<repo>/_manifests/<alg>/<hex>                  ManifestEntry JSON
//	<root>/<repo>/_tags/<tag>                             digest
//	<root>/<repo>/_referrers/<alg>/<hex>/<alg>-<hex>      Descriptor JSON
//
// Repository name components never start with "_", so the internal
// directories cannot collide with a nested repository. Every write is atomic.
type Local struct {
	root string
	// mu serialises the multi-file updates of PutManifest/DeleteManifest
	// so a referrer record and its manifest link move together.
	mu sync.Mutex
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating if needed) an index rooted at dir.
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("repostore: %w", err)
	}
	return &Local{root: dir}, nil
}

// repoDir validates repo before it becomes a path: the last guard against
// traversal whatever the caller checked.
func (s *Local) repoDir(repo string) (string, error) {
	if err := reference.ValidateName(repo); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(repo)), nil
}

func (s *Local) digestPath(repo, kind string, d digest.Digest) (string, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return "", err
	}
	if _, err := digest.Parse(string(d)); err != nil {
		return "", err
	}
	return filepath.Join(dir, kind, string(d.Algorithm()), d.Hex()), nil
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// LinkBlob implements Links.
func (s *Local) LinkBlob(_ context.Context, repo string, d digest.Digest) error {
	p, err := s.digestPath(repo, "_blobs", d)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p, nil, 0o644)
}

// HasBlob implements Links.
func (s *Local) HasBlob(_ context.Context, repo string, d digest.Digest) (bool, error) {
	p, err := s.digestPath(repo, "_blobs", d)
	if err != nil {
		return false, err
	}
	return exists(p)
}

// UnlinkBlob implements Links.
func (s *Local) UnlinkBlob(_ context.Context, repo string, d digest.Digest) error {
	p, err := s.digestPath(repo, "_blobs", d)
	if err != nil {
		return err
	}
	return removeOr(p, fmt.Errorf("%s@%s: %w", repo, d, ErrBlobUnknown))
}

func removeOr(p string, notFound error) error {
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound
	}
	return err
}

// PutManifest implements Links.
func (s *Local) PutManifest(_ context.Context, repo string, d digest.Digest, e ManifestEntry) error {
	p, err := s.digestPath(repo, "_manifests", d)
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Subject != "" && e.Referrer != nil {
		rp, err := s.referrerPath(repo, e.Subject, d)
		if err != nil {
			return err
		}
		rb, err := json.Marshal(e.Referrer)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(rp, rb, 0o644); err != nil {
			return err
		}
	}
	return atomicfile.WriteFile(p, b, 0o644)
}

func (s *Local) referrerPath(repo string, subject, d digest.Digest) (string, error) {
	dir, err := s.digestPath(repo, "_referrers", subject)
	if err != nil {
		return "", err
	}
	if _, err := digest.Parse(string(d)); err != nil {
		return "", err
	}
	return filepath.Join(dir, string(d.Algorithm())+"-"+d.Hex()), nil
}

// GetManifest implements Links.
func (s *Local) GetManifest(_ context.Context, repo string, d digest.Digest) (ManifestEntry, error) {
	p, err := s.digestPath(repo, "_manifests", d)
	if err != nil {
		return ManifestEntry{}, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ManifestEntry{}, fmt.Errorf("%s@%s: %w", repo, d, ErrManifestUnknown)
	}
	if err != nil {
		return ManifestEntry{}, err
	}
	var e ManifestEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return ManifestEntry{}, fmt.Errorf("%s@%s: corrupt index entry: %w", repo, d, err)
	}
	return e, nil
}

// DeleteManifest implements Links.
func (s *Local) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	e, err := s.GetManifest(ctx, repo, d)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tags, err := s.ListTags(ctx, repo)
	if err != nil && !errors.Is(err, ErrRepoUnknown) {
		return err
	}
	for _, t := range tags {
		if td, err := s.GetTag(ctx, repo, t); err == nil && td == d {
			if err := s.DeleteTag(ctx, repo, t); err != nil && !errors.Is(err, ErrTagUnknown) {
				return err
			}
		}
	}
	if e.Subject != "" {
		if rp, err := s.referrerPath(repo, e.Subject, d); err == nil {
			if err := os.Remove(rp); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	p, _ := s.digestPath(repo, "_manifests", d)
	return removeOr(p, fmt.Errorf("%s@%s: %w", repo, d, ErrManifestUnknown))
}

// Referrers implements Links.
func (s *Local) Referrers(_ context.Context, repo string, subject digest.Digest) ([]manifest.Descriptor, error) {
	dir, err := s.digestPath(repo, "_referrers", subject)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]manifest.Descriptor, 0, len(ents))
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), ".tmp-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue // removed concurrently
		}
		var desc manifest.Descriptor
		if err := json.Unmarshal(b, &desc); err != nil {
			return nil, fmt.Errorf("referrer %s: corrupt index entry: %w", ent.Name(), err)
		}
		out = append(out, desc)
	}
	return out, nil
}

// Repositories implements Links: every directory holding a _manifests,
// _blobs or _tags child is a repository.
func (s *Local) Repositories(ctx context.Context) ([]string, error) {
	var repos []string
	err := filepath.WalkDir(s.root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !de.IsDir() || p == s.root {
			return nil
		}
		name := de.Name()
		if strings.HasPrefix(name, "_") {
			if name == "_manifests" || name == "_blobs" || name == "_tags" {
				rel, _ := filepath.Rel(s.root, filepath.Dir(p))
				repo := filepath.ToSlash(rel)
				if len(repos) == 0 || repos[len(repos)-1] != repo {
					repos = append(repos, repo)
				}
			}
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repostore: list repositories: %w", err)
	}
	slices.Sort(repos)
	return slices.Compact(repos), nil
}

// Exists implements Links.
func (s *Local) Exists(_ context.Context, repo string) (bool, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return false, err
	}
	for _, k := range []string{"_manifests", "_blobs", "_tags"} {
		if ok, err := exists(filepath.Join(dir, k)); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

func (s *Local) tagPath(repo, tag string) (string, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return "", err
	}
	if err := reference.ValidateTag(tag); err != nil {
		return "", err
	}
	return filepath.Join(dir, "_tags", tag), nil
}

// GetTag implements Tags.
func (s *Local) GetTag(_ context.Context, repo, tag string) (digest.Digest, error) {
	p, err := s.tagPath(repo, tag)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s:%s: %w", repo, tag, ErrTagUnknown)
	}
	if err != nil {
		return "", err
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("%s:%s: corrupt tag: %w", repo, tag, err)
	}
	return d, nil
}

// PutTag implements Tags.
func (s *Local) PutTag(_ context.Context, repo, tag string, d digest.Digest) error {
	p, err := s.tagPath(repo, tag)
	if err != nil {
		return err
	}
	if _, err := digest.Parse(string(d)); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, []byte(d), 0o644)
}

// DeleteTag implements Tags.
func (s *Local) DeleteTag(_ context.Context, repo, tag string) error {
	p, err := s.tagPath(repo, tag)
	if err != nil {
		return err
	}
	return removeOr(p, fmt.Errorf("%s:%s: %w", repo, tag, ErrTagUnknown))
}

// ListTags implements Tags.
func (s *Local) ListTags(_ context.Context, repo string) ([]string, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(dir, "_tags"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	tags := make([]string, 0, len(ents))
	for _, e := range ents {
		if !e.IsDir() && reference.ValidateTag(e.Name()) == nil {
			tags = append(tags, e.Name())
		}
	}
	slices.Sort(tags)
	return tags, nil
}
