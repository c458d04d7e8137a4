package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// TestParsePackage covers the mapping rules on payloads derived from the
// real capture.
func TestParsePackage(t *testing.T) {
	real := readFixture(t, realFixture)
	const url = `"package_url": "ghcr.io/theryangeary/www:0e2a89b"`
	const tag = `"name": "0e2a89b"`
	const name = `"name": "www",
    "namespace": "theryangeary"`
	hex64 := strings.TrimPrefix(realDigest, "sha256:")
	const otherDigest = "sha256:e312a84da724b2de60d64c3241b69e6c89c3ce7ec82e55cd9793ddc1978008c1"

	tests := []struct {
		name  string
		event string
		host  string
		body  []byte
		want  mapping
	}{
		{
			name: "real", body: real,
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "namespace owner/repository as in GitHub's samples",
			body: edit(t, real, name, `"name": "www",
    "namespace": "theryangeary/www"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "empty namespace falls back to the owner login",
			body: edit(t, real, name, `"name": "www",
    "namespace": ""`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "nested package name",
			body: edit(t, real, name, `"name": "www/api",
    "namespace": "theryangeary"`, url, `"package_url": "ghcr.io/theryangeary/www/api:0e2a89b"`),
			want: mapping{repository: "ghcr.io/theryangeary/www/api", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "registry_package key", event: eventRegistryPackage,
			body: edit(t, real, `"package": {`, `"registry_package": {`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "configured host", host: "127.0.0.1:5000", body: real,
			want: mapping{repository: "127.0.0.1:5000/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "tag digest preferred over version",
			body: edit(t, real, `"digest": "`+realDigest+`"
        },
        "labels"`, `"digest": "`+otherDigest+`"
        },
        "labels"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: otherDigest},
		},
		{
			name: "no tag digest: version",
			body: edit(t, real, `"digest": "`+realDigest+`"
        },
        "labels"`, `"digest": ""
        },
        "labels"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "40-hex digests as in the samples: none",
			body: edit(t, real, `"digest": "`+realDigest+`"
        },
        "labels"`, `"digest": "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"
        },
        "labels"`, `"version": "`+realDigest+`"`, `"version": "1.0.0"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b"},
		},
		{
			name: "package_url without host",
			body: edit(t, real, url, `"package_url": "theryangeary/www:0e2a89b"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "package_url with other host: the configured host wins",
			body: edit(t, real, url, `"package_url": "GHCR.IO/TheRyanGeary/WWW:0e2a89b"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "no package_url",
			body: edit(t, real, url, `"package_url": ""`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "ecosystem docker, no package_type",
			body: edit(t, real, `"ecosystem": "CONTAINER"`, `"ecosystem": "docker"`, `"package_type": "CONTAINER"`, `"package_type": ""`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest},
		},
		{
			name: "short sha256- tag is an ordinary tag",
			body: edit(t, real, tag, `"name": "sha256-abc"`, url, `"package_url": "ghcr.io/theryangeary/www:sha256-abc"`),
			want: mapping{repository: "ghcr.io/theryangeary/www", tag: "sha256-abc", digest: realDigest},
		},
		{name: "action created", body: edit(t, real, `"action": "published"`, `"action": "created"`), want: mapping{ignore: reasonAction}},
		{name: "no action", body: edit(t, real, `"action": "published"`, `"action": null`), want: mapping{ignore: reasonAction}},
		{
			name: "package_type npm, ecosystem container",
			body: edit(t, real, `"package_type": "CONTAINER"`, `"package_type": "npm"`),
			want: mapping{ignore: reasonNotContainer},
		},
		{
			name: "neither type given",
			body: edit(t, real, `"ecosystem": "CONTAINER"`, `"ecosystem": ""`, `"package_type": "CONTAINER"`, `"package_type": ""`),
			want: mapping{ignore: reasonNotContainer},
		},
		{
			name: "untagged",
			body: edit(t, real, tag, `"name": ""`, url, `"package_url": "ghcr.io/theryangeary/www:"`),
			want: mapping{ignore: reasonUntagged},
		},
		{
			name: "upper-case artifact tag",
			body: edit(t, real, tag, `"name": "sha256-`+strings.ToUpper(hex64)+`.sig"`, url, `"package_url": ""`),
			want: mapping{ignore: reasonArtifactTag},
		},
		{
			name: "package_url tag differs",
			body: edit(t, real, url, `"package_url": "ghcr.io/theryangeary/www:latest"`),
			want: mapping{ignore: reasonURLMismatch},
		},
		{
			name: "package_url names another package of the owner",
			body: edit(t, real, url, `"package_url": "ghcr.io/theryangeary/api:0e2a89b"`),
			want: mapping{ignore: reasonURLMismatch},
		},
		{
			name: "tag with a slash",
			body: edit(t, real, tag, `"name": "a/b"`, url, `"package_url": ""`),
			want: mapping{ignore: reasonBadRef},
		},
		{
			name: "tag starting with a dot",
			body: edit(t, real, tag, `"name": ".hidden"`, url, `"package_url": ""`),
			want: mapping{ignore: reasonBadRef},
		},
		{
			name: "tag of 129 characters",
			body: edit(t, real, tag, `"name": "`+strings.Repeat("a", 129)+`"`, url, `"package_url": ""`),
			want: mapping{ignore: reasonBadRef},
		},
		{
			name: "non-ASCII name that lowers to ASCII",
			body: edit(t, real, name, `"name": "\u212a",
    "namespace": "theryangeary"`, url, `"package_url": ""`),
			want: mapping{ignore: reasonBadRef},
		},
		{
			name: "no owner at all",
			body: edit(t, real, name, `"name": "www",
    "namespace": "/x"`, url, `"package_url": ""`),
			want: mapping{ignore: reasonBadRef},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event, host := tt.event, tt.host
			if event == "" {
				event = eventPackage
			}
			if host == "" {
				host = DefaultRegistryHost
			}
			got, err := parsePackage(event, tt.body, host)
			if err != nil {
				t.Fatalf("parsePackage() error = %v", err)
			}
			if tt.want.ignore == "" && tt.want.sourceRepo == "" {
				// Every body here is the real delivery, edited elsewhere.
				tt.want.sourceRepo, tt.want.commit = realSourceRepo, realCommit
			}
			if got != tt.want {
				t.Errorf("parsePackage() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestParsePackageFixtures runs every package fixture as either event.
func TestParsePackageFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		want    mapping
	}{
		{realFixture, mapping{repository: "ghcr.io/theryangeary/www", tag: "0e2a89b", digest: realDigest,
			sourceRepo: realSourceRepo, commit: realCommit}},
		{"package.published.docker.json", mapping{ignore: reasonNotContainer}},
		{"package.published.npm.json", mapping{ignore: reasonNotContainer}},
		{"registry_package.published.json", mapping{ignore: reasonNotContainer}},
	}
	for _, tt := range tests {
		for _, event := range []string{eventPackage, eventRegistryPackage} {
			got, err := parsePackage(event, readFixture(t, tt.fixture), DefaultRegistryHost)
			if err != nil || got != tt.want {
				t.Errorf("parsePackage(%s, %s) = %+v, %v; want %+v", event, tt.fixture, got, err, tt.want)
			}
		}
	}
}

// What the real delivery says the image was built from.
const (
	realSourceRepo = "theryangeary/www"
	realCommit     = "0e2a89b191332bb87b4f2fefef2f597eba2197b3"
)

// TestParsePackageSource: the repository and commit a delivery names are
// passed on only when they are well formed; anything else is left out, the
// delivery itself still deploys.
func TestParsePackageSource(t *testing.T) {
	real := readFixture(t, realFixture)
	const oid = `"target_oid": "0e2a89b191332bb87b4f2fefef2f597eba2197b3"`
	const full = `"full_name": "theryangeary/www"`
	tests := []struct {
		name         string
		body         []byte
		repo, commit string
	}{
		{"real", real, realSourceRepo, realCommit},
		{"sha-256 repository", edit(t, real, oid, `"target_oid": "`+strings.Repeat("ab", 32)+`"`), realSourceRepo, strings.Repeat("ab", 32)},
		{"short oid", edit(t, real, oid, `"target_oid": "0e2a89b"`), realSourceRepo, ""},
		{"oid not hex", edit(t, real, oid, `"target_oid": "`+strings.Repeat("z", 40)+`"`), realSourceRepo, ""},
		{"no repository", edit(t, real, full, `"full_name": ""`), "", realCommit},
		{"repository with a path", edit(t, real, full, `"full_name": "theryangeary/www/../x"`), "", realCommit},
		{"repository with spaces", edit(t, real, full, `"full_name": "the ryan/www"`), "", realCommit},
	}
	for _, tt := range tests {
		got, err := parsePackage(eventPackage, tt.body, DefaultRegistryHost)
		if err != nil || got.ignore != "" || got.sourceRepo != tt.repo || got.commit != tt.commit {
			t.Errorf("%s: parsePackage() = %+v, %v; want source %q, commit %q", tt.name, got, err, tt.repo, tt.commit)
		}
	}
}

func TestParsePackageMalformed(t *testing.T) {
	for _, body := range []string{``, `{`, `null`, `[]`, `"x"`, `{}`, `{"action":"published"}`, `{"package":null}`, `{"package":{"owner":[]}}`} {
		_, err := parsePackage(eventPackage, []byte(body), DefaultRegistryHost)
		if !errors.Is(err, errMalformed) {
			t.Errorf("parsePackage(%q) error = %v, want errMalformed", body, err)
		}
	}
}

func TestValidComponent(t *testing.T) {
	tests := []struct {
		c    string
		want bool
	}{
		{"www", true}, {"a.b", true}, {"a_b", true}, {"a__b", true}, {"a---b", true}, {"0e2", true},
		{"", false}, {".a", false}, {"a.", false}, {"-a", false}, {"a..b", false}, {"a___b", false},
		{"a.-b", false}, {"a_-b", false}, {"A", false}, {"a b", false},
	}
	for _, tt := range tests {
		if got := validComponent(tt.c); got != tt.want {
			t.Errorf("validComponent(%q) = %v, want %v", tt.c, got, tt.want)
		}
	}
}

func TestIsArtifactTag(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		tag  string
		want bool
	}{
		{"sha256-" + hex64 + ".sig", true},
		{"sha256-" + hex64 + ".att", true},
		{"sha256-" + hex64 + ".sbom", true},
		{"sha256-" + hex64, true},
		{"SHA256-" + strings.ToUpper(hex64) + ".sig", true},
		{"sha256-" + hex64[:63] + ".sig", false},
		{"sha256-" + hex64 + "x", false},
		{"sha256-" + hex64[:63] + "g", false},
		{"latest", false},
		{"sha256", false},
		{"v1-sha256-" + hex64, false},
	}
	for _, tt := range tests {
		if got := isArtifactTag(tt.tag); got != tt.want {
			t.Errorf("isArtifactTag(%q) = %v, want %v", tt.tag, got, tt.want)
		}
	}
}

// FuzzParse checks, on mutations of the fixtures and of decodeCases, that
// the parsers never panic and that what parsePackage returns holds:
//   - an error wraps errMalformed, names no payload text, and is the only
//     answer to a payload that is not a JSON object;
//   - an ignored delivery gives one of the reasons and no image;
//   - a mapped one is a normalised reference on host that the deployer
//     accepts, and its tag, digest, name and owner are strings the payload
//     holds under the keys they come from.
//
// Byte mutations seldom land inside the few strings hookd reads, so each
// input is also spliced, as a JSON string, into the real payload as the
// tag, the package name and the namespace: the result must be exactly the
// image the payload then names (see checkSpliced).
func FuzzParse(f *testing.F) {
	real, err := os.ReadFile(filepath.Join("testdata", realFixture))
	if err != nil {
		f.Fatal(err)
	}
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, "ghcr.io")
		}
	}
	for _, in := range decodeCases {
		f.Add([]byte(in), "ghcr.io")
	}
	f.Add([]byte(`{"action":"updated","registry_package":{"name":"A","namespace":"B/c","package_type":"docker","package_version":{"container_metadata":{"tag":{"name":"x"}}}}}`), "localhost:5000")
	reasons := []string{reasonAction, reasonNotContainer, reasonUntagged, reasonArtifactTag, reasonURLMismatch, reasonBadRef}
	f.Add([]byte("v1.2 "), "ghcr.io")
	f.Add([]byte("WWW/Api"), "ghcr.io")
	f.Add([]byte(""), "ghcr.io")
	f.Fuzz(func(t *testing.T, payload []byte, host string) {
		checkSameAsEncodingJSON(t, payload)
		if _, err := parsePing(payload); err != nil {
			checkMalformed(t, err)
		}
		if _, err := deploy.ParseRef(host + "/o/n"); err != nil {
			host = DefaultRegistryHost
		}
		host = strings.ToLower(host)
		object := json.Valid(payload) && bytes.TrimLeft(payload, " \t\r\n")[0] == '{'
		for _, event := range []string{eventPackage, eventRegistryPackage} {
			m, err := parsePackage(event, payload, host)
			if err != nil {
				checkMalformed(t, err)
				continue
			}
			if !object {
				t.Fatalf("parsePackage(%s) accepted a payload that is not a JSON object", event)
			}
			if m.ignore != "" {
				if !slices.Contains(reasons, m.ignore) || m.repository != "" {
					t.Fatalf("ignored with %q and repository %q", m.ignore, m.repository)
				}
				continue
			}
			if m.repository != strings.ToLower(m.repository) {
				t.Fatalf("repository %q is not lower case", m.repository)
			}
			ref, err := deploy.ParseRef(m.image())
			if err != nil {
				t.Fatalf("ParseRef(%q): %v", m.image(), err)
			}
			if ref.Repository() != m.repository || ref.Tag != m.tag {
				t.Fatalf("ParseRef(%q) = %s, %s; want it unchanged", m.image(), ref.Repository(), ref.Tag)
			}
			if !strings.HasPrefix(m.repository, host+"/") || strings.Count(m.repository, "/") < 2 || strings.Contains(m.repository, "//") {
				t.Fatalf("repository %q is not %s/owner/name", m.repository, host)
			}
			if m.digest != "" {
				if _, err := deploy.ParseRef(m.image() + "@" + m.digest); err != nil || !validSHA256(m.digest) {
					t.Fatalf("digest %q is not a sha256 digest: %v", m.digest, err)
				}
			}
			if isArtifactTag(m.tag) {
				t.Fatalf("artifact tag %q mapped", m.tag)
			}
			checkFromPayload(t, m, host, stringsByKey(t, payload))
		}
		checkSpliced(t, real, string(payload), host)
	})
}

