package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Where signatures of an image live, and the bounds on what hookd reads of
// them: whoever can push to the repository can push signature artifacts
// too, so nothing about them is trusted before it is verified, and no
// amount of them can make hookd read without limit.
const (
	// MediaTypeBundle is the prefix of a Sigstore bundle's media type
	// ("application/vnd.dev.sigstore.bundle.v0.3+json"), both as the
	// artifactType of the referrer and as its layer's media type.
	MediaTypeBundle = "application/vnd.dev.sigstore.bundle"
	// MediaTypeSimpleSigning is the layer media type of cosign's legacy
	// signatures, stored under the tag sha256-<hex>.sig.
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"

	// mediaTypeEmpty is the OCI empty config an artifact manifest carries.
	mediaTypeEmpty = "application/vnd.oci.empty.v1+json"

	// maxSignatures bounds the signatures read per image, per format.
	maxSignatures = 16
	// maxManifestBytes bounds a referrer's or the .sig tag's manifest.
	maxManifestBytes = 256 << 10
	// maxBundleBytes bounds one bundle: a provenance attestation with its
	// certificate and inclusion proof is tens of kilobytes.
	maxBundleBytes = 1 << 20
	// maxPayloadBytes bounds one cosign simple-signing payload (a few
	// hundred bytes in practice).
	maxPayloadBytes = 64 << 10
)

// Formats of a Signature.
const (
	// FormatBundle is a Sigstore bundle attached to the image as an OCI 1.1
	// referrer: found through the referrers API or, on registries without
	// it (GHCR), the sha256-<hex> tag index. cosign v3 and GitHub's
	// attest-build-provenance (push-to-registry) store signatures so.
	FormatBundle = "bundle"
	// FormatCosign is one layer of cosign's legacy sha256-<hex>.sig tag:
	// the signed simple-signing payload, with the signature, certificate
	// and transparency-log entry in the layer's annotations.
	FormatCosign = "cosign"
)

// Signature is a signature stored in a registry for an image digest,
// exactly as stored: nothing in it is verified.
type Signature struct {
	Format string
	// Source says where it was found, for people: "referrer sha256:…" or
	// "tag sha256-….sig".
	Source string
	// Bundle is the Sigstore bundle's JSON (FormatBundle).
	Bundle []byte
	// Payload and Annotations are the layer of a FormatCosign signature.
	Payload     []byte
	Annotations map[string]string
}

// Signatures returns the Sigstore signatures stored for repo@digest (repo
// like "ghcr.io/owner/app"): bundles attached as OCI 1.1 referrers (the
// referrers API, or the sha256-<hex> tag index where the registry has
// none) and the layers of cosign's legacy sha256-<hex>.sig tag. An image
// with neither has no signatures, which is no error. At most 16 of each
// are read, each within a size bound. The requests go through the client's
// credentials, limiter and metrics like every look-up. When one place
// could not be read, the signatures found in the other are returned with
// the error; errors are those of Head.
func (c *Client) Signatures(ctx context.Context, repo, digest string) ([]Signature, error) {
	d, err := name.NewDigest(repo + "@" + digest)
	if err != nil {
		return nil, fmt.Errorf("parse image reference %s@%s: %w", repo, digest, err)
	}
	host := d.Context().RegistryStr()
	if err := c.limits.admit(host); err != nil {
		return nil, fmt.Errorf("signatures of %s: %w", d, err)
	}
	bundles, errRef := c.referrerBundles(ctx, d)
	if errRef != nil {
		errRef = fmt.Errorf("signatures of %s: referrers: %w", d, c.explain(ctx, host, errRef))
	}
	legacy, errSig := c.cosignSignatures(ctx, d)
	if errSig != nil {
		errSig = fmt.Errorf("signatures of %s: %s tag: %w", d, sigTag(d), c.explain(ctx, host, errSig))
	}
	return append(bundles, legacy...), errors.Join(errRef, errSig)
}

