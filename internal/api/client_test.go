package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

const oldTestToken = "s3cret-token-zero"

// startAPI serves the API over f, accepting testToken and oldTestToken,
// and returns its URL.
func startAPI(t *testing.T, f *fakeDeployments, p Poller) string {
	t.Helper()
	h := serveAPI(testConfig{tokens: [][]byte{[]byte(testToken), []byte(oldTestToken)}, poller: p},
		f, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newTestClient(t *testing.T, url, token string) *Client {
	t.Helper()
	c, err := NewClient(url, token)
	if err != nil {
		t.Fatalf("NewClient(%q) = %v", url, err)
	}
	return c
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewClient(t *testing.T) {
	tests := []struct {
		url  string
		want bool
	}{
		{"http://127.0.0.1:8080", true},
		{"https://hookd.example.com/", true},
		{"127.0.0.1:8080", false},
		{"ftp://127.0.0.1", false},
		{"http://", false},
		{"://nope", false},
	}
	for _, tc := range tests {
		_, err := NewClient(tc.url, testToken)
		if got := err == nil; got != tc.want {
			t.Errorf("NewClient(%q) = %v, want ok %v", tc.url, err, tc.want)
		}
	}
}

func TestClientDeploy(t *testing.T) {
	tests := []struct {
		req         DeployRequest
		wantTargets []string
	}{
		{DeployRequest{Target: "web"}, []string{"web"}},
		{DeployRequest{Target: "web", Force: true}, []string{"web"}},
		{DeployRequest{}, []string{"web", "db"}},
		{DeployRequest{Image: "ghcr.io/o/web"}, []string{"web"}},
	}
	for _, tc := range tests {
		t.Run(tc.req.Target+tc.req.Image, func(t *testing.T) {
			f := newFake()
			c := newTestClient(t, startAPI(t, f, nil), testToken)
			jobs, err := c.Deploy(testContext(t), tc.req)
			if err != nil {
				t.Fatalf("Deploy(%+v) = %v, want nil", tc.req, err)
			}
			var targets []string
			for _, j := range jobs {
				if j.ID == "" || j.Status != deploy.StatusQueued {
					t.Errorf("job %+v, want an id and status queued", j)
				}
				targets = append(targets, j.Target)
			}
			if !slices.Equal(targets, tc.wantTargets) {
				t.Errorf("job targets = %q, want %q", targets, tc.wantTargets)
			}
			req := f.lastRequest(t)
			if req.Trigger != deploy.TriggerManual || req.Force != tc.req.Force {
				t.Errorf("request = %+v, want manual with force %v", req, tc.req.Force)
			}
		})
	}
}

func TestClientDeployWait(t *testing.T) {
	tests := []struct {
		name  string
		final deploy.Job
	}{
		{"succeeded", deploy.Job{Status: deploy.StatusSucceeded}},
		{"up to date", deploy.Job{Status: deploy.StatusUpToDate}},
		{"rolled back", deploy.Job{Status: deploy.StatusRolledBack, RollbackReason: "unhealthy", RollbackDetail: "exit code 3"}},
		{"failed", deploy.Job{Status: deploy.StatusFailed, Error: "pull ghcr.io/o/web:latest: denied"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.outcome["web"] = tc.final
			c := newTestClient(t, startAPI(t, f, nil), testToken)
			jobs, err := c.Deploy(testContext(t), DeployRequest{Target: "web", Wait: true, Timeout: "1m"})
			if err != nil {
				t.Fatalf("Deploy wait = %v, want nil", err)
			}
			if len(jobs) != 1 {
				t.Fatalf("jobs = %+v, want one", jobs)
			}
			j := jobs[0]
			if j.ID != "job-1" || j.Target != "web" || j.Status != tc.final.Status || j.Error != tc.final.Error ||
				j.RollbackReason != tc.final.RollbackReason || j.RollbackDetail != tc.final.RollbackDetail ||
				j.DurationSeconds != 12 {
				t.Errorf("job = %+v, want job-1 of web ended %+v after 12s", j, tc.final)
			}
			if req := f.lastRequest(t); req.Target != "web" {
				t.Errorf("request target = %q, want web", req.Target)
			}
		})
	}
}

func TestClientDeployWaitTimeout(t *testing.T) {
	f := newFake() // no outcome: the job never finishes
	c := newTestClient(t, startAPI(t, f, nil), testToken)
	_, err := c.Deploy(testContext(t), DeployRequest{Target: "web", Wait: true, Timeout: "100ms"})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusGatewayTimeout {
		t.Fatalf("Deploy wait past the timeout = %v, want a 504 *Error", err)
	}
	if len(ae.Response.Jobs) != 1 || ae.Response.Jobs[0].Status != deploy.StatusRunning {
		t.Errorf("jobs = %+v, want the job's current state, running", ae.Response.Jobs)
	}
}

func TestClientHTTPErrors(t *testing.T) {
	f := newFake()
	url := startAPI(t, f, nil)
	tests := []struct {
		name    string
		token   string
		req     DeployRequest
		wantErr []string
	}{
		{"wrong token", "not-the-token", DeployRequest{Target: "web"}, []string{"401", "unauthorized", "HOOKD_API_TOKEN"}},
		{"unknown target", testToken, DeployRequest{Target: "nope"}, []string{"404", `unknown target "nope"`, "db, web"}},
		{"image nothing follows", testToken, DeployRequest{Image: "ghcr.io/o/other"},
			[]string{"404", "no target follows ghcr.io/o/other:latest", "ghcr.io/o/web:latest"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTestClient(t, url, tc.token).Deploy(testContext(t), tc.req)
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("Deploy(%+v) = %v, want an *Error", tc.req, err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q, want it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
	_, err := newTestClient(t, url, "not-the-token").Targets(testContext(t))
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Targets with wrong token = %v, want a 401 error", err)
	}
}

func TestClientDeadAddress(t *testing.T) {
	_, err := newTestClient(t, "http://127.0.0.1:1", testToken).Targets(testContext(t))
	var ae *Error
	if err == nil || errors.As(err, &ae) || strings.Contains(err.Error(), testToken) {
		t.Errorf("Targets against a dead address = %v, want a connection error without the token", err)
	}
}

// Both tokens work, and a base URL may end in a slash.
func TestClientTokens(t *testing.T) {
	url := startAPI(t, newFake(), nil)
	for _, tc := range []struct{ url, token string }{
		{url, testToken},
		{url, oldTestToken},
		{url + "/", testToken},
	} {
		if _, err := newTestClient(t, tc.url, tc.token).Targets(testContext(t)); err != nil {
			t.Errorf("Targets at %s = %v, want nil", tc.url, err)
		}
	}
}

func TestClientStatus(t *testing.T) {
	f := newFake()
	f.outcome["web"] = deploy.Job{Status: deploy.StatusRolledBack, RollbackReason: "exited", RollbackDetail: "exit code 1"}
	next := time.Now().Add(4*time.Minute + 30*time.Second).Truncate(time.Second)
	c := newTestClient(t, startAPI(t, f, fakePoller{"web": next}), testToken)
	ctx := testContext(t)
	if _, err := c.Deploy(ctx, DeployRequest{Target: "web", Wait: true}); err != nil {
		t.Fatalf("set-up deploy = %v", err)
	}

	targets, err := c.Targets(ctx)
	if err != nil {
		t.Fatalf("Targets = %v, want nil", err)
	}
	if len(targets) != 2 || targets[0].Name != "db" || targets[1].Name != "web" {
		t.Fatalf("targets = %+v, want db and web", targets)
	}
	if web := targets[1]; web.Image != "ghcr.io/o/web" || web.Tag != "latest" || web.Digest != f.targets[0].Digest ||
		web.LastJob == nil || web.LastJob.ID != "job-1" || web.LastJob.Status != deploy.StatusRolledBack ||
		!web.NextPoll.Equal(next) {
		t.Errorf("web = %+v, want ghcr.io/o/web:latest, its digest, rolled back job-1 and next poll %v", web, next)
	}
	if db := targets[0]; db.LastJob != nil || !db.NextPoll.IsZero() {
		t.Errorf("db = %+v, want no job and no poll", db)
	}

	for _, limit := range []int{0, 1} {
		jobs, err := c.Jobs(ctx, limit)
		if err != nil {
			t.Fatalf("Jobs(%d) = %v, want nil", limit, err)
		}
		if len(jobs) != 1 || jobs[0].ID != "job-1" || jobs[0].Status != deploy.StatusRolledBack ||
			jobs[0].RollbackReason != "exited" || jobs[0].RollbackDetail != "exit code 1" ||
			jobs[0].Trigger != deploy.TriggerManual || jobs[0].CreatedAt.IsZero() {
			t.Errorf("Jobs(%d) = %+v, want job-1 rolled back for exited, manual", limit, jobs)
		}
	}
	if _, err := c.Jobs(ctx, 1001); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("Jobs(1001) = %v, want a 400 error", err)
	}
}