// checkSpliced puts v into the real payload as the tag, as the package name
// and as the namespace (with package_url to match), and fails t unless each
// parses to exactly the image the payload then names, or, only when that
// image is no valid reference or an artifact tag, to an ignore reason.
func checkSpliced(t *testing.T, real []byte, v, host string) {
	t.Helper()
	quote := func(s string) string {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// v as the payload holds it once decoded: invalid UTF-8 is replaced.
	var dv string
	if err := json.Unmarshal([]byte(quote(v)), &dv); err != nil {
		t.Fatal(err)
	}
	owner, _, _ := strings.Cut(dv, "/")
	urlOwner, _, _ := strings.Cut(v, "/")
	if dv == "" {
		owner, urlOwner = "theryangeary", "theryangeary" // package.owner.login
	}
	const (
		url  = `"package_url": "ghcr.io/theryangeary/www:0e2a89b"`
		tag  = `"name": "0e2a89b"`
		name = `"name": "www",
    "namespace": "theryangeary"`
	)
	splice := func(pairs ...string) []byte {
		b := real
		for i := 0; i < len(pairs); i += 2 {
			if n := bytes.Count(b, []byte(pairs[i])); n != 1 {
				t.Fatalf("splice: %q occurs %d times in the real payload, want 1", pairs[i], n)
			}
			b = bytes.Replace(b, []byte(pairs[i]), []byte(pairs[i+1]), 1)
		}
		return b
	}
	tests := []struct {
		field string
		body  []byte
		repo  string // before lowering
		tag   string
	}{
		{"tag", splice(tag, `"name": `+quote(v), url, `"package_url": `+quote("ghcr.io/theryangeary/www:"+v)),
			host + "/theryangeary/www", dv},
		{"name", splice(name, `"name": `+quote(v)+`,
    "namespace": "theryangeary"`, url, `"package_url": `+quote("ghcr.io/theryangeary/"+v+":0e2a89b")),
			host + "/theryangeary/" + dv, "0e2a89b"},
		{"namespace", splice(name, `"name": "www",
    "namespace": `+quote(v), url, `"package_url": `+quote("ghcr.io/"+urlOwner+"/www:0e2a89b")),
			host + "/" + owner + "/www", "0e2a89b"},
	}
	for _, tt := range tests {
		m, err := parsePackage(eventPackage, tt.body, host)
		if err != nil {
			t.Fatalf("%s %q spliced into the real payload: %v", tt.field, v, err)
		}
		valid := isASCII(tt.repo) && validRef(strings.ToLower(tt.repo), tt.tag) && !isArtifactTag(tt.tag)
		want := mapping{repository: strings.ToLower(tt.repo), tag: tt.tag, digest: realDigest,
			sourceRepo: realSourceRepo, commit: realCommit}
		switch {
		case valid && m != want:
			t.Fatalf("%s %q spliced into the real payload: %+v, want %+v", tt.field, v, m, want)
		case !valid && !slices.Contains([]string{reasonUntagged, reasonArtifactTag, reasonURLMismatch, reasonBadRef}, m.ignore):
			t.Fatalf("%s %q spliced into the real payload: %+v, want it ignored: %s:%s is no valid image", tt.field, v, m, tt.repo, tt.tag)
		}
	}
}

// checkMalformed fails t unless err wraps errMalformed and its detail is
// one of the fixed forms.
func checkMalformed(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, errMalformed) {
		t.Fatalf("error %v does not wrap errMalformed", err)
	}
	detail, ok := strings.CutPrefix(err.Error(), errMalformed.Error()+": ")
	if !ok {
		t.Fatalf("error %q is not %q and a detail", err, errMalformed)
	}
	if detail == "no package object" || detail == "no registry_package object" {
		return
	}
	checkErrorText(t, detail)
}

