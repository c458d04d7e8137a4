package ghdeploy

import (
	"net/url"
	"strings"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// where is where a job is reported: a commit of a repository, in an
// environment, with the links a status carries.
type where struct {
	owner, repo string
	sha         string
	env         string
	envURL      string // the target's hookd.url, when it is an http(s) address
}

func (w where) fullName() string { return w.owner + "/" + w.repo }

// at returns "owner/repo@abc1234" for messages.
func (w where) at() string { return w.fullName() + "@" + short(w.sha) }

// isFullName reports whether s is "owner/repo" as GitHub spells them.
// (Plain loops: a regular expression compiled at start-up costs every
// hookd memory, reporting or not.)
func isFullName(s string) bool {
	owner, repo, ok := strings.Cut(s, "/")
	return ok && owner != "" && repo != "" && only(owner, "-") && only(repo, "._-")
}

// isCommitID reports whether s is a full commit id: 40 hexadecimal digits
// (SHA-1), or 64 (SHA-256 repositories).
func isCommitID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// only reports whether s holds ASCII letters, digits and the bytes of extra.
func only(s, extra string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.ContainsRune(extra, c)) {
			return false
		}
	}
	return true
}

// commitOf returns the commit j's image was built from: the image's
// org.opencontainers.image.revision label (read after the pull, so polls
// and manual deploys have it too), else what the webhook delivery named
// (package_version.target_oid). Only a full hexadecimal commit id counts:
// a label holding a tag or a branch name would deploy-stamp whatever that
// names at the time GitHub reads it.
func commitOf(j deploy.Job) string {
	for _, c := range []string{j.Revision, j.Request.Commit} {
		if c = strings.TrimSpace(c); isCommitID(c) {
			return strings.ToLower(c)
		}
	}
	return ""
}

// repoOf returns the "owner/repo" j's image was built from: what the
// delivery named (repository.full_name), else the image's
// org.opencontainers.image.source label when it points at webHost
// ("https://github.com/owner/repo", optionally ending in .git).
func repoOf(j deploy.Job, webHost string) (owner, repo string, ok bool) {
	if n := strings.TrimSpace(j.Request.SourceRepo); isFullName(n) {
		owner, repo, _ = strings.Cut(n, "/")
		return owner, repo, true
	}
	u, err := url.Parse(strings.TrimSpace(j.Source))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || !strings.EqualFold(u.Host, webHost) {
		return "", "", false
	}
	n := strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git")
	if !isFullName(n) {
		return "", "", false
	}
	owner, repo, _ = strings.Cut(n, "/")
	return owner, repo, true
}

// webHostOf is the host GitHub's pages are on, for the API at apiURL:
// github.com for api.github.com, the server's own host for GitHub
// Enterprise Server (https://HOST/api/v3/).
func webHostOf(apiURL *url.URL) string {
	if strings.EqualFold(apiURL.Hostname(), "api.github.com") {
		return "github.com"
	}
	return apiURL.Host
}

// httpURL reports whether s is an absolute http(s) address GitHub accepts
// as an environment_url.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// short abbreviates a commit id as git does.
func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// clip shortens s to at most n runes, ending in "…" when it was cut:
// GitHub refuses a description over 140 characters.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
