// Package gc collects garbage on a running origin cluster: blobs no
// manifest references any more, copies an origin holds without being one of
// the blob's owners, abandoned upload temp files; and it applies retention
// rules (keep the last N tags, tags matching a pattern, drop untagged
// manifests older than D) to the index before it marks.
//
// A pass, on one origin:
//
//  1. Snapshot the index (repostore.Etcd) at one etcd revision R0: every
//     manifest, tag, blob link and touch.
//  2. Read and parse every manifest; apply retention (tags and manifests
//     removed with etcd transactions that compare the revisions read at R0,
//     so a manifest pushed or tagged again meanwhile stays).
//  3. Mark: every manifest still in the index, its blobs and its children.
//  4. Sweep this origin's own store: an unmarked blob whose last touch (its
//     file's time if it was never touched) is older than the grace period
//     is condemned — its blob links
//     removed in a transaction that succeeds only if the digest's touch key
//     is still at the revision read at R0 — and then deleted under the
//     store's per-digest lock after re-reading that revision once more. A
//     marked blob this origin does not own is deleted when every owner
//     holds it. Temp files older than temp_max_age go.
//  5. Asked by `shoal-origin gc`, the origin then has every other origin
//     run steps 1, 3 and 4 on its own store, and returns all reports.
//
// Why a blob used again during a pass survives. Every path that makes a
// digest live — an upload commit, a manifest push (for the manifest and all
// it references, before it checks that the repository links them), a
// cross-repository mount — first touches the digest in etcd (u/<digest>,
// one transaction), and only then commits bytes, copies them to owners or
// links them. Take a push that touches digest X at revision T, and GC's
// condemn transaction for X at revision C:
//
//   - T < R0: the touch is in the snapshot, and a push still running at R0
//     touched within grace of the snapshot's time (grace outlasts a push;
//     ages are measured at the snapshot, however long the pass then
//     takes), so X is no candidate.
//   - R0 < T < C: the condemn transaction compares the touch key with its
//     R0 revision and fails; X keeps its links and bytes.
//   - T > C: X's links are already gone, so the push's reference checks
//     (HEAD, manifest PUT, mount) see it missing and the client uploads X
//     again. Any origin's delete of X runs under X's lock after a
//     linearizable read of the touch key: if that read follows T it sees
//     the change and keeps X. If it precedes T, the delete happens under
//     the lock before anything the push does after T on that origin takes
//     the same lock: committing the new upload (which then lands after the
//     delete) and answering "do you hold X?" to a replicating origin (which
//     then hears no and sends its copy). So the bytes the push relies on
//     are never the ones removed.
//
// The one visible effect: a client that asked HEAD before C, was told the
// blob exists and skipped its upload, then pushes its manifest after C,
// gets MANIFEST_BLOB_UNKNOWN and pushes again (uploading the blob), as
// after any blob deletion in a registry; nothing it pushed is lost.
//
// The grace period is the only clock in the argument: it protects a blob
// uploaded but not yet referenced (the manifest follows within a push),
// and it must exceed clock skew between origins, which stamp touches with
// their own clocks. Revisions, not times, decide the races.
//
// A crash (kill -9) mid-pass leaves either links removed for a blob whose
// bytes remain on some origins (the next pass deletes them: the blob is
// still unmarked and untouched) or an unlinked blob gone from some origins
// but not others (same); never a link without bytes, since links go first.
// Deletions are paced (deletes_per_second) and dry-run reports without
// removing anything.
//
// Known limits: GC needs the etcd index (cluster mode); a manifest that
// cannot be read from any origin aborts the pass before any sweep, since
// its references are unknown.
package gc
