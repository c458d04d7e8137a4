// Package ghdeploy reports deploys back to GitHub: for each deploy of an
// image whose repository and commit are known it creates a deployment on
// that commit and moves its status along with the job (in_progress, then
// success, failure or error), so that the person who pushed sees the
// outcome on the commit, the pull request and the repository's
// Environments.
//
// The Reporter is a subscriber of the deployer's job events: it keeps its
// own bounded table of reports and posts them from one goroutine with
// retries, so GitHub being slow, down, rate-limiting or refusing the token
// never delays or fails a deploy. The one exception is the user's choice:
// with RequireChecks, Admit is a deployer gate that creates the deployment
// before anything is touched and refuses the deploy when GitHub refuses it
// for checks that are not green, or cannot be asked.
package ghdeploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v75/github"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// DefaultAPIURL is GitHub's REST API.
const DefaultAPIURL = "https://api.github.com/"

// Targets lists the targets with their labels (hookd.url,
// hookd.github-environment, hookd.github-deployments).
// *deployer.Deployer satisfies it.
type Targets interface {
	Targets() []deploy.Target
}

// Config wires a Reporter. Token, Environment and Targets are required.
type Config struct {
	// Token is a fine-grained token with Deployments: read and write, or a
	// classic token with repo_deployment (repo for private repositories).
	Token string
	// APIURL is the REST API's base, DefaultAPIURL by default; for GitHub
	// Enterprise Server https://HOST/api/v3/.
	APIURL string
	// Environment is the deployments' environment unless a target's
	// hookd.github-environment label names another.
	Environment string
	// PublicURL, when set, makes every status link to the job's page,
	// PublicURL/jobs/ID.
	PublicURL string
	// RequireChecks makes Admit ask GitHub to verify the commit's checks.
	RequireChecks bool
	Targets       Targets

	// HTTPClient defaults to one with a 30 s timeout.
	HTTPClient *http.Client
	// Retry is the wait between attempts of one report (default 5 s
	// doubling to 5 min); a report is dropped GiveUpAfter (default 1 h)
	// after its first failure.
	Retry       backoff.Policy
	GiveUpAfter time.Duration
	// MaxReports bounds the jobs being reported at once (default 128).
	MaxReports int
	// ChecksWait bounds how long Admit waits for pending checks (default
	// 10 min); UnreachableWait how long it retries a GitHub that does not
	// answer (default 1 min). Both end in a refusal.
	ChecksWait      time.Duration
	UnreachableWait time.Duration
	// ChecksPoll is the wait between two asks while checks are pending
	// (default 15 s).
	ChecksPoll time.Duration

	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Reporter reports job events as GitHub deployment statuses. Create it
// with New, run it with Run; with RequireChecks it is also a gate (Admit).
type Reporter struct {
	cfg     Config
	gh      *github.Client
	webHost string
	log     *slog.Logger
	m       *metrics.Metrics

	mu       sync.Mutex
	reports  map[string]*report // by job id
	order    []string           // job ids, oldest first
	wake     chan struct{}
	problems map[string]bool // problems logged and not yet solved
	closed   bool            // no more events: finish what is due and return
}

// report is the state of one job's deployment.
type report struct {
	jobID, target string
	w             where
	skip          bool  // nothing to report (opted out, no commit); remembered so later events do not retry
	id            int64 // the deployment, once created
	started       bool  // in_progress queued or posted
	steps         []step
	final         bool // the last step is queued
	failures      int
	firstFailure  time.Time
	next          time.Time
	payload       map[string]string
}

// step is one status to post.
type step struct {
	state, description string
	logURL             string
}

// New returns a Reporter. It returns an error for a missing token,
// environment or target list, or an API URL that is not an http(s) URL.
func New(cfg Config) (*Reporter, error) {
	if cfg.Token == "" || cfg.Environment == "" || cfg.Targets == nil {
		return nil, errors.New("ghdeploy: token, environment and targets are required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	base, err := url.Parse(cfg.APIURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("ghdeploy: API URL %q is not an http(s) URL", cfg.APIURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Retry.Base <= 0 {
		cfg.Retry = backoff.Policy{Base: 5 * time.Second, Max: 5 * time.Minute, Jitter: 0.2}
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = time.Hour
	}
	if cfg.MaxReports <= 0 {
		cfg.MaxReports = 128
	}
	if cfg.ChecksWait <= 0 {
		cfg.ChecksWait = 10 * time.Minute
	}
	if cfg.UnreachableWait <= 0 {
		cfg.UnreachableWait = time.Minute
	}
	if cfg.ChecksPoll <= 0 {
		cfg.ChecksPoll = 15 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	gh := github.NewClient(cfg.HTTPClient).WithAuthToken(cfg.Token)
	gh.BaseURL = base
	return &Reporter{
		cfg:      cfg,
		gh:       gh,
		webHost:  webHostOf(base),
		log:      cfg.Logger,
		m:        cfg.Metrics,
		reports:  make(map[string]*report),
		wake:     make(chan struct{}, 1),
		problems: make(map[string]bool),
	}, nil
}

// Run reports the events until ctx is done or events is closed; after a
// close it still posts what is due at once (the final statuses of the
// last jobs), then returns. The retries that wait are abandoned.
func (r *Reporter) Run(ctx context.Context, events <-chan deploy.Event) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.work(ctx)
	}()
	defer func() { <-done }()
	for {
		select {
		case e, ok := <-events:
			if !ok {
				r.mu.Lock()
				r.closed = true
				r.mu.Unlock()
				r.poke()
				return
			}
			r.handle(e)
		case <-ctx.Done():
			return
		}
	}
}

func (r *Reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// handle turns one job event into the statuses to post. It never waits
// for GitHub.
func (r *Reporter) handle(e deploy.Event) {
	j := e.Job
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.reports[j.ID]
	switch {
	case e.Final():
		if rep == nil {
			// A deploy that never got past the pull: only a failure is
			// worth a deployment (the push did not go live); an up-to-date
			// or refused job touched nothing.
			if j.Status != deploy.StatusFailed {
				return
			}
			if rep = r.beginLocked(j); rep == nil {
				return
			}
		}
		if !rep.skip && !rep.final {
			rep.steps = append(rep.steps, r.finalStep(j, rep))
			rep.final = true
		}
		if rep.skip {
			r.dropLocked(j.ID)
			return
		}
	case e.Kind == string(deploy.StatusQueued):
		// Back in the queue: shutdown interrupted the deploy. The next
		// start deploys it again, under a new deployment.
		if rep == nil || rep.skip || rep.final || rep.id == 0 && !rep.started {
			return
		}
		rep.steps = append(rep.steps, step{state: "inactive",
			description: "hookd stopped during the deploy; it deploys again when it starts", logURL: r.logURL(j)})
		rep.final = true
	case e.Kind == string(deploy.StagePulling), e.Kind == string(deploy.StatusRunning):
		return // up to date or not is not known yet
	case e.Kind == string(deploy.StageVerifying) && r.cfg.RequireChecks:
		return // the gate creates the deployment, or refuses
	default: // a stage after the pull: the deploy is under way
		if rep == nil {
			if rep = r.beginLocked(j); rep == nil {
				return
			}
		}
		if rep.skip || rep.started {
			return
		}
		rep.started = true
		rep.steps = append(rep.steps, step{state: "in_progress",
			description: clip(fmt.Sprintf("Deploying %s to %s", j.Image, j.Target), 140), logURL: r.logURL(j)})
	}
	r.poke()
}

// beginLocked starts the report of j: where it goes, or a skip. It
// returns nil when the table is full (counted, logged once).
func (r *Reporter) beginLocked(j deploy.Job) *report {
	if len(r.reports) >= r.cfg.MaxReports {
		r.m.GitHubReports.WithLabelValues(metrics.GitHubDropped).Inc()
		r.problemLocked("full", "github reports dropped: more jobs than the report queue holds; GitHub is probably not answering",
			"max_reports", r.cfg.MaxReports)
		return nil
	}
	rep := &report{jobID: j.ID, target: j.Target}
	w, ok, why := r.where(j)
	if !ok {
		rep.skip = true
		if why != "" {
			r.problemLocked("skip:"+j.Target, "github deployment not reported", "target", j.Target, "job_id", j.ID, "why", why)
		}
	}
	rep.w = w
	rep.payload = map[string]string{"hookd_job": j.ID, "target": j.Target, "image": j.Image}
	if j.DigestAfter != "" {
		rep.payload["digest"] = j.DigestAfter
	}
	r.reports[j.ID] = rep
	r.order = append(r.order, j.ID)
	return rep
}

// where finds where j is reported. ok is false when the target opted out
// (why is empty) or the repository or commit is unknown (why says which,
// and how to make it known).
func (r *Reporter) where(j deploy.Job) (w where, ok bool, why string) {
	var labels map[string]string
	for _, t := range r.cfg.Targets.Targets() {
		if t.Name == j.Target {
			labels = t.Labels
			break
		}
	}
	if v, set := labels[deploy.LabelGitHubDeployments]; set && v != "true" {
		return w, false, ""
	}
	w.env = r.cfg.Environment
	if v := strings.TrimSpace(labels[deploy.LabelGitHubEnvironment]); v != "" {
		w.env = v
	}
	if v := strings.TrimSpace(labels[deploy.LabelURL]); httpURL(v) {
		w.envURL = v
	}
	var found bool
	w.owner, w.repo, found = repoOf(j, r.webHost)
	if !found {
		return w, false, "no repository known: the image has no " + deploy.LabelImageSource + " label pointing at " + r.webHost + " and the request named none"
	}
	if w.sha = commitOf(j); w.sha == "" {
		return w, false, "no commit known: the image has no " + deploy.LabelImageRevision + " label (a full commit id) and the request named none"
	}
	return w, true, ""
}

// finalStep is the status a finished job ends its deployment with.
func (r *Reporter) finalStep(j deploy.Job, rep *report) step {
	s := step{logURL: r.logURL(j)}
	switch j.Status {
	case deploy.StatusSucceeded:
		s.state = "success"
		s.description = fmt.Sprintf("Deployed %s to %s", j.Image, j.Target)
		if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
			s.description += " in " + j.FinishedAt.Sub(j.StartedAt).Round(time.Second).String()
		}
	case deploy.StatusUpToDate:
		s.state, s.description = "success", fmt.Sprintf("%s already runs this image", j.Target)
	case deploy.StatusRolledBack:
		s.state = "failure"
		s.description = "Rolled back: " + j.Error
		if why, ok := rollbackWhy[j.RollbackReason]; ok {
			s.description = "Rolled back: " + why
			if j.RollbackDetail != "" {
				s.description += ": " + j.RollbackDetail
			}
		}
	case deploy.StatusRefused:
		s.state, s.description = "error", "Refused: "+j.Error
	default:
		s.state, s.description = "error", "Failed: "+j.Error
	}
	s.description = clip(s.description, 140)
	return s
}

// rollbackWhy says why a new container was rolled back.
var rollbackWhy = map[string]string{
	deploy.ReasonUnhealthy:   "health check failed",
	deploy.ReasonExited:      "the new container exited",
	deploy.ReasonTimeout:     "not healthy in time",
	deploy.ReasonStartFailed: "the new container did not start",
}

func (r *Reporter) logURL(j deploy.Job) string {
	if r.cfg.PublicURL == "" {
		return ""
	}
	return r.cfg.PublicURL + "/jobs/" + url.PathEscape(j.ID)
}

func (r *Reporter) dropLocked(id string) {
	delete(r.reports, id)
	for i, o := range r.order {
		if o == id {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}

// problemLocked logs a problem once, until solvedLocked forgets it.
func (r *Reporter) problemLocked(key, msg string, attrs ...any) {
	if r.problems[key] {
		return
	}
	r.problems[key] = true
	r.log.Warn(msg, attrs...)
}

// solvedLocked forgets the problems of GitHub as a whole and of repo after
// a request to it succeeded, so that a new failure is logged again.
func (r *Reporter) solvedLocked(repo string) {
	said := false
	for key := range r.problems {
		if strings.HasPrefix(key, "skip:") {
			continue
		}
		if k, rp, _ := strings.Cut(key, "@"); rp == "" || rp == repo {
			said = said || k != "full"
			delete(r.problems, key)
		}
	}
	if said {
		r.log.Info("github reports work again", "repo", repo)
	}
}
