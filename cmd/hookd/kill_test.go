package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestMain lets a test start hookd as a real child process (this test
// binary, re-executed), so that it can be killed with SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("HOOKD_TEST_CHILD") == "1" {
		err := run(context.Background(), nil, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
		os.Exit(exitCode(err, os.Stderr))
	}
	os.Exit(m.Run())
}

// startChild runs hookd in a child process with env and waits for /readyz.
func startChild(t *testing.T, env map[string]string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOOKD_TEST_CHILD=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("child hookd log:\n%s", logs.String())
		}
	})
	dockertest.WaitFor(t, 30*time.Second, "child hookd ready", func() (bool, string) {
		return answers("http://"+env["HOOKD_LISTEN"]+"/readyz", http.StatusOK)
	})
	return cmd, logs
}

// TestKilledAfterAcceptDeploysExactlyOnce: hookd answers 202 and is killed
// with SIGKILL at once; the next hookd on the same state dir resumes the
// job, and the delivery deploys exactly once.
func TestKilledAfterAcceptDeploysExactlyOnce(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const owner, name = "octo", "killed"
	repo := owner + "/" + name
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-killed")
	const token = "kill-test-token-0123456789"
	env := map[string]string{
		"HOOKD_LISTEN":         freeAddr(t),
		"HOOKD_STATE_DIR":      t.TempDir(),
		"HOOKD_WEBHOOK_SECRET": testSecret,
		"HOOKD_API_TOKEN":      token,
		"HOOKD_POLL_INTERVAL":  "0",
		"HOOKD_REGISTRY_HOST":  reg.Host,
		"HOOKD_SETTLE_TIME":    "1s",
		"HOOKD_LABEL_FILTER":   dockertest.LabelKey + "=" + dockertest.LabelValue(t),
	}
	first, _ := startChild(t, env)

	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	d := &daemon{url: "http://" + env["HOOKD_LISTEN"]}
	code, out := d.deliver(t, "package", "killed-1", packageEvent(t, reg.Host, owner, name, "latest", digest))
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	if code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v, want 202", code, out)
	}

	startChild(t, env)
	waitVersion(ctx, t, cli, cname, "v2")

	// Exactly one job came of the delivery, and it succeeded.
	var jobs []map[string]any
	dockertest.WaitFor(t, 30*time.Second, "job final", func() (bool, string) {
		jobs = apiJobs(t, d.url, token)
		return len(jobs) > 0 && jobs[0]["status"] != "queued" && jobs[0]["status"] != "running", fmt.Sprint(jobs)
	})
	var fromDelivery []map[string]any
	for _, j := range jobs {
		if j["request_id"] == "killed-1" {
			fromDelivery = append(fromDelivery, j)
		}
	}
	if len(fromDelivery) != 1 || fromDelivery[0]["status"] != "succeeded" {
		t.Errorf("jobs of delivery killed-1 = %v, want exactly one, succeeded", fromDelivery)
	}
	// And the redelivery GitHub may send after the crash is a duplicate.
	if code, out := d.deliver(t, "package", "killed-1", packageEvent(t, reg.Host, owner, name, "latest", digest)); code != http.StatusOK || out["status"] != "duplicate" {
		t.Errorf("redelivery after restart answered %d %v, want 200 duplicate", code, out)
	}
}

func apiJobs(t *testing.T, url, token string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/api/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/jobs: %d %v", resp.StatusCode, err)
	}
	return out.Jobs
}
