package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/and3rn3t/hookd/internal/deploy"
)

const testToken = "s3cret-token-one"

// fakeDeployments is the consumer-side fake of the deployer: it creates a
// queued job per matching target and finishes a job on WaitJob with the
// outcome configured for its target (or never, when there is none).
type fakeDeployments struct {
	mu        sync.Mutex
	targets   []deploy.Target
	jobs      []deploy.Job // oldest first
	requests  []deploy.Request
	submitErr error
	jobsErr   error
	outcome   map[string]deploy.Job // target → final state
	delay     time.Duration         // how long a job with an outcome takes
}

func newFake() *fakeDeployments {
	return &fakeDeployments{
		targets: []deploy.Target{
			{Name: "web", Kind: "container", Image: "ghcr.io/o/web", Tag: "latest",
				Ref:    deploy.ImageRef{Registry: "ghcr.io", Path: "o/web", Tag: "latest"},
				Digest: "sha256:" + strings.Repeat("a", 64), ImageID: "sha256:" + strings.Repeat("b", 64), RolledBack: "sha256:" + strings.Repeat("c", 64)},
			// No Ref: the API falls back to parsing Image and Tag.
			{Name: "db", Kind: "container", Image: "docker.io/library/postgres", Tag: "16"},
		},
		outcome: map[string]deploy.Job{},
	}
}

func (f *fakeDeployments) Submit(_ context.Context, req deploy.Request) ([]deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if f.submitErr != nil {
		return nil, f.submitErr
	}
	var out []deploy.Job
	for _, t := range f.targets {
		ref := targetRef(t)
		switch {
		case req.Target != "" && req.Target != t.Name:
			continue
		case req.Repository != "" && (req.Repository != ref.Repository() || req.Tag != ref.Tag):
			continue
		}
		j := deploy.Job{
			ID:        fmt.Sprintf("job-%d", len(f.jobs)+1),
			Target:    t.Name,
			Kind:      t.Kind,
			Request:   req,
			Image:     ref.Repository() + ":" + ref.Tag,
			Status:    deploy.StatusQueued,
			CreatedAt: time.Now(),
		}
		f.jobs = append(f.jobs, j)
		out = append(out, j)
	}
	if req.Target != "" && len(out) == 0 {
		return nil, fmt.Errorf("submit %q: %w", req.Target, deploy.ErrUnknownTarget)
	}
	return out, nil
}

func (f *fakeDeployments) Targets() []deploy.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.targets)
}

func (f *fakeDeployments) Jobs(_ context.Context, flt deploy.JobFilter) ([]deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jobsErr != nil {
		return nil, f.jobsErr
	}
	var out []deploy.Job
	for _, j := range slices.Backward(f.jobs) {
		if flt.Target != "" && j.Target != flt.Target {
			continue
		}
		out = append(out, j)
		if flt.Limit > 0 && len(out) == flt.Limit {
			break
		}
	}
	return out, nil
}

func (f *fakeDeployments) Job(_ context.Context, id string) (deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return deploy.Job{}, fmt.Errorf("job %s: %w", id, deploy.ErrJobNotFound)
}

func (f *fakeDeployments) WaitJob(ctx context.Context, id string) (deploy.Job, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return deploy.Job{}, ctx.Err()
	}
	f.mu.Lock()
	for i, j := range f.jobs {
		if j.ID != id {
			continue
		}
		out, ok := f.outcome[j.Target]
		if !ok {
			f.jobs[i].Status = deploy.StatusRunning
			break
		}
		j.Status = out.Status
		j.Error, j.RollbackReason, j.RollbackDetail = out.Error, out.RollbackReason, out.RollbackDetail
		j.Phases, j.Failed, j.Notes = out.Phases, out.Failed, out.Notes
		j.StartedAt = j.CreatedAt.Add(time.Second)
		j.FinishedAt = j.StartedAt.Add(12 * time.Second)
		f.jobs[i] = j
		f.mu.Unlock()
		return j, nil
	}
	f.mu.Unlock()
	<-ctx.Done()
	return deploy.Job{}, ctx.Err()
}

func (f *fakeDeployments) lastRequest(t *testing.T) deploy.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("no request was submitted")
	}
	return f.requests[len(f.requests)-1]
}

type fakePoller map[string]time.Time

func (p fakePoller) NextPoll(target string) (time.Time, bool) {
	t, ok := p[target]
	return t, ok
}

