package checks

import (
	"os/exec"
	"strings"
	"testing"
)

// actionlintVersion is run with `go run pkg@version`, in its own module: as
// a library it needs another release candidate of go.yaml.in/yaml/v4 than
// compose-go, and one module can hold only one.
const actionlintPkg = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"

// workflowFiles are the GitHub Actions workflows hookd ships: its own and
// the one users copy into their app's repository.
var workflowFiles = []string{
	".github/workflows/ci.yml",
	".github/workflows/release.yml",
	"examples/github-actions/app-image.yml",
	"examples/github-actions/app-image-signed.yml",
}

func TestWorkflowsPassActionlint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds actionlint")
	}
	for _, rel := range workflowFiles {
		t.Run(rel, func(t *testing.T) {
			// shellcheck and pyflakes are turned off (empty): they are not
			// installed on every machine, and a check must not depend on
			// which one it runs on.
			cmd := exec.Command("go", "run", actionlintPkg, "-oneline", "-no-color", "-shellcheck=", "-pyflakes=", rel)
			cmd.Dir = repoRoot(t)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("actionlint %s: %v\n%s", rel, err, out)
			}
		})
	}
}

// The app workflow pushes what hookd deploys: ghcr.io/<owner>/<repo>:latest
// in lower case (image references must be; github.repository keeps the
// owner's capitals), with the token scoped to write packages.
func TestAppWorkflowPushesLowerCaseLatest(t *testing.T) {
	src := string(readRepoFile(t, "examples/github-actions/app-image.yml"))
	for _, want := range []string{
		"packages: write",
		"${REPOSITORY,,}",
		":latest",
		"linux/arm64",
		"secrets.GITHUB_TOKEN",
		"branches: [main]",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("examples/github-actions/app-image.yml lacks %q", want)
		}
	}
}

// The signed variant signs what it pushed, keylessly, where hookd looks:
// the OIDC token permission, the digest of the push, the bundle stored in
// the registry.
func TestSignedAppWorkflowSignsTheDigest(t *testing.T) {
	src := string(readRepoFile(t, "examples/github-actions/app-image-signed.yml"))
	for _, want := range []string{
		"id-token: write",
		"attestations: write",
		"actions/attest-build-provenance@",
		"subject-digest: ${{ steps.build.outputs.digest }}",
		"push-to-registry: true",
		"cosign sign --yes",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("examples/github-actions/app-image-signed.yml lacks %q", want)
		}
	}
}