// referrerBundles reads the Sigstore bundles among d's referrers.
func (c *Client) referrerBundles(ctx context.Context, d name.Digest) ([]Signature, error) {
	idx, err := remote.Referrers(d, remote.Reuse(c.puller), remote.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("parse referrers: %w", err)
	}
	var out []Signature
	fetched := 0
	for _, desc := range im.Manifests {
		if len(out) == maxSignatures || fetched == 2*maxSignatures {
			break
		}
		if !maybeBundle(desc) || desc.Size > maxManifestBytes {
			continue
		}
		fetched++
		m, err := c.manifest(ctx, d.Context().Digest(desc.Digest.String()))
		if err != nil {
			return out, err
		}
		for _, l := range m.Layers {
			if !strings.HasPrefix(string(l.MediaType), MediaTypeBundle) {
				continue
			}
			b, err := c.blob(ctx, d.Context(), l, maxBundleBytes)
			if err != nil {
				return out, err
			}
			if b != nil {
				out = append(out, Signature{Format: FormatBundle, Source: "referrer " + desc.Digest.String(), Bundle: b})
			}
			break
		}
	}
	return out, nil
}

// maybeBundle reports whether a referrer may hold a Sigstore bundle: its
// artifact type says so, or, from a registry that reports the config's
// media type as the artifact type (as go-containerregistry's own does)
// or none, it might.
func maybeBundle(desc v1.Descriptor) bool {
	if !desc.MediaType.IsImage() {
		return false
	}
	switch at := desc.ArtifactType; {
	case strings.HasPrefix(at, MediaTypeBundle):
		return true
	case at == "", at == mediaTypeEmpty:
		return true
	}
	return false
}

// cosignSignatures reads the layers of d's sha256-<hex>.sig tag; a tag
// that does not exist means none.
func (c *Client) cosignSignatures(ctx context.Context, d name.Digest) ([]Signature, error) {
	tag := sigTag(d)
	m, err := c.manifest(ctx, tag)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []Signature
	for _, l := range m.Layers {
		if len(out) == maxSignatures {
			break
		}
		if l.MediaType != MediaTypeSimpleSigning {
			continue
		}
		p, err := c.blob(ctx, d.Context(), l, maxPayloadBytes)
		if err != nil {
			return out, err
		}
		if p != nil {
			out = append(out, Signature{Format: FormatCosign, Source: "tag " + tag.TagStr(), Payload: p, Annotations: maps.Clone(l.Annotations)})
		}
	}
	return out, nil
}

// sigTag is cosign's tag for d's signatures: sha256-<hex>.sig.
func sigTag(d name.Digest) name.Tag {
	return d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + ".sig")
}

// manifest fetches and parses the image manifest ref names, within
// maxManifestBytes.
func (c *Client) manifest(ctx context.Context, ref name.Reference) (*v1.Manifest, error) {
	rd, err := c.puller.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if len(rd.Manifest) > maxManifestBytes {
		return nil, fmt.Errorf("manifest %s is %d bytes, more than a signature's %d", ref, len(rd.Manifest), maxManifestBytes)
	}
	if !rd.MediaType.IsImage() {
		return nil, fmt.Errorf("manifest %s: unsupported media type %q", ref, rd.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rd.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", ref, err)
	}
	return m, nil
}

// blob reads the blob l describes when it is at most limit bytes, and nil
// when it is larger. The content is checked against l's digest.
func (c *Client) blob(ctx context.Context, repo name.Repository, l v1.Descriptor, limit int64) ([]byte, error) {
	if l.Size > limit || l.Size < 0 {
		return nil, nil
	}
	layer, err := c.puller.Layer(ctx, repo.Digest(l.Digest.String()))
	if err != nil {
		return nil, err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// Reading to the end makes go-containerregistry check the digest.
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", l.Digest, err)
	}
	if int64(len(b)) > limit {
		return nil, nil
	}
	return b, nil
}

// isNotFound reports whether err is the registry's 404.
func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}
