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

	"github.com/docker/docker/api/types/container"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestIntegrationCrashWhileJoinersFollow kills the worker (as if hookd
// died) at each step of a swap whose target another container joined
// (network_mode container:vpn), the target's and the joined container's,
// then checks that a fresh deployer's reconcile leaves one running
// container under each name, the joined one in the namespace of the vpn
// container that runs, answering through the port vpn publishes.
func TestIntegrationCrashWhileJoinersFollow(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	tests := []struct {
		point     string // "target:" or "joiner:" + a phase (after it) or phase+":journal" (written, not taken)
		unhealthy bool   // the new vpn fails its gate
		want      deploy.Status
	}{
		{point: "target:" + containers.PhaseHealth + ":journal", want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseCreate + ":journal", want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseCreate, want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseStopOld, want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseRenameOld, want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseRenameNew, want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseStartNew, want: deploy.StatusSucceeded},
		{point: "joiner:" + containers.PhaseHealth + ":journal", want: deploy.StatusSucceeded},
		{point: "target:" + containers.PhaseRollback + ":journal", unhealthy: true, want: deploy.StatusRolledBack},
		{point: "target:" + containers.PhaseRollback, unhealthy: true, want: deploy.StatusRolledBack},
	}
	for _, tt := range tests {
		t.Run(tt.point, func(t *testing.T) {
			t.Parallel()
			repo := "hookd/jcrash-" + strings.NewReplacer(":", "-", "_", "-").Replace(tt.point)
			if tt.unhealthy {
				repo += "-bad"
			}
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "vpn1"})
			reg.PushApp(ctx, t, repo+"-joined", "latest", dockertest.App{Version: "joined1"})
			vpnID, vpn := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "vpn", Labels: enabled(nil),
				Ports: map[string]string{"8081/tcp": ""},
			})
			_, joined := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo+"-joined", "latest"), Name: "joined", Labels: enabled(nil),
				NetworkMode: "container:" + vpnID, Env: []string{"TESTAPP_PORT=8081"},
			})
			waitVersion(ctx, t, hostPortOf(ctx, t, cli, vpn, "8081/tcp"), "joined1")

			state := newMemState(100)
			crashing := &roleCrashingState{memState: state, point: tt.point, crashed: make(chan struct{})}
			cfg := rig{State: crashing, SettleTime: 500 * time.Millisecond, HealthTimeout: 10 * time.Second}
			d1 := startDeployer(ctx, t, cli, cfg)
			waitTarget(ctx, t, d1.Deployer, vpn)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "vpn2", Unhealthy: tt.unhealthy})
			jobs, err := d1.Submit(ctx, deploy.Request{Target: vpn})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			select {
			case <-crashing.crashed:
			case <-time.After(time.Minute):
				t.Fatalf("crash point %q never reached", tt.point)
			}
			d1.stop()

			cfg.State = state
			cfg.LabelFilter = dockertest.LabelKey + "=" + dockertest.LabelValue(t)
			cfg.Keychain = staticKeychain{}
			rcfg := cfg
			rcfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
			if err := rcfg.deployer(t, cli).reconcile(ctx); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			check := func(when string) {
				t.Helper()
				for _, name := range []string{vpn, joined} {
					left := containersNamed(ctx, t, cli, name)
					if c, ok := left[name]; len(left) != 1 || !ok || c.State != container.StateRunning {
						t.Errorf("%s: containers named %s* = %v, want %s only, running", when, name, keys(left), name)
					}
				}
				v, j := inspect(ctx, t, cli, vpn), inspect(ctx, t, cli, joined)
				if mode := string(j.HostConfig.NetworkMode); mode != "container:"+v.ID {
					t.Errorf("%s: %s is in %s, want the namespace of the vpn that runs, container:%s", when, joined, mode, v.ID[:12])
				}
				addr := hostPortOf(ctx, t, cli, vpn, "8081/tcp")
				dockertest.WaitFor(t, 20*time.Second, when+": the joined container answering through vpn's port", func() (bool, string) {
					got, err := dockertest.Version(ctx, addr)
					return err == nil && got == "joined1", fmt.Sprintf("%q, %v", got, err)
				})
			}
			check("after reconcile")

			d2 := startDeployer(ctx, t, cli, cfg)
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if j, err := d2.WaitJob(wctx, jobs[0].ID); err != nil || j.Status != tt.want {
				t.Fatalf("interrupted job = %s %q, %v, want %s", j.Status, j.Error, err, tt.want)
			}
			check("after the job finished")
		})
	}
}

// roleCrashingState is crashingState for one role: point is "target:" or
// "joiner:" followed by the point crashingState takes, and only the steps
// of that role (a joiner's carry a Parent) count.
type roleCrashingState struct {
	*memState
	point   string
	crashed chan struct{}

	mu   sync.Mutex
	last string
	once sync.Once
}

func (s *roleCrashingState) role(st deploy.Step) string {
	if st.Parent != "" {
		return "joiner:"
	}
	return "target:"
}

func (s *roleCrashingState) PutStep(ctx context.Context, st deploy.Step) error {
	s.mu.Lock()
	prev := s.last
	if strings.HasPrefix(s.point, s.role(st)) {
		s.last = s.role(st) + st.Phase
	}
	cur := s.last
	s.mu.Unlock()
	if prev == s.point && cur != prev {
		s.crash()
	}
	if err := s.memState.PutStep(ctx, st); err != nil {
		return err
	}
	if s.role(st)+st.Phase+":journal" == s.point {
		s.crash()
	}
	return nil
}

func (s *roleCrashingState) DeleteStep(ctx context.Context, target string) error {
	s.mu.Lock()
	prev := s.last
	s.mu.Unlock()
	if prev == s.point {
		s.crash()
	}
	return s.memState.DeleteStep(ctx, target)
}

func (s *roleCrashingState) crash() {
	s.once.Do(func() { close(s.crashed) })
	runtime.Goexit()
}
