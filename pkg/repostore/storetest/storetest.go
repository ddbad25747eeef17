// Package storetest is the conformance suite every repostore.Store
// implementation runs: storetest.Run(t, newStore).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/repostore"
)

// Run runs the suite; newStore returns an empty store for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) repostore.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, repostore.Store)
	}{
		{"BlobLinks", testBlobLinks},
		{"Manifests", testManifests},
		{"Tags", testTags},
		{"DeleteManifestRemovesTagsAndReferrer", testDeleteManifest},
		{"Referrers", testReferrers},
		{"Repositories", testRepositories},
		{"RejectsBadNames", testRejectsBadNames},
		{"ConcurrentTagWrites", testConcurrentTags},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var ctx = context.Background()

func dg(s string) digest.Digest { return digest.FromBytes([]byte(s)) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testBlobLinks(t *testing.T, s repostore.Store) {
	d := dg("blob")
	if ok, err := s.HasBlob(ctx, "a/b", d); err != nil || ok {
		t.Fatalf("HasBlob before link = %v, %v", ok, err)
	}
	must(t, s.LinkBlob(ctx, "a/b", d))
	must(t, s.LinkBlob(ctx, "a/b", d)) // idempotent
	if ok, _ := s.HasBlob(ctx, "a/b", d); !ok {
		t.Fatal("linked blob not found")
	}
	if ok, _ := s.HasBlob(ctx, "a/c", d); ok {
		t.Fatal("blob visible in another repository")
	}
	must(t, s.UnlinkBlob(ctx, "a/b", d))
	if err := s.UnlinkBlob(ctx, "a/b", d); !errors.Is(err, repostore.ErrBlobUnknown) {
		t.Fatalf("second unlink = %v", err)
	}
}

func testManifests(t *testing.T, s repostore.Store) {
	d := dg("m1")
	if _, err := s.GetManifest(ctx, "r", d); !errors.Is(err, repostore.ErrManifestUnknown) {
		t.Fatalf("GetManifest before put = %v", err)
	}
	e := repostore.ManifestEntry{MediaType: manifest.MediaTypeOCIManifest, Size: 123}
	must(t, s.PutManifest(ctx, "r", d, e))
	got, err := s.GetManifest(ctx, "r", d)
	if err != nil || got.MediaType != e.MediaType || got.Size != 123 {
		t.Fatalf("GetManifest = %+v, %v", got, err)
	}
}

func testTags(t *testing.T, s repostore.Store) {
	if _, err := s.GetTag(ctx, "r", "v1"); !errors.Is(err, repostore.ErrTagUnknown) {
		t.Fatalf("GetTag before put = %v", err)
	}
	for _, tag := range []string{"v2", "v1", "latest", "V0"} {
		must(t, s.PutTag(ctx, "r", tag, dg(tag)))
	}
	must(t, s.PutTag(ctx, "r", "v1", dg("moved")))
	if d, _ := s.GetTag(ctx, "r", "v1"); d != dg("moved") {
		t.Fatalf("moved tag = %s", d)
	}
	tags, err := s.ListTags(ctx, "r")
	if err != nil || !slices.Equal(tags, []string{"V0", "latest", "v1", "v2"}) {
		t.Fatalf("ListTags = %v, %v", tags, err)
	}
	must(t, s.DeleteTag(ctx, "r", "v1"))
	if err := s.DeleteTag(ctx, "r", "v1"); !errors.Is(err, repostore.ErrTagUnknown) {
		t.Fatalf("second DeleteTag = %v", err)
	}
	if err := s.PutTag(ctx, "r", "bad:tag", dg("x")); err == nil {
		t.Fatal("invalid tag accepted")
	}
}

func testDeleteManifest(t *testing.T, s repostore.Store) {
	subject, d := dg("subject"), dg("referrer")
	desc := manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Digest: d, Size: 10, ArtifactType: "application/x-sig"}
	must(t, s.PutManifest(ctx, "r", d, repostore.ManifestEntry{MediaType: desc.MediaType, Size: 10, Subject: subject, Referrer: &desc}))
	must(t, s.PutTag(ctx, "r", "a", d))
	must(t, s.PutTag(ctx, "r", "b", d))
	must(t, s.PutTag(ctx, "r", "other", dg("other")))
	must(t, s.DeleteManifest(ctx, "r", d))
	if _, err := s.GetManifest(ctx, "r", d); !errors.Is(err, repostore.ErrManifestUnknown) {
		t.Fatalf("manifest still there: %v", err)
	}
	if tags, _ := s.ListTags(ctx, "r"); !slices.Equal(tags, []string{"other"}) {
		t.Fatalf("tags after delete = %v", tags)
	}
	if refs, _ := s.Referrers(ctx, "r", subject); len(refs) != 0 {
		t.Fatalf("referrer survived its manifest: %v", refs)
	}
	if err := s.DeleteManifest(ctx, "r", d); !errors.Is(err, repostore.ErrManifestUnknown) {
		t.Fatalf("second delete = %v", err)
	}
}

func testReferrers(t *testing.T, s repostore.Store) {
	subject := dg("img")
	for i, at := range []string{"application/x-sbom", "application/x-sig", "application/x-sig"} {
		d := dg(fmt.Sprint("ref", i))
		desc := manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Digest: d, Size: int64(i), ArtifactType: at,
			Annotations: map[string]string{"n": fmt.Sprint(i)}}
		must(t, s.PutManifest(ctx, "r", d, repostore.ManifestEntry{MediaType: desc.MediaType, Size: int64(i), Subject: subject, Referrer: &desc}))
	}
	refs, err := s.Referrers(ctx, "r", subject)
	if err != nil || len(refs) != 3 {
		t.Fatalf("Referrers = %v, %v", refs, err)
	}
	for _, r := range refs {
		if r.Annotations["n"] == "" || r.ArtifactType == "" {
			t.Fatalf("descriptor lost fields: %+v", r)
		}
	}
	if refs, _ := s.Referrers(ctx, "other", subject); len(refs) != 0 {
		t.Fatal("referrers leak across repositories")
	}
	if refs, err := s.Referrers(ctx, "r", dg("nothing")); err != nil || len(refs) != 0 {
		t.Fatalf("unknown subject = %v, %v", refs, err)
	}
}