// testConfig is what a test varies of the API it serves.
type testConfig struct {
	tokens [][]byte // default: testToken
	poller Poller
	deploy DeployConfig
}

func newTestHandler(t *testing.T, cfg testConfig, d Deployments) http.Handler {
	t.Helper()
	return serveAPI(cfg, d, slog.New(slog.DiscardHandler))
}

// serveAPI serves the handlers at the API's paths behind RequireBearer, as
// hookd's routes do, on net/http's own mux: the handlers must not depend on
// the router.
func serveAPI(cfg testConfig, d Deployments, logger *slog.Logger) http.Handler {
	if cfg.tokens == nil {
		cfg.tokens = [][]byte{[]byte(testToken)}
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+Prefix+"/deploy", HandleDeploy(d, cfg.deploy, logger))
	mux.Handle("GET "+Prefix+"/targets", HandleTargets(d, cfg.poller, logger))
	mux.Handle("GET "+Prefix+"/jobs", HandleJobs(d, logger))
	mux.Handle("GET "+Prefix+"/jobs/{id}", HandleJob(d, logger))
	return RequireBearer("hookd", cfg.tokens, logger)(mux)
}

type response struct {
	code   int
	header http.Header
	body   string
}

// do sends one request from remote (an "ip:port") with token (none when empty).
func do(t *testing.T, h http.Handler, method, target, body, token, remote string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if remote != "" {
		req.RemoteAddr = remote
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{code: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return v
}

func TestDisabled(t *testing.T) {
	h := Disabled(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("Disabled let %s %s through", r.Method, r.URL.Path)
	}))
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/api/v1/deploy"},
		{http.MethodGet, "/api/v1/targets"},
		{http.MethodGet, "/api/v1/jobs"},
		{http.MethodGet, "/api/v1/jobs/job-1"},
		{http.MethodGet, "/api/v1"},
	} {
		// Not even an empty bearer token may get in.
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer ")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		want := `{"error":"api disabled: no HOOKD_API_TOKEN configured"}`
		if rec.Code != http.StatusNotFound || strings.TrimSpace(rec.Body.String()) != want {
			t.Errorf("%s %s = %d %s, want 404 %s", tc.method, tc.path, rec.Code, rec.Body, want)
		}
	}
}

// RequireBearer without a usable token lets nobody in, not even with an
// empty bearer token.
func TestRequireBearerWithoutTokens(t *testing.T) {
	for _, tokens := range [][][]byte{{}, {[]byte("")}} {
		h := newTestHandler(t, testConfig{tokens: tokens}, newFake())
		for _, header := range []string{"Bearer ", "Bearer  ", ""} {
			req := httptest.NewRequest(http.MethodGet, "/api/v1/targets", nil)
			req.Header.Set("Authorization", header)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("tokens %q: GET /api/v1/targets with %q = %d, want 401", tokens, header, rec.Code)
			}
		}
	}
}

func TestAuthentication(t *testing.T) {
	h := newTestHandler(t, testConfig{tokens: [][]byte{[]byte(testToken), []byte("second-token")}}, newFake())
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"first token", "Bearer " + testToken, http.StatusOK},
		{"second token", "Bearer second-token", http.StatusOK},
		{"scheme in lower case", "bearer " + testToken, http.StatusOK},
		{"no header", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"prefix of token", "Bearer " + testToken[:5], http.StatusUnauthorized},
		{"token with suffix", "Bearer " + testToken + "x", http.StatusUnauthorized},
		{"empty token", "Bearer ", http.StatusUnauthorized},
		{"basic scheme", "Basic " + testToken, http.StatusUnauthorized},
		{"token without scheme", testToken, http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/api/v1/targets", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("GET /api/v1/targets with %q = %d, want %d", tc.header, rec.Code, tc.want)
			}
			if tc.want != http.StatusUnauthorized {
				return
			}
			if got, want := strings.TrimSpace(rec.Body.String()), `{"error":"unauthorized"}`; got != want {
				t.Errorf("body = %s, want %s", got, want)
			}
			if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
			}
		})
	}
}

