package deployer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestIntegrationEngineRestart restarts the Docker engine (SIGTERM to
// dockerd, as an upgrade does, then a fresh start) while a deploy is in the
// middle of its swap, its health gate or its rollback. Whatever the engine
// did meanwhile (a stopping daemon stops every container; hookd's own stop
// of the old one keeps a restart policy from bringing it back), the target
// must run afterwards: exactly one container under its name, started, the
// swap finished or undone once the engine answers again, the job saying
// what happened, and the target still known to hookd.
//
// It restarts the engine it is given, so it runs only when
// HOOKD_TEST_ENGINE_RESTART=1, with HOOKD_TEST_ENGINE_RESTART_CMD the
// command that restarts it: scripts/engine-restart-test.sh runs it against
// a private engine, never the shared one other tests use.
func TestIntegrationEngineRestart(t *testing.T) {
	if os.Getenv("HOOKD_TEST_ENGINE_RESTART") != "1" {
		t.Skip("restarts the Docker engine: run scripts/engine-restart-test.sh (HOOKD_TEST_ENGINE_RESTART=1)")
	}
	restart := os.Getenv("HOOKD_TEST_ENGINE_RESTART_CMD")
	if restart == "" {
		t.Fatal("HOOKD_TEST_ENGINE_RESTART=1 but HOOKD_TEST_ENGINE_RESTART_CMD, the command that restarts the engine, is not set")
	}
	ctx := testContext(t, 15*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	tests := []struct {
		name string
		// The engine restarts this long after the job reaches stage.
		stage deploy.Stage
		after time.Duration
		// The new version fails its healthcheck, or is slow to pass it.
		unhealthy bool
		slowStart time.Duration
		want      deploy.Status
		// A replacement that failed its own gate is kept for docker logs.
		failedKept bool
		// The digest is remembered as rolled back (refused unless forced).
		rolledBack bool
		// Deployed start-first; the old container has no restart policy,
		// so nothing but hookd starts it again after the engine's stop.
		startFirst bool
	}{
		// The old container takes 8 s to stop: the engine goes away with
		// hookd's stop in flight.
		{name: "mid-swap", stage: deploy.StageSwapping, after: 2 * time.Second, want: deploy.StatusFailed},
		// The stopping engine kills the replacement during its gate: that
		// "exit" says nothing about the image. (Slow to become healthy, so
		// that the engine's own restart of it cannot pass for a passed gate.)
		{name: "mid-gate", stage: deploy.StageGating, after: time.Second, slowStart: 2 * time.Minute, want: deploy.StatusFailed},
		// The replacement failed its gate on its own and takes 8 s to stop:
		// the engine goes away during the rollback, which is finished later.
		{name: "mid-rollback", stage: deploy.StageRollback, after: 2 * time.Second, unhealthy: true,
			want: deploy.StatusRolledBack, failedKept: false, rolledBack: true},
		// Start-first: the engine stops both versions during the new one's
		// gate; the new one is removed and the old one started again.
		{name: "start-first-mid-gate", stage: deploy.StageGating, after: time.Second, slowStart: 2 * time.Minute,
			want: deploy.StatusFailed, startFirst: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "hookd/engine-" + tt.name
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
			labels, policy := map[string]string(nil), "unless-stopped"
			if tt.startFirst {
				labels, policy = startFirst, ""
			}
			oldID, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "engine", Labels: enabled(labels), RestartPolicy: policy,
				// The test program ignores SIGWINCH: a stop takes the whole timeout.
				Customize: func(c *container.Config, _ *container.HostConfig, _ *network.NetworkingConfig) {
					timeout := 8
					c.StopSignal, c.StopTimeout = "SIGWINCH", &timeout
				},
			})
			// The gate lasts long enough for the engine to go and come back.
			d := startDeployer(ctx, t, cli, rig{SettleTime: 90 * time.Second, HealthTimeout: 2 * time.Minute})
			waitTarget(ctx, t, d.Deployer, target)
			digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", Unhealthy: tt.unhealthy, SlowStart: tt.slowStart})

			events, cancel := d.Subscribe("engine-restart-test", 64)
			defer cancel()
			jobs, err := d.Submit(ctx, deploy.Request{Target: target, Trigger: deploy.TriggerManual})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			restarted := make(chan error, 1)
			waitStage(ctx, t, events, jobs[0].ID, tt.stage)
			time.Sleep(tt.after)
			go func() {
				t.Logf("restarting the engine: %s", restart)
				out, err := exec.CommandContext(ctx, "sh", "-c", restart).CombinedOutput()
				if err != nil {
					err = fmt.Errorf("%s: %w: %s", restart, err, out)
				}
				restarted <- err
			}()

			wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
			defer wcancel()
			j, err := d.WaitJob(wctx, jobs[0].ID)
			if rerr := <-restarted; rerr != nil {
				t.Fatalf("restart the engine: %v", rerr)
			}
			if err != nil {
				t.Fatalf("job not final after the engine restart: %s %q, %v", j.Status, j.Error, err)
			}
			t.Logf("job: %s %q notes %q", j.Status, j.Error, j.Notes)
			if j.Status != tt.want {
				t.Errorf("job = %s %q, want %s", j.Status, j.Error, tt.want)
			}
			notes := strings.Join(j.Notes, "\n")
			if !strings.Contains(notes, "Docker engine stopped answering") || !strings.Contains(notes, "the engine was back after") {
				t.Errorf("job notes = %q, want them to say the engine went away and what hookd did once it was back", j.Notes)
			}
			if tt.want == deploy.StatusFailed && !strings.Contains(j.Error, "Docker engine restarted") {
				t.Errorf("job error = %q, want it to name the engine restart", j.Error)
			}

			// Exactly one container under the name: the old one, running.
			left := containersNamed(ctx, t, cli, target)
			if c, ok := left[target]; !ok || c.ID != oldID || c.State != container.StateRunning {
				t.Errorf("%s = %s %s (present %v), want the old container %s, running", target, c.ID, c.State, ok, oldID)
			}
			for _, s := range []string{deploy.SuffixNew, deploy.SuffixOld} {
				if _, ok := left[target+s]; ok {
					t.Errorf("%s still exists", target+s)
				}
			}
			if _, ok := left[target+deploy.SuffixFailed]; ok != tt.failedKept {
				t.Errorf("%s exists = %v, want %v", target+deploy.SuffixFailed, ok, tt.failedKept)
			}
			if steps, err := d.state.Steps(ctx); err != nil || len(steps) != 0 {
				t.Errorf("journal = %+v, %v; want it settled", steps, err)
			}

			// Still a target, and the digest judged only when the image was.
			tg := waitTarget(ctx, t, d.Deployer, target)
			if got := tg.RolledBack == digest; got != tt.rolledBack {
				t.Errorf("rolled-back digest = %q, want it set = %v (%s)", tg.RolledBack, tt.rolledBack, digest)
			}
		})
	}
}

// waitStage waits until the job reaches stage.
func waitStage(ctx context.Context, t *testing.T, events <-chan deploy.Event, jobID string, stage deploy.Stage) {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case e := <-events:
			if e.Job.ID == jobID && e.Kind == string(stage) {
				return
			}
			if e.Job.ID == jobID && e.Final() {
				t.Fatalf("job ended %s %q before stage %s", e.Job.Status, e.Job.Error, stage)
			}
		case <-timeout:
			t.Fatalf("job never reached stage %s", stage)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}
