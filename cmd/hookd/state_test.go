package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/store"
)

// TestRunRefusesEmptyStateFile: a state file that exists but is empty lost
// its content; hookd must refuse it, saying so, rather than start empty
// over it and forget its queued jobs.
func TestRunRefusesEmptyStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hookd.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HOOKD_LISTEN": freeAddr(t), "HOOKD_STATE_DIR": dir, "HOOKD_WEBHOOK_SECRET": testSecret,
		"DOCKER_HOST": noDocker, "HOOKD_POLL_INTERVAL": "0",
	}
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, nil, func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, &logs)
	if err == nil || !strings.Contains(err.Error(), "is empty (0 bytes)") || !strings.Contains(err.Error(), path) {
		t.Fatalf("run() with a 0-byte state file = %v, want a refusal naming %s as empty", err, path)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("state file after the refusal: %v, %v; want it left as it was (0 bytes)", fi, err)
	}
}

// TestRunQuarantinesRottenJob: one job record of the state file rotted on
// disk. hookd must start, say so loudly, count it, and deploy as before:
// before, start-up failed on it forever while /readyz said ready and every
// delivery got a 202 that deployed nothing.
func TestRunQuarantinesRottenJob(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const owner, name = "octo", "rotten"
	repo := owner + "/" + name
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-rotten")

	dir := t.TempDir()
	path := filepath.Join(dir, "hookd.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rotten := deploy.Job{ID: "0000000000000001", Target: cname, Status: deploy.StatusQueued, CreatedAt: time.Now().Add(-time.Hour),
		Request: deploy.Request{Target: cname, Trigger: deploy.TriggerManual}}
	if err := st.PutJob(ctx, rotten); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	rotFile(t, path, `{"id":"0000000000000001"`)

	d := startDaemon(ctx, t, map[string]string{
		"HOOKD_STATE_DIR":     dir,
		"HOOKD_REGISTRY_HOST": reg.Host,
		"HOOKD_SETTLE_TIME":   "1s",
	})
	waitReady(t, d)
	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	if code, out := d.deliver(t, "package", "rotten-1", packageEvent(t, reg.Host, owner, name, "latest", digest)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v, want 202", code, out)
	}
	waitVersion(ctx, t, cli, cname, "v2")

	logs := d.logs.String()
	for _, want := range []string{"level=ERROR", "undecodable state record quarantined", "job_id=0000000000000001"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if _, _, body := request(t, http.MethodGet, d.url+"/metrics", ""); !strings.Contains(body, "\nhookd_state_records_quarantined_total 1\n") {
		t.Errorf("/metrics lacks hookd_state_records_quarantined_total 1")
	}
}

// TestRunReadyzFollowsStateWritability: with the state directory's file
// system full, every delivery would get a 500, so hookd is not ready; it
// is again once space is freed. The answer names no path.
func TestRunReadyzFollowsStateWritability(t *testing.T) {
	ctx := context.Background()
	dockertest.Docker(t) // readiness needs the engine too
	dir := smallFS(t, "4m")
	d := startDaemon(ctx, t, map[string]string{"HOOKD_STATE_DIR": dir})
	waitReady(t, d)

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	code, _, body := request(t, http.MethodGet, d.url+"/readyz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "state file cannot be written") || strings.Contains(body, dir) {
		t.Errorf("/readyz with a full state directory = %d %s, want 503 saying the state file cannot be written, without the path", code, body)
	}
	if logs := d.logs.String(); !strings.Contains(logs, "not ready") || !strings.Contains(logs, "bytes free") {
		t.Errorf("log does not say why hookd is not ready:\n%s", logs)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code, _, body := request(t, http.MethodGet, d.url+"/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz once space is freed = %d %s, want 200", code, body)
	}
}

// TestRunForceSurvivesRestart: a forced redeploy of what already runs is
// interrupted by a shutdown while a delivery for the same digest waits
// behind it. After the restart the recreate must still happen (the force
// is not lost), and neither job may be reported failed.
func TestRunForceSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const owner, name = "octo", "forced"
	repo := owner + "/" + name
	// Healthy 15 s after it starts: the forced redeploy is still in its gate
	// when hookd is stopped, and passes it after the restart.
	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1", SlowStart: 15 * time.Second})
	origID, cname := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "hookd-forced",
		Labels: map[string]string{"hookd.enable": "true"},
	})

	const token = "force-test-token-0123456789"
	dir := t.TempDir()
	env := map[string]string{
		"HOOKD_STATE_DIR":        dir,
		"HOOKD_API_TOKEN":        token,
		"HOOKD_REGISTRY_HOST":    reg.Host,
		"HOOKD_HEALTH_TIMEOUT":   "15m",
		"HOOKD_SETTLE_TIME":      "1s",
		"HOOKD_SHUTDOWN_TIMEOUT": "8s",
	}
	d := startDaemon(ctx, t, env)
	waitReady(t, d)

	var deployed api.DeployResponse
	code, body := apiPost(t, d.url+"/api/v1/deploy", token, fmt.Sprintf(`{"target":%q,"force":true}`, cname))
	if err := json.Unmarshal([]byte(body), &deployed); err != nil || code != http.StatusAccepted || len(deployed.Jobs) != 1 {
		t.Fatalf("forced deploy answered %d %s, want 202 with one job", code, body)
	}
	forced := deployed.Jobs[0].ID
	dockertest.WaitFor(t, 60*time.Second, "forced redeploy in its health gate", func() (bool, string) {
		old, err := cli.ContainerInspect(ctx, cname+".hookd-old")
		if err != nil {
			return false, err.Error()
		}
		cur, err := cli.ContainerInspect(ctx, cname)
		return err == nil && cur.ID != old.ID && cur.State.Running, fmt.Sprint(err)
	})
	code, out := d.deliver(t, "package", "forced-1", packageEvent(t, reg.Host, owner, name, "latest", digest))
	if code != http.StatusAccepted || fmt.Sprint(out["status"]) != "queued" {
		t.Fatalf("delivery answered %d %v, want 202 queued", code, out)
	}
	d.stop()
	<-d.done
	d.done <- nil // for the cleanup

	env["HOOKD_HEALTH_TIMEOUT"] = "2m"
	next := startDaemon(ctx, t, env)
	var jobs []api.Job
	dockertest.WaitFor(t, 2*time.Minute, "both jobs final", func() (bool, string) {
		var resp api.JobsResponse
		_, _, body := request(t, http.MethodGet, next.url+"/api/v1/jobs?target="+cname, token)
		_ = json.Unmarshal([]byte(body), &resp)
		jobs = resp.Jobs
		final := 0
		for _, j := range jobs {
			if j.Status.Final() {
				final++
			}
		}
		return len(jobs) == 2 && final == 2, body
	})
	for _, j := range jobs {
		if j.Status != deploy.StatusSucceeded {
			t.Errorf("job %s (%s, force %v) = %s %q, want succeeded: the forced recreate happened once, for both", j.ID, j.Trigger, j.Force, j.Status, j.Error)
		}
		if j.ID == forced && !strings.Contains(strings.Join(j.Notes, "\n"), "deployed by job") {
			t.Errorf("the interrupted forced job's notes = %q, want them to name the job that deployed it", j.Notes)
		}
	}
	if c, err := cli.ContainerInspect(ctx, cname); err != nil || c.ID == origID || !c.State.Running {
		t.Errorf("%s after the restart: id %s running %v (%v), want a new container, running (the forced recreate)", cname, c.ID, c.State != nil && c.State.Running, err)
	}
}

// apiPost POSTs body to url with the bearer token.
func apiPost(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rotFile flips one byte of a file on disk in the first occurrence of
// marker, as bit rot would: bbolt keeps no checksum of values, so the
// state file still opens and passes its page check.
func rotFile(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("%q not found in %s", marker, path)
	}
	b[i] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// smallFS mounts a tmpfs of size under a temporary directory and unmounts
// it at cleanup. Mounting needs root (CI runs as root); elsewhere the test
// is skipped unless HOOKD_INTEGRATION=1 says it must run.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		if os.Getenv("HOOKD_INTEGRATION") == "1" {
			t.Fatalf("mount a tmpfs for a full-disk test (needs root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root; HOOKD_INTEGRATION=1 makes this a failure): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("dd", "if=/dev/zero", "of="+path, "bs=64k").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("filling %s: %v: %s", path, err, out)
	}
}
