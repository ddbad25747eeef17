package gc

import (
	"cmp"
	"fmt"
	"path"
	"regexp"
	"slices"
	"time"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/repostore"
)

// Rule is a retention rule for the repositories whose name matches
// Repositories (a path.Match pattern: "team/*", "*/cache", "*"). The first
// matching rule of the list applies; a repository no rule matches keeps
// every tag and every untagged manifest, and loses only referrers and
// index children whose subject or parent is gone.
type Rule struct {
	Repositories string `yaml:"repositories"`
	// KeepLast keeps the N most recently written tags (0: no limit by
	// count). With KeepTags, a tag is kept if either keeps it.
	KeepLast int `yaml:"keep_last"`
	// KeepTags keeps the tags matching this regular expression (anchored
	// at both ends), whatever their age.
	KeepTags string `yaml:"keep_tags"`
	// UntaggedOlderThan drops untagged manifests last pushed longer ago
	// than this (0: keep them).
	UntaggedOlderThan time.Duration `yaml:"untagged_older_than"`

	keep *regexp.Regexp
}

// limitsTags reports whether the rule drops tags at all.
func (r *Rule) limitsTags() bool { return r != nil && (r.KeepLast > 0 || r.keep != nil) }

func (r *Rule) compile() error {
	if _, err := path.Match(r.Repositories, ""); err != nil || r.Repositories == "" {
		return fmt.Errorf("gc: retention rule: bad repositories pattern %q", r.Repositories)
	}
	if r.KeepLast < 0 || r.UntaggedOlderThan < 0 {
		return fmt.Errorf("gc: retention rule %q: keep_last and untagged_older_than must not be negative", r.Repositories)
	}
	if r.KeepTags != "" {
		re, err := regexp.Compile("^(?:" + r.KeepTags + ")$")
		if err != nil {
			return fmt.Errorf("gc: retention rule %q: keep_tags: %w", r.Repositories, err)
		}
		r.keep = re
	}
	return nil
}

// String names the rule in logs.
func (r *Rule) String() string {
	if r == nil {
		return "default (no rule)"
	}
	return fmt.Sprintf("repositories=%q keep_last=%d keep_tags=%q untagged_older_than=%s", r.Repositories, r.KeepLast, r.KeepTags, r.UntaggedOlderThan)
}

// ruleFor returns the first rule matching repo, or nil.
func ruleFor(rules []Rule, repo string) *Rule {
	for i := range rules {
		if ok, _ := path.Match(rules[i].Repositories, repo); ok {
			return &rules[i]
		}
	}
	return nil
}

// repoManifest is what retention knows about one manifest of a repository.
type repoManifest struct {
	repostore.SnapManifest
	// Children are the manifests an index lists.
	Children []digest.Digest
	// Pushed is its last push (zero: unknown, treated as new).
	Pushed time.Time
}

// dropTag and dropManifest are retention's decisions, with the reason
// logged for each.
type dropTag struct {
	Tag    repostore.SnapTag
	Reason string
}

type dropManifest struct {
	Manifest repoManifest
	Reason   string
}

// plan decides, for one repository, which tags and manifests retention
// removes. A manifest is kept if it is a root — tagged by a kept tag,
// pushed within grace (or at an unknown time), or an untagged top-level
// manifest the rule does not age out — or if a kept manifest reaches it
// as an index child or as a referrer (its subject is kept). Everything
// else goes: referrers with their subject, children with their index,
// manifests whose tags the rule dropped.
func plan(rule *Rule, tags []repostore.SnapTag, ms []repoManifest, now time.Time, grace time.Duration) ([]dropTag, []dropManifest) {
	var tagDrops []dropTag
	keptTag := map[digest.Digest]bool{}
	droppedTag := map[digest.Digest]string{}
	sorted := slices.Clone(tags)
	slices.SortFunc(sorted, func(a, b repostore.SnapTag) int {
		return cmp.Or(cmp.Compare(b.Revision, a.Revision), cmp.Compare(a.Tag, b.Tag))
	})
	for i, t := range sorted {
		keep := !rule.limitsTags() || (rule.KeepLast > 0 && i < rule.KeepLast) || (rule.keep != nil && rule.keep.MatchString(t.Tag))
		if keep {
			keptTag[t.Digest] = true
			continue
		}
		why := fmt.Sprintf("tag %q beyond the rule (%s)", t.Tag, rule)
		tagDrops = append(tagDrops, dropTag{Tag: t, Reason: why})
		droppedTag[t.Digest] = why
	}
	byDigest := map[digest.Digest]*repoManifest{}
	child := map[digest.Digest]bool{}
	referrers := map[digest.Digest][]digest.Digest{}
	for i := range ms {
		m := &ms[i]
		byDigest[m.Digest] = m
		for _, c := range m.Children {
			child[c] = true
		}
		if m.Entry.Subject != "" {
			referrers[m.Entry.Subject] = append(referrers[m.Entry.Subject], m.Digest)
		}
	}
	kept := map[digest.Digest]bool{}
	var queue []digest.Digest
	for _, m := range ms {
		young := m.Pushed.IsZero() || now.Sub(m.Pushed) < grace
		standalone := m.Entry.Subject == "" && !child[m.Digest] && droppedTag[m.Digest] == ""
		agedOut := rule != nil && rule.UntaggedOlderThan > 0 && now.Sub(m.Pushed) > rule.UntaggedOlderThan
		if keptTag[m.Digest] || young || (standalone && !agedOut) {
			kept[m.Digest] = true
			queue = append(queue, m.Digest)
		}
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		var next []digest.Digest
		if m := byDigest[d]; m != nil {
			next = append(next, m.Children...)
		}
		next = append(next, referrers[d]...)
		for _, n := range next {
			if byDigest[n] != nil && !kept[n] {
				kept[n] = true
				queue = append(queue, n)
			}
		}
	}
	var drops []dropManifest
	for _, m := range ms {
		if kept[m.Digest] {
			continue
		}
		var why string
		switch {
		case droppedTag[m.Digest] != "":
			why = droppedTag[m.Digest]
		case m.Entry.Subject != "":
			why = fmt.Sprintf("referrer of %s, which is not kept", m.Entry.Subject)
		case child[m.Digest]:
			why = "child of no kept index"
		default:
			why = fmt.Sprintf("untagged, pushed %s ago (%s)", now.Sub(m.Pushed).Round(time.Second), rule)
		}
		drops = append(drops, dropManifest{Manifest: m, Reason: why})
	}
	return tagDrops, drops
}
