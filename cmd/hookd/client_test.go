package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
)

// The client verbs' presentation and argument handling are tested here;
// the client itself, against the real API handlers, in internal/api; the
// verbs against a running hookd in run_test.go.

const clientTestToken = "client-test-token-1"

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

func TestParseDeploy(t *testing.T) {
	tests := []struct {
		args        []string
		want        api.DeployRequest
		wantTimeout time.Duration
	}{
		{[]string{"web"}, api.DeployRequest{Target: "web"}, 0},
		{[]string{"--force", "web"}, api.DeployRequest{Target: "web", Force: true}, 0},
		{[]string{"web", "--force"}, api.DeployRequest{Target: "web", Force: true}, 0},
		{[]string{}, api.DeployRequest{}, 0},
		{[]string{"--image", "ghcr.io/o/web"}, api.DeployRequest{Image: "ghcr.io/o/web"}, 0},
		{[]string{"web", "--wait", "--timeout", "1m"}, api.DeployRequest{Target: "web", Wait: true, Timeout: "1m0s"}, time.Minute},
		{[]string{"--wait"}, api.DeployRequest{Wait: true, Timeout: "5m0s"}, 5 * time.Minute},
		{[]string{"--", "--odd-name"}, api.DeployRequest{Target: "--odd-name"}, 0},
	}
	for _, tc := range tests {
		got, err := parseDeploy(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("parseDeploy(%q) = %v, want nil", tc.args, err)
			continue
		}
		if got.req != tc.want || got.timeout != tc.wantTimeout {
			t.Errorf("parseDeploy(%q) = %+v, %v, want %+v, %v", tc.args, got.req, got.timeout, tc.want, tc.wantTimeout)
		}
	}
}

func TestReportDeploy(t *testing.T) {
	queued := func(target, id string) api.Job { return api.Job{ID: id, Target: target, Status: deploy.StatusQueued} }
	ended := func(j api.Job) []api.Job {
		j.ID, j.Target, j.DurationSeconds = "job-1", "web", 12.5
		return []api.Job{j}
	}
	running := []api.Job{{ID: "job-1", Target: "web", Status: deploy.StatusRunning}}
	tests := []struct {
		name       string
		wait       bool
		jobs       []api.Job
		err        error
		wantErr    string // substring of the error; "" for none
		wantFailed bool
		wantOut    []string
	}{
		{"queued", false, []api.Job{queued("web", "job-1")}, nil, "", false, []string{"web", "queued", "job-1"}},
		{"every target", false, []api.Job{queued("db", "job-1"), queued("web", "job-2")}, nil, "", false,
			[]string{"db", "web", "job-1", "job-2"}},
		{"succeeded", true, ended(api.Job{Status: deploy.StatusSucceeded}), nil, "", false,
			[]string{"succeeded", "12.5s", "job-1"}},
		{"up to date", true, ended(api.Job{Status: deploy.StatusUpToDate}), nil, "", false, []string{"up_to_date"}},
		{"rolled back", true, ended(api.Job{Status: deploy.StatusRolledBack, RollbackReason: "unhealthy", RollbackDetail: "exit code 3"}),
			nil, "rolled_back", true, []string{"rolled_back", "web: rolled back: unhealthy: exit code 3"}},
		{"failed", true, ended(api.Job{Status: deploy.StatusFailed, Error: "pull ghcr.io/o/web:latest: denied"}),
			nil, "failed", true, []string{"failed", "web: pull ghcr.io/o/web:latest: denied"}},
		{"refused", false, ended(api.Job{Status: deploy.StatusRefused, Error: "digest sha256:bad was rolled back on web; deploy it again with force"}),
			nil, "refused", true, []string{"refused", "web: digest sha256:bad was rolled back"}},
		{"wait timed out", true, nil,
			&api.Error{Status: http.StatusGatewayTimeout, Response: api.ErrorResponse{Error: "timed out after 100ms waiting for jobs", Jobs: running}},
			"still running after 100ms", false, []string{"web", "running", "job-1"}},
		{"hookd shutting down", true, nil,
			&api.Error{Status: http.StatusServiceUnavailable, Response: api.ErrorResponse{Error: "hookd is shutting down", Jobs: running}},
			"503: hookd is shutting down", false, []string{"web", "running", "job-1"}},
		{"error answer", false, nil,
			&api.Error{Status: http.StatusNotFound, Response: api.ErrorResponse{Error: `unknown target "nope"`}},
			`unknown target "nope"`, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			a := deployArgs{req: api.DeployRequest{Wait: tc.wait}, timeout: 100 * time.Millisecond}
			err := reportDeploy(&out, tc.jobs, tc.err, a)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("reportDeploy = %v, want an error containing %q", err, tc.wantErr)
			}
			if errors.Is(err, errDeployFailed) != tc.wantFailed {
				t.Errorf("reportDeploy = %v, want errDeployFailed: %v", err, tc.wantFailed)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output %q, want it to contain %q", out.String(), want)
				}
			}
			if tc.wantOut == nil && out.Len() > 0 {
				t.Errorf("output %q, want none", out.String())
			}
		})
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

