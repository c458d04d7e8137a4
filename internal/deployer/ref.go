package deployer

import (
	"fmt"
	"strings"
)

// Reference defaults, as the Docker CLI applies them.
const (
	DefaultRegistry = "docker.io"
	DefaultTag      = "latest"
)

// ImageRef is a normalised image reference: registry host, repository path,
// tag and optional digest, all lower case except the digest.
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

// ParseRef normalises ref the way Docker does: "nginx" becomes
// "docker.io/library/nginx:latest", "GHCR.io/Owner/App" becomes
// "ghcr.io/owner/app:latest". It returns an error for an empty or malformed
// reference.
func ParseRef(ref string) (ImageRef, error) {
	in := ref
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return ImageRef{}, fmt.Errorf("parse image reference %q: empty", in)
	}
	var r ImageRef
	if i := strings.Index(ref, "@"); i >= 0 {
		r.Digest = ref[i+1:]
		ref = ref[:i]
		if !validDigest(r.Digest) {
			return ImageRef{}, fmt.Errorf("parse image reference %q: bad digest", in)
		}
	}
	// A tag follows the last colon after the last slash.
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		r.Tag = ref[i+1:]
		ref = ref[:i]
		if r.Tag == "" {
			return ImageRef{}, fmt.Errorf("parse image reference %q: empty tag", in)
		}
	}
	ref = strings.ToLower(ref)
	first, rest, found := strings.Cut(ref, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Registry, r.Path = first, rest
	} else {
		r.Registry, r.Path = DefaultRegistry, ref
	}
	if r.Registry == "index.docker.io" || r.Registry == "registry-1.docker.io" {
		r.Registry = DefaultRegistry
	}
	if r.Registry == DefaultRegistry && !strings.Contains(r.Path, "/") {
		r.Path = "library/" + r.Path
	}
	if r.Tag == "" {
		r.Tag = DefaultTag
	}
	if r.Path == "" || strings.Contains(r.Path, "//") || strings.HasSuffix(r.Path, "/") {
		return ImageRef{}, fmt.Errorf("parse image reference %q: bad repository", in)
	}
	for _, c := range r.Path {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._-/", c)) {
			return ImageRef{}, fmt.Errorf("parse image reference %q: bad character %q in repository", in, c)
		}
	}
	for _, c := range r.Tag {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-", c)) {
			return ImageRef{}, fmt.Errorf("parse image reference %q: bad character %q in tag", in, c)
		}
	}
	return r, nil
}

func validDigest(d string) bool {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || algo == "" || len(hex) < 32 {
		return false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
