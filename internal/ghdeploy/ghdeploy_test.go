package ghdeploy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
)

const (
	sha      = "0e2a89b191332bb87b4f2fefef2f597eba2197b3"
	otherSHA = "1111111111111111111111111111111111111111"
	token    = "ghp_test0123456789abcdefghijklmnopqrstu"
	digest   = "sha256:4c2b8f0e6d1a3b5c7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f"
)

type targetList []deploy.Target

func (l targetList) Targets() []deploy.Target { return l }

// web is the target the tests deploy, with the labels a user sets.
var web = deploy.Target{Name: "web", Labels: map[string]string{deploy.LabelURL: "https://web.example.net"}}

// newJob is a job for web as the webhook door makes it: the delivery named
// the repository and the commit.
func newJob(id string) deploy.Job {
	return deploy.Job{
		ID: id, Target: "web", Kind: deploy.KindContainer, Image: "ghcr.io/octo/web:latest",
		Request: deploy.Request{Repository: "ghcr.io/octo/web", Tag: "latest", Trigger: deploy.TriggerWebhook,
			ID: "delivery-1", SourceRepo: "octo/web", Commit: sha},
		Status: deploy.StatusQueued,
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rig is a Reporter against a fake GitHub, fed by a channel the test
// writes job events to.
type rig struct {
	gh     *fakeGitHub
	r      *Reporter
	events chan deploy.Event
	logs   *lockedBuffer
	m      *metrics.Metrics
	done   chan struct{}
}

func newRig(t *testing.T, edit func(*Config)) *rig {
	t.Helper()
	g := newGitHub(t)
	logs := &lockedBuffer{}
	m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	cfg := Config{
		Token:       token,
		APIURL:      g.URL(),
		Environment: "pi",
		PublicURL:   "https://pi.example.net/hookd/",
		Targets:     targetList{web},
		Retry:       backoff.Policy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		ChecksPoll:  10 * time.Millisecond,
		Metrics:     m,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	rg := &rig{gh: g, r: r, events: make(chan deploy.Event, 64), logs: logs, m: m, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(rg.done)
		r.Run(ctx, rg.events)
	}()
	t.Cleanup(func() {
		cancel()
		<-rg.done
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return rg
}

// send publishes the events of j's life as the deployer does: kind, then
// the job as it stands after it.
func (rg *rig) send(j *deploy.Job, kinds ...string) {
	for _, k := range kinds {
		switch deploy.Status(k) {
		case deploy.StatusRunning:
			j.Status, j.StartedAt = deploy.StatusRunning, time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
		case deploy.StatusSucceeded, deploy.StatusRolledBack, deploy.StatusFailed, deploy.StatusRefused, deploy.StatusUpToDate:
			j.Status, j.Stage, j.FinishedAt = deploy.Status(k), "", j.StartedAt.Add(42*time.Second)
		default:
			j.Stage = deploy.Stage(k)
		}
		if deploy.Stage(k) == deploy.StageSwapping || deploy.Stage(k) == deploy.StageVerifying {
			j.DigestAfter = digest
		}
		rg.events <- deploy.Event{Kind: k, At: time.Now(), Job: j.Clone()}
	}
}

// finish closes the events and waits for Run to post what is due.
func (rg *rig) finish(t *testing.T) []ghRequest {
	t.Helper()
	close(rg.events)
	select {
	case <-rg.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the events were closed")
	}
	return rg.gh.requests()
}

// waitRequests waits until GitHub received n requests.
func (rg *rig) waitRequests(t *testing.T, n int) []ghRequest {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs := rg.gh.requests()
		if len(reqs) >= n {
			return reqs
		}
		if time.Now().After(deadline) {
			t.Fatalf("GitHub received %d requests, want %d:\n%s", len(reqs), n, transcript(reqs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (rg *rig) count(outcome string) float64 {
	return testutil.ToFloat64(rg.m.GitHubReports.WithLabelValues(outcome))
}

// The requests hookd makes, spelled out as GitHub receives them.
func createReq(id, env string, checks bool) string {
	contexts := `"required_contexts":[],`
	if checks {
		contexts = ""
	}
	return fmt.Sprintf(`POST /repos/octo/web/deployments {"auto_merge":false,"description":"hookd: web","environment":%q,`+
		`"payload":{"digest":%q,"hookd_job":%q,"image":"ghcr.io/octo/web:latest","target":"web"},"ref":%q,%s"task":"deploy"}`,
		env, digest, id, sha, contexts)
}

func statusReq(deployment int, body string) string {
	return fmt.Sprintf("POST /repos/octo/web/deployments/%d/statuses %s", deployment, body)
}

func TestReportsEachOutcome(t *testing.T) {
	const logURL = `"log_url":"https://pi.example.net/hookd/jobs/j1"`
	inProgress := statusReq(101, `{"description":"Deploying ghcr.io/octo/web:latest to web","environment":"pi",`+logURL+`,"state":"in_progress"}`)
	tests := []struct {
		name  string
		kinds []string
		edit  func(j *deploy.Job)
		want  []string
	}{
		{
			name:  "succeeded",
			kinds: []string{"queued", "running", "pulling", "swapping", "gating", "succeeded"},
			want: []string{createReq("j1", "pi", false), inProgress,
				statusReq(101, `{"description":"Deployed ghcr.io/octo/web:latest to web in 42s","environment":"pi",`+
					`"environment_url":"https://web.example.net",`+logURL+`,"state":"success"}`)},
		},
		{
			name:  "rolled back",
			kinds: []string{"queued", "running", "pulling", "swapping", "gating", "rolling_back", "rolled_back"},
			edit: func(j *deploy.Job) {
				j.RollbackReason, j.RollbackDetail = deploy.ReasonUnhealthy, "curl: (7) Failed to connect to localhost port 8080"
				j.Error = "new container unhealthy: curl: (7) Failed to connect to localhost port 8080; rolled back to the previous container"
			},
			want: []string{createReq("j1", "pi", false), inProgress,
				statusReq(101, `{"description":"Rolled back: health check failed: curl: (7) Failed to connect to localhost port 8080",`+
					`"environment":"pi",`+logURL+`,"state":"failure"}`)},
		},
		{
			name:  "failed at the pull",
			kinds: []string{"queued", "running", "pulling", "failed"},
			edit:  func(j *deploy.Job) { j.Error = "pull ghcr.io/octo/web:latest: manifest unknown" },
			want: []string{
				strings.Replace(createReq("j1", "pi", false), `"digest":"`+digest+`",`, "", 1),
				statusReq(101, `{"description":"Failed: pull ghcr.io/octo/web:latest: manifest unknown","environment":"pi",`+logURL+`,"state":"error"}`)},
		},
		{
			name:  "up to date",
			kinds: []string{"queued", "running", "pulling", "up_to_date"},
		},
		{
			name:  "refused by hookd's policy before anything",
			kinds: []string{"queued", "running", "pulling", "refused"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, nil)
			j := newJob("j1")
			if tt.edit != nil {
				tt.edit(&j)
			}
			rg.send(&j, tt.kinds...)
			got := rg.finish(t)
			want := ""
			for _, w := range tt.want {
				want += w + "\n"
			}
			if g := transcript(got); g != want {
				t.Errorf("GitHub received:\n%s\nwant:\n%s", g, want)
			}
			for _, r := range got {
				if r.Auth != "Bearer "+token {
					t.Errorf("%s sent Authorization %q, want the token", r, r.Auth)
				}
			}
		})
	}
}

func TestWhereTheCommitComesFrom(t *testing.T) {
	tests := []struct {
		name             string
		job              func(j *deploy.Job, webHost string)
		targets          targetList
		wantRepo, wantSH string // "" when nothing is reported
		wantEnv          string
	}{
		{name: "the image's revision wins over the delivery's commit",
			job: func(j *deploy.Job, webHost string) { j.Revision = otherSHA }, wantRepo: "octo/web", wantSH: otherSHA, wantEnv: "pi"},
		{name: "a revision that is no commit id is passed over",
			job: func(j *deploy.Job, webHost string) { j.Revision = "v1.2.3" }, wantRepo: "octo/web", wantSH: sha, wantEnv: "pi"},
		{name: "the image's source names the repository of a poll",
			job: func(j *deploy.Job, webHost string) {
				j.Request = deploy.Request{Trigger: deploy.TriggerPoll}
				j.Revision, j.Source = otherSHA, "https://"+webHost+"/Octo/Web.git"
			}, wantRepo: "Octo/Web", wantSH: otherSHA, wantEnv: "pi"},
		{name: "a source elsewhere than GitHub names nothing",
			job: func(j *deploy.Job, webHost string) {
				j.Request = deploy.Request{Trigger: deploy.TriggerPoll}
				j.Revision, j.Source = otherSHA, "https://gitlab.com/octo/web"
			}},
		{name: "no commit",
			job: func(j *deploy.Job, webHost string) { j.Request.Commit = "" }},
		{name: "the target's environment label",
			targets:  targetList{{Name: "web", Labels: map[string]string{deploy.LabelGitHubEnvironment: "garage"}}},
			wantRepo: "octo/web", wantSH: sha, wantEnv: "garage"},
		{name: "a target that opted out",
			targets: targetList{{Name: "web", Labels: map[string]string{deploy.LabelGitHubDeployments: "false"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, func(c *Config) {
				if tt.targets != nil {
					c.Targets = tt.targets
				}
			})
			j := newJob("j1")
			if tt.job != nil {
				tt.job(&j, rg.r.webHost)
			}
			rg.send(&j, "queued", "running", "pulling", "swapping", "succeeded")
			got := rg.finish(t)
			if tt.wantSH == "" {
				if len(got) > 0 {
					t.Errorf("GitHub received:\n%s\nwant nothing", transcript(got))
				}
				return
			}
			if len(got) != 3 {
				t.Fatalf("GitHub received:\n%s\nwant a deployment and two statuses", transcript(got))
			}
			if p, want := got[0].Path, "/repos/"+tt.wantRepo+"/deployments"; p != want {
				t.Errorf("deployment created at %s, want %s", p, want)
			}
			if ref, env := got[0].Body["ref"], got[0].Body["environment"]; ref != tt.wantSH || env != tt.wantEnv {
				t.Errorf("deployment of ref %v in %v, want %s in %s", ref, env, tt.wantSH, tt.wantEnv)
			}
		})
	}
}

// TestServerErrorRecovers: a 502 is retried with backoff and the report
// then goes through, in order, without a second deployment.
func TestServerErrorRecovers(t *testing.T) {
	rg := newRig(t, nil)
	rg.gh.setAnswer(func(n int, _ ghRequest) (int, http.Header, string, bool) {
		if n == 1 {
			return http.StatusBadGateway, nil, `{"message":"Server Error"}`, true
		}
		return 0, nil, "", false
	})
	j := newJob("j1")
	rg.send(&j, "queued", "running", "pulling", "swapping", "succeeded")
	got := rg.waitRequests(t, 4)
	rg.finish(t)
	create := createReq("j1", "pi", false)
	if got[0].String() != create || got[1].String() != create {
		t.Errorf("first two requests:\n%s\nwant the deployment twice (a 502, then a retry)", transcript(got[:2]))
	}
	if got[2].Body["state"] != "in_progress" || got[3].Body["state"] != "success" || len(got) != 4 {
		t.Errorf("then:\n%s\nwant in_progress then success on the one deployment", transcript(got[2:]))
	}
	if n := rg.count(metrics.GitHubFailed); n != 1 {
		t.Errorf("hookd_github_reports_total{outcome=failed} = %v, want 1", n)
	}
	if n := rg.count(metrics.GitHubSent); n != 3 {
		t.Errorf("hookd_github_reports_total{outcome=sent} = %v, want 3", n)
	}
	if n := strings.Count(rg.logs.String(), "github answered 502"); n != 1 {
		t.Errorf("log has %d lines about the 502, want 1:\n%s", n, rg.logs.String())
	}
	if !strings.Contains(rg.logs.String(), "github reports work again") {
		t.Errorf("log does not say GitHub works again:\n%s", rg.logs.String())
	}
}

// TestTokenWithoutPermission: GitHub answers 403 to a token that may not
// create deployments. The log says so once, naming the permission that is
// missing and the fix; the report is retried (the token's permissions can
// be changed on GitHub without changing the token) and goes through once
// they are.
func TestTokenWithoutPermission(t *testing.T) {
	rg := newRig(t, nil)
	var mu sync.Mutex
	fixed := false
	rg.gh.setAnswer(func(n int, _ ghRequest) (int, http.Header, string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if fixed {
			return 0, nil, "", false
		}
		h := http.Header{"X-Accepted-Github-Permissions": {"deployments=write"}}
		return http.StatusForbidden, h, `{"message":"Resource not accessible by personal access token","documentation_url":"https://docs.github.com/rest/deployments/deployments#create-a-deployment","status":"403"}`, true
	})
	j := newJob("j1")
	rg.send(&j, "queued", "running", "pulling", "swapping", "succeeded")
	rg.waitRequests(t, 4) // the first attempt and three retries
	logs := rg.logs.String()
	if n := strings.Count(logs, "github refused the token (403)"); n != 1 {
		t.Errorf("log has %d lines about the 403, want 1:\n%s", n, logs)
	}
	for _, want := range []string{`missing_permission="deployments=write"`, "repo=octo/web", "Deployments: Read and write on octo/web"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, token) {
		t.Errorf("log holds the token:\n%s", logs)
	}
	// The server has seen the fourth request; its answer may still be on
	// the way to the reporter, which counts it once it arrives.
	for deadline := time.Now().Add(5 * time.Second); rg.count(metrics.GitHubDenied) < 4 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := rg.count(metrics.GitHubDenied); n < 4 {
		t.Errorf("hookd_github_reports_total{outcome=denied} = %v, want at least 4", n)
	}

	mu.Lock()
	fixed = true
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := rg.gh.requests()
		if n := len(got); n >= 3 && got[n-1].Body["state"] == "success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the report did not go through once the token could:\n%s", transcript(rg.gh.requests()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := rg.finish(t)
	if n := len(got); got[n-2].Body["state"] != "in_progress" || !strings.HasSuffix(got[n-3].Path, "/deployments") {
		t.Errorf("requests:\n%s\nwant the deployment, in_progress and success once the token may", transcript(got))
	}
}

// TestUnprocessableIsDropped: a 422 (GitHub does not know the commit) is
// not retried: logged once with GitHub's reason, counted, dropped.
func TestUnprocessableIsDropped(t *testing.T) {
	rg := newRig(t, nil)
	rg.gh.setAnswer(func(int, ghRequest) (int, http.Header, string, bool) {
		return http.StatusUnprocessableEntity, nil, `{"message":"No ref found for: ` + sha + `","status":"422"}`, true
	})
	j := newJob("j1")
	rg.send(&j, "queued", "running", "pulling", "swapping", "succeeded")
	got := rg.finish(t)
	if len(got) != 1 {
		t.Errorf("GitHub received:\n%s\nwant one attempt", transcript(got))
	}
	if !strings.Contains(rg.logs.String(), "No ref found for") {
		t.Errorf("log does not give GitHub's reason:\n%s", rg.logs.String())
	}
	if rg.count(metrics.GitHubInvalid) != 1 || rg.count(metrics.GitHubDropped) != 1 {
		t.Errorf("invalid, dropped = %v, %v, want 1, 1", rg.count(metrics.GitHubInvalid), rg.count(metrics.GitHubDropped))
	}
}

// TestInterruptedDeployGoesInactive: a job shutdown sends back to the
// queue leaves no deployment in progress.
func TestInterruptedDeployGoesInactive(t *testing.T) {
	rg := newRig(t, nil)
	j := newJob("j1")
	rg.send(&j, "queued", "running", "pulling", "swapping", "gating")
	j.Status, j.Stage = deploy.StatusQueued, ""
	rg.events <- deploy.Event{Kind: "queued", Job: j.Clone()}
	got := rg.finish(t)
	if len(got) != 3 || got[2].Body["state"] != "inactive" {
		t.Errorf("GitHub received:\n%s\nwant the deployment, in_progress, inactive", transcript(got))
	}
}

// TestReportQueueIsBounded: with GitHub not answering, jobs beyond
// MaxReports are dropped and counted, and the log says so once.
func TestReportQueueIsBounded(t *testing.T) {
	rg := newRig(t, func(c *Config) { c.MaxReports = 2 })
	block := make(chan struct{})
	rg.gh.setAnswer(func(int, ghRequest) (int, http.Header, string, bool) {
		<-block
		return http.StatusServiceUnavailable, nil, `{}`, true
	})
	defer close(block)
	for i := range 5 {
		j := newJob(fmt.Sprintf("j%d", i))
		rg.send(&j, "queued", "running", "pulling", "swapping", "succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for rg.count(metrics.GitHubDropped) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := rg.count(metrics.GitHubDropped); n != 3 {
		t.Errorf("dropped = %v, want 3 (5 jobs, room for 2)", n)
	}
	if n := strings.Count(rg.logs.String(), "more jobs than the report queue holds"); n != 1 {
		t.Errorf("log says %d times that reports were dropped, want 1", n)
	}
}

func TestRepositoryFromTheSourceLabel(t *testing.T) {
	tests := []struct {
		api, source, want string
	}{
		{"https://api.github.com/", "https://github.com/octo/web", "octo/web"},
		{"https://api.github.com/", "https://github.com/octo/web.git", "octo/web"},
		{"https://api.github.com/", "https://github.com/octo/web/", "octo/web"},
		{"https://api.github.com/", "https://github.com/octo", ""},
		{"https://api.github.com/", "https://github.com/octo/web/tree/main", ""},
		{"https://api.github.com/", "https://gitlab.com/octo/web", ""},
		{"https://api.github.com/", "git@github.com:octo/web.git", ""},
		{"https://ghe.example.com/api/v3/", "https://ghe.example.com/octo/web", "octo/web"},
		{"https://ghe.example.com/api/v3/", "https://github.com/octo/web", ""},
	}
	for _, tt := range tests {
		r, err := New(Config{Token: token, APIURL: tt.api, Environment: "pi", Targets: targetList{}})
		if err != nil {
			t.Fatal(err)
		}
		owner, repo, ok := repoOf(deploy.Job{Source: tt.source}, r.webHost)
		got := ""
		if ok {
			got = owner + "/" + repo
		}
		if got != tt.want {
			t.Errorf("with the API at %s, repository of source %q = %q, want %q", tt.api, tt.source, got, tt.want)
		}
	}
}

// conflict is GitHub's answer when the commit's checks are not all green,
// as GitHub sends it (409, every context with its state).
func conflict(states map[string]string) (int, http.Header, string, bool) {
	var cs []string
	for c, s := range states {
		cs = append(cs, fmt.Sprintf(`{"context":%q,"state":%q}`, c, s))
	}
	return http.StatusConflict, nil, `{"message":"Conflict: Commit status checks failed for ` + sha + `.","errors":[{"contexts":[` +
		strings.Join(cs, ",") + `],"resource":"Deployment","field":"required_contexts","code":"invalid"}],` +
		`"documentation_url":"https://docs.github.com/rest/deployments/deployments#create-a-deployment","status":"409"}`, true
}

// TestChecksGate: with github_require_checks the gate creates the
// deployment, letting GitHub verify the commit's checks, and admits or
// refuses the deploy by GitHub's answer.
func TestChecksGate(t *testing.T) {
	pending := func(n int, _ ghRequest) (int, http.Header, string, bool) {
		return conflict(map[string]string{"image": "pending", "test": "success"})
	}
	tests := []struct {
		name       string
		answer     func(n int, req ghRequest) (int, http.Header, string, bool)
		apiURL     string // a GitHub that does not answer
		wantErr    string // "" admits
		wantCalls  int    // creates asked, at least
		wantOutcom string
	}{
		{name: "green", wantCalls: 1, wantOutcom: metrics.GitHubSent},
		{name: "a failed check",
			answer: func(int, ghRequest) (int, http.Header, string, bool) {
				return conflict(map[string]string{"test": "failure", "image": "success"})
			},
			wantErr: "GitHub refused the deployment of octo/web@0e2a89b: checks not green: test (failure)", wantCalls: 1, wantOutcom: metrics.GitHubChecksRed},
		{name: "pending, then green",
			answer: func(n int, r ghRequest) (int, http.Header, string, bool) {
				if n <= 2 {
					return pending(n, r)
				}
				return 0, nil, "", false
			},
			wantCalls: 3, wantOutcom: metrics.GitHubPending},
		{name: "pending for too long", answer: pending,
			wantErr: "checks of octo/web@0e2a89b still pending after 200ms: image", wantCalls: 2, wantOutcom: metrics.GitHubPending},
		{name: "a token that may not",
			answer: func(int, ghRequest) (int, http.Header, string, bool) {
				return http.StatusForbidden, http.Header{"X-Accepted-Github-Permissions": {"deployments=write"}},
					`{"message":"Resource not accessible by personal access token","status":"403"}`, true
			},
			wantErr:   "GitHub refused hookd's token for octo/web@0e2a89b, so its checks cannot be verified (403 Forbidden); give the token Deployments: Read and write on octo/web",
			wantCalls: 1, wantOutcom: metrics.GitHubDenied},
		{name: "GitHub unreachable", apiURL: "http://127.0.0.1:1/",
			wantErr: "GitHub could not be asked about the checks of octo/web@0e2a89b for 200ms", wantOutcom: metrics.GitHubFailed},
		{name: "GitHub answering 502",
			answer: func(int, ghRequest) (int, http.Header, string, bool) {
				return http.StatusBadGateway, nil, `{"message":"Server Error"}`, true
			},
			wantErr: "GitHub could not be asked about the checks of octo/web@0e2a89b for 200ms", wantCalls: 2, wantOutcom: metrics.GitHubFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, func(c *Config) {
				c.RequireChecks = true
				c.ChecksWait, c.UnreachableWait = 200*time.Millisecond, 200*time.Millisecond
				if tt.apiURL != "" {
					c.APIURL = tt.apiURL
				}
			})
			rg.gh.setAnswer(tt.answer)
			j := newJob("j1")
			rg.send(&j, "queued", "running", "pulling", "verifying")
			start := time.Now()
			err := rg.r.Admit(context.Background(), &j)
			took := time.Since(start)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Fatalf("Admit = %v, want %q", err, tt.wantErr)
			}
			if took > 5*time.Second {
				t.Errorf("Admit took %s: it must be bounded", took)
			}
			if err != nil {
				if strings.Contains(err.Error(), token) {
					t.Errorf("refusal %q holds the token", err)
				}
				j.Error = err.Error()
				rg.send(&j, "refused")
			} else {
				if len(j.Notes) == 0 || !strings.Contains(j.Notes[len(j.Notes)-1], "checks green") {
					t.Errorf("job notes %q do not say the checks were green", j.Notes)
				}
				rg.send(&j, "swapping", "gating", "succeeded")
			}
			got := rg.finish(t)
			var creates, statuses []ghRequest
			for _, r := range got {
				if strings.HasSuffix(r.Path, "/statuses") {
					statuses = append(statuses, r)
					continue
				}
				creates = append(creates, r)
				if r.String() != createReq("j1", "pi", true) {
					t.Errorf("gate asked\n%s\nwant\n%s", r, createReq("j1", "pi", true))
				}
			}
			if len(creates) < tt.wantCalls || tt.wantCalls == 1 && len(creates) != 1 {
				t.Errorf("gate asked GitHub %d times, want %d:\n%s", len(creates), tt.wantCalls, transcript(got))
			}
			if err != nil && len(statuses) > 0 {
				t.Errorf("a refused deploy posted statuses:\n%s", transcript(statuses))
			}
			if err == nil {
				want := []string{"in_progress", "success"}
				if len(statuses) != 2 || statuses[0].Body["state"] != want[0] || statuses[1].Body["state"] != want[1] ||
					!strings.HasPrefix(statuses[0].Path, "/repos/octo/web/deployments/101/") {
					t.Errorf("statuses:\n%s\nwant in_progress and success on the gate's deployment 101", transcript(statuses))
				}
			}
			if rg.count(tt.wantOutcom) == 0 {
				t.Errorf("hookd_github_reports_total{outcome=%s} = 0", tt.wantOutcom)
			}
		})
	}
}

func TestChecksGateAdmitsWhatItCannotPlace(t *testing.T) {
	tests := []struct {
		name      string
		targets   targetList
		job       func(*deploy.Job)
		wantNote  bool
		wantCheck bool
	}{
		{name: "opted out", targets: targetList{{Name: "web", Labels: map[string]string{deploy.LabelGitHubDeployments: "false"}}}},
		{name: "no commit", job: func(j *deploy.Job) { j.Request.Commit = "" }, wantNote: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, func(c *Config) {
				c.RequireChecks = true
				if tt.targets != nil {
					c.Targets = tt.targets
				}
			})
			j := newJob("j1")
			if tt.job != nil {
				tt.job(&j)
			}
			if err := rg.r.Admit(context.Background(), &j); err != nil {
				t.Fatalf("Admit = %v, want nil", err)
			}
			if got := rg.finish(t); len(got) != 0 {
				t.Errorf("GitHub received:\n%s\nwant nothing", transcript(got))
			}
			if hasNote := len(j.Notes) > 0 && strings.Contains(j.Notes[0], "not verified"); hasNote != tt.wantNote {
				t.Errorf("notes %q, want a note that the checks were not verified: %v", j.Notes, tt.wantNote)
			}
		})
	}
}

func TestChecksGateOff(t *testing.T) {
	rg := newRig(t, nil)
	j := newJob("j1")
	if err := rg.r.Admit(context.Background(), &j); err != nil {
		t.Fatalf("Admit without RequireChecks = %v", err)
	}
	if got := rg.finish(t); len(got) != 0 {
		t.Errorf("GitHub received:\n%s\nwant nothing", transcript(got))
	}
}

func TestCommitAndRepositoryNames(t *testing.T) {
	for s, want := range map[string]bool{
		sha: true, strings.ToUpper(sha): true, strings.Repeat("ab", 32): true,
		sha[:7]: false, sha + "0": false, "v1.2.3": false, strings.Repeat("g", 40): false, "": false,
	} {
		if got := isCommitID(s); got != want {
			t.Errorf("isCommitID(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{
		"octo/web": true, "Octo-Org/web.site_2": true,
		"octo": false, "octo/": false, "/web": false, "octo/web/x": false, "oc to/web": false, "octo/wéb": false, "octo_x/web": false,
	} {
		if got := isFullName(s); got != want {
			t.Errorf("isFullName(%q) = %v, want %v", s, got, want)
		}
	}
}