func TestFailedAuthenticationIsRateLimited(t *testing.T) {
	h := newTestHandler(t, testConfig{}, newFake())
	const attacker, other = "203.0.113.7:4000", "198.51.100.9:5000"

	for i := range authFailureLimit {
		if got := do(t, h, http.MethodGet, "/api/v1/targets", "", "guess", attacker); got.code != http.StatusUnauthorized {
			t.Fatalf("failure %d = %d, want 401", i+1, got.code)
		}
	}
	got := do(t, h, http.MethodGet, "/api/v1/targets", "", "guess", attacker)
	if got.code != http.StatusTooManyRequests {
		t.Fatalf("failure %d = %d, want 429", authFailureLimit+1, got.code)
	}
	if got.header.Get("Retry-After") == "" {
		t.Errorf("429 has no Retry-After header")
	}
	for _, h := range []string{"X-Ratelimit-Remaining", "X-Ratelimit-Limit"} {
		if v := got.header.Get(h); v != "" {
			t.Errorf("429 tells the guesser %s: %s", h, v)
		}
	}
	// A locked-out client learns nothing from a right guess either.
	if got := do(t, h, http.MethodGet, "/api/v1/targets", "", testToken, attacker); got.code != http.StatusTooManyRequests {
		t.Errorf("right token from locked-out client = %d, want 429", got.code)
	}
	// Other clients are not affected.
	if got := do(t, h, http.MethodGet, "/api/v1/targets", "", testToken, other); got.code != http.StatusOK {
		t.Errorf("right token from other client = %d, want 200", got.code)
	}
	// IPv6 clients are counted per /64: rotating the host part does not help.
	for i := range authFailureLimit {
		remote := fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1)
		if got := do(t, h, http.MethodGet, "/api/v1/targets", "", "guess", remote); got.code != http.StatusUnauthorized {
			t.Fatalf("IPv6 failure %d = %d, want 401", i+1, got.code)
		}
	}
	if got := do(t, h, http.MethodGet, "/api/v1/targets", "", "guess", "[2001:db8:1:2::ffff]:443"); got.code != http.StatusTooManyRequests {
		t.Errorf("IPv6 failure from the same /64 = %d, want 429", got.code)
	}
}

func TestSuccessfulRequestsAreNotRateLimited(t *testing.T) {
	h := newTestHandler(t, testConfig{}, newFake())
	const client = "203.0.113.8:4000"
	for i := range 5 * authFailureLimit {
		if got := do(t, h, http.MethodGet, "/api/v1/jobs", "", testToken, client); got.code != http.StatusOK {
			t.Fatalf("request %d = %d, want 200", i+1, got.code)
		}
	}
	if got := do(t, h, http.MethodGet, "/api/v1/jobs", "", "guess", client); got.code != http.StatusUnauthorized {
		t.Errorf("first failure after many successes = %d, want 401", got.code)
	}
}

func TestTokenMatches(t *testing.T) {
	accepted := [][sha256.Size]byte{sha256.Sum256([]byte("alpha-token")), sha256.Sum256([]byte("beta"))}
	tests := []struct {
		token string
		want  bool
	}{
		{"alpha-token", true},
		{"beta", true},
		{"", false},
		{"alpha", false},
		{"alpha-token ", false},
		{"Alpha-token", false},
		{"betabeta", false},
	}
	for _, tc := range tests {
		if got := tokenMatches([]byte(tc.token), accepted); got != tc.want {
			t.Errorf("tokenMatches(%q) = %v, want %v", tc.token, got, tc.want)
		}
	}
	if tokenMatches([]byte("alpha-token"), nil) {
		t.Errorf("tokenMatches with no accepted tokens = true, want false")
	}
}