// checkFromPayload fails t unless m's tag, digest and repository are made
// of strings that byKey (stringsByKey of the payload) holds under the keys
// they are read from: the tag under "name", the digest under "digest" or
// "version", the repository's path as owner/name with the owner under
// "login" or (up to a slash) under "namespace".
func checkFromPayload(t *testing.T, m mapping, host string, byKey map[string][]string) {
	t.Helper()
	under := func(key string) []string {
		var vs []string
		for k, v := range byKey {
			if strings.EqualFold(k, key) { // encoding/json matches keys so
				vs = append(vs, v...)
			}
		}
		return vs
	}
	if !slices.Contains(under("name"), m.tag) {
		t.Fatalf("tag %q is no name in the payload", m.tag)
	}
	if m.digest != "" && !slices.Contains(under("digest"), m.digest) && !slices.Contains(under("version"), m.digest) {
		t.Fatalf("digest %q is no digest or version in the payload", m.digest)
	}
	owners := under("login")
	for _, ns := range under("namespace") {
		owner, _, _ := strings.Cut(ns, "/")
		owners = append(owners, owner)
	}
	path := strings.TrimPrefix(m.repository, host+"/")
	for _, owner := range owners {
		for _, name := range under("name") {
			if strings.ToLower(owner+"/"+name) == path {
				return
			}
		}
	}
	t.Fatalf("repository %q is no owner/name of the payload's strings", m.repository)
}

