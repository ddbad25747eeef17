package manifest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/pkg/digest"
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	dC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

func desc(mediaType, dgst string, size int) string {
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mediaType, dgst, size)
}

var (
	ociConfig = desc("application/vnd.oci.image.config.v1+json", dA, 10)
	ociLayer  = desc("application/vnd.oci.image.layer.v1.tar+gzip", dB, 20)
	ociImage  = `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":` + ociConfig + `,"layers":[` + ociLayer + `]}`
)

func TestParseAccepts(t *testing.T) {
	foreign := `{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"` + dC + `","size":5,"urls":["https://example.com/l"]}`
	nondist := desc(mediaTypeNondistributableGzip, dC, 5)
	urlLayer := `{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + dC + `","size":5,"urls":["https://example.com/l"]}`
	tests := []struct {
		name         string
		contentType  string
		body         string
		mediaType    string
		artifactType string
		required     int // RequiredBlobs
		manifests    int // RequiredManifests
		subject      bool
	}{
		{"oci image", MediaTypeOCIManifest, ociImage, MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"content-type with params", MediaTypeOCIManifest + "; charset=utf-8", ociImage, MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"media type from body only", "", ociImage, MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"media type guessed from shape", "",
			`{"schemaVersion":2,"config":` + ociConfig + `,"layers":[]}`, MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 1, 0, false},
		{"media type from header only", MediaTypeOCIManifest,
			`{"schemaVersion":2,"config":` + ociConfig + `,"layers":[` + ociLayer + `]}`, MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"docker schema 2", MediaTypeDockerManifest,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `","config":` + desc("application/vnd.docker.container.image.v1+json", dA, 1) + `,"layers":[` + desc("application/vnd.docker.image.rootfs.diff.tar.gzip", dB, 2) + `]}`,
			MediaTypeDockerManifest, "application/vnd.docker.container.image.v1+json", 2, 0, false},
		{"oci index", MediaTypeOCIIndex,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `","manifests":[` + desc(MediaTypeOCIManifest, dA, 3) + `,` + desc(MediaTypeOCIManifest, dB, 4) + `]}`,
			MediaTypeOCIIndex, "", 0, 2, false},
		{"index guessed from shape", "", `{"schemaVersion":2,"manifests":[]}`, MediaTypeOCIIndex, "", 0, 0, false},
		{"docker manifest list", MediaTypeDockerManifestList,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifestList + `","manifests":[{"mediaType":"` + MediaTypeDockerManifest + `","digest":"` + dA + `","size":3,"platform":{"architecture":"amd64","os":"linux"}}]}`,
			MediaTypeDockerManifestList, "", 0, 1, false},
		{"artifact via image manifest with subject", MediaTypeOCIManifest,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","artifactType":"application/vnd.example.sbom","config":` + desc(MediaTypeOCIEmpty, dA, 2) + `,"layers":[` + ociLayer + `],"subject":` + desc(MediaTypeOCIManifest, dC, 9) + `}`,
			MediaTypeOCIManifest, "application/vnd.example.sbom", 2, 0, true},
		{"artifact manifest", MediaTypeOCIArtifactManifest,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIArtifactManifest + `","artifactType":"application/vnd.example.sig","blobs":[` + ociLayer + `]}`,
			MediaTypeOCIArtifactManifest, "application/vnd.example.sig", 1, 0, false},
		{"foreign, nondistributable and URL layers are not required", MediaTypeOCIManifest,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":` + ociConfig + `,"layers":[` + ociLayer + `,` + foreign + `,` + nondist + `,` + urlLayer + `]}`,
			MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"unknown fields are ignored", MediaTypeOCIManifest,
			`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","x-extra":{"a":[1,2]},"config":` + ociConfig + `,"layers":[]}`,
			MediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json", 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.contentType, []byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.MediaType != tt.mediaType {
				t.Errorf("MediaType = %q, want %q", m.MediaType, tt.mediaType)
			}
			if m.ArtifactType != tt.artifactType {
				t.Errorf("ArtifactType = %q, want %q", m.ArtifactType, tt.artifactType)
			}
			if got := len(m.RequiredBlobs()); got != tt.required {
				t.Errorf("RequiredBlobs: %d, want %d", got, tt.required)
			}
			if got := len(m.RequiredManifests()); got != tt.manifests {
				t.Errorf("RequiredManifests: %d, want %d", got, tt.manifests)
			}
			if (m.Subject != nil) != tt.subject {
				t.Errorf("Subject = %v, want present=%v", m.Subject, tt.subject)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	big := `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","annotations":{"x":"` + strings.Repeat("a", MaxSize) + `"}}`
	tests := []struct {
		name        string
		contentType string
		body        string
		want        error
	}{
		{"empty", MediaTypeOCIManifest, "", ErrInvalid},
		{"whitespace", MediaTypeOCIManifest, " \n\t", ErrInvalid},
		{"null", MediaTypeOCIManifest, "null", ErrInvalid},
		{"array", MediaTypeOCIManifest, "[]", ErrInvalid},
		{"truncated", MediaTypeOCIManifest, ociImage[:len(ociImage)-5], ErrInvalid},
		{"trailing data", MediaTypeOCIManifest, ociImage + `{}`, ErrInvalid},
		{"too large", MediaTypeOCIManifest, big, ErrTooLarge},
		{"no schemaVersion", MediaTypeOCIManifest, `{"mediaType":"` + MediaTypeOCIManifest + `","config":` + ociConfig + `,"layers":[]}`, ErrInvalid},
		{"schemaVersion 1", MediaTypeOCIManifest, `{"schemaVersion":1,"config":` + ociConfig + `,"layers":[]}`, ErrInvalid},
		{"schemaVersion string", MediaTypeOCIManifest, `{"schemaVersion":"2","config":` + ociConfig + `,"layers":[]}`, ErrInvalid},
		{"unknown media type", "application/vnd.example+json", `{"schemaVersion":2,"mediaType":"application/vnd.example+json"}`, ErrUnsupportedMediaType},
		{"schema1 signed", "application/vnd.docker.distribution.manifest.v1+prettyjws", `{"schemaVersion":2}`, ErrUnsupportedMediaType},
		{"bad content type", "not a/media;;type", ociImage, ErrInvalid},
		{"header and body disagree", MediaTypeOCIIndex, ociImage, ErrInvalid},
		{"docker without mediaType field", MediaTypeDockerManifest, `{"schemaVersion":2,"config":` + ociConfig + `,"layers":[]}`, ErrInvalid},
		{"unrecognisable", "", `{"schemaVersion":2}`, ErrInvalid},
		{"image without config", MediaTypeOCIManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","layers":[]}`, ErrInvalid},
		{"image without layers", MediaTypeOCIManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":` + ociConfig + `}`, ErrInvalid},
		{"image with manifests", MediaTypeOCIManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":` + ociConfig + `,"layers":[],"manifests":[]}`, ErrInvalid},
		{"index without manifests", MediaTypeOCIIndex, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `"}`, ErrInvalid},
		{"index with layers", MediaTypeOCIIndex, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `","manifests":[],"layers":[]}`, ErrInvalid},
		{"artifact without artifactType", MediaTypeOCIArtifactManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIArtifactManifest + `","blobs":[]}`, ErrInvalid},
		{"artifact with config", MediaTypeOCIArtifactManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIArtifactManifest + `","artifactType":"a/b","config":` + ociConfig + `}`, ErrInvalid},
		{"layer digest malformed", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + ociConfig + `,"layers":[` + desc("a/b", "sha256:xyz", 1) + `]}`, ErrInvalid},
		{"layer digest uppercase", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + ociConfig + `,"layers":[` + desc("a/b", strings.ToUpper(dA), 1) + `]}`, ErrInvalid},
		{"config digest missing", MediaTypeOCIManifest, `{"schemaVersion":2,"config":{"mediaType":"a/b","size":1},"layers":[]}`, ErrInvalid},
		{"negative size", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + desc("a/b", dA, -1) + `,"layers":[]}`, ErrInvalid},
		{"size missing", MediaTypeOCIManifest, `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + dA + `"},"layers":[]}`, ErrInvalid},
		{"size overflows", MediaTypeOCIManifest, `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + dA + `","size":99999999999999999999},"layers":[]}`, ErrInvalid},
		{"descriptor media type empty", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + desc("", dA, 1) + `,"layers":[]}`, ErrInvalid},
		{"descriptor media type no slash", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + desc("tar", dA, 1) + `,"layers":[]}`, ErrInvalid},
		{"descriptor media type bad char", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + desc("a/b c", dA, 1) + `,"layers":[]}`, ErrInvalid},
		{"bad subject", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + ociConfig + `,"layers":[],"subject":{"digest":"x"}}`, ErrInvalid},
		{"layers wrong type", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + ociConfig + `,"layers":{}}`, ErrInvalid},
		{"index child bad", MediaTypeOCIIndex, `{"schemaVersion":2,"manifests":[` + desc(MediaTypeOCIManifest, "md5:abc", 1) + `]}`, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.contentType, []byte(tt.body))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", m)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == ErrUnsupportedMediaType && !errors.Is(err, ErrInvalid) {
				t.Fatalf("unsupported media type should also be ErrInvalid: %v", err)
			}
		})
	}
}

func TestDescriptorCarriesArtifactType(t *testing.T) {
	body := `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","artifactType":"application/vnd.example.sbom","config":` + desc(MediaTypeOCIEmpty, dA, 2) + `,"layers":[],"annotations":{"k":"v"}}`
	m, err := Parse("", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	d := m.Descriptor(dC, int64(len(body)))
	if d.ArtifactType != "application/vnd.example.sbom" || d.MediaType != MediaTypeOCIManifest || d.Size != int64(len(body)) || d.Annotations["k"] != "v" || string(d.Digest) != dC {
		t.Fatalf("Descriptor = %+v", d)
	}
}

// FuzzParse checks that no input panics, that accepted manifests satisfy the
// invariants the registry relies on, and that rejections wrap ErrInvalid or
// ErrTooLarge so the origin can map them to MANIFEST_INVALID.
func FuzzParse(f *testing.F) {
	f.Add(MediaTypeOCIManifest, []byte(ociImage))
	f.Add("", []byte(`{"schemaVersion":2,"manifests":[`+desc(MediaTypeOCIManifest, dA, 3)+`]}`))
	f.Add(MediaTypeDockerManifestList, []byte(`{"schemaVersion":2,"mediaType":"`+MediaTypeDockerManifestList+`","manifests":[]}`))
	f.Add(MediaTypeOCIArtifactManifest, []byte(`{"schemaVersion":2,"mediaType":"`+MediaTypeOCIArtifactManifest+`","artifactType":"a/b","blobs":[]}`))
	f.Add("", []byte("null"))
	f.Add("a/b;c", []byte(`{"schemaVersion":2,"subject":{}}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		m, err := Parse(contentType, body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error wraps neither ErrInvalid nor ErrTooLarge: %v", err)
			}
			return
		}
		switch m.MediaType {
		case MediaTypeOCIManifest, MediaTypeDockerManifest:
			if m.Config == nil {
				t.Fatal("image manifest accepted without config")
			}
		case MediaTypeOCIIndex, MediaTypeDockerManifestList, MediaTypeOCIArtifactManifest:
		default:
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		for _, d := range append(m.RequiredBlobs(), m.RequiredManifests()...) {
			if _, err := digest.Parse(string(d.Digest)); err != nil || d.Size < 0 {
				t.Fatalf("accepted bad descriptor %+v", d)
			}
		}
	})
}