func TestDeploy(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		submitErr   error
		noTargets   bool
		wantCode    int
		wantTargets []string // targets of the jobs answered
		wantError   string   // substring of the error message
		wantKnown   []string // "targets" of the error answer
		wantImages  []string // "images" of the error answer
	}{
		{name: "one target", body: `{"target":"web"}`, wantCode: 202, wantTargets: []string{"web"}},
		{name: "all targets", body: `{}`, wantCode: 202, wantTargets: []string{"web", "db"}},
		{name: "empty body means all", body: ``, wantCode: 202, wantTargets: []string{"web", "db"}},
		{name: "image", body: `{"image":"GHCR.io/o/web"}`, wantCode: 202, wantTargets: []string{"web"}},
		{name: "docker hub image", body: `{"image":"postgres:16","force":true}`, wantCode: 202, wantTargets: []string{"db"}},
		{name: "unknown target", body: `{"target":"nope"}`, wantCode: 404,
			wantError: `unknown target "nope"`, wantKnown: []string{"db", "web"}},
		{name: "image nothing follows", body: `{"image":"ghcr.io/o/web:beta"}`, wantCode: 404,
			wantError:  "no target follows ghcr.io/o/web:beta",
			wantImages: []string{"docker.io/library/postgres:16", "ghcr.io/o/web:latest"}},
		{name: "no targets at all", body: `{}`, noTargets: true, wantCode: 404, wantError: "no targets"},
		{name: "bad image", body: `{"image":"ghcr.io/o/We b"}`, wantCode: 400, wantError: "invalid reference format"},
		{name: "target and image", body: `{"target":"web","image":"ghcr.io/o/web"}`, wantCode: 400, wantError: "not both"},
		{name: "unknown field", body: `{"target":"web","tag":"latest"}`, wantCode: 400, wantError: "unknown field"},
		{name: "broken JSON", body: `{"target":`, wantCode: 400, wantError: "invalid JSON"},
		{name: "not an object", body: `["web"]`, wantCode: 400, wantError: "invalid JSON"},
		{name: "two objects", body: `{} {}`, wantCode: 400, wantError: "after the JSON object"},
		{name: "bad timeout", body: `{"wait":true,"timeout":"soon"}`, wantCode: 400, wantError: "not a duration"},
		{name: "negative timeout", body: `{"wait":true,"timeout":"-1s"}`, wantCode: 400, wantError: "positive"},
		{name: "timeout above maximum", body: `{"wait":true,"timeout":"11m"}`, wantCode: 400, wantError: "exceeds the maximum 10m0s"},
		{name: "queue full", body: `{"target":"web"}`, submitErr: fmt.Errorf("submit: %w", deploy.ErrQueueFull),
			wantCode: 503, wantError: "queue is full"},
		{name: "too large", body: `{"target":"` + strings.Repeat("w", DefaultMaxBodyBytes) + `"}`, wantCode: 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.submitErr = tc.submitErr
			if tc.noTargets {
				f.targets = nil
			}
			h := newTestHandler(t, testConfig{}, f)
			got := do(t, h, http.MethodPost, "/api/v1/deploy", tc.body, testToken, "")
			if got.code != tc.wantCode {
				t.Fatalf("POST %s = %d %s, want %d", tc.body, got.code, got.body, tc.wantCode)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if tc.wantCode != http.StatusAccepted {
				e := decode[ErrorResponse](t, got.body)
				if !strings.Contains(e.Error, tc.wantError) {
					t.Errorf("error = %q, want it to contain %q", e.Error, tc.wantError)
				}
				if !slices.Equal(e.Targets, tc.wantKnown) {
					t.Errorf("targets = %q, want %q", e.Targets, tc.wantKnown)
				}
				if !slices.Equal(e.Images, tc.wantImages) {
					t.Errorf("images = %q, want %q", e.Images, tc.wantImages)
				}
				return
			}
			// 202 carries only id, target and status of each job.
			var raw struct{ Jobs []map[string]any }
			if err := json.Unmarshal([]byte(got.body), &raw); err != nil {
				t.Fatalf("decode %s: %v", got.body, err)
			}
			var targets []string
			for _, j := range raw.Jobs {
				if len(j) != 3 || j["id"] == "" || j["status"] != "queued" {
					t.Errorf("job %v, want exactly id, target and status queued", j)
				}
				targets = append(targets, fmt.Sprint(j["target"]))
			}
			if !slices.Equal(targets, tc.wantTargets) {
				t.Errorf("job targets = %q, want %q", targets, tc.wantTargets)
			}
		})
	}
}

