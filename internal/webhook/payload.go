package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// GitHub event names (X-GitHub-Event) hookd acts on. A GitHub App sends
// registry_package, a repository or organisation webhook sends package; the
// payloads have the same shape under the event's own key.
const (
	eventPing            = "ping"
	eventPackage         = "package"
	eventRegistryPackage = "registry_package"
	eventOther           = "other" // metrics label for every other event
)

// Reasons a correctly signed delivery is ignored. They are answered to
// GitHub (visible under "Recent deliveries") and logged, and each is distinct
// so an operator can tell them apart.
const (
	reasonEvent        = "event type is not handled"
	reasonAction       = "action is neither published nor updated"
	reasonNotContainer = "package is not a container image"
	reasonUntagged     = "version is untagged (a per-platform manifest of a multi-arch push, or a digest-only push)"
	reasonArtifactTag  = "tag is a signature, attestation or SBOM artifact"
	reasonURLMismatch  = "package_url names another image than the package"
	reasonBadRef       = "package does not form a valid image reference"
	reasonNoTarget     = "no target follows this image"
)

// errMalformed is a correctly signed body that is not the JSON hookd needs.
var errMalformed = errors.New("malformed JSON payload")

// packageEnvelope holds only the fields hookd reads; encoding/json skips
// the rest of the payload (the whole of a real one is about 11 KB, a third
// of it container labels). go-github's PackageEvent would do, but it
// decodes everything and ties the event name to the key, while a
// registry_package delivery may carry either key.
type packageEnvelope struct {
	Action          string     `json:"action"`
	Package         *ghPackage `json:"package"`
	RegistryPackage *ghPackage `json:"registry_package"`
	Repository      struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
}

type ghPackage struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	Ecosystem   string `json:"ecosystem"`
	PackageType string `json:"package_type"`
	Owner       struct {
		Login string `json:"login"`
	} `json:"owner"`
	PackageVersion struct {
		Version           string `json:"version"`
		PackageURL        string `json:"package_url"`
		TargetOID         string `json:"target_oid"`
		ContainerMetadata struct {
			Tag struct {
				Name   string `json:"name"`
				Digest string `json:"digest"`
			} `json:"tag"`
		} `json:"container_metadata"`
	} `json:"package_version"`
}

// decodeEnvelope decodes payload, a JSON object, into a packageEnvelope
// with encoding/json and its rules: keys match case-insensitively and the
// last of repeated keys counts; null or absent reads as empty (a package
// object: as nil); a field of another JSON type than its own is an error.
//
// encoding/json checks the whole payload before decoding, without
// recursion, and refuses nesting deeper than 10000 levels: a signed body of
// millions of brackets is an error, not a stack overflow.
//
// It is also most of the CPU a delivery costs (two passes over 11 KB), so
// a payload that cannot nest deeper than encoding/json allows is first
// decoded by segmentio's encoding/json, a one-pass decoder with the same
// rules, about four times faster; anything it refuses is decoded again by
// encoding/json, whose error is the one reported. FuzzParse checks that
// both paths agree.
//
// The error names the field and the JSON types, never payload text.
func decodeEnvelope(payload []byte) (packageEnvelope, error) {
	var env packageEnvelope
	if !shallow(payload) || fastjson.Unmarshal(payload, &env) != nil {
		env = packageEnvelope{}
		if err := json.Unmarshal(payload, &env); err != nil {
			return packageEnvelope{}, describe(err)
		}
	}
	// Unmarshal takes a top-level null for "leave it as it is".
	if p := bytes.TrimLeft(payload, " \t\r\n"); p[0] == 'n' {
		return packageEnvelope{}, errors.New("top level is null, want an object")
	}
	return env, nil
}

// shallow reports whether payload has no more opening brackets than
// encoding/json's nesting limit, so that it cannot nest deeper: the fast
// decoder recurses and has no limit of its own.
func shallow(payload []byte) bool {
	return bytes.Count(payload, []byte("{"))+bytes.Count(payload, []byte("[")) <= maxNesting
}

// maxNesting is encoding/json's nesting limit.
const maxNesting = 10000

// describe returns an error of encoding/json as a message that names a
// field and JSON types or a byte offset, but holds no payload text (a
// SyntaxError quotes a character, an UnmarshalTypeError a number).
func describe(err error) error {
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		// "invalid character '[' exceeded max depth"
		if strings.HasSuffix(e.Error(), "exceeded max depth") {
			return fmt.Errorf("nested deeper than encoding/json's 10000 levels at byte %d", e.Offset)
		}
		return fmt.Errorf("not valid JSON at byte %d", e.Offset)
	}
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := e.Field
		if field == "" {
			field = "top level"
		}
		return fmt.Errorf("%s is %s, want %s", field, jsonValue(e.Value), goKind(e.Type))
	}
	// Unmarshal's other errors are about the Go types it is given.
	return errors.New("not valid JSON")
}

