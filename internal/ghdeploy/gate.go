package ghdeploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v75/github"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// Admit is the checks gate (github_require_checks), run by the deployer
// once the image is pulled and before anything is touched. It creates the
// job's deployment without required_contexts, so that GitHub first
// verifies every check and status of the commit, and:
//
//   - admits the deploy once GitHub created the deployment (the Reporter
//     then moves its status along with the job);
//   - refuses it when a check failed, naming the checks;
//   - waits while checks are pending (the workflow that pushed the image
//     is usually still finishing), up to ChecksWait, then refuses;
//   - refuses when GitHub refuses the token, and when GitHub does not
//     answer within UnreachableWait: a commit that cannot be verified is
//     not deployed, by the user's choice.
//
// A target that opted out (hookd.github-deployments=false) is admitted
// unchecked; so is a job whose commit or repository is not known, with a
// note saying so. Without RequireChecks Admit admits everything.
func (r *Reporter) Admit(ctx context.Context, j *deploy.Job) error {
	if !r.cfg.RequireChecks {
		return nil
	}
	w, ok, why := r.where(*j)
	if !ok {
		if why != "" {
			j.Notes = append(j.Notes, "GitHub checks not verified: "+why)
			r.log.Warn("github checks not verified; deploy admitted", "job_id", j.ID, "target", j.Target, "why", why)
		}
		return nil
	}
	payload := map[string]string{"hookd_job": j.ID, "target": j.Target, "image": j.Image}
	if j.DigestAfter != "" {
		payload["digest"] = j.DigestAfter
	}
	start := time.Now()
	var failingSince time.Time
	failures := 0
	saidPending := false
	for {
		id, err := r.create(ctx, w, j.Target, payload, true)
		if err == nil {
			r.m.GitHubReports.WithLabelValues(metrics.GitHubSent).Inc()
			r.adopt(*j, w, id, payload)
			j.Notes = append(j.Notes, fmt.Sprintf("GitHub deployment %d of %s: checks green", id, w.at()))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for GitHub to verify the checks of %s: %w", w.at(), ctx.Err())
		}
		var wait time.Duration
		if contexts, ok := checksConflict(err); ok {
			red, pending := splitContexts(contexts)
			if len(red) > 0 {
				r.m.GitHubReports.WithLabelValues(metrics.GitHubChecksRed).Inc()
				return fmt.Errorf("GitHub refused the deployment of %s: checks not green: %s", w.at(), strings.Join(red, ", "))
			}
			r.m.GitHubReports.WithLabelValues(metrics.GitHubPending).Inc()
			if time.Since(start) >= r.cfg.ChecksWait {
				return fmt.Errorf("checks of %s still pending after %s: %s", w.at(), r.cfg.ChecksWait, strings.Join(pending, ", "))
			}
			if !saidPending {
				saidPending = true
				r.log.Info("github checks pending; the deploy waits for them", "job_id", j.ID, "target", j.Target,
					"commit", w.sha, "pending", strings.Join(pending, ", "), "wait_seconds", r.cfg.ChecksWait.Seconds())
			}
			failingSince, failures = time.Time{}, 0
			wait = r.cfg.ChecksPoll
		} else {
			p := classify(err)
			r.m.GitHubReports.WithLabelValues(p.outcome).Inc()
			switch {
			case p.outcome == metrics.GitHubDenied:
				attrs := []any{"repo", w.fullName(), "job_id", j.ID, "err", err, "fix", strings.ReplaceAll(p.fix, "REPO", w.fullName())}
				if p.permission != "" {
					attrs = append(attrs, "missing_permission", p.permission)
				}
				r.log.Warn(p.message, attrs...)
				return fmt.Errorf("GitHub refused hookd's token for %s, so its checks cannot be verified (%s); %s",
					w.at(), statusOf(err), strings.ReplaceAll(p.fix, "REPO", w.fullName()))
			case !p.retry:
				return fmt.Errorf("GitHub did not create a deployment of %s: %v", w.at(), err)
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) >= r.cfg.UnreachableWait {
				return fmt.Errorf("GitHub could not be asked about the checks of %s for %s (%v); github_require_checks refuses a commit it cannot verify",
					w.at(), r.cfg.UnreachableWait, err)
			}
			failures++
			wait = min(r.cfg.Retry.Delay(failures, p.retryAfter), r.cfg.UnreachableWait-time.Since(failingSince))
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for GitHub to verify the checks of %s: %w", w.at(), ctx.Err())
		case <-t.C:
		}
	}
}

// adopt makes the deployment the gate created j's report.
func (r *Reporter) adopt(j deploy.Job, w where, id int64, payload map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.reports[j.ID]; ok {
		r.reports[j.ID].id = id
		return
	}
	if rep := r.beginLocked(j); rep != nil {
		rep.w, rep.skip, rep.id, rep.payload = w, false, id, payload
	}
}

// checkContext is one entry of the contexts GitHub lists when it refuses
// a deployment for its checks.
type checkContext struct {
	Context string `json:"context"`
	State   string `json:"state"`
}

// checksConflict returns the contexts of a 409 that refuses a deployment
// for its commit's checks ("Conflict: Commit status checks failed for
// REF.", with errors[].contexts).
func checksConflict(err error) ([]checkContext, bool) {
	er, ok := errors.AsType[*github.ErrorResponse](err)
	if !ok || er.Response == nil || er.Response.StatusCode != http.StatusConflict || er.Response.Body == nil {
		return nil, false
	}
	// go-github put the body back for callers like this one.
	data, rerr := io.ReadAll(io.LimitReader(er.Response.Body, 1<<20))
	if rerr != nil {
		return nil, false
	}
	var body struct {
		Errors []struct {
			Field    string         `json:"field"`
			Contexts []checkContext `json:"contexts"`
		} `json:"errors"`
	}
	if json.Unmarshal(data, &body) != nil {
		return nil, false
	}
	var out []checkContext
	found := false
	for _, e := range body.Errors {
		if e.Field == "required_contexts" {
			found = true
			out = append(out, e.Contexts...)
		}
	}
	return out, found
}

// splitContexts returns the checks that are neither green nor pending
// ("test (failure)") and the pending ones, each named once.
func splitContexts(cs []checkContext) (red, pending []string) {
	seen := map[string]bool{}
	for _, c := range cs {
		key := c.Context + "\x00" + c.State
		if seen[key] {
			continue
		}
		seen[key] = true
		switch c.State {
		case "success":
		case "pending", "queued", "in_progress", "expected":
			pending = append(pending, c.Context)
		default:
			red = append(red, fmt.Sprintf("%s (%s)", c.Context, c.State))
		}
	}
	return red, pending
}

// statusOf is "403 Forbidden" for an error of go-github with a response.
func statusOf(err error) string {
	if er, ok := errors.AsType[*github.ErrorResponse](err); ok && er.Response != nil {
		return er.Response.Status
	}
	return err.Error()
}