func TestDeployRequest(t *testing.T) {
	f := newFake()
	h := newTestHandler(t, testConfig{}, f)
	before := time.Now()
	got := do(t, h, http.MethodPost, "/api/v1/deploy", `{"image":"ghcr.io/O/web:latest","force":true}`, testToken, "")
	if got.code != http.StatusAccepted {
		t.Fatalf("POST = %d %s, want 202", got.code, got.body)
	}
	req := f.lastRequest(t)
	if req.Trigger != deploy.TriggerManual || req.Repository != "ghcr.io/o/web" || req.Tag != "latest" ||
		!req.Force || req.Target != "" {
		t.Errorf("submitted %+v, want manual forced ghcr.io/o/web:latest", req)
	}
	if !strings.HasPrefix(req.ID, "api-") || len(req.ID) != len("api-")+16 {
		t.Errorf("request id = %q, want api-<16 hex digits>", req.ID)
	}
	if req.ReceivedAt.Before(before) || req.ReceivedAt.After(time.Now()) {
		t.Errorf("received at %v, want the time of the call", req.ReceivedAt)
	}
	do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"db"}`, testToken, "")
	if again := f.lastRequest(t); again.ID == req.ID {
		t.Errorf("two calls share request id %q", req.ID)
	}
}

func TestDeployWait(t *testing.T) {
	f := newFake()
	f.outcome["web"] = deploy.Job{
		Status:         deploy.StatusRolledBack,
		RollbackReason: "unhealthy",
		RollbackDetail: "curl: connection refused",
		Phases:         map[string]float64{"pull": 3.5, "swap": 1.2, "health": 7},
		Failed: &deploy.FailedVersion{Container: "web", ExitCode: new(int), Health: "curl: connection refused",
			Logs: []string{"listening on :80", "db: connection refused"}},
		Notes: []string{"pre-update hook of web (hookd.pre-update) exited 0: saved"},
	}
	h := newTestHandler(t, testConfig{}, f)
	got := do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"web","wait":true,"timeout":"10s"}`, testToken, "")
	if got.code != http.StatusOK {
		t.Fatalf("POST wait = %d %s, want 200", got.code, got.body)
	}
	resp := decode[DeployResponse](t, got.body)
	if len(resp.Jobs) != 1 {
		t.Fatalf("jobs = %+v, want one", resp.Jobs)
	}
	j := resp.Jobs[0]
	if j.Status != deploy.StatusRolledBack || j.RollbackReason != "unhealthy" ||
		j.RollbackDetail != "curl: connection refused" || j.Phases["health"] != 7 ||
		j.DurationSeconds != 12 || j.Trigger != deploy.TriggerManual || j.FinishedAt.IsZero() {
		t.Errorf("job = %+v, want the final rolled back job with phases and timings", j)
	}
	if fv := j.Failed; fv == nil || fv.Container != "web" || fv.ExitCode == nil || *fv.ExitCode != 0 ||
		fv.Health != "curl: connection refused" || len(fv.Logs) != 2 || fv.Logs[1] != "db: connection refused" ||
		len(j.Notes) != 1 {
		t.Errorf("job failed version, notes = %+v, %q, want the failed version (exit code 0 kept) and the note", j.Failed, j.Notes)
	}
	if !strings.Contains(got.body, `"failed":{"container":"web","exit_code":0,"health_output":"curl: connection refused","logs":[`) {
		t.Errorf("body = %s, want the failed version as failed.container, exit_code, health_output, logs", got.body)
	}
}

func TestDeployWaitTimeout(t *testing.T) {
	f := newFake()
	f.outcome["web"] = deploy.Job{Status: deploy.StatusSucceeded}
	// db never finishes.
	h := newTestHandler(t, testConfig{}, f)
	start := time.Now()
	got := do(t, h, http.MethodPost, "/api/v1/deploy", `{"wait":true,"timeout":"100ms"}`, testToken, "")
	if got.code != http.StatusGatewayTimeout {
		t.Fatalf("POST wait = %d %s, want 504", got.code, got.body)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("answered after %v, want just after the 100ms timeout", d)
	}
	e := decode[ErrorResponse](t, got.body)
	if !strings.Contains(e.Error, "timed out after 100ms") {
		t.Errorf("error = %q, want it to say it timed out after 100ms", e.Error)
	}
	states := map[string]deploy.Status{}
	for _, j := range e.Jobs {
		states[j.Target] = j.Status
	}
	if states["web"] != deploy.StatusSucceeded || states["db"] != deploy.StatusRunning {
		t.Errorf("job states = %v, want web succeeded and db running", states)
	}
}

