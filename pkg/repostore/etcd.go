package repostore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/reference"
)

// Etcd keeps the index in etcd so that every origin of a cluster sees the
// same repositories, links and tags at once. Keys, under Prefix:
//
//	r/<repo>                      repository marker
//	b/<repo>@<digest>             blob link
//	m/<repo>@<digest>             ManifestEntry JSON
//	t/<repo>:<tag>                digest
//	f/<repo>@<subject>/<digest>   referrer Descriptor JSON
//
// '@' and ':' cannot occur in repository names, so one repository's keys
// never prefix-match another's. Multi-key changes are single transactions.
type Etcd struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration
}

var _ Store = (*Etcd)(nil)

// EtcdConfig configures NewEtcd.
type EtcdConfig struct {
	// Prefix is prepended to every key (default "/shoal/repos/").
	Prefix string `yaml:"prefix"`
	// OpTimeout bounds each etcd call (default 5s).
	OpTimeout time.Duration `yaml:"op_timeout"`
}

// NewEtcd returns an index on cli; the caller owns and closes cli.
func NewEtcd(cli *clientv3.Client, cfg EtcdConfig) *Etcd {
	if cfg.Prefix == "" {
		cfg.Prefix = "/shoal/repos/"
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	return &Etcd{cli: cli, prefix: cfg.Prefix, timeout: cfg.OpTimeout}
}

func (s *Etcd) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func (s *Etcd) repoKey(repo string) (string, error) {
	if err := reference.ValidateName(repo); err != nil {
		return "", err
	}
	return s.prefix + "r/" + repo, nil
}

func (s *Etcd) digestKey(kind, repo string, d digest.Digest) (string, error) {
	if err := reference.ValidateName(repo); err != nil {
		return "", err
	}
	if _, err := digest.Parse(string(d)); err != nil {
		return "", err
	}
	return s.prefix + kind + "/" + repo + "@" + string(d), nil
}

func (s *Etcd) tagKey(repo, tag string) (string, error) {
	if err := reference.ValidateName(repo); err != nil {
		return "", err
	}
	if err := reference.ValidateTag(tag); err != nil {
		return "", err
	}
	return s.prefix + "t/" + repo + ":" + tag, nil
}

func (s *Etcd) referrerPrefix(repo string, subject digest.Digest) (string, error) {
	k, err := s.digestKey("f", repo, subject)
	return k + "/", err
}

// putWithRepo writes key=val and the repository marker in one transaction.
func (s *Etcd) putWithRepo(ctx context.Context, repo string, ops ...clientv3.Op) error {
	rk, err := s.repoKey(repo)
	if err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if _, err := s.cli.Txn(ctx).Then(append(ops, clientv3.OpPut(rk, ""))...).Commit(); err != nil {
		return fmt.Errorf("repostore: etcd: %w", err)
	}
	return nil
}

func (s *Etcd) exists(ctx context.Context, key string) (bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("repostore: etcd: %w", err)
	}
	return resp.Count > 0, nil
}

// deleteOr deletes key, returning notFound when nothing was there.
func (s *Etcd) deleteOr(ctx context.Context, key string, notFound error) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Delete(ctx, key)
	if err != nil {
		return fmt.Errorf("repostore: etcd: %w", err)
	}
	if resp.Deleted == 0 {
		return notFound
	}
	return nil
}

// LinkBlob implements Links.
func (s *Etcd) LinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	k, err := s.digestKey("b", repo, d)
	if err != nil {
		return err
	}
	return s.putWithRepo(ctx, repo, clientv3.OpPut(k, ""))
}

// HasBlob implements Links.
func (s *Etcd) HasBlob(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	k, err := s.digestKey("b", repo, d)
	if err != nil {
		return false, err
	}
	return s.exists(ctx, k)
}

// UnlinkBlob implements Links.
func (s *Etcd) UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	k, err := s.digestKey("b", repo, d)
	if err != nil {
		return err
	}
	return s.deleteOr(ctx, k, fmt.Errorf("%s@%s: %w", repo, d, ErrBlobUnknown))
}

