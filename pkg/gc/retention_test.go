package gc

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/repostore"
)

func dg(name string) digest.Digest { return digest.FromBytes([]byte(name)) }

func TestPlan(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	grace := time.Hour
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	old := ago(30 * 24 * time.Hour)
	man := func(name string, pushed time.Time) repoManifest {
		return repoManifest{SnapManifest: repostore.SnapManifest{Repo: "team/app", Digest: dg(name)}, Pushed: pushed}
	}
	referrer := func(name, subject string, pushed time.Time) repoManifest {
		m := man(name, pushed)
		m.Entry.Subject = dg(subject)
		return m
	}
	index := func(name string, pushed time.Time, children ...string) repoManifest {
		m := man(name, pushed)
		for _, c := range children {
			m.Children = append(m.Children, dg(c))
		}
		return m
	}
	tag := func(name, target string, rev int64) repostore.SnapTag {
		return repostore.SnapTag{Repo: "team/app", Tag: name, Digest: dg(target), Revision: rev}
	}
	tests := []struct {
		name      string
		rule      *Rule
		tags      []repostore.SnapTag
		manifests []repoManifest
		wantTags  []string // tags dropped
		wantGone  []string // manifests dropped
		reason    string   // a word every manifest drop's reason has
	}{
		{
			name:      "no rule keeps tags and untagged manifests",
			tags:      []repostore.SnapTag{tag("v1", "a", 1)},
			manifests: []repoManifest{man("a", old), man("b", old)},
		},
		{
			name:      "no rule: a referrer goes with its deleted subject",
			manifests: []repoManifest{man("a", old), referrer("sig", "gone", old), referrer("sbom", "a", old)},
			wantGone:  []string{"sig"},
			reason:    "referrer",
		},
		{
			name:      "a referrer pushed before its subject is kept within grace",
			manifests: []repoManifest{referrer("sig", "later", ago(time.Minute))},
		},
		{
			name:      "keep_last 2: the oldest tag and its manifest go, with its signature",
			rule:      &Rule{Repositories: "team/*", KeepLast: 2},
			tags:      []repostore.SnapTag{tag("v1", "a", 1), tag("v2", "b", 2), tag("v3", "c", 3)},
			manifests: []repoManifest{man("a", old), man("b", old), man("c", old), referrer("sig-a", "a", old), referrer("sig-c", "c", old)},
			wantTags:  []string{"v1"},
			wantGone:  []string{"a", "sig-a"},
		},
		{
			name:      "keep_tags keeps matching tags beyond keep_last",
			rule:      &Rule{Repositories: "team/*", KeepLast: 1, KeepTags: `v\d+`},
			tags:      []repostore.SnapTag{tag("v1", "a", 1), tag("dev-1", "b", 2), tag("dev-2", "c", 3)},
			manifests: []repoManifest{man("a", old), man("b", old), man("c", old)},
			wantTags:  []string{"dev-1"},
			wantGone:  []string{"b"},
			reason:    "dev-1",
		},
		{
			name:      "keep_tags alone: only matching tags stay",
			rule:      &Rule{Repositories: "*/*", KeepTags: "release-.*"},
			tags:      []repostore.SnapTag{tag("release-1", "a", 1), tag("main", "b", 2)},
			manifests: []repoManifest{man("a", old), man("b", old)},
			wantTags:  []string{"main"},
			wantGone:  []string{"b"},
		},
		{
			name:      "a manifest with a kept and a dropped tag stays",
			rule:      &Rule{Repositories: "team/app", KeepLast: 1},
			tags:      []repostore.SnapTag{tag("old", "a", 1), tag("latest", "a", 2)},
			manifests: []repoManifest{man("a", old)},
			wantTags:  []string{"old"},
		},
		{
			name:      "untagged_older_than drops old untagged manifests only",
			rule:      &Rule{Repositories: "team/*", UntaggedOlderThan: 7 * 24 * time.Hour},
			tags:      []repostore.SnapTag{tag("v1", "a", 1)},
			manifests: []repoManifest{man("a", old), man("b", old), man("c", ago(24*time.Hour))},
			wantGone:  []string{"b"},
			reason:    "untagged",
		},
		{
			name:      "an untagged manifest of unknown age is kept",
			rule:      &Rule{Repositories: "team/*", UntaggedOlderThan: time.Hour},
			manifests: []repoManifest{man("a", time.Time{})},
		},
		{
			name: "a tagged index keeps its untagged children; a dropped index takes them along",
			rule: &Rule{Repositories: "team/*", KeepLast: 1},
			tags: []repostore.SnapTag{tag("v1", "idx1", 1), tag("v2", "idx2", 2)},
			manifests: []repoManifest{
				index("idx1", old, "amd64-1", "arm64-1"), man("amd64-1", old), man("arm64-1", old),
				index("idx2", old, "amd64-2"), man("amd64-2", old),
			},
			wantTags: []string{"v1"},
			wantGone: []string{"idx1", "amd64-1", "arm64-1"},
		},
		{
			name:      "a child shared with a kept index stays",
			rule:      &Rule{Repositories: "team/*", KeepLast: 1},
			tags:      []repostore.SnapTag{tag("v1", "idx1", 1), tag("v2", "idx2", 2)},
			manifests: []repoManifest{index("idx1", old, "shared"), index("idx2", old, "shared"), man("shared", old)},
			wantTags:  []string{"v1"},
			wantGone:  []string{"idx1"},
		},
		{
			name:      "a manifest pushed within grace survives a dropped tag",
			rule:      &Rule{Repositories: "team/*", KeepLast: 1},
			tags:      []repostore.SnapTag{tag("v1", "a", 1), tag("v2", "b", 2)},
			manifests: []repoManifest{man("a", ago(time.Minute)), man("b", old)},
			wantTags:  []string{"v1"},
		},
		{
			name:      "the signature of a referrer-kept SBOM chain stays",
			rule:      &Rule{Repositories: "team/*", UntaggedOlderThan: time.Hour},
			tags:      []repostore.SnapTag{tag("v1", "a", 1)},
			manifests: []repoManifest{man("a", old), referrer("sbom", "a", old), referrer("sbom-sig", "sbom", old)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rule != nil {
				if err := tt.rule.compile(); err != nil {
					t.Fatal(err)
				}
			}
			tagDrops, drops := plan(tt.rule, tt.tags, tt.manifests, now, grace)
			var gotTags, gotGone []string
			for _, td := range tagDrops {
				gotTags = append(gotTags, td.Tag.Tag)
			}
			names := map[digest.Digest]string{}
			for _, m := range tt.manifests {
				names[m.Digest] = m.Digest.String()
			}
			for _, n := range []string{"a", "b", "c", "sig", "sig-a", "sig-c", "sbom", "sbom-sig", "idx1", "idx2", "amd64-1", "arm64-1", "amd64-2", "shared"} {
				names[dg(n)] = n
			}
			for _, d := range drops {
				gotGone = append(gotGone, names[d.Manifest.Digest])
				if tt.reason != "" && !strings.Contains(d.Reason, tt.reason) {
					t.Errorf("%s dropped for %q, want a reason with %q", names[d.Manifest.Digest], d.Reason, tt.reason)
				}
			}
			slices.Sort(gotTags)
			slices.Sort(gotGone)
			slices.Sort(tt.wantTags)
			slices.Sort(tt.wantGone)
			if !slices.Equal(gotTags, tt.wantTags) {
				t.Errorf("tags dropped %v, want %v", gotTags, tt.wantTags)
			}
			if !slices.Equal(gotGone, tt.wantGone) {
				t.Errorf("manifests dropped %v, want %v", gotGone, tt.wantGone)
			}
		})
	}
}

func TestRuleFor(t *testing.T) {
	rules := []Rule{{Repositories: "team/cache"}, {Repositories: "team/*"}, {Repositories: "*"}}
	for _, tt := range []struct{ repo, want string }{
		{"team/cache", "team/cache"},
		{"team/app", "team/*"},
		{"busybox", "*"},
		{"a/b/c", ""},
	} {
		r := ruleFor(rules, tt.repo)
		got := ""
		if r != nil {
			got = r.Repositories
		}
		if got != tt.want {
			t.Errorf("ruleFor(%q) = %q, want %q", tt.repo, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"empty", Config{}, true},
		{"rule", Config{Retention: []Rule{{Repositories: "team/*", KeepLast: 3, KeepTags: "v.*"}}}, true},
		{"bad pattern", Config{Retention: []Rule{{Repositories: "team/["}}}, false},
		{"no pattern", Config{Retention: []Rule{{KeepLast: 1}}}, false},
		{"bad regexp", Config{Retention: []Rule{{Repositories: "*", KeepTags: "("}}}, false},
		{"negative", Config{Retention: []Rule{{Repositories: "*", KeepLast: -1}}}, false},
		{"negative grace", Config{Grace: -time.Second}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg.withDefaults()
			if err := c.validate(); (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