func testRepositories(t *testing.T, s repostore.Store) {
	must(t, s.LinkBlob(ctx, "b/nested/deep", dg("x")))
	must(t, s.PutManifest(ctx, "a", dg("m"), repostore.ManifestEntry{MediaType: manifest.MediaTypeOCIManifest}))
	must(t, s.PutTag(ctx, "b", "t", dg("m")))
	repos, err := s.Repositories(ctx)
	if err != nil || !slices.Equal(repos, []string{"a", "b", "b/nested/deep"}) {
		t.Fatalf("Repositories = %v, %v", repos, err)
	}
	for repo, want := range map[string]bool{"a": true, "b/nested/deep": true, "b/nested": false, "zzz": false} {
		if ok, err := s.Exists(ctx, repo); err != nil || ok != want {
			t.Errorf("Exists(%q) = %v, %v", repo, ok, err)
		}
	}
}

func testRejectsBadNames(t *testing.T, s repostore.Store) {
	for _, name := range []string{"", "..", "a/../b", "A", "a//b", "_x", "a/_tags"} {
		if err := s.LinkBlob(ctx, name, dg("x")); err == nil {
			t.Errorf("LinkBlob(%q) accepted", name)
		}
		if err := s.PutTag(ctx, name, "t", dg("x")); err == nil {
			t.Errorf("PutTag(%q) accepted", name)
		}
	}
	if err := s.LinkBlob(ctx, "ok", "sha256:../../x"); err == nil {
		t.Error("bad digest accepted")
	}
}

func testConcurrentTags(t *testing.T, s repostore.Store) {
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if err := s.PutTag(ctx, "r", "latest", dg(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	d, err := s.GetTag(ctx, "r", "latest")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := range 16 {
		found = found || d == dg(fmt.Sprint(i))
	}
	if !found {
		t.Fatalf("tag points at %s, none of the written digests", d)
	}
}