// PutManifest implements Links.
func (s *Etcd) PutManifest(ctx context.Context, repo string, d digest.Digest, e ManifestEntry) error {
	k, err := s.digestKey("m", repo, d)
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(k, string(b))}
	if e.Subject != "" && e.Referrer != nil {
		rp, err := s.referrerPrefix(repo, e.Subject)
		if err != nil {
			return err
		}
		rb, err := json.Marshal(e.Referrer)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(rp+string(d), string(rb)))
	}
	return s.putWithRepo(ctx, repo, ops...)
}

// GetManifest implements Links.
func (s *Etcd) GetManifest(ctx context.Context, repo string, d digest.Digest) (ManifestEntry, error) {
	e, _, err := s.getManifest(ctx, repo, d)
	return e, err
}

func (s *Etcd) getManifest(ctx context.Context, repo string, d digest.Digest) (ManifestEntry, int64, error) {
	k, err := s.digestKey("m", repo, d)
	if err != nil {
		return ManifestEntry{}, 0, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, k)
	if err != nil {
		return ManifestEntry{}, 0, fmt.Errorf("repostore: etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return ManifestEntry{}, 0, fmt.Errorf("%s@%s: %w", repo, d, ErrManifestUnknown)
	}
	var e ManifestEntry
	if err := json.Unmarshal(resp.Kvs[0].Value, &e); err != nil {
		return ManifestEntry{}, 0, fmt.Errorf("%s@%s: corrupt index entry: %w", repo, d, err)
	}
	return e, resp.Kvs[0].ModRevision, nil
}

// maxTxnRetries bounds optimistic retries when a concurrent writer moves a
// tag during DeleteManifest.
const maxTxnRetries = 8

// DeleteManifest implements Links: the manifest, its referrer record and
// the tags that point at it go in one transaction, guarded by revisions so
// a tag moved meanwhile to another manifest is kept.
func (s *Etcd) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	for range maxTxnRetries {
		e, rev, err := s.getManifest(ctx, repo, d)
		if err != nil {
			return err
		}
		mk, _ := s.digestKey("m", repo, d)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(mk), "=", rev)}
		ops := []clientv3.Op{clientv3.OpDelete(mk)}
		tctx, cancel := s.ctx(ctx)
		tags, err := s.cli.Get(tctx, s.prefix+"t/"+repo+":", clientv3.WithPrefix())
		cancel()
		if err != nil {
			return fmt.Errorf("repostore: etcd: %w", err)
		}
		for _, kv := range tags.Kvs {
			if string(kv.Value) == string(d) {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
				ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			}
		}
		if e.Subject != "" {
			if rp, err := s.referrerPrefix(repo, e.Subject); err == nil {
				ops = append(ops, clientv3.OpDelete(rp+string(d)))
			}
		}
		tctx, cancel = s.ctx(ctx)
		resp, err := s.cli.Txn(tctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("repostore: etcd: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("repostore: delete %s@%s: too much contention", repo, d)
}

// Referrers implements Links.
func (s *Etcd) Referrers(ctx context.Context, repo string, subject digest.Digest) ([]manifest.Descriptor, error) {
	p, err := s.referrerPrefix(repo, subject)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("repostore: etcd: %w", err)
	}
	out := make([]manifest.Descriptor, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var desc manifest.Descriptor
		if err := json.Unmarshal(kv.Value, &desc); err != nil {
			return nil, fmt.Errorf("referrer %s: corrupt index entry: %w", kv.Key, err)
		}
		out = append(out, desc)
	}
	return out, nil
}

// Repositories implements Links.
func (s *Etcd) Repositories(ctx context.Context) ([]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	p := s.prefix + "r/"
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("repostore: etcd: %w", err)
	}
	repos := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		repos = append(repos, strings.TrimPrefix(string(kv.Key), p))
	}
	return repos, nil
}

