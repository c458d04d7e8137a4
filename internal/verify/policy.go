package verify

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// Mode is how a target's images are verified.
type Mode string

// Modes, globally (the verify setting) and per target (hookd.verify).
const (
	// ModeOff verifies nothing.
	ModeOff Mode = "off"
	// ModeWarn verifies, deploys whatever the result, and records a
	// failed verification on the job.
	ModeWarn Mode = "warn"
	// ModeEnforce deploys only images the expected identity signed.
	ModeEnforce Mode = "enforce"
)

// ParseMode reads "off", "warn" or "enforce"; "" is off.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "", ModeOff:
		return ModeOff, nil
	case ModeWarn, ModeEnforce:
		return m, nil
	}
	return "", fmt.Errorf("%q is not off, warn or enforce", s)
}

// Labels a target may carry to set its own verification policy.
const (
	// LabelVerify is the target's mode: off, warn or enforce.
	LabelVerify = "hookd.verify"
	// LabelIdentity is a regular expression the signing certificate's
	// subject (a URI for a workflow, an e-mail for a person, whatever its
	// SAN type) must match as a whole, instead of a workflow of the
	// image's own repository. Pinning the workflow and the ref:
	// https://github\.com/octo/web/\.github/workflows/release\.yml@refs/heads/main
	LabelIdentity = "hookd.verify-identity"
	// LabelIssuer is the OIDC issuer the certificate must name, instead of
	// GitHub Actions'.
	LabelIssuer = "hookd.verify-issuer"
)

// GitHubActionsIssuer is the OIDC issuer of GitHub Actions workflows.
const GitHubActionsIssuer = "https://token.actions.githubusercontent.com"

// policy is what one deploy's image must satisfy.
type policy struct {
	mode    Mode
	issuer  string
	subject *regexp.Regexp
	// expected says, for people, what was expected.
	expected string
}

// policyFor reads the target's labels and works out the mode and the
// expected identity. Invalid labels are an error (the deploy is refused,
// naming the label): a typo must not turn verification off.
func (g *Gate) policyFor(ctx context.Context, j *deploy.Job) (policy, error) {
	var labels map[string]string
	if g.cfg.Labels != nil {
		l, err := g.cfg.Labels.Labels(ctx, j.Kind, j.Target)
		if err != nil {
			return policy{}, fmt.Errorf("read the labels of %s: %w", j.Target, err)
		}
		labels = l
	}
	p := policy{mode: g.cfg.Mode, issuer: GitHubActionsIssuer}
	if v, ok := labels[LabelVerify]; ok {
		m, err := ParseMode(v)
		if err != nil {
			return policy{}, fmt.Errorf("label %s on %s: %w", LabelVerify, j.Target, err)
		}
		p.mode = m
	}
	if p.mode == ModeOff {
		return p, nil
	}
	if v := strings.TrimSpace(labels[LabelIssuer]); v != "" {
		p.issuer = v
	}
	if v := strings.TrimSpace(labels[LabelIdentity]); v != "" {
		re, err := regexp.Compile(`^(?:` + v + `)$`)
		if err != nil {
			return policy{}, fmt.Errorf("label %s on %s is not a regular expression: %w", LabelIdentity, j.Target, err)
		}
		p.subject = re
		p.expected = fmt.Sprintf("a subject matching %s (label %s), issuer %s", v, LabelIdentity, p.issuer)
		return p, nil
	}
	repo, from := g.sourceRepo(j)
	if repo == "" {
		return policy{}, fmt.Errorf("cannot tell which repository's workflow must have signed %s: it is not on %s and no webhook delivery named its repository; "+
			"set the label %s on %s (a regular expression for the signer, e.g. https://github\\.com/OWNER/REPO/\\.github/workflows/.+)",
			j.Image, g.cfg.GitHubRegistry, LabelIdentity, j.Target)
	}
	// GitHub names are case-insensitive; the certificate carries the
	// repository as GitHub spells it, the registry in lower case.
	p.subject = regexp.MustCompile(`(?i)^https://github\.com/` + regexp.QuoteMeta(repo) + `/\.github/workflows/[^@]+@.+$`)
	p.expected = fmt.Sprintf("a workflow of github.com/%s (from %s), issuer %s", repo, from, p.issuer)
	return p, nil
}

// sourceRepo returns the GitHub repository ("OWNER/REPO") whose workflows
// sign the job's image by default, and what said so. In order:
//
//   - the webhook delivery's repository: GitHub signed the delivery;
//   - for an image on the GitHub registry (ghcr.io/OWNER/…), the image's
//     org.opencontainers.image.source when it names a repository of the
//     same OWNER: whoever can push the package cannot make another
//     owner's workflow its signer by labelling the image so;
//   - else the image's own name, ghcr.io/OWNER/REPO.
//
// Anything else has no default: the target must say (hookd.verify-identity).
func (g *Gate) sourceRepo(j *deploy.Job) (repo, from string) {
	if r := j.Request.SourceRepo; validRepo(r) {
		return r, "the webhook delivery"
	}
	ref, err := deploy.ParseRef(j.Image)
	if err != nil || !strings.EqualFold(ref.Registry, g.cfg.GitHubRegistry) {
		return "", ""
	}
	owner, rest, ok := strings.Cut(ref.Path, "/")
	if !ok {
		return "", ""
	}
	if r, ok := githubRepo(j.Source); ok {
		o, _, _ := strings.Cut(r, "/")
		if strings.EqualFold(o, owner) {
			return r, "the image's " + deploy.LabelImageSource
		}
	}
	name, _, _ := strings.Cut(rest, "/")
	return owner + "/" + name, "the image's name"
}

// githubRepo reads "OWNER/REPO" from https://github.com/OWNER/REPO[.git][/…].
func githubRepo(source string) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(source))
	if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, "github.com") {
		return "", false
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) < 2 {
		return "", false
	}
	r := parts[0] + "/" + strings.TrimSuffix(parts[1], ".git")
	return r, validRepo(r)
}

// repoPattern is a GitHub "OWNER/REPO".
var repoPattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$`)

func validRepo(r string) bool { return repoPattern.MatchString(r) && !strings.Contains(r, "..") }
