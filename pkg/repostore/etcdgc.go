package repostore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-project/shoal/pkg/digest"
)

// What garbage collection (pkg/gc) needs from the etcd index, beyond the
// registry's own calls. One more key family, under Prefix:
//
//	u/<digest>   unix nanoseconds of the last time a push used the digest
//
// Every path that makes a blob live (an upload commit, a manifest push
// for the manifest and everything it references, a mount) touches the
// digest first; GC compares the touch key's revision in the transaction
// that unlinks a victim and again, under the store's lock, before it
// deletes bytes (see pkg/gc). etcd's revisions make those compares exact:
// no clock is involved except for the grace period.

// Touch records that a push is using ds now, in one transaction.
func (s *Etcd) Touch(ctx context.Context, ds ...digest.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	ops := make([]clientv3.Op, 0, len(ds))
	seen := make(map[digest.Digest]bool, len(ds))
	for _, d := range ds {
		if _, err := digest.Parse(string(d)); err != nil {
			return err
		}
		if !seen[d] {
			seen[d] = true
			ops = append(ops, clientv3.OpPut(s.prefix+"u/"+string(d), now))
		}
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("repostore: touch: %w", err)
	}
	return nil
}

// TouchRevision returns the etcd revision of d's last touch (0: never),
// read linearizably: a touch acknowledged before the call is seen.
func (s *Etcd) TouchRevision(ctx context.Context, d digest.Digest) (int64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+"u/"+string(d))
	if err != nil {
		return 0, fmt.Errorf("repostore: etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

// Touched is a digest's last touch.
type Touched struct {
	At       time.Time
	Revision int64
}

// SnapManifest is a manifest of a repository in a Snapshot.
type SnapManifest struct {
	Repo     string
	Digest   digest.Digest
	Entry    ManifestEntry
	Revision int64 // ModRevision of its index key
}

// SnapTag is a tag in a Snapshot.
type SnapTag struct {
	Repo, Tag string
	Digest    digest.Digest
	Revision  int64 // ModRevision: tags sort by it, newest first
}

// Snapshot is the whole index at one etcd revision.
type Snapshot struct {
	Revision  int64
	Manifests []SnapManifest
	Tags      []SnapTag
	// Links are the blob link keys of each digest, for Condemn.
	Links   map[digest.Digest][]string
	Touches map[digest.Digest]Touched
}

// Snapshot reads manifests, tags, links and touches at one revision.
func (s *Etcd) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Links: map[digest.Digest][]string{}, Touches: map[digest.Digest]Touched{}}
	get := func(kind string) ([]*kvPair, error) {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if snap.Revision != 0 {
			opts = append(opts, clientv3.WithRev(snap.Revision))
		}
		tctx, cancel := s.ctx(ctx)
		defer cancel()
		resp, err := s.cli.Get(tctx, s.prefix+kind+"/", opts...)
		if err != nil {
			return nil, fmt.Errorf("repostore: snapshot: %w", err)
		}
		if snap.Revision == 0 {
			snap.Revision = resp.Header.Revision
		}
		out := make([]*kvPair, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			out = append(out, &kvPair{key: string(kv.Key), rel: strings.TrimPrefix(string(kv.Key), s.prefix+kind+"/"), val: kv.Value, rev: kv.ModRevision})
		}
		return out, nil
	}
	ms, err := get("m")
	if err != nil {
		return nil, err
	}
	for _, kv := range ms {
		repo, ds, ok := strings.Cut(kv.rel, "@")
		d, err := digest.Parse(ds)
		if !ok || err != nil {
			continue
		}
		var e ManifestEntry
		if err := json.Unmarshal(kv.val, &e); err != nil {
			return nil, fmt.Errorf("manifest %s: corrupt index entry: %w", kv.key, err)
		}
		snap.Manifests = append(snap.Manifests, SnapManifest{Repo: repo, Digest: d, Entry: e, Revision: kv.rev})
	}
	ts, err := get("t")
	if err != nil {
		return nil, err
	}
	for _, kv := range ts {
		repo, tag, ok := strings.Cut(kv.rel, ":")
		d, err := digest.Parse(string(kv.val))
		if !ok || err != nil {
			continue
		}
		snap.Tags = append(snap.Tags, SnapTag{Repo: repo, Tag: tag, Digest: d, Revision: kv.rev})
	}
	bs, err := get("b")
	if err != nil {
		return nil, err
	}
	for _, kv := range bs {
		_, ds, ok := strings.Cut(kv.rel, "@")
		if d, err := digest.Parse(ds); ok && err == nil {
			snap.Links[d] = append(snap.Links[d], kv.key)
		}
	}
	us, err := get("u")
	if err != nil {
		return nil, err
	}
	for _, kv := range us {
		d, err := digest.Parse(kv.rel)
		n, perr := strconv.ParseInt(string(kv.val), 10, 64)
		if err != nil || perr != nil {
			continue
		}
		snap.Touches[d] = Touched{At: time.Unix(0, n), Revision: kv.rev}
	}
	return snap, nil
}