func TestClientSettings(t *testing.T) {
	const url, other = "http://hookd.test:8080", "http://elsewhere.test:8080"
	const oldToken = "client-test-token-0"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("\n"+oldToken+"\nsomething-else\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		env       map[string]string
		args      []string
		wantURL   string
		wantToken string
	}{
		{"env token", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": clientTestToken}, nil, url, clientTestToken},
		{"first of several", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": " " + oldToken + " , other"}, nil, url, oldToken},
		{"token file env", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN_FILE": file}, nil, url, oldToken},
		{"token file flag beats env", map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": "wrong"}, []string{"--token-file", file}, url, oldToken},
		{"url flag beats env", map[string]string{"HOOKD_URL": other, "HOOKD_API_TOKEN": clientTestToken}, []string{"--url", url + "/"}, url + "/", clientTestToken},
		{"default url", map[string]string{"HOOKD_API_TOKEN": clientTestToken}, nil, defaultClientURL, clientTestToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, cf := newClientFlagSet("status", "hookd status", &bytes.Buffer{})
			if _, err := parseArgs(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			gotURL, gotToken, err := clientSettings(cf, clientEnv(tc.env))
			if err != nil || gotURL != tc.wantURL || gotToken != tc.wantToken {
				t.Errorf("clientSettings(%q) = %q, %q, %v, want %q, %q", tc.args, gotURL, gotToken, err, tc.wantURL, tc.wantToken)
			}
		})
	}
}

// statusFixture is two targets, one with a rolled back job and a poll
// schedule, as the API answers them at now.
func statusFixture(now time.Time) ([]api.Target, []api.Job) {
	targets := []api.Target{
		{Name: "db", Kind: "container", Image: "docker.io/library/postgres", Tag: "16"},
		{Name: "web", Kind: "container", Image: "ghcr.io/o/web", Tag: "latest",
			Digest:   "sha256:0123456789abcdef" + strings.Repeat("0", 48),
			LastJob:  &api.JobRef{ID: "job-1", Target: "web", Status: deploy.StatusRolledBack},
			NextPoll: now.Add(4*time.Minute + 30*time.Second)},
	}
	jobs := []api.Job{{
		ID: "job-1", Target: "web", Kind: "container", Status: deploy.StatusRolledBack, Trigger: deploy.TriggerManual,
		Image: "ghcr.io/o/web:latest", RollbackReason: "exited", RollbackDetail: "exit code 1",
		CreatedAt: now.Add(-3 * time.Minute), StartedAt: now.Add(-3*time.Minute + time.Second),
		FinishedAt: now.Add(-3*time.Minute + 13500*time.Millisecond), DurationSeconds: 12.5,
		DigestAfter: "sha256:fedcba9876543210" + strings.Repeat("0", 48),
		Failed: &api.FailedVersion{Container: "web", ExitCode: ptrTo(1), Health: "curl: (7) Failed to connect",
			Logs: []string{"starting web v2", "panic: no DATABASE_URL"}},
		Notes: []string{"signature verified: signed by o/web's workflow .github/workflows/ci.yml"},
	}}
	return targets, jobs
}

func ptrTo[T any](v T) *T { return &v }

func TestStatusTable(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	targets, jobs := statusFixture(now)
	var out bytes.Buffer
	printTargets(&out, targets, now)
	printJobs(&out, jobs, now)
	lines := strings.Split(out.String(), "\n")
	fieldsOf := func(prefix string) []string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return strings.Fields(l)
			}
		}
		t.Fatalf("status output %q has no line starting %q", out.String(), prefix)
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
		if got := fieldsOf(tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("status line %q = %q, want %q", tc.prefix, got, tc.want)
		}
	}

	// The job's notes, then the failed version, whose container hookd
	// removed, follow the table.
	if want := "\nnotes:\n  job-1 web: signature verified: signed by o/web's workflow .github/workflows/ci.yml\n"; !strings.Contains(out.String(), want) {
		t.Errorf("status output %q does not have the job's note %q", out.String(), want)
	}
	wantFailed := "\nfailed version of web (job job-1, fedcba987654): exit code 1\n" +
		"  last health check: curl: (7) Failed to connect\n" +
		"  last log lines:\n" +
		"    starting web v2\n" +
		"    panic: no DATABASE_URL\n"
	if !strings.HasSuffix(out.String(), wantFailed) {
		t.Errorf("status output ends %q, want %q", out.String()[max(0, out.Len()-len(wantFailed)-40):], wantFailed)
	}

	out.Reset()
	printTargets(&out, nil, now)
	printJobs(&out, nil, now)
	if got := out.String(); !strings.Contains(got, "no targets") || !strings.Contains(got, "no jobs yet") {
		t.Errorf("status of an empty hookd = %q, want it to say there are no targets and no jobs", got)
	}
}

func TestStatusJSON(t *testing.T) {
	targets, jobs := statusFixture(time.Now())
	var buf bytes.Buffer
	if err := printStatusJSON(&buf, targets, jobs); err != nil {
		t.Fatalf("printStatusJSON = %v", err)
	}
	var out struct {
		Targets []api.Target `json:"targets"`
		Jobs    []api.Job    `json:"jobs"`
	}
	dec := json.NewDecoder(strings.NewReader(buf.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode status --json %q: %v", buf.String(), err)
	}
	if len(out.Targets) != 2 || out.Targets[1].Name != "web" || out.Targets[1].LastJob == nil ||
		out.Targets[1].LastJob.Status != deploy.StatusRolledBack || out.Targets[1].NextPoll.IsZero() {
		t.Errorf("targets = %+v, want db and web with its rolled back job and next poll", out.Targets)
	}
	if len(out.Jobs) != 1 || out.Jobs[0].ID != "job-1" || out.Jobs[0].RollbackReason != "exited" ||
		out.Jobs[0].Trigger != deploy.TriggerManual {
		t.Errorf("jobs = %+v, want job-1 rolled back for exited", out.Jobs)
	}

	buf.Reset()
	if err := printStatusJSON(&buf, nil, nil); err != nil || !strings.Contains(buf.String(), `"targets": []`) || !strings.Contains(buf.String(), `"jobs": []`) {
		t.Errorf("status --json of an empty hookd = %q, %v, want empty lists, not null", buf.String(), err)
	}
}
