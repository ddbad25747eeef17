// Package manifest parses and validates the manifests pushed to the registry:
// OCI image manifests and indexes, Docker schema 2 manifests and manifest
// lists, and the draft OCI artifact manifest. Bodies are hostile input: they
// are size-bounded, decoded strictly and every descriptor is checked.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"

	"github.com/shoal-project/shoal/pkg/digest"
)

// Media types the registry accepts as manifests.
const (
	MediaTypeOCIManifest          = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex             = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest       = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList   = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIArtifactManifest  = "application/vnd.oci.artifact.manifest.v1+json"
	MediaTypeOCIEmpty             = "application/vnd.oci.empty.v1+json"
	mediaTypeNondistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	mediaTypeNondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	mediaTypeNondistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	mediaTypeDockerForeign        = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// MaxSize is the largest manifest accepted; the distribution spec suggests
// registries accept at least 4 MiB.
const MaxSize = 4 << 20

// Errors returned (wrapped) by Parse.
var (
	ErrInvalid              = errors.New("invalid manifest")
	ErrTooLarge             = errors.New("manifest too large")
	ErrUnsupportedMediaType = errors.New("unsupported manifest media type")
)

// Descriptor points at content, as in the OCI image spec.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// Platform is an index entry's platform.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// Manifest is what the registry needs to know about a pushed manifest.
type Manifest struct {
	MediaType    string // effective media type
	ArtifactType string // for the referrers API
	Config       *Descriptor
	Layers       []Descriptor // image layers, or artifact manifest blobs
	Manifests    []Descriptor // index / list children
	Subject      *Descriptor
	Annotations  map[string]string
}

// wire has the fields of every manifest kind. Descriptors are decoded
// through raw JSON first so their digests get our strict parser, with the
// field named in the error.
type wire struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *wireDescriptor   `json:"config"`
	Layers        []wireDescriptor  `json:"layers"`
	Blobs         []wireDescriptor  `json:"blobs"`
	Manifests     []wireDescriptor  `json:"manifests"`
	Subject       *wireDescriptor   `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
	hasLayers     bool
}

type wireDescriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         *int64            `json:"size"`
	URLs         []string          `json:"urls"`
	Annotations  map[string]string `json:"annotations"`
	ArtifactType string            `json:"artifactType"`
	Platform     *Platform         `json:"platform"`
}

// Parse validates body as a manifest sent with Content-Type contentType.
// An unknown media type wraps both ErrUnsupportedMediaType and ErrInvalid.
func Parse(contentType string, body []byte) (*Manifest, error) {
	if len(body) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), MaxSize)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrInvalid)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	// json.Decode accepts a top-level null and leaves w empty; "layers":[]
	// must be told apart from a missing key.
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil || keys == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	_, w.hasLayers = keys["layers"]
	_, hasManifests := keys["manifests"]

	if w.SchemaVersion == nil || *w.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion must be 2", ErrInvalid)
	}
	mt, err := effectiveMediaType(contentType, w.MediaType, w.Config != nil, w.hasLayers, hasManifests)
	if err != nil {
		return nil, err
	}
	m := &Manifest{MediaType: mt, Annotations: w.Annotations}
	if w.Subject != nil {
		if m.Subject, err = w.Subject.validate("subject"); err != nil {
			return nil, err
		}
	}
	switch mt {
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		err = m.imageManifest(&w, hasManifests)
	case MediaTypeOCIIndex, MediaTypeDockerManifestList:
		err = m.index(&w, hasManifests)
	case MediaTypeOCIArtifactManifest:
		err = m.artifactManifest(&w)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func effectiveMediaType(contentType, field string, hasConfig, hasLayers, hasManifests bool) (string, error) {
	header := ""
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return "", fmt.Errorf("%w: Content-Type %q: %v", ErrInvalid, contentType, err)
		}
		header = mt
	}
	mt := field
	switch {
	case field != "" && header != "" && field != header:
		return "", fmt.Errorf("%w: mediaType %q does not match Content-Type %q", ErrInvalid, field, header)
	case field == "" && header != "":
		mt = header
	case field == "" && hasManifests:
		mt = MediaTypeOCIIndex
	case field == "" && hasConfig && hasLayers:
		mt = MediaTypeOCIManifest
	}
	switch mt {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeOCIArtifactManifest:
		return mt, nil
	case MediaTypeDockerManifest, MediaTypeDockerManifestList:
		if field == "" {
			return "", fmt.Errorf("%w: Docker manifests must carry mediaType", ErrInvalid)
		}
		return mt, nil
	case "":
		return "", fmt.Errorf("%w: no media type and the body is not recognisable", ErrInvalid)
	}
	return "", fmt.Errorf("%w: %w: %q", ErrInvalid, ErrUnsupportedMediaType, mt)
}

func (m *Manifest) imageManifest(w *wire, hasManifests bool) error {
	if hasManifests {
		return fmt.Errorf("%w: an image manifest has no manifests list", ErrInvalid)
	}
	if w.Config == nil {
		return fmt.Errorf("%w: config is required", ErrInvalid)
	}
	if !w.hasLayers {
		return fmt.Errorf("%w: layers is required", ErrInvalid)
	}
	var err error
	if m.Config, err = w.Config.validate("config"); err != nil {
		return err
	}
	if m.Layers, err = validateAll("layers", w.Layers); err != nil {
		return err
	}
	m.ArtifactType = w.ArtifactType
	if m.ArtifactType == "" {
		m.ArtifactType = m.Config.MediaType
	}
	return nil
}

func (m *Manifest) index(w *wire, hasManifests bool) error {
	if !hasManifests {
		return fmt.Errorf("%w: manifests is required in an index", ErrInvalid)
	}
	if w.Config != nil || w.hasLayers {
		return fmt.Errorf("%w: an index has no config or layers", ErrInvalid)
	}
	var err error
	m.Manifests, err = validateAll("manifests", w.Manifests)
	m.ArtifactType = w.ArtifactType
	return err
}

func (m *Manifest) artifactManifest(w *wire) error {
	if w.ArtifactType == "" {
		return fmt.Errorf("%w: artifactType is required in an artifact manifest", ErrInvalid)
	}
	if w.Config != nil {
		return fmt.Errorf("%w: an artifact manifest has no config", ErrInvalid)
	}
	var err error
	m.Layers, err = validateAll("blobs", w.Blobs)
	m.ArtifactType = w.ArtifactType
	return err
}

func validateAll(field string, ws []wireDescriptor) ([]Descriptor, error) {
	out := make([]Descriptor, len(ws))
	for i := range ws {
		d, err := ws[i].validate(fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out[i] = *d
	}
	return out, nil
}

func (w *wireDescriptor) validate(field string) (*Descriptor, error) {
	if !validMediaType(w.MediaType) {
		return nil, fmt.Errorf("%w: %s: bad mediaType %q", ErrInvalid, field, w.MediaType)
	}
	d, err := digest.Parse(w.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, field, err)
	}
	if w.Size == nil || *w.Size < 0 {
		return nil, fmt.Errorf("%w: %s: size must be a non-negative number", ErrInvalid, field)
	}
	return &Descriptor{
		MediaType: w.MediaType, Digest: d, Size: *w.Size, URLs: w.URLs,
		Annotations: w.Annotations, ArtifactType: w.ArtifactType, Platform: w.Platform,
	}, nil
}

// validMediaType checks the RFC 6838 shape type "/" subtype, each 1..127
// restricted-name characters.
func validMediaType(s string) bool {
	typ, sub, ok := bytes.Cut([]byte(s), []byte("/"))
	return ok && restrictedName(typ) && restrictedName(sub)
}

func restrictedName(b []byte) bool {
	if len(b) == 0 || len(b) > 127 {
		return false
	}
	for i, c := range b {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return false
		}
		if !alnum && !bytes.ContainsRune([]byte("!#$&-^_.+"), rune(c)) {
			return false
		}
	}
	return true
}

// nonDistributable reports layers the registry need not hold: foreign layers
// and any descriptor that names URLs to fetch it from elsewhere.
func nonDistributable(d Descriptor) bool {
	switch d.MediaType {
	case mediaTypeNondistributable, mediaTypeNondistributableGzip, mediaTypeNondistributableZstd, mediaTypeDockerForeign:
		return true
	}
	return len(d.URLs) > 0
}

// RequiredBlobs lists the blobs that must exist in the repository before the
// manifest is accepted.
func (m *Manifest) RequiredBlobs() []Descriptor {
	var out []Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	for _, l := range m.Layers {
		if !nonDistributable(l) {
			out = append(out, l)
		}
	}
	return out
}

// RequiredManifests lists the child manifests of an index.
func (m *Manifest) RequiredManifests() []Descriptor { return m.Manifests }

// Descriptor returns this manifest's entry for a referrers index.
func (m *Manifest) Descriptor(d digest.Digest, size int64) Descriptor {
	return Descriptor{MediaType: m.MediaType, Digest: d, Size: size, ArtifactType: m.ArtifactType, Annotations: m.Annotations}
}
