package repostore_test

import (
	"context"
	"testing"

	"github.com/shoal-project/shoal/pkg/etcdtest"
	"github.com/shoal-project/shoal/pkg/repostore"
)

// The guarded writes GC relies on, on a real etcd: each succeeds on the
// snapshot's revisions and fails once a push touched, re-pushed or
// re-tagged what it would remove.
func TestEtcdGCGuards(t *testing.T) {
	cli := etcdtest.Client(t, etcdtest.Embedded(t))
	ctx := context.Background()
	tests := []struct {
		name string
		// between runs after the snapshot and before the guarded write.
		between func(s *repostore.Etcd) error
		want    bool
	}{
		{"untouched", func(*repostore.Etcd) error { return nil }, true},
		{"touched since", func(s *repostore.Etcd) error { return s.Touch(ctx, dg("layer"), dg("manifest")) }, false},
		{"pushed again", func(s *repostore.Etcd) error {
			return s.PutManifest(ctx, "team/app", dg("manifest"), repostore.ManifestEntry{MediaType: "application/vnd.oci.image.manifest.v1+json"})
		}, false},
		{"tagged again", func(s *repostore.Etcd) error { return s.PutTag(ctx, "team/app", "v1", dg("manifest")) }, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := repostore.NewEtcd(cli, repostore.EtcdConfig{Prefix: "/gc/" + string(rune('a'+i)) + "/"})
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(s.Touch(ctx, dg("layer"), dg("manifest")))
			must(s.LinkBlob(ctx, "team/app", dg("layer")))
			must(s.LinkBlob(ctx, "team/other", dg("layer")))
			must(s.PutManifest(ctx, "team/app", dg("manifest"), repostore.ManifestEntry{MediaType: "application/vnd.oci.image.manifest.v1+json"}))
			must(s.PutTag(ctx, "team/app", "v1", dg("manifest")))
			snap, err := s.Snapshot(ctx)
			must(err)
			if len(snap.Manifests) != 1 || len(snap.Tags) != 1 || len(snap.Links[dg("layer")]) != 2 || snap.Touches[dg("layer")].Revision == 0 {
				t.Fatalf("snapshot: %+v", snap)
			}
			must(tt.between(s))

			ok, err := s.Condemn(ctx, dg("layer"), snap.Touches[dg("layer")].Revision, snap.Links[dg("layer")])
			must(err)
			wantCondemn := tt.want || tt.name != "touched since"
			if ok != wantCondemn {
				t.Errorf("Condemn = %v, want %v", ok, wantCondemn)
			}
			linked, err := s.HasBlob(ctx, "team/other", dg("layer"))
			must(err)
			if linked == ok {
				t.Errorf("after Condemn = %v, team/other links the layer: %v", ok, linked)
			}
			rev, err := s.TouchRevision(ctx, dg("layer"))
			must(err)
			if (rev == snap.Touches[dg("layer")].Revision) != wantCondemn {
				t.Errorf("TouchRevision %d, snapshot %d", rev, snap.Touches[dg("layer")].Revision)
			}

			ok, err = s.DeleteManifestIf(ctx, snap.Manifests[0], snap.Touches[dg("manifest")].Revision, snap.Tags)
			must(err)
			if ok != tt.want {
				t.Errorf("DeleteManifestIf = %v, want %v", ok, tt.want)
			}
			_, err = s.GetTag(ctx, "team/app", "v1")
			if tagGone := err != nil; tagGone != ok {
				t.Errorf("DeleteManifestIf = %v but tag lookup: %v", ok, err)
			}
		})
	}
	t.Run("DeleteTagIf", func(t *testing.T) {
		s := repostore.NewEtcd(cli, repostore.EtcdConfig{Prefix: "/gc/tags/"})
		if err := s.PutTag(ctx, "team/app", "v1", dg("a")); err != nil {
			t.Fatal(err)
		}
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutTag(ctx, "team/app", "v1", dg("b")); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.DeleteTagIf(ctx, snap.Tags[0]); ok || err != nil {
			t.Fatalf("DeleteTagIf of a moved tag = %v, %v", ok, err)
		}
		snap, _ = s.Snapshot(ctx)
		if ok, err := s.DeleteTagIf(ctx, snap.Tags[0]); !ok || err != nil {
			t.Fatalf("DeleteTagIf = %v, %v", ok, err)
		}
	})
	t.Run("Condemn refuses keys that are not the digest's links", func(t *testing.T) {
		s := repostore.NewEtcd(cli, repostore.EtcdConfig{Prefix: "/gc/bad/"})
		if _, err := s.Condemn(ctx, dg("x"), 0, []string{"/gc/bad/t/team/app:v1"}); err == nil {
			t.Fatal("Condemn deleted a tag key")
		}
	})
}
