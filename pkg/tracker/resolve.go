package tracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/shoal-project/shoal/pkg/digest"
	"github.com/shoal-project/shoal/pkg/manifest"
	"github.com/shoal-project/shoal/pkg/reference"
)

// manifestAccept lists every manifest type an origin stores.
const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// maxManifestBytes bounds a manifest read from an origin (the origin takes
// no larger ones either).
const maxManifestBytes = 4 << 20

// maxIndexChildren bounds the platform manifests of an index followed.
const maxIndexChildren = 64

// resolveImage asks the origins what ref of repo is: its manifest digest
// and the blobs a node needs to run it (config and layers, of every
// platform of an index). The tracker's origin client and credentials are
// used, as for metainfo.
func (s *Server) resolveImage(ctx context.Context, repo string, ref reference.Ref) (digest.Digest, []digest.Digest, error) {
	origins := s.origins.Ring().Members()
	if len(origins) == 0 {
		return "", nil, errors.New("no origins known")
	}
	var errs []error
	for _, o := range origins {
		md, blobs, err := s.resolveFrom(ctx, o.Addr, repo, ref)
		if err == nil {
			return md, blobs, nil
		}
		errs = append(errs, fmt.Errorf("origin %s: %w", o.ID, err))
	}
	return "", nil, errors.Join(errs...)
}

func (s *Server) resolveFrom(ctx context.Context, addr, repo string, ref reference.Ref) (digest.Digest, []digest.Digest, error) {
	m, md, err := s.getManifest(ctx, addr, repo, ref.String())
	if err != nil {
		return "", nil, err
	}
	if ref.IsDigest() && md != ref.Digest {
		return "", nil, fmt.Errorf("origin answered %s for %s", md, ref.Digest)
	}
	seen := map[digest.Digest]bool{}
	var blobs []digest.Digest
	add := func(m *manifest.Manifest) error {
		for _, b := range m.RequiredBlobs() {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				blobs = append(blobs, b.Digest)
			}
		}
		if len(blobs) > maxPreheatBlobs {
			return fmt.Errorf("more than %d blobs", maxPreheatBlobs)
		}
		return nil
	}
	if err := add(m); err != nil {
		return "", nil, err
	}
	children := m.RequiredManifests()
	if len(children) > maxIndexChildren {
		return "", nil, fmt.Errorf("index with more than %d manifests", maxIndexChildren)
	}
	for _, c := range children {
		cm, cd, err := s.getManifest(ctx, addr, repo, string(c.Digest))
		if err != nil {
			return "", nil, fmt.Errorf("child %s: %w", c.Digest, err)
		}
		if cd != c.Digest {
			return "", nil, fmt.Errorf("child %s: origin answered %s", c.Digest, cd)
		}
		if len(cm.RequiredManifests()) > 0 {
			return "", nil, fmt.Errorf("child %s: nested index", c.Digest)
		}
		if err := add(cm); err != nil {
			return "", nil, err
		}
	}
	if len(blobs) == 0 {
		return "", nil, errors.New("manifest names no blobs")
	}
	return md, blobs, nil
}

// getManifest fetches one manifest and computes its digest from the bytes:
// the origin's Docker-Content-Digest header is not taken on trust.
func (s *Server) getManifest(ctx context.Context, addr, repo, ref string) (*manifest.Manifest, digest.Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.meta.scheme+"://"+addr+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := s.meta.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("manifest %s: status %s", ref, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, "", err
	}
	if len(body) > maxManifestBytes {
		return nil, "", fmt.Errorf("manifest %s larger than %d bytes", ref, maxManifestBytes)
	}
	m, err := manifest.Parse(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", ref, err)
	}
	return m, digest.FromBytes(body), nil
}
