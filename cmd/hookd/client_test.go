package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
)

const (
	clientTestToken    = "client-test-token-1"
	clientTestOldToken = "client-test-token-0"
)

// clientFake stands in for the deployer behind the real API handler: it
// queues a job per matching target, and WaitJob ends a job with the state
// configured for its target (or never, when none is).
type clientFake struct {
	mu       sync.Mutex
	targets  []deploy.Target
	jobs     []deploy.Job // oldest first
	requests []deploy.Request
	final    map[string]deploy.Job
}

func newClientFake() *clientFake {
	return &clientFake{
		targets: []deploy.Target{
			{Name: "db", Kind: "container", Image: "docker.io/library/postgres", Tag: "16",
				Ref: deploy.ImageRef{Registry: "docker.io", Path: "library/postgres", Tag: "16"}},
			{Name: "web", Kind: "container", Image: "ghcr.io/o/web", Tag: "latest",
				Ref:    deploy.ImageRef{Registry: "ghcr.io", Path: "o/web", Tag: "latest"},
				Digest: "sha256:0123456789abcdef" + strings.Repeat("0", 48)},
		},
		final: map[string]deploy.Job{},
	}
}

func (f *clientFake) Submit(_ context.Context, req deploy.Request) ([]deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	var out []deploy.Job
	for _, t := range f.targets {
		if req.Target != "" && req.Target != t.Name ||
			req.Repository != "" && (req.Repository != t.Image || req.Tag != t.Tag) {
			continue
		}
		j := deploy.Job{
			ID: fmt.Sprintf("job-%d", len(f.jobs)+1), Target: t.Name, Request: req,
			Image: t.Image + ":" + t.Tag, Status: deploy.StatusQueued, CreatedAt: time.Now().Add(-3 * time.Minute),
		}
		f.jobs = append(f.jobs, j)
		out = append(out, j)
	}
	if req.Target != "" && len(out) == 0 {
		return nil, fmt.Errorf("submit %q: %w", req.Target, deploy.ErrUnknownTarget)
	}
	return out, nil
}

func (f *clientFake) Targets() []deploy.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.targets)
}

func (f *clientFake) Jobs(_ context.Context, flt deploy.JobFilter) ([]deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []deploy.Job
	for _, j := range slices.Backward(f.jobs) {
		if flt.Target != "" && j.Target != flt.Target {
			continue
		}
		if out = append(out, j); flt.Limit > 0 && len(out) == flt.Limit {
			break
		}
	}
	return out, nil
}

func (f *clientFake) Job(_ context.Context, id string) (deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return deploy.Job{}, deploy.ErrJobNotFound
}

func (f *clientFake) WaitJob(ctx context.Context, id string) (deploy.Job, error) {
	f.mu.Lock()
	for i, j := range f.jobs {
		if j.ID != id {
			continue
		}
		end, ok := f.final[j.Target]
		if !ok {
			f.jobs[i].Status = deploy.StatusRunning
			break
		}
		j.Status, j.Error, j.RollbackReason, j.RollbackDetail = end.Status, end.Error, end.RollbackReason, end.RollbackDetail
		j.StartedAt = j.CreatedAt.Add(time.Second)
		j.FinishedAt = j.StartedAt.Add(12500 * time.Millisecond)
		f.jobs[i] = j
		f.mu.Unlock()
		return j, nil
	}
	f.mu.Unlock()
	<-ctx.Done()
	return deploy.Job{}, ctx.Err()
}

func (f *clientFake) lastRequest(t *testing.T) deploy.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("no deploy request reached the server")
	}
	return f.requests[len(f.requests)-1]
}

type clientPoller map[string]time.Time

func (p clientPoller) NextPoll(target string) (time.Time, bool) {
	t, ok := p[target]
	return t, ok
}

