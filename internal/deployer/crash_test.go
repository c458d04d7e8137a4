package deployer

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/container"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestIntegrationCrashAtEachStepReconciles kills the worker (as if hookd
// died) right after each step of a swap, then checks that a fresh
// deployer's reconcile leaves exactly one running container under the name,
// and that the interrupted job ends where it should.
func TestIntegrationCrashAtEachStepReconciles(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	tests := []struct {
		point       string        // crash point: a phase (after it), or phase+":journal" (journalled, not taken)
		unhealthy   bool          // the new image fails its gate
		loseJournal bool          // the restarted hookd has no state at all
		want        deploy.Status // final status of the interrupted job
	}{
		{point: "create:journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseCreate, want: deploy.StatusSucceeded},
		{point: containers.PhaseStopOld + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseStopOld, want: deploy.StatusSucceeded},
		{point: containers.PhaseRenameOld, want: deploy.StatusSucceeded},
		{point: containers.PhaseRenameNew, want: deploy.StatusSucceeded},
		{point: containers.PhaseStartNew, want: deploy.StatusSucceeded},
		{point: containers.PhaseHealth + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseCleanup + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseCleanup, want: deploy.StatusSucceeded},
		{point: containers.PhaseRollback + ":journal", unhealthy: true, want: deploy.StatusRolledBack},
		{point: containers.PhaseRollback, unhealthy: true, want: deploy.StatusRolledBack},
		{point: containers.PhaseRenameOld, loseJournal: true},
		{point: containers.PhaseRenameNew, loseJournal: true},
		{point: containers.PhaseStartNew, loseJournal: true},
	}
	for _, tt := range tests {
		name := tt.point
		if tt.loseJournal {
			name += "/journal lost"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			repo := "hookd/crash-" + strings.NewReplacer(":", "-", "_", "-").Replace(tt.point)
			if tt.loseJournal {
				repo += "-lost"
			}
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
			_, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "crash", Labels: enabled(nil),
				Ports: map[string]string{dockertest.AppPort: ""}, RestartPolicy: "unless-stopped",
			})
			state := newMemState(100)
			crashing := &crashingState{memState: state, point: tt.point, crashed: make(chan struct{})}
			crashed := crashing.crashed
			cfg := rig{State: crashing, SettleTime: 500 * time.Millisecond, HealthTimeout: 5 * time.Second}
			d1 := startDeployer(ctx, t, cli, cfg)
			waitTarget(ctx, t, d1.Deployer, target)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", Unhealthy: tt.unhealthy})
			jobs, err := d1.Submit(ctx, deploy.Request{Target: target})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			select {
			case <-crashed:
			case <-time.After(time.Minute):
				t.Fatalf("crash point %q never reached", tt.point)
			}
			d1.stop()

			if tt.loseJournal {
				state = newMemState(100)
			}
			cfg.State = state
			cfg.LabelFilter = dockertest.LabelKey + "=" + dockertest.LabelValue(t)
			cfg.Keychain = staticKeychain{}
			// Reconcile alone first, to see what it leaves before any job resumes.
			rcfg := cfg
			rcfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
			if err := rcfg.deployer(t, cli).reconcile(ctx); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			left := containersNamed(ctx, t, cli, target)
			c, ok := left[target]
			if !ok || c.State != container.StateRunning {
				t.Errorf("after reconcile, %s = %+v (present %v), want running", target, c.State, ok)
			}
			for _, s := range []string{deploy.SuffixNew, deploy.SuffixOld, deploy.SuffixFailed} {
				if _, ok := left[target+s]; ok {
					t.Errorf("after reconcile, %s still exists", target+s)
				}
			}
			// A container reconcile (re)started needs a moment to listen.
			addr := dockertest.HostPort(ctx, t, cli, target)
			dockertest.WaitFor(t, 10*time.Second, "service answering after reconcile", func() (bool, string) {
				v, err := dockertest.Version(ctx, addr)
				return err == nil && (v == "v1" || v == "v2"), fmt.Sprintf("%q, %v", v, err)
			})
			if tt.loseJournal {
				return
			}

			// A restarted hookd finishes the job: resumed and redone, or
			// already settled by reconcile.
			d2 := startDeployer(ctx, t, cli, cfg)
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			j, err := d2.WaitJob(wctx, jobs[0].ID)
			if err != nil || j.Status != tt.want {
				t.Fatalf("interrupted job = %s %q, %v, want %s", j.Status, j.Error, err, tt.want)
			}
			want := "v2"
			if tt.unhealthy {
				want = "v1"
			}
			waitVersion(ctx, t, dockertest.HostPort(ctx, t, cli, target), want)
			left = containersNamed(ctx, t, cli, target)
			if len(left) != 1 {
				t.Errorf("containers named %s* = %v, want %s only", target, keys(left), target)
			}
			if tt.unhealthy && (j.Failed == nil || j.Failed.Health == "") {
				t.Errorf("rolled-back job's failed version = %+v, want its health output recorded before the crash", j.Failed)
			}
		})
	}
}

// crashingState is a State whose journal stops the worker dead at point,
// as if hookd had been killed there: nothing after it is cleaned up or
// recorded. point is a journal phase ("create", …) to crash after the step
// it names was taken, that is before the next entry is journalled or the
// entry deleted; or phase+":journal" to crash once the entry is written,
// before the step is taken.
type crashingState struct {
	*memState
	point   string
	crashed chan struct{}

	mu   sync.Mutex
	last string // the phase last journalled
	once sync.Once
}

func (s *crashingState) PutStep(ctx context.Context, st deploy.Step) error {
	s.mu.Lock()
	prev := s.last
	s.last = st.Phase
	s.mu.Unlock()
	if prev == s.point && st.Phase != prev {
		s.crash()
	}
	if err := s.memState.PutStep(ctx, st); err != nil {
		return err
	}
	if st.Phase+":journal" == s.point {
		s.crash()
	}
	return nil
}

func (s *crashingState) DeleteStep(ctx context.Context, target string) error {
	s.mu.Lock()
	prev := s.last
	s.mu.Unlock()
	if prev == s.point {
		s.crash()
	}
	return s.memState.DeleteStep(ctx, target)
}

// crash ends the calling goroutine, the worker, like a kill would.
func (s *crashingState) crash() {
	s.once.Do(func() { close(s.crashed) })
	runtime.Goexit()
}

// TestIntegrationStaleJournalEntry: a journal entry whose containers are
// long gone (the user recreated the service by hand) must not block deploys.
func TestIntegrationStaleJournalEntry(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/stale"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "stale", Labels: enabled(nil),
		Ports: map[string]string{dockertest.AppPort: ""},
	})
	state := newMemState(10)
	gone := strings.Repeat("ab", 32)
	if err := state.PutStep(ctx, deploy.Step{Target: target, JobID: "0000000000000001", Phase: containers.PhaseStartNew, OldID: gone, NewID: strings.Repeat("cd", 32)}); err != nil {
		t.Fatal(err)
	}
	d := startDeployer(ctx, t, cli, rig{State: state})
	if c := inspect(ctx, t, cli, target); c.ID != id || !c.State.Running {
		t.Fatalf("reconcile touched the running container: %s running %v", containers.ShortID(c.ID), c.State.Running)
	}
	if steps, _ := state.Steps(ctx); len(steps) != 0 {
		t.Errorf("journal after reconcile = %+v, want empty", steps)
	}
	waitTarget(ctx, t, d.Deployer, target)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	if j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: target}); j.Status != deploy.StatusSucceeded {
		t.Errorf("deploy after a stale journal entry = %s %q, want succeeded", j.Status, j.Error)
	}
}
