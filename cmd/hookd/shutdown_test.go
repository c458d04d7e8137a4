package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/store"
)

func TestShutdownBudgets(t *testing.T) {
	tests := []struct {
		total, wantHTTP, wantWork time.Duration
	}{
		{30 * time.Second, 7500 * time.Millisecond, 22500 * time.Millisecond},
		{8 * time.Second, 2 * time.Second, 6 * time.Second},
		{time.Second, 250 * time.Millisecond, 750 * time.Millisecond},
	}
	for _, tc := range tests {
		h, w := shutdownBudgets(tc.total)
		if h != tc.wantHTTP || w != tc.wantWork || h+w != tc.total {
			t.Errorf("shutdownBudgets(%v) = %v, %v, want %v, %v", tc.total, h, w, tc.wantHTTP, tc.wantWork)
		}
	}
}

// TestRunShutdownOrder: hookd is told to stop while a deploy that a client
// waits for through the API is in a health gate longer than the whole
// shutdown_timeout. The client gets the job as it stands within the HTTP
// budget, and run returns within shutdown_timeout. The worker abandoned
// the gate (the old container serves again) and put the job back in the
// queue before the state file was closed: the file opens at once and holds
// the job queued and no journal step. The next hookd on the same state dir
// resumes the job and finishes it.
func TestRunShutdownOrder(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "octo/shutdown"
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-shutdown")
	// v2 reports "starting" far longer than any shutdown may take.
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", SlowStart: 10 * time.Minute})

	const token = "shutdown-test-token-0123456789"
	const shutdownTimeout = 8 * time.Second
	httpBudget, _ := shutdownBudgets(shutdownTimeout)
	stateDir := t.TempDir()
	env := map[string]string{
		"HOOKD_STATE_DIR":        stateDir,
		"HOOKD_API_TOKEN":        token,
		"HOOKD_REGISTRY_HOST":    reg.Host,
		"HOOKD_HEALTH_TIMEOUT":   "15m",
		"HOOKD_SETTLE_TIME":      "1s",
		"HOOKD_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
	}
	d := startDaemon(ctx, t, env)
	waitReady(t, d)

	type answer struct {
		code int
		body api.ErrorResponse
		at   time.Time
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		body := fmt.Sprintf(`{"target":%q,"wait":true,"timeout":"10m"}`, cname)
		req, err := http.NewRequest(http.MethodPost, d.url+"/api/v1/deploy", strings.NewReader(body))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{err: err, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		a := answer{code: resp.StatusCode, at: time.Now()}
		a.err = json.NewDecoder(resp.Body).Decode(&a.body)
		answered <- a
	}()

	// The swap is done and the gate runs: the old container is set aside,
	// the new one runs under the name.
	dockertest.WaitFor(t, 60*time.Second, "replacement in its health gate", func() (bool, string) {
		old, err := cli.ContainerInspect(ctx, cname+".hookd-old")
		if err != nil {
			return false, err.Error()
		}
		cur, err := cli.ContainerInspect(ctx, cname)
		if err != nil {
			return false, err.Error()
		}
		return cur.ID != old.ID && cur.State.Running, cur.State.Status
	})

	stopped := time.Now()
	d.stop()
	var a answer
	select {
	case a = <-answered:
	case <-time.After(shutdownTimeout + 10*time.Second):
		t.Fatal("the waiting client got no answer")
	}
	if a.err != nil {
		t.Fatalf("waiting deploy: %v", a.err)
	}
	if took := a.at.Sub(stopped); took > httpBudget {
		t.Errorf("the waiting client was answered %v after shutdown began, want within the HTTP budget %v", took, httpBudget)
	}
	if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body.Error, "shutting down") ||
		len(a.body.Jobs) != 1 || a.body.Jobs[0].Target != cname || a.body.Jobs[0].Status != deploy.StatusRunning {
		t.Fatalf("waiting deploy answered %d %+v, want 503 with the job as it stands, running", a.code, a.body)
	}
	jobID := a.body.Jobs[0].ID

	select {
	case err := <-d.done:
		if took := time.Since(stopped); took > shutdownTimeout {
			t.Errorf("run() returned %v after cancel, want within shutdown_timeout %v", took, shutdownTimeout)
		}
		if err != nil {
			t.Errorf("run() = %v after cancel, want nil", err)
		}
		d.done <- err // for the cleanup
	case <-time.After(shutdownTimeout + 10*time.Second):
		t.Fatal("run() did not return after cancel")
	}
	if logs := d.logs.String(); strings.Contains(logs, "did not stop in time") || strings.Contains(logs, "persist job failed") {
		t.Errorf("log says a worker overran or lost a write:\n%s", logs)
	}

	st, err := store.Open(filepath.Join(stateDir, "hookd.db"), store.Options{})
	if err != nil {
		t.Fatalf("open the state file after run() returned: %v", err)
	}
	job, jerr := st.Job(ctx, jobID)
	steps, serr := st.Steps(ctx)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if jerr != nil || job.Status != deploy.StatusQueued || !job.StartedAt.IsZero() {
		t.Errorf("stored job = %+v, %v, want it queued again, not started", job, jerr)
	}
	if serr != nil || len(steps) != 0 {
		t.Errorf("journal = %+v, %v, want no step left", steps, serr)
	}
	waitVersion(ctx, t, cli, cname, "v1")
	for _, leftover := range []string{cname + ".hookd-new", cname + ".hookd-old"} {
		if _, err := cli.ContainerInspect(ctx, leftover); !cerrdefs.IsNotFound(err) {
			t.Errorf("inspect %s = %v, want it gone", leftover, err)
		}
	}

	// The next hookd resumes the job; with a short health timeout v2 is
	// rolled back.
	env["HOOKD_HEALTH_TIMEOUT"] = "2s"
	next := startDaemon(ctx, t, env)
	var resumed api.Job
	dockertest.WaitFor(t, 90*time.Second, "resumed job final", func() (bool, string) {
		code, _, body := request(t, http.MethodGet, next.url+"/api/v1/jobs/"+jobID, token)
		resumed = api.Job{}
		_ = json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&resumed)
		return code == http.StatusOK && resumed.Status.Final(), fmt.Sprint(code, " ", body)
	})
	if resumed.Status != deploy.StatusRolledBack {
		t.Errorf("resumed job = %+v, want it rolled back", resumed)
	}
	waitVersion(ctx, t, cli, cname, "v1")
}