// jsonValue names the JSON type in an UnmarshalTypeError's Value: "number",
// "number -5", "bool", "string", "array", "object".
func jsonValue(v string) string {
	switch v, _, _ = strings.Cut(v, " "); v {
	case "string":
		return "a string"
	case "number":
		return "a number"
	case "bool":
		return "a boolean"
	case "array":
		return "an array"
	case "object":
		return "an object"
	}
	return "another type"
}

// goKind names the JSON type a Go type of the envelopes takes.
func goKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Pointer, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Int, reflect.Int64:
		return "a 64-bit integer"
	}
	return "another type"
}

// mapping is what a package delivery asks for: an image to deploy, or the
// reason it is ignored.
type mapping struct {
	repository string // "ghcr.io/owner/name", lower case
	tag        string
	digest     string // "sha256:<64 hex>" or empty
	ignore     string // one of the reason constants; empty when there is an image
	// sourceRepo ("OWNER/REPO") and commit are what the delivery says the
	// image was built from, when it says so in a well-formed way; GitHub
	// deployment statuses go to that commit.
	sourceRepo, commit string
}

// image returns "repository:tag".
func (m mapping) image() string { return m.repository + ":" + m.tag }

// parsePackage maps the payload of a package or registry_package event to an
// image on host. It returns an error wrapping errMalformed when the payload
// is not JSON of the expected shape; every other problem is a reason to
// ignore the delivery.
//
// Decisions (from the real capture in testdata and the octokit samples):
//   - The repository is HOST/NAMESPACE/NAME. namespace is the owner login in
//     real ghcr.io payloads; GitHub's samples carry "owner/repository" (the
//     old docker.pkg.github.com layout), which maps to its owner because
//     ghcr.io addresses packages by owner and name. A missing namespace
//     falls back to package.owner.login.
//   - package_url must name the same owner/name (and tag, when it has one),
//     otherwise the delivery is ignored. Its host is not compared: host is
//     the operator's explicit mapping (HOOKD_REGISTRY_HOST, e.g. a mirror),
//     while GitHub always writes ghcr.io.
//   - A package is a container only when every one of package_type and
//     ecosystem that is present says container or docker: the octokit samples
//     mix "npm" with "docker", and ambiguity fails closed.
func parsePackage(event string, payload []byte, host string) (mapping, error) {
	env, err := decodeEnvelope(payload)
	if err != nil {
		return mapping{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	p := env.Package
	if event == eventRegistryPackage || p == nil {
		if env.RegistryPackage != nil {
			p = env.RegistryPackage
		}
	}
	if p == nil {
		return mapping{}, fmt.Errorf("%w: no %s object", errMalformed, event)
	}
	if env.Action != "published" && env.Action != "updated" {
		return mapping{ignore: reasonAction}, nil
	}
	if !isContainer(p.PackageType, p.Ecosystem) {
		return mapping{ignore: reasonNotContainer}, nil
	}
	pv := &p.PackageVersion
	tag := pv.ContainerMetadata.Tag.Name
	if tag == "" {
		return mapping{ignore: reasonUntagged}, nil
	}
	if isArtifactTag(tag) {
		return mapping{ignore: reasonArtifactTag}, nil
	}
	owner, _, _ := strings.Cut(p.Namespace, "/")
	if p.Namespace == "" {
		owner = p.Owner.Login
	}
	path := owner + "/" + p.Name
	if pv.PackageURL != "" {
		urlPath, urlTag := splitPackageURL(pv.PackageURL)
		if !strings.EqualFold(urlPath, path) || urlTag != "" && !strings.EqualFold(urlTag, tag) {
			return mapping{ignore: reasonURLMismatch}, nil
		}
	}
	repo := host + "/" + path
	if !isASCII(repo) {
		return mapping{ignore: reasonBadRef}, nil
	}
	repo = strings.ToLower(repo)
	if !validRef(repo, tag) {
		return mapping{ignore: reasonBadRef}, nil
	}
	m := mapping{repository: repo, tag: tag}
	if fullNamePattern.MatchString(env.Repository.FullName) {
		m.sourceRepo = env.Repository.FullName
	}
	if commitPattern.MatchString(pv.TargetOID) {
		m.commit = pv.TargetOID
	}
	switch {
	case validSHA256(pv.ContainerMetadata.Tag.Digest):
		m.digest = pv.ContainerMetadata.Tag.Digest
	case validSHA256(pv.Version):
		m.digest = pv.Version
	}
	return m, nil
}

// A repository's full name (GitHub's rules for owners and names) and a
// git object id (SHA-1, or SHA-256 in repositories that use it).
var (
	fullNamePattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$`)
	commitPattern   = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
)

func isContainer(values ...string) bool {
	known := false
	for _, v := range values {
		if v == "" {
			continue
		}
		if !strings.EqualFold(v, "container") && !strings.EqualFold(v, "docker") {
			return false
		}
		known = true
	}
	return known
}

// isArtifactTag reports whether tag is one cosign or the OCI referrers tag
// schema uses for an artifact about another manifest: "sha256-<64 hex>",
// optionally followed by ".sig", ".att", ".sbom" or another suffix.
func isArtifactTag(tag string) bool {
	const prefix = "sha256-"
	if len(tag) < len(prefix)+64 || !strings.EqualFold(tag[:len(prefix)], prefix) {
		return false
	}
	if !isHex(tag[len(prefix):len(prefix)+64], true) {
		return false
	}
	rest := tag[len(prefix)+64:]
	return rest == "" || rest[0] == '.'
}

// splitPackageURL splits "ghcr.io/owner/name:tag" into "owner/name" and
// "tag". A first segment that looks like a host is dropped.
func splitPackageURL(u string) (path, tag string) {
	if i := strings.IndexByte(u, '@'); i >= 0 {
		u = u[:i]
	}
	if i := strings.LastIndexByte(u, ':'); i > strings.LastIndexByte(u, '/') {
		u, tag = u[:i], u[i+1:]
	}
	if first, rest, ok := strings.Cut(u, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		u = rest
	}
	return u, tag
}

// isASCII reports whether s is ASCII. It is checked before lowering, which
// maps some non-ASCII letters (the Kelvin sign) to ASCII ones.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validRef reports whether repo:tag is an image reference that
// deploy.ParseRef leaves unchanged, with a tag Docker accepts.
func validRef(repo, tag string) bool {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	// ParseRef is lenient with path components ("ghcr.io//x" passes);
	// Docker is not, and a request it cannot pull helps nobody.
	_, path, _ := strings.Cut(repo, "/")
	for c := range strings.SplitSeq(path, "/") {
		if !validComponent(c) {
			return false
		}
	}
	ref, err := deploy.ParseRef(repo + ":" + tag)
	return err == nil && ref.Repository() == repo && ref.Tag == tag && ref.Digest == ""
}

// validComponent reports whether c is a path component as the
// distribution spec defines it: [a-z0-9]+ joined by ".", "_", "__" or runs
// of "-".
func validComponent(c string) bool {
	if c == "" || !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		if isAlnum(c[i]) {
			continue
		}
		// c[i] starts a separator; it ends before the next alphanumeric.
		j := i
		for j < len(c) && !isAlnum(c[j]) {
			j++
		}
		switch sep := c[i:j]; {
		case sep == "." || sep == "_" || sep == "__":
		case strings.Trim(sep, "-") == "":
		default:
			return false
		}
		i = j - 1
	}
	return true
}

func isAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }

// validSHA256 reports whether d is "sha256:" and 64 lower-case hex digits.
func validSHA256(d string) bool {
	const prefix = "sha256:"
	return len(d) == len(prefix)+64 && d[:len(prefix)] == prefix && isHex(d[len(prefix):], false)
}

func isHex(s string, upperOK bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || upperOK && c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// pingPayload holds the fields of a ping hookd reports.
type pingPayload struct {
	HookID int64 `json:"hook_id"`
	Hook   struct {
		Type   string   `json:"type"`
		Events []string `json:"events"`
	} `json:"hook"`
}

// parsePing decodes a ping. It returns an error wrapping errMalformed for a
// body that is not a JSON object.
func parsePing(payload []byte) (pingPayload, error) {
	var p pingPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return pingPayload{}, fmt.Errorf("%w: %v", errMalformed, describe(err))
	}
	return p, nil
}

// subscribed reports whether a hook with these events receives package
// events. An empty list (older payloads) is given the benefit of the doubt.
func (p pingPayload) subscribed() bool {
	if len(p.Hook.Events) == 0 {
		return true
	}
	for _, e := range p.Hook.Events {
		if e == "*" || e == eventPackage || e == eventRegistryPackage {
			return true
		}
	}
	return false
}