// A wait ends as soon as hookd begins to shut down and answers 503 with the
// jobs as they stand, rather than hold the shutdown until its timeout.
func TestDeployWaitStopping(t *testing.T) {
	f := newFake() // no outcome: no job ever finishes
	stopping := make(chan struct{})
	h := newTestHandler(t, testConfig{deploy: DeployConfig{Stopping: stopping}}, f)
	time.AfterFunc(100*time.Millisecond, func() { close(stopping) })
	start := time.Now()
	got := do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"web","wait":true,"timeout":"1m"}`, testToken, "")
	if got.code != http.StatusServiceUnavailable {
		t.Fatalf("POST wait during shutdown = %d %s, want 503", got.code, got.body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answered after %v, want just after shutdown began", d)
	}
	e := decode[ErrorResponse](t, got.body)
	if !strings.Contains(e.Error, "shutting down") {
		t.Errorf("error = %q, want it to say hookd is shutting down", e.Error)
	}
	if len(e.Jobs) != 1 || e.Jobs[0].ID != "job-1" || e.Jobs[0].Status != deploy.StatusRunning {
		t.Errorf("jobs = %+v, want job-1 as it stands, running", e.Jobs)
	}

	// Once shutdown has begun, a deploy still queues, and a wait ends at once.
	got = do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"db","wait":true}`, testToken, "")
	if got.code != http.StatusServiceUnavailable {
		t.Fatalf("POST wait after shutdown began = %d %s, want 503", got.code, got.body)
	}
	if e := decode[ErrorResponse](t, got.body); len(e.Jobs) != 1 || e.Jobs[0].Target != "db" || e.Jobs[0].Status.Final() {
		t.Errorf("jobs = %+v, want db's job, not final", e.Jobs)
	}
}

func TestTargets(t *testing.T) {
	next := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		poller   Poller
		wantNext time.Time
	}{
		{"with poller", fakePoller{"web": next}, next},
		{"without poller", nil, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			h := newTestHandler(t, testConfig{poller: tc.poller}, f)
			do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"web"}`, testToken, "")
			do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"web"}`, testToken, "")
			got := do(t, h, http.MethodGet, "/api/v1/targets", "", testToken, "")
			if got.code != http.StatusOK {
				t.Fatalf("GET targets = %d %s, want 200", got.code, got.body)
			}
			resp := decode[TargetsResponse](t, got.body)
			if len(resp.Targets) != 2 || resp.Targets[0].Name != "db" || resp.Targets[1].Name != "web" {
				t.Fatalf("targets = %+v, want db and web", resp.Targets)
			}
			db, web := resp.Targets[0], resp.Targets[1]
			if db.Image != "docker.io/library/postgres" || db.Tag != "16" || db.LastJob != nil || !db.NextPoll.IsZero() {
				t.Errorf("db = %+v, want docker.io/library/postgres:16, no job, no poll", db)
			}
			if web.Image != "ghcr.io/o/web" || web.Tag != "latest" || web.Digest != f.targets[0].Digest ||
				web.ImageID != f.targets[0].ImageID || web.RolledBack != f.targets[0].RolledBack {
				t.Errorf("web = %+v, want ghcr.io/o/web:latest with its digest, image id and rolled-back digest", web)
			}
			if web.LastJob == nil || web.LastJob.ID != "job-2" || web.LastJob.Status != deploy.StatusQueued {
				t.Errorf("web last job = %+v, want job-2 queued", web.LastJob)
			}
			if !web.NextPoll.Equal(tc.wantNext) {
				t.Errorf("web next poll = %v, want %v", web.NextPoll, tc.wantNext)
			}
		})
	}
}

