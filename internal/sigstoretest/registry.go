package sigstoretest

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of Sigstore artifacts in a registry.
const (
	MediaTypeBundle        = "application/vnd.dev.sigstore.bundle.v0.3+json"
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	mediaTypeEmpty         = "application/vnd.oci.empty.v1+json"
)

// AttachBundle stores bundle as an OCI 1.1 referrer of repo@digest (repo
// like "127.0.0.1:5000/octo/web"), as cosign v3 and attest-build-provenance
// do: an OCI manifest with the bundle's artifact type, an empty config,
// the bundle as its one layer and the image as its subject. A registry
// with the referrers API indexes it; on one without, go-containerregistry
// adds it to the sha256-<hex> tag index, as cosign does on GHCR. It
// returns the referrer's digest.
func AttachBundle(ctx context.Context, t testing.TB, repo, digest string, bundle []byte, opts ...remote.Option) string {
	t.Helper()
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := remote.Head(r.Digest(digest), opts...)
	if err != nil {
		t.Fatalf("attach bundle: subject %s@%s: %v", repo, digest, err)
	}
	layer := static.NewLayer(bundle, MediaTypeBundle)
	config := static.NewLayer([]byte("{}"), mediaTypeEmpty)
	for _, l := range []v1.Layer{layer, config} {
		if err := remote.WriteLayer(r, l, opts...); err != nil {
			t.Fatalf("attach bundle: upload blob: %v", err)
		}
	}
	desc := func(l v1.Layer, mt types.MediaType) v1.Descriptor {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		n, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		return v1.Descriptor{MediaType: mt, Digest: d, Size: n}
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  MediaTypeBundle,
		Config:        desc(config, mediaTypeEmpty),
		Layers:        []v1.Descriptor{desc(layer, MediaTypeBundle)},
		Subject:       &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations: map[string]string{
			"dev.sigstore.bundle.content":      "dsse-envelope",
			"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
		},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(r.Digest(h.String()), rawManifest{raw: raw, mt: types.OCIManifestSchema1}, opts...); err != nil {
		t.Fatalf("attach bundle: put referrer: %v", err)
	}
	return h.String()
}

// AttachCosign stores signatures (payload and annotations, from Cosign)
// as the layers of cosign's legacy tag sha256-<hex>.sig in repo.
func AttachCosign(ctx context.Context, t testing.TB, repo, digest string, sigs []CosignSignature, opts ...remote.Option) {
	t.Helper()
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, s := range sigs {
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:       static.NewLayer(s.Payload, MediaTypeSimpleSigning),
			Annotations: s.Annotations,
			MediaType:   MediaTypeSimpleSigning,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tag := r.Tag(strings.Replace(digest, ":", "-", 1) + ".sig")
	if err := remote.Write(tag, img, opts...); err != nil {
		t.Fatalf("attach cosign signature: %v", err)
	}
}

// CosignSignature is one layer of a .sig tag.
type CosignSignature struct {
	Payload     []byte
	Annotations map[string]string
}

type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }
