// Package repostore records what belongs to each repository of the registry:
// which blobs and manifests it links, its tags, and the referrers of each
// subject. Content itself lives in the blob store; this is the small,
// per-repository index over it.
//
// Tags are a separate role (Tags) because a cluster keeps them in etcd,
// where every origin sees the same tag at once.
package repostore

import (
	"context"
	"errors"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
)

// Errors returned (wrapped); check with errors.Is.
var (
	ErrRepoUnknown     = errors.New("repository unknown")
	ErrManifestUnknown = errors.New("manifest unknown")
	ErrTagUnknown      = errors.New("tag unknown")
	ErrBlobUnknown     = errors.New("blob unknown")
)

// Tags maps repo:tag to a manifest digest.
type Tags interface {
	// GetTag returns ErrTagUnknown if the tag is not set.
	GetTag(ctx context.Context, repo, tag string) (digest.Digest, error)
	// PutTag sets (or moves) a tag.
	PutTag(ctx context.Context, repo, tag string, d digest.Digest) error
	// DeleteTag returns ErrTagUnknown if the tag is not set.
	DeleteTag(ctx context.Context, repo, tag string) error
	// ListTags returns the repository's tags in lexical order.
	ListTags(ctx context.Context, repo string) ([]string, error)
}

// ManifestEntry is what the index keeps about a manifest in a repository.
type ManifestEntry struct {
	MediaType string               `json:"mediaType"`
	Size      int64                `json:"size"`
	Subject   digest.Digest        `json:"subject,omitempty"`
	Referrer  *manifest.Descriptor `json:"referrer,omitempty"` // this manifest's descriptor, when it has a subject
}

// Links records blob and manifest membership of repositories.
type Links interface {
	// LinkBlob makes a committed blob part of repo.
	LinkBlob(ctx context.Context, repo string, d digest.Digest) error
	// HasBlob reports whether repo links d.
	HasBlob(ctx context.Context, repo string, d digest.Digest) (bool, error)
	// UnlinkBlob returns ErrBlobUnknown if repo does not link d.
	UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error

	// PutManifest links manifest d into repo and, when it has a subject,
	// records it as a referrer of that subject.
	PutManifest(ctx context.Context, repo string, d digest.Digest, e ManifestEntry) error
	// GetManifest returns ErrManifestUnknown if repo does not hold d.
	GetManifest(ctx context.Context, repo string, d digest.Digest) (ManifestEntry, error)
	// DeleteManifest unlinks d, its referrer record, and every tag of repo
	// that points at it (as distribution does). ErrManifestUnknown if absent.
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
	// Referrers lists the descriptors of manifests in repo whose subject is d.
	Referrers(ctx context.Context, repo string, subject digest.Digest) ([]manifest.Descriptor, error)

	// Repositories lists every repository in lexical order.
	Repositories(ctx context.Context) ([]string, error)
	// Exists reports whether repo has ever had content.
	Exists(ctx context.Context, repo string) (bool, error)
}

// Store is the whole index.
type Store interface {
	Links
	Tags
}