func TestJobs(t *testing.T) {
	f := newFake()
	f.outcome["web"] = deploy.Job{Status: deploy.StatusFailed, Error: "pull ghcr.io/o/web:latest: denied"}
	h := newTestHandler(t, testConfig{}, f)
	for range 3 {
		do(t, h, http.MethodPost, "/api/v1/deploy", `{}`, testToken, "") // web and db each time
	}
	if got := do(t, h, http.MethodPost, "/api/v1/deploy", `{"target":"web","wait":true}`, testToken, ""); got.code != http.StatusOK {
		t.Fatalf("POST wait = %d %s, want 200", got.code, got.body)
	}

	tests := []struct {
		query    string
		wantCode int
		wantIDs  []string
	}{
		{"", 200, []string{"job-7", "job-6", "job-5", "job-4", "job-3", "job-2", "job-1"}},
		{"?limit=2", 200, []string{"job-7", "job-6"}},
		{"?target=db", 200, []string{"job-6", "job-4", "job-2"}},
		{"?target=web&limit=1", 200, []string{"job-7"}},
		{"?target=gone", 200, nil},
		{"?limit=1000", 200, []string{"job-7", "job-6", "job-5", "job-4", "job-3", "job-2", "job-1"}},
		{"?limit=0", 400, nil},
		{"?limit=-3", 400, nil},
		{"?limit=1001", 400, nil},
		{"?limit=ten", 400, nil},
	}
	for _, tc := range tests {
		got := do(t, h, http.MethodGet, "/api/v1/jobs"+tc.query, "", testToken, "")
		if got.code != tc.wantCode {
			t.Errorf("GET jobs%s = %d %s, want %d", tc.query, got.code, got.body, tc.wantCode)
			continue
		}
		if tc.wantCode != http.StatusOK {
			if e := decode[ErrorResponse](t, got.body); !strings.Contains(e.Error, "limit") {
				t.Errorf("GET jobs%s error = %q, want it to name the limit", tc.query, e.Error)
			}
			continue
		}
		var ids []string
		for _, j := range decode[JobsResponse](t, got.body).Jobs {
			ids = append(ids, j.ID)
		}
		if !slices.Equal(ids, tc.wantIDs) {
			t.Errorf("GET jobs%s ids = %q, want %q", tc.query, ids, tc.wantIDs)
		}
	}

	got := do(t, h, http.MethodGet, "/api/v1/jobs/job-7", "", testToken, "")
	if got.code != http.StatusOK {
		t.Fatalf("GET job-7 = %d %s, want 200", got.code, got.body)
	}
	j := decode[Job](t, got.body)
	if j.ID != "job-7" || j.Status != deploy.StatusFailed || j.Error != "pull ghcr.io/o/web:latest: denied" ||
		j.StartedAt.IsZero() || j.DurationSeconds != 12 {
		t.Errorf("job-7 = %+v, want failed with its error and timings", j)
	}

	got = do(t, h, http.MethodGet, "/api/v1/jobs/nope", "", testToken, "")
	if got.code != http.StatusNotFound {
		t.Fatalf("GET unknown job = %d %s, want 404", got.code, got.body)
	}
	if e := decode[ErrorResponse](t, got.body); e.Error != `job "nope" not found` {
		t.Errorf("error = %q, want job \"nope\" not found", e.Error)
	}
}

func TestInternalErrorsStayInside(t *testing.T) {
	f := newFake()
	f.jobsErr = errors.New("bolt: open /var/lib/hookd/hookd.db: permission denied")
	var logs strings.Builder
	h := serveAPI(testConfig{}, f, slog.New(slog.NewTextHandler(&logs, nil)))
	for _, path := range []string{"/api/v1/jobs", "/api/v1/targets"} {
		got := do(t, h, http.MethodGet, path, "", testToken, "")
		if got.code != http.StatusInternalServerError {
			t.Fatalf("GET %s = %d %s, want 500", path, got.code, got.body)
		}
		if strings.Contains(got.body, "bolt") || strings.Contains(got.body, "/var/lib") {
			t.Errorf("GET %s body = %s, leaks the internal error", path, got.body)
		}
	}
	if !strings.Contains(logs.String(), "permission denied") {
		t.Errorf("log = %q, want the internal error for the operator", logs.String())
	}
}

func TestLogsNeverHoldTheToken(t *testing.T) {
	var logs strings.Builder
	h := serveAPI(testConfig{}, newFake(), slog.New(slog.NewTextHandler(&logs, nil)))
	do(t, h, http.MethodGet, "/api/v1/targets", "", testToken+"-wrong", "")
	do(t, h, http.MethodPost, "/api/v1/deploy", `{}`, testToken, "")
	if strings.Contains(logs.String(), testToken) {
		t.Errorf("log = %q, contains the token", logs.String())
	}
	if !strings.Contains(logs.String(), "authentication failed") {
		t.Errorf("log = %q, want the failed authentication", logs.String())
	}
}

// A wait longer than the daemon's WriteTimeout still gets its answer, also
// behind a middleware that wraps the ResponseWriter.
func TestDeployWaitOutlivesWriteTimeout(t *testing.T) {
	f := newFake()
	f.outcome["web"] = deploy.Job{Status: deploy.StatusSucceeded}
	f.delay = 600 * time.Millisecond
	h := newTestHandler(t, testConfig{}, f)
	wrap := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(middleware.NewWrapResponseWriter(w, r.ProtoMajor), r)
	})
	srv := httptest.NewUnstartedServer(wrap)
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/deploy",
		bytes.NewReader([]byte(`{"target":"web","wait":true,"timeout":"5s"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST wait past the write timeout: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK || decode[DeployResponse](t, string(body)).Jobs[0].Status != deploy.StatusSucceeded {
		t.Errorf("POST wait = %d %s, want 200 with the succeeded job", resp.StatusCode, body)
	}
}