type kvPair struct {
	key, rel string
	val      []byte
	rev      int64
}

// Condemn removes the blob links linkKeys of d, in one transaction, only
// if d has not been touched since revision touchRev (0: never touched).
// It reports whether it did. A push that touched d after the GC read
// touchRev makes it fail, so the blob stays.
func (s *Etcd) Condemn(ctx context.Context, d digest.Digest, touchRev int64, linkKeys []string) (bool, error) {
	ops := make([]clientv3.Op, 0, len(linkKeys))
	for _, k := range linkKeys {
		if !strings.HasPrefix(k, s.prefix+"b/") || !strings.HasSuffix(k, "@"+string(d)) {
			return false, fmt.Errorf("repostore: condemn %s: %q is not one of its links", d, k)
		}
		ops = append(ops, clientv3.OpDelete(k))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.prefix+"u/"+string(d)), "=", touchRev)).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("repostore: condemn %s: %w", d, err)
	}
	return resp.Succeeded, nil
}

// DeleteManifestIf is DeleteManifest for GC: it removes m (its index key,
// its referrer record, and the tags that point at it) only if neither the
// manifest nor its touch key nor any of those tags changed since the
// snapshot it was read in, so a manifest pushed or tagged again
// meanwhile is kept. It reports whether it deleted.
func (s *Etcd) DeleteManifestIf(ctx context.Context, m SnapManifest, touchRev int64, tags []SnapTag) (bool, error) {
	mk, err := s.digestKey("m", m.Repo, m.Digest)
	if err != nil {
		return false, err
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(mk), "=", m.Revision),
		clientv3.Compare(clientv3.ModRevision(s.prefix+"u/"+string(m.Digest)), "=", touchRev),
	}
	ops := []clientv3.Op{clientv3.OpDelete(mk)}
	for _, t := range tags {
		tk, err := s.tagKey(t.Repo, t.Tag)
		if err != nil {
			return false, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(tk), "=", t.Revision))
		ops = append(ops, clientv3.OpDelete(tk))
	}
	if m.Entry.Subject != "" {
		if rp, err := s.referrerPrefix(m.Repo, m.Entry.Subject); err == nil {
			ops = append(ops, clientv3.OpDelete(rp+string(m.Digest)))
		}
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("repostore: delete manifest %s@%s: %w", m.Repo, m.Digest, err)
	}
	return resp.Succeeded, nil
}

// DeleteTagIf removes tag t only if it is still at the snapshot's
// revision. It reports whether it deleted.
func (s *Etcd) DeleteTagIf(ctx context.Context, t SnapTag) (bool, error) {
	tk, err := s.tagKey(t.Repo, t.Tag)
	if err != nil {
		return false, err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(tk), "=", t.Revision)).Then(clientv3.OpDelete(tk)).Commit()
	if err != nil {
		return false, fmt.Errorf("repostore: delete tag %s:%s: %w", t.Repo, t.Tag, err)
	}
	return resp.Succeeded, nil
}
