package deploy

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Reference defaults, as the Docker CLI applies them.
const (
	DefaultRegistry = "docker.io"
	DefaultTag      = "latest"
)

// ImageRef is a normalised image reference: registry host, repository path,
// tag and optional digest, all lower case except the tag.
type ImageRef struct {
	Registry string // "ghcr.io", "docker.io", "127.0.0.1:5000"
	Path     string // "and3rn3t/app", "library/nginx"
	Tag      string
	Digest   string // "sha256:…" or empty
}

// Repository returns "registry/path", the key requests and targets match on.
func (r ImageRef) Repository() string { return r.Registry + "/" + r.Path }

// String returns "registry/path:tag", with "@digest" when set.
func (r ImageRef) String() string {
	s := r.Repository() + ":" + r.Tag
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// ParseRef normalises ref the way Docker does, with Docker's own reference
// grammar: "nginx" becomes "docker.io/library/nginx:latest",
// "GHCR.io/Owner/App" becomes "ghcr.io/owner/app:latest" (GitHub
// lower-cases package names; Docker refuses upper case in repositories, so
// it is folded here rather than refused). It returns an error for an empty
// or malformed reference.
func ParseRef(ref string) (ImageRef, error) {
	in := ref
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return ImageRef{}, fmt.Errorf("parse image reference %q: empty", in)
	}
	// Fold the repository to lower case, not the tag or the digest.
	repo, rest := ref, ""
	if i := strings.IndexAny(ref, "@"); i >= 0 {
		repo, rest = ref[:i], ref[i:]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, rest = repo[:i], repo[i:]+rest
	}
	named, err := reference.ParseNormalizedNamed(strings.ToLower(repo) + rest)
	if err != nil {
		return ImageRef{}, fmt.Errorf("parse image reference %q: %w", in, err)
	}
	r := ImageRef{Registry: reference.Domain(named), Path: reference.Path(named), Tag: DefaultTag}
	if r.Registry == "index.docker.io" || r.Registry == "registry-1.docker.io" {
		r.Registry = DefaultRegistry
	}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	return r, nil
}

// RepoDigest picks the digest of ref's repository from an image's
// RepoDigests ("repo@sha256:…"), preferring want when it is among them.
func RepoDigest(repoDigests []string, ref ImageRef, want string) string {
	var found string
	for _, rd := range repoDigests {
		repo, dg, ok := strings.Cut(rd, "@")
		if !ok {
			continue
		}
		r, err := ParseRef(repo)
		if err != nil || r.Repository() != ref.Repository() {
			continue
		}
		if want != "" && dg == want {
			return dg
		}
		if found == "" {
			found = dg
		}
	}
	return found
}

// HasDigest reports whether digest is among ref's repository digests.
func HasDigest(repoDigests []string, ref ImageRef, digest string) bool {
	return digest != "" && RepoDigest(repoDigests, ref, digest) == digest
}
