package ghdeploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v75/github"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// work posts the due steps of the reports, one request at a time, oldest
// job first, until ctx is done, or events were closed and nothing more is
// due.
func (r *Reporter) work(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		rep, task, wait := r.due(time.Now())
		if rep == nil {
			if wait < 0 {
				return // closed and nothing due
			}
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			case <-timer.C:
			}
			continue
		}
		r.attempt(ctx, rep, task)
		if ctx.Err() != nil {
			return
		}
	}
}

// task is one request: create the deployment (id 0) or post a status.
type task struct {
	w       where
	id      int64
	step    step
	target  string
	jobID   string
	payload map[string]string
}

// due returns the first report with a step to take now, and the task. When
// there is none it returns how long to wait for the next retry: an hour
// when nothing waits, and -1 when events were closed (nothing more comes,
// and what waits for a retry is abandoned).
func (r *Reporter) due(now time.Time) (*report, task, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wait := time.Hour
	for _, id := range r.order {
		rep := r.reports[id]
		if len(rep.steps) == 0 || rep.skip {
			continue
		}
		if d := rep.next.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		t := task{w: rep.w, id: rep.id, step: rep.steps[0], target: rep.target, jobID: rep.jobID, payload: rep.payload}
		return rep, t, 0
	}
	if r.closed {
		return nil, task{}, -1
	}
	return nil, task{}, wait
}

// attempt makes one request for rep and records what came of it.
func (r *Reporter) attempt(ctx context.Context, rep *report, t task) {
	var err error
	var id int64
	if t.id == 0 {
		id, err = r.create(ctx, t.w, t.target, t.payload, false)
	} else {
		err = r.post(ctx, t.w, t.id, t.step)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.m.GitHubReports.WithLabelValues(metrics.GitHubSent).Inc()
		r.solvedLocked(t.w.fullName())
		rep.failures, rep.firstFailure, rep.next = 0, time.Time{}, time.Time{}
		if t.id == 0 {
			rep.id = id
			r.log.Debug("github deployment created", "job_id", t.jobID, "target", t.target, "repo", t.w.fullName(),
				"commit", t.w.sha, "environment", t.w.env, "deployment_id", id)
			return
		}
		rep.steps = rep.steps[1:]
		if rep.final && len(rep.steps) == 0 {
			r.dropLocked(rep.jobID)
		}
		return
	}
	if ctx.Err() != nil {
		return // shutting down: not GitHub's fault
	}
	p := classify(err)
	r.m.GitHubReports.WithLabelValues(p.outcome).Inc()
	now := time.Now()
	if rep.failures == 0 {
		rep.firstFailure = now
	}
	rep.failures++
	key := p.outcome
	if p.perRepo {
		key += "@" + t.w.fullName()
	}
	attrs := []any{"repo", t.w.fullName(), "job_id", t.jobID, "err", err}
	if p.fix != "" {
		attrs = append(attrs, "fix", strings.ReplaceAll(p.fix, "REPO", t.w.fullName()))
	}
	if p.permission != "" {
		attrs = append(attrs, "missing_permission", p.permission)
	}
	if !p.retry {
		r.m.GitHubReports.WithLabelValues(metrics.GitHubDropped).Inc()
		r.log.Warn(p.message+"; this job's report is dropped", attrs...)
		r.dropLocked(rep.jobID)
		return
	}
	if now.Sub(rep.firstFailure) >= r.cfg.GiveUpAfter {
		r.m.GitHubReports.WithLabelValues(metrics.GitHubDropped).Inc()
		r.log.Warn("github deployment report given up", append(attrs, "attempts", rep.failures,
			"failing_for_seconds", now.Sub(rep.firstFailure).Seconds())...)
		r.dropLocked(rep.jobID)
		return
	}
	r.problemLocked(key, p.message, attrs...)
	rep.next = now.Add(r.cfg.Retry.Delay(rep.failures, p.retryAfter))
}

// create creates the deployment of w's commit. With checks, GitHub
// verifies every check and status context of the commit first and refuses
// (409) unless all are green; without, required_contexts is empty and it
// verifies none.
func (r *Reporter) create(ctx context.Context, w where, target string, payload map[string]string, checks bool) (int64, error) {
	req := &github.DeploymentRequest{
		Ref:         github.Ptr(w.sha),
		Task:        github.Ptr("deploy"),
		AutoMerge:   github.Ptr(false),
		Environment: github.Ptr(w.env),
		Description: github.Ptr(clip("hookd: "+target, 140)),
		Payload:     payload,
	}
	if !checks {
		req.RequiredContexts = &[]string{}
	}
	d, _, err := r.gh.Repositories.CreateDeployment(ctx, w.owner, w.repo, req)
	if err != nil {
		return 0, fmt.Errorf("create deployment: %w", err)
	}
	return d.GetID(), nil
}