// stringsByKey returns the string values of payload, a JSON text
// encoding/json accepts, by the key they are found under, at any depth. It
// reads tokens, so it does not share decodeEnvelope's code path.
func stringsByKey(t *testing.T, payload []byte) map[string][]string {
	t.Helper()
	type level struct {
		object  bool
		wantKey bool
		key     string
	}
	var stack []level
	done := func() { // a value ended
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	out := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		n := len(stack)
		if n > 0 && stack[n-1].wantKey {
			if tok == json.Delim('}') {
				stack = stack[:n-1]
				done()
				continue
			}
			stack[n-1].key, stack[n-1].wantKey = tok.(string), false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, level{object: true, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, level{})
			continue
		case json.Delim(']'):
			stack = stack[:n-1]
			done()
			continue
		}
		if s, ok := tok.(string); ok && n > 0 && stack[n-1].object {
			out[stack[n-1].key] = append(out[stack[n-1].key], s)
		}
		done()
	}
}

// checkSameAsEncodingJSON fails t unless decodeEnvelope, whose fast path
// is segmentio's decoder, decodes payload exactly as encoding/json alone
// would: the same envelope, or the same error.
func checkSameAsEncodingJSON(t *testing.T, payload []byte) {
	t.Helper()
	var want packageEnvelope
	wantErr := json.Unmarshal(payload, &want)
	if wantErr != nil {
		wantErr, want = describe(wantErr), packageEnvelope{}
	} else if bytes.TrimLeft(payload, " \t\r\n")[0] == 'n' {
		wantErr = errors.New("top level is null, want an object")
	}
	got, err := decodeEnvelope(payload)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("decodeEnvelope(%q) error = %v, encoding/json's = %v", payload, err, wantErr)
	case err != nil && err.Error() != wantErr.Error():
		t.Fatalf("decodeEnvelope(%q) error = %q, encoding/json's = %q", payload, err, wantErr)
	case err == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("decodeEnvelope(%q) = %+v, encoding/json = %+v", payload, got, want)
	}
}

// BenchmarkParse is the decode and mapping step alone, for the real
// payload.
func BenchmarkParse(b *testing.B) {
	real, err := os.ReadFile(filepath.Join("testdata", realFixture))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(real)))
	b.ReportAllocs()
	for b.Loop() {
		if m, err := parsePackage(eventPackage, real, DefaultRegistryHost); err != nil || m.ignore != "" {
			b.Fatal(m, err)
		}
	}
}