// Exists implements Links.
func (s *Etcd) Exists(ctx context.Context, repo string) (bool, error) {
	k, err := s.repoKey(repo)
	if err != nil {
		return false, err
	}
	return s.exists(ctx, k)
}

// GetTag implements Tags.
func (s *Etcd) GetTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	d, _, err := s.GetTagRevision(ctx, repo, tag)
	return d, err
}

// GetTagRevision returns the tag's digest and the etcd revision it was last
// written at, for CompareAndSwapTag.
func (s *Etcd) GetTagRevision(ctx context.Context, repo, tag string) (digest.Digest, int64, error) {
	k, err := s.tagKey(repo, tag)
	if err != nil {
		return "", 0, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, k)
	if err != nil {
		return "", 0, fmt.Errorf("repostore: etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, fmt.Errorf("%s:%s: %w", repo, tag, ErrTagUnknown)
	}
	d, err := digest.Parse(string(resp.Kvs[0].Value))
	if err != nil {
		return "", 0, fmt.Errorf("%s:%s: corrupt tag: %w", repo, tag, err)
	}
	return d, resp.Kvs[0].ModRevision, nil
}

// PutTag implements Tags: last writer wins, atomically.
func (s *Etcd) PutTag(ctx context.Context, repo, tag string, d digest.Digest) error {
	k, err := s.tagKey(repo, tag)
	if err != nil {
		return err
	}
	if _, err := digest.Parse(string(d)); err != nil {
		return err
	}
	return s.putWithRepo(ctx, repo, clientv3.OpPut(k, string(d)))
}

// CompareAndSwapTag moves a tag to d only if it is still at revision rev
// (0: only if the tag does not exist). It reports whether it swapped.
func (s *Etcd) CompareAndSwapTag(ctx context.Context, repo, tag string, rev int64, d digest.Digest) (bool, error) {
	k, err := s.tagKey(repo, tag)
	if err != nil {
		return false, err
	}
	if _, err := digest.Parse(string(d)); err != nil {
		return false, err
	}
	rk, _ := s.repoKey(repo)
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpPut(k, string(d)), clientv3.OpPut(rk, "")).
		Commit()
	if err != nil {
		return false, fmt.Errorf("repostore: etcd: %w", err)
	}
	return resp.Succeeded, nil
}

// DeleteTag implements Tags.
func (s *Etcd) DeleteTag(ctx context.Context, repo, tag string) error {
	k, err := s.tagKey(repo, tag)
	if err != nil {
		return err
	}
	return s.deleteOr(ctx, k, fmt.Errorf("%s:%s: %w", repo, tag, ErrTagUnknown))
}

// ListTags implements Tags.
func (s *Etcd) ListTags(ctx context.Context, repo string) ([]string, error) {
	if err := reference.ValidateName(repo); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	p := s.prefix + "t/" + repo + ":"
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("repostore: etcd: %w", err)
	}
	tags := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		tags = append(tags, strings.TrimPrefix(string(kv.Key), p))
	}
	return tags, nil
}

// TagEvent is one change seen by WatchTags. Digest is empty for a deletion.
type TagEvent struct {
	Repo, Tag string
	Digest    digest.Digest
	Revision  int64
}

// WatchTags streams tag changes (for preheat) until ctx ends; the channel is
// closed then. Events with malformed keys or values are skipped.
func (s *Etcd) WatchTags(ctx context.Context) <-chan TagEvent {
	out := make(chan TagEvent, 64)
	p := s.prefix + "t/"
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), p, clientv3.WithPrefix())
	go func() {
		defer close(out)
		for resp := range wch {
			for _, ev := range resp.Events {
				repo, tag, ok := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), p), ":")
				if !ok {
					continue
				}
				te := TagEvent{Repo: repo, Tag: tag, Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypePut {
					d, err := digest.Parse(string(ev.Kv.Value))
					if err != nil {
						continue
					}
					te.Digest = d
				}
				select {
				case out <- te:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