// startAPI serves the real API handler over f and returns its URL.
func startAPI(t *testing.T, f *clientFake, poller api.Poller) string {
	t.Helper()
	h := api.New(api.Config{
		Tokens: [][]byte{[]byte(clientTestToken), []byte(clientTestOldToken)},
		Poller: poller,
	}, f, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func clientEnv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

type clientResult struct {
	err            error
	stdout, stderr string
}

func runClientTest(t *testing.T, env map[string]string, verb string, args ...string) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runClient(ctx, verb, args, clientEnv(env), &stdout, &stderr)
	return clientResult{err: err, stdout: stdout.String(), stderr: stderr.String()}
}

func TestClientDeploy(t *testing.T) {
	tests := []struct {
		args      []string
		wantForce bool
		wantJobs  []string // "target status" lines expected in the output
	}{
		{[]string{"web"}, false, []string{"web", "queued", "job-1"}},
		{[]string{"--force", "web"}, true, []string{"web", "queued"}},
		{[]string{"web", "--force"}, true, []string{"web", "queued"}},
		{[]string{}, false, []string{"db", "web", "job-1", "job-2"}},
		{[]string{"--image", "ghcr.io/o/web"}, false, []string{"web", "job-1"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			f := newClientFake()
			env := map[string]string{"HOOKD_URL": startAPI(t, f, nil), "HOOKD_API_TOKEN": clientTestToken}
			got := runClientTest(t, env, "deploy", tc.args...)
			if got.err != nil {
				t.Fatalf("deploy %q = %v, want nil", tc.args, got.err)
			}
			for _, want := range tc.wantJobs {
				if !strings.Contains(got.stdout, want) {
					t.Errorf("output %q, want it to contain %q", got.stdout, want)
				}
			}
			req := f.lastRequest(t)
			if req.Trigger != deploy.TriggerManual || req.Force != tc.wantForce {
				t.Errorf("request = %+v, want manual with force %v", req, tc.wantForce)
			}
		})
	}
}

func TestClientDeployWait(t *testing.T) {
	tests := []struct {
		name       string
		final      deploy.Job
		wantFailed bool
		wantOut    []string
	}{
		{"succeeded", deploy.Job{Status: deploy.StatusSucceeded}, false, []string{"succeeded", "12.5s", "job-1"}},
		{"up to date", deploy.Job{Status: deploy.StatusUpToDate}, false, []string{"up_to_date"}},
		{"rolled back", deploy.Job{Status: deploy.StatusRolledBack, RollbackReason: "unhealthy", RollbackDetail: "exit code 3"},
			true, []string{"rolled_back", "web: rolled back: unhealthy: exit code 3"}},
		{"failed", deploy.Job{Status: deploy.StatusFailed, Error: "pull ghcr.io/o/web:latest: denied"},
			true, []string{"failed", "web: pull ghcr.io/o/web:latest: denied"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newClientFake()
			f.final["web"] = tc.final
			env := map[string]string{"HOOKD_URL": startAPI(t, f, nil), "HOOKD_API_TOKEN": clientTestToken}
			got := runClientTest(t, env, "deploy", "web", "--wait", "--timeout", "1m")
			if errors.Is(got.err, errDeployFailed) != tc.wantFailed {
				t.Fatalf("deploy --wait = %v, want errDeployFailed: %v", got.err, tc.wantFailed)
			}
			if !tc.wantFailed && got.err != nil {
				t.Fatalf("deploy --wait = %v, want nil", got.err)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(got.stdout, want) {
					t.Errorf("output %q, want it to contain %q", got.stdout, want)
				}
			}
			if req := f.lastRequest(t); req.Target != "web" {
				t.Errorf("request target = %q, want web", req.Target)
			}
		})
	}
}

func TestClientDeployWaitTimeout(t *testing.T) {
	f := newClientFake() // no final state: the job never finishes
	env := map[string]string{"HOOKD_URL": startAPI(t, f, nil), "HOOKD_API_TOKEN": clientTestToken}
	got := runClientTest(t, env, "deploy", "web", "--wait", "--timeout", "100ms")
	if got.err == nil || errors.Is(got.err, errDeployFailed) || !strings.Contains(got.err.Error(), "still running after 100ms") {
		t.Fatalf("deploy --wait past the timeout = %v, want a still-running error", got.err)
	}
	if !strings.Contains(got.stdout, "running") {
		t.Errorf("output %q, want the job's current state", got.stdout)
	}
}

func TestClientHTTPErrors(t *testing.T) {
	f := newClientFake()
	url := startAPI(t, f, nil)
	tests := []struct {
		name    string
		token   string
		args    []string
		wantErr []string
	}{
		{"wrong token", "not-the-token", []string{"web"}, []string{"401", "unauthorized"}},
		{"unknown target", clientTestToken, []string{"nope"}, []string{"404", `unknown target "nope"`, "db, web"}},
		{"image nothing follows", clientTestToken, []string{"--image", "ghcr.io/o/other"},
			[]string{"404", "no target follows ghcr.io/o/other:latest", "ghcr.io/o/web:latest"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runClientTest(t, map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": tc.token}, "deploy", tc.args...)
			if got.err == nil || errors.Is(got.err, errDeployFailed) || errors.Is(got.err, errUsage) {
				t.Fatalf("deploy %q = %v, want an HTTP error", tc.args, got.err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(got.err.Error(), want) {
					t.Errorf("error %q, want it to contain %q", got.err, want)
				}
			}
			for _, out := range []string{got.err.Error(), got.stdout, got.stderr} {
				if strings.Contains(out, tc.token) {
					t.Errorf("output %q contains the token", out)
				}
			}
		})
	}
	got := runClientTest(t, map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": "not-the-token"}, "status")
	if got.err == nil || !strings.Contains(got.err.Error(), "401") {
		t.Errorf("status with wrong token = %v, want a 401 error", got.err)
	}
}

func TestClientUsageErrors(t *testing.T) {
	good := map[string]string{"HOOKD_API_TOKEN": clientTestToken}
	tests := []struct {
		name string
		env  map[string]string
		verb string
		args []string
	}{
		{"two targets", good, "deploy", []string{"web", "db"}},
		{"target and image", good, "deploy", []string{"web", "--image", "ghcr.io/o/web"}},
		{"unknown flag", good, "deploy", []string{"--fast"}},
		{"bad timeout", good, "deploy", []string{"--wait", "--timeout", "soon"}},
		{"no token", map[string]string{}, "deploy", []string{"web"}},
		{"both token variables", map[string]string{"HOOKD_API_TOKEN": "a", "HOOKD_API_TOKEN_FILE": "/x"}, "status", nil},
		{"missing token file", map[string]string{"HOOKD_API_TOKEN_FILE": filepath.Join(t.TempDir(), "none")}, "status", nil},
		{"bad URL", map[string]string{"HOOKD_API_TOKEN": "a", "HOOKD_URL": "127.0.0.1:8080"}, "status", nil},
		{"status with argument", good, "status", []string{"web"}},
		{"unknown verb", good, "undeploy", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runClientTest(t, tc.env, tc.verb, tc.args...)
			if !errors.Is(got.err, errUsage) {
				t.Errorf("%s %q = %v, want a usage error", tc.verb, tc.args, got.err)
			}
		})
	}
}

func TestClientTokenAndURLSources(t *testing.T) {
	f := newClientFake()
	url := startAPI(t, f, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("\n"+clientTestOldToken+"\nsomething-else\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dead := "http://127.0.0.1:1"
	tests := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"env token", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": clientTestToken}, nil},
		{"first of several", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": " " + clientTestOldToken + " , other"}, nil},
		{"token file env", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN_FILE": file}, nil},
		{"token file flag beats env", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": "wrong"}, []string{"--token-file", file}},
		{"url flag beats env", map[string]string{"HOOKD_URL": dead, "HOOKD_API_TOKEN": clientTestToken}, []string{"--url", url + "/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := runClientTest(t, tc.env, "status", tc.args...); got.err != nil {
				t.Errorf("status %q = %v, want nil", tc.args, got.err)
			}
		})
	}
	got := runClientTest(t, map[string]string{"HOOKD_URL": dead, "HOOKD_API_TOKEN": clientTestToken}, "status")
	if got.err == nil || errors.Is(got.err, errUsage) || strings.Contains(got.err.Error(), clientTestToken) {
		t.Errorf("status against a dead address = %v, want a connection error without the token", got.err)
	}
}

// statusFixture serves two targets, one with a finished job and a poll
// schedule, and returns the environment to reach it.
func statusFixture(t *testing.T) map[string]string {
	t.Helper()
	f := newClientFake()
	f.final["web"] = deploy.Job{Status: deploy.StatusRolledBack, RollbackReason: "exited", RollbackDetail: "exit code 1"}
	url := startAPI(t, f, clientPoller{"web": time.Now().Add(4*time.Minute + 30*time.Second)})
	env := map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": clientTestToken}
	if got := runClientTest(t, env, "deploy", "web", "--wait"); !errors.Is(got.err, errDeployFailed) {
		t.Fatalf("set-up deploy = %v, want the rolled back deploy", got.err)
	}
	return env
}

func TestClientStatusTable(t *testing.T) {
	env := statusFixture(t)
	got := runClientTest(t, env, "status")
	if got.err != nil {
		t.Fatalf("status = %v, want nil", got.err)
	}
	lines := strings.Split(got.stdout, "\n")
	fieldsOf := func(prefix string) []string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return strings.Fields(l)
			}
		}
		t.Fatalf("status output %q has no line starting %q", got.stdout, prefix)
		return nil
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"NAME", []string{"NAME", "IMAGE", "TAG", "DIGEST", "LAST-JOB", "NEXT-POLL"}},
		{"db ", []string{"db", "docker.io/library/postgres", "16", "-", "-", "-"}},
		{"web ", []string{"web", "ghcr.io/o/web", "latest", "0123456789ab", "rolled_back", "job-1", "in", "4m30s"}},
		{"ID", []string{"ID", "TARGET", "TRIGGER", "STATUS", "AGE", "ERROR"}},
		{"job-1", []string{"job-1", "web", "manual", "rolled_back", "3m0s", "rolled", "back:", "exited:", "exit", "code", "1"}},
	}
	for _, tc := range tests {
		got := fieldsOf(tc.prefix)
		// The poll time and age move with the clock by a second or so.
		if tc.prefix == "web " && len(got) == len(tc.want) && strings.HasPrefix(got[7], "4m") {
			got[7] = tc.want[7]
		}
		if tc.prefix == "job-1" && len(got) == len(tc.want) && strings.HasPrefix(got[4], "3m") {
			got[4] = tc.want[4]
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("status line %q = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func TestClientStatusJSON(t *testing.T) {
	env := statusFixture(t)
	got := runClientTest(t, env, "status", "--json")
	if got.err != nil {
		t.Fatalf("status --json = %v, want nil", got.err)
	}
	var out struct {
		Targets []api.Target `json:"targets"`
		Jobs    []api.Job    `json:"jobs"`
	}
	dec := json.NewDecoder(strings.NewReader(got.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode status --json %q: %v", got.stdout, err)
	}
	if len(out.Targets) != 2 || out.Targets[1].Name != "web" || out.Targets[1].LastJob == nil ||
		out.Targets[1].LastJob.Status != deploy.StatusRolledBack || out.Targets[1].NextPoll.IsZero() {
		t.Errorf("targets = %+v, want db and web with its rolled back job and next poll", out.Targets)
	}
	if len(out.Jobs) != 1 || out.Jobs[0].ID != "job-1" || out.Jobs[0].RollbackReason != "exited" ||
		out.Jobs[0].Trigger != deploy.TriggerManual {
		t.Errorf("jobs = %+v, want job-1 rolled back for exited", out.Jobs)
	}
}