// post posts one status of deployment id.
func (r *Reporter) post(ctx context.Context, w where, id int64, s step) error {
	req := &github.DeploymentStatusRequest{
		State:       github.Ptr(s.state),
		Description: github.Ptr(s.description),
		Environment: github.Ptr(w.env),
	}
	if s.logURL != "" {
		req.LogURL = github.Ptr(s.logURL)
	}
	if w.envURL != "" && s.state == "success" {
		req.EnvironmentURL = github.Ptr(w.envURL)
	}
	if _, _, err := r.gh.Repositories.CreateDeploymentStatus(ctx, w.owner, w.repo, id, req); err != nil {
		return fmt.Errorf("post deployment status %s: %w", s.state, err)
	}
	return nil
}

// problem is what a failed request means and what to do about it.
type problem struct {
	outcome    string // metrics.GitHub*
	retry      bool
	retryAfter time.Duration
	perRepo    bool   // the problem is the token's access to one repository
	message    string // the log line
	fix        string // what to do; REPO stands for owner/repo
	permission string // the permission GitHub says the request needs
}

// The fix for a token GitHub refuses.
const tokenFix = "give the token Deployments: Read and write on REPO (fine-grained token), or the repo_deployment scope (classic token; repo for a private repository)"

// classify turns an error of go-github into a problem.
func classify(err error) problem {
	if rl, ok := errors.AsType[*github.RateLimitError](err); ok {
		return problem{outcome: metrics.GitHubRateLimited, retry: true, retryAfter: time.Until(rl.Rate.Reset.Time),
			message: "github rate limit reached; reports wait for the reset", fix: "use a token of its own for hookd"}
	}
	if al, ok := errors.AsType[*github.AbuseRateLimitError](err); ok {
		return problem{outcome: metrics.GitHubRateLimited, retry: true, retryAfter: al.GetRetryAfter(),
			message: "github secondary rate limit reached; reports wait"}
	}
	er, ok := errors.AsType[*github.ErrorResponse](err)
	if !ok || er.Response == nil {
		return problem{outcome: metrics.GitHubFailed, retry: true,
			message: "github unreachable; reports are retried", fix: "check that hookd reaches the GitHub API (github_api_url)"}
	}
	resp := er.Response
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		return problem{outcome: metrics.GitHubDenied, retry: true,
			message: "github refused the token (401): it is wrong, expired or revoked; deployment statuses are not reported",
			fix:     "set github_token to a valid token; " + tokenFix}
	case code == http.StatusForbidden, code == http.StatusNotFound:
		p := problem{outcome: metrics.GitHubDenied, retry: true, perRepo: true,
			message:    fmt.Sprintf("github refused the token (%d): it may not create deployments on this repository; deployment statuses are not reported", code),
			fix:        tokenFix,
			permission: missingPermission(resp.Header)}
		if code == http.StatusNotFound {
			p.message = "github answered 404: the repository does not exist or the token cannot see it; deployment statuses are not reported"
		}
		return p
	case code == http.StatusTooManyRequests:
		return problem{outcome: metrics.GitHubRateLimited, retry: true, retryAfter: retryAfter(resp.Header),
			message: "github rate limit reached; reports wait"}
	case code >= 500:
		return problem{outcome: metrics.GitHubFailed, retry: true, retryAfter: retryAfter(resp.Header),
			message: fmt.Sprintf("github answered %d; reports are retried", code)}
	default: // 409, 422: this request will never be accepted
		return problem{outcome: metrics.GitHubInvalid, perRepo: true,
			message: fmt.Sprintf("github did not accept the deployment (%d)", code)}
	}
}

// missingPermission names the permission GitHub says a request needs:
// X-Accepted-GitHub-Permissions for fine-grained tokens and apps
// ("deployments=write"), X-Accepted-OAuth-Scopes for classic tokens
// ("repo, repo_deployment"); else what hookd's requests need.
func missingPermission(h http.Header) string {
	if v := h.Get("X-Accepted-GitHub-Permissions"); v != "" {
		return v
	}
	if v := h.Get("X-Accepted-OAuth-Scopes"); v != "" {
		return "one of the scopes " + v
	}
	return "deployments=write"
}

// retryAfter reads a Retry-After header in seconds.
func retryAfter(h http.Header) time.Duration {
	var s int
	if _, err := fmt.Sscan(h.Get("Retry-After"), &s); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}
