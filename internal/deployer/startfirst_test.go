package deployer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// caddyfile proxies each published port (":8080", …) to an upstream
// ("app:8080") the way Caddy's docs recommend for upstreams that are
// replaced while traffic flows: lb_try_duration holds a request and tries
// again while the upstream cannot be reached, instead of failing it.
func caddyfile(sites map[string]string) string {
	var b strings.Builder
	b.WriteString("{\n\tadmin off\n\tauto_https off\n}\n")
	for _, port := range sortedKeys(sites) {
		fmt.Fprintf(&b, "%s {\n\treverse_proxy %s {\n\t\tlb_try_duration 5s\n\t}\n}\n", port, sites[port])
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// proxiedApp is a target behind Caddy: on net with the alias "app" (as
// Compose names a service), no host port; and, through the same Caddy, a
// control: the same app never deployed, whose answers tell how slow the
// machine itself is at the time.
type proxiedApp struct {
	name    string // the target's container name
	caddy   string // Caddy's address on the host, for the target
	control string // Caddy's address on the host, for the control
}

// runProxiedApp runs repo:latest as a target with labels (hookd.enable
// added), and as the control, behind a fresh Caddy on a fresh network.
func runProxiedApp(ctx context.Context, t *testing.T, cli *client.Client, reg *dockertest.Registry, repo string, labels map[string]string) proxiedApp {
	t.Helper()
	net := dockertest.CreateNetwork(ctx, t, cli)
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "sf", Labels: enabled(labels),
		Network: net, Aliases: []string{"app"}, RestartPolicy: "unless-stopped",
	})
	dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "control", Network: net, Aliases: []string{"control"},
	})
	c := reg.RunCaddy(ctx, t, cli, net, caddyfile(map[string]string{":8080": "app:8080", ":8081": "control:8080"}),
		dockertest.AppPort, "8081/tcp")
	return proxiedApp{name: name, caddy: c.Addrs[0], control: c.Addrs[1]}
}

var startFirst = map[string]string{deploy.LabelStrategy: containers.StartFirstName}

// TestIntegrationStartFirstThroughCaddy deploys a good version and then a
// broken one with start-first behind Caddy while a client sends 60
// requests a second through it: no request fails, none sent during the
// swap (from the passed gate to the old container's removal) takes longer
// than 300 ms, and the broken version never answers one; afterwards
// exactly one container carries the name, and it is the one on the alias.
//
// A machine busy with other work answers slowly at any time: the same
// load on a control app behind the same Caddy measures that; when it was
// slow during the swap too, the swap may take up to twice its slowest (a
// recreate's stall is a second or more while the control stays fast).
func TestIntegrationStartFirstThroughCaddy(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/startfirst"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	app := runProxiedApp(ctx, t, cli, reg, repo, startFirst)
	d := startDeployer(ctx, t, cli, rig{HealthTimeout: 5 * time.Second, SettleTime: time.Second})
	waitTarget(ctx, t, d.Deployer, app.name)
	waitVersion(ctx, t, app.caddy, "v1")

	load := dockertest.StartLoad("http://"+app.caddy+"/", 60)
	defer load.Stop()
	control := dockertest.StartLoad("http://"+app.control+"/", 60)
	defer control.Stop()
	time.Sleep(500 * time.Millisecond)

	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	from := time.Now()
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: app.name})
	time.Sleep(200 * time.Millisecond) // the last requests come back
	deployed := dockertest.Summarize(load.Answers(), from, time.Now())
	swapped := dockertest.Summarize(load.Answers(), j.HealthyAt, time.Now())
	noise := dockertest.Summarize(control.Answers(), j.HealthyAt, time.Now())
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("deploy v2 = %s %q, want succeeded", j.Status, j.Error)
	}
	waitVersion(ctx, t, app.caddy, "v2")

	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3-broken", Unhealthy: true})
	from = time.Now()
	j = deployOne(ctx, t, d.Deployer, deploy.Request{Target: app.name})
	if j.Status != deploy.StatusRolledBack || j.RollbackReason != deploy.ReasonUnhealthy {
		t.Fatalf("deploy v3 = %s %q (reason %q), want rolled_back, unhealthy", j.Status, j.Error, j.RollbackReason)
	}
	time.Sleep(300 * time.Millisecond)
	answers := load.Stop()
	rolledBack := dockertest.Summarize(answers, from, time.Now())
	t.Logf("through Caddy during the deploy: %s; during its swap: %s (the control meanwhile: %s)", deployed, swapped, noise)
	t.Logf("through Caddy during the rollback: %s", rolledBack)

	for _, s := range []struct {
		what string
		s    dockertest.LoadSummary
	}{{"deploy", deployed}, {"rollback", rolledBack}} {
		if s.s.Failed != 0 {
			t.Errorf("%s: %d of %d requests failed; first: %s", s.what, s.s.Failed, s.s.Requests, s.s.FirstFailure)
		}
		if s.s.PerSec < 50 {
			t.Errorf("%s: %.0f requests a second, want at least 50", s.what, s.s.PerSec)
		}
	}
	if limit := max(300*time.Millisecond, 2*noise.Slowest); swapped.Slowest > limit || swapped.Requests == 0 {
		t.Errorf("during the swap: %s; want answers, none slower than %v (the control meanwhile: slowest %v)", swapped, limit, noise.Slowest)
	}
	all := dockertest.Summarize(answers, time.Time{}, time.Now())
	if n := all.Bodies["v3-broken"]; n != 0 {
		t.Errorf("the broken version answered %d requests, want none", n)
	}
	if all.Bodies["v2"] == 0 {
		t.Errorf("no answer from v2 at all: %v", all.Bodies)
	}
	if left := containersNamed(ctx, t, cli, app.name); len(left) != 1 {
		t.Errorf("containers named %s* = %v, want %s alone", app.name, keys(left), app.name)
	}
	c := inspect(ctx, t, cli, app.name)
	for n, ep := range c.NetworkSettings.Networks {
		if !slices.Contains(ep.Aliases, "app") {
			t.Errorf("%s on %s has aliases %v, want app among them", app.name, n, ep.Aliases)
		}
	}
}

// TestIntegrationStartFirstRefused: start-first refuses, before anything is
// pulled or touched, a target whose ports or network two versions cannot
// both hold; the job ends refused with the reason.
func TestIntegrationStartFirstRefused(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	tests := []struct {
		name string
		opts func(t *testing.T) dockertest.ContainerOptions
		want string
	}{
		{"published port", func(t *testing.T) dockertest.ContainerOptions {
			return dockertest.ContainerOptions{Ports: map[string]string{dockertest.AppPort: ""}}
		}, "publishes host ports (8080/tcp → a random port on 127.0.0.1)"},
		{"host network", func(t *testing.T) dockertest.ContainerOptions {
			return dockertest.ContainerOptions{NetworkMode: "host", Env: []string{"TESTAPP_PORT=" + freePort(t)}}
		}, "network_mode: host"},
		{"shared namespace", func(t *testing.T) dockertest.ContainerOptions {
			_, holder := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref("hookd/refused-shared-namespace", "latest"), Name: "holder",
				Env: []string{"TESTAPP_PORT=9090"}, // the target serves on 8080 in the same namespace
			})
			return dockertest.ContainerOptions{NetworkMode: "container:" + holder}
		}, "network_mode: container: or service:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "hookd/refused-" + strings.ReplaceAll(tt.name, " ", "-")
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
			o := tt.opts(t)
			o.Image, o.Name, o.Labels = reg.Ref(repo, "latest"), "sfrefused", enabled(startFirst)
			id, name := dockertest.RunContainer(ctx, t, cli, o)
			d := startDeployer(ctx, t, cli, rig{})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
			reg.ResetRequests()
			j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
			if j.Status != deploy.StatusRefused || !strings.Contains(j.Error, tt.want) || !strings.Contains(j.Error, "recreate") {
				t.Fatalf("job = %s %q, want refused naming %q and the recreate strategy", j.Status, j.Error, tt.want)
			}
			if c := inspect(ctx, t, cli, name); c.ID != id || !c.State.Running {
				t.Errorf("after the refusal, %s is %s running %v, want the old %s running", name, containers.ShortID(c.ID), c.State.Running, containers.ShortID(id))
			}
			if left := containersNamed(ctx, t, cli, name); len(left) != 1 {
				t.Errorf("containers named %s* = %v, want %s alone", name, keys(left), name)
			}
			for _, r := range reg.Requests() {
				if strings.Contains(r.Path, "/manifests/") {
					t.Errorf("the engine asked the registry %s %s; a refusal must come before the pull", r.Method, r.Path)
					break
				}
			}
		})
	}
}

// containerAddr returns "ip:8080" of the named container on its first
// network: hookd and the tests run on the host, which reaches them all.
func containerAddr(ctx context.Context, t *testing.T, cli *client.Client, name string) string {
	t.Helper()
	c := inspect(ctx, t, cli, name)
	for _, n := range sortedKeys(networkNames(c.NetworkSettings.Networks)) {
		if ip := c.NetworkSettings.Networks[n].IPAddress; ip != "" {
			return ip + ":8080"
		}
	}
	t.Fatalf("%s has no address", name)
	return ""
}

func networkNames[V any](m map[string]V) map[string]string {
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = k
	}
	return out
}

// TestIntegrationStartFirstCrashReconciles kills the worker (as if hookd
// died) at each step of a start-first swap, then checks that a fresh
// deployer's reconcile leaves exactly one running container under the name
// and none of the temporary ones, and that the interrupted job ends where
// it should: redone when it was stopped before the old container was
// retired, finished when it was retiring it.
func TestIntegrationStartFirstCrashReconciles(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	tests := []struct {
		point       string // a journal phase (crash after its step) or phase+":journal" (before it)
		unhealthy   bool
		loseJournal bool
		want        deploy.Status
	}{
		{point: containers.PhaseSFCreate + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseSFCreate, want: deploy.StatusSucceeded},
		{point: containers.PhaseSFStart, want: deploy.StatusSucceeded},
		{point: containers.PhaseSFGate + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseSFPromote + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseSFPromote, want: deploy.StatusSucceeded},
		{point: containers.PhaseSFRetire + ":journal", want: deploy.StatusSucceeded},
		{point: containers.PhaseSFRetire, want: deploy.StatusSucceeded},
		{point: containers.PhaseSFAbort + ":journal", unhealthy: true, want: deploy.StatusRolledBack},
		{point: containers.PhaseSFAbort, unhealthy: true, want: deploy.StatusRolledBack},
		{point: containers.PhaseSFGate + ":journal", loseJournal: true},
		{point: containers.PhaseSFPromote, loseJournal: true},
	}
	for _, tt := range tests {
		name := tt.point
		if tt.loseJournal {
			name += "/journal lost"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			repo := "hookd/sfcrash-" + strings.NewReplacer(":", "-", "_", "-").Replace(tt.point)
			if tt.loseJournal {
				repo += "-lost"
			}
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
			net := dockertest.CreateNetwork(ctx, t, cli)
			_, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "sfcrash", Labels: enabled(startFirst),
				Network: net, Aliases: []string{"app"}, RestartPolicy: "unless-stopped",
			})
			state := newMemState(100)
			crashing := &crashingState{memState: state, point: tt.point, crashed: make(chan struct{})}
			cfg := rig{State: crashing, SettleTime: 500 * time.Millisecond, HealthTimeout: 5 * time.Second}
			d1 := startDeployer(ctx, t, cli, cfg)
			waitTarget(ctx, t, d1.Deployer, target)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", Unhealthy: tt.unhealthy})
			jobs, err := d1.Submit(ctx, deploy.Request{Target: target, Trigger: deploy.TriggerManual})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			select {
			case <-crashing.crashed:
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
			if err := cfg.deployer(t, cli).reconcile(ctx); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			left := containersNamed(ctx, t, cli, target)
			if c, ok := left[target]; !ok || c.State != "running" || len(left) != 1 {
				t.Fatalf("after reconcile: containers %v, %s running %v; want %s alone, running", keys(left), target, c.State, target)
			}
			// Until the old one was being retired, it stays; from then on
			// the new one does.
			settled := "v1"
			if strings.HasPrefix(tt.point, containers.PhaseSFRetire) && !tt.loseJournal {
				settled = "v2"
			}
			waitVersion(ctx, t, containerAddr(ctx, t, cli, target), settled)
			if tt.loseJournal {
				return
			}

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
			waitVersion(ctx, t, containerAddr(ctx, t, cli, target), want)
			if left := containersNamed(ctx, t, cli, target); len(left) != 1 {
				t.Errorf("containers named %s* = %v, want %s alone", target, keys(left), target)
			}
		})
	}
}

// TestIntegrationStartFirstShutdownDuringGate: hookd shutting down while
// the new version is gated removes it, leaves the old one serving
// untouched, and keeps the job queued for the next start.
func TestIntegrationStartFirstShutdownDuringGate(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/sfshutdown"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	net := dockertest.CreateNetwork(ctx, t, cli)
	oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "sfshut", Labels: enabled(startFirst), Network: net, Aliases: []string{"app"},
	})
	state := newMemState(10)
	d := startDeployer(ctx, t, cli, rig{State: state, HealthTimeout: 30 * time.Second})
	waitTarget(ctx, t, d.Deployer, name)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", SlowStart: 20 * time.Second})
	jobs, err := d.Submit(ctx, deploy.Request{Target: name, Trigger: deploy.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, time.Minute, name+".hookd-new running", func() (bool, string) {
		c, err := cli.ContainerInspect(ctx, name+deploy.SuffixNew)
		return err == nil && c.State.Running, fmt.Sprint(err)
	})
	d.stop()
	j, err := state.Job(ctx, jobs[0].ID)
	if err != nil || j.Status != deploy.StatusQueued {
		t.Errorf("job after shutdown = %s %q, %v; want queued", j.Status, j.Error, err)
	}
	if left := containersNamed(ctx, t, cli, name); len(left) != 1 {
		t.Errorf("containers named %s* = %v, want %s alone", name, keys(left), name)
	}
	if c := inspect(ctx, t, cli, name); c.ID != oldID || !c.State.Running {
		t.Errorf("%s = %s running %v, want the old one running", name, containers.ShortID(c.ID), c.State.Running)
	}
	if steps, _ := state.Steps(ctx); len(steps) != 0 {
		t.Errorf("journal after shutdown = %+v, want empty", steps)
	}
}

// TestIntegrationStartFirstDrain deploys with hookd.drain=2s: the old
// container keeps running for at least that long after the new one took the
// target's name (and aliases) before it gets its stop signal, and is gone
// once the job ends.
func TestIntegrationStartFirstDrain(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/sfdrain"
	const drain = 2 * time.Second
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	net := dockertest.CreateNetwork(ctx, t, cli)
	labels := map[string]string{deploy.LabelStrategy: containers.StartFirstName, deploy.LabelDrain: drain.String()}
	oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "sfdrain", Labels: enabled(labels), Network: net, Aliases: []string{"app"},
	})
	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, name)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	msgs, errs := cli.Events(evCtx, events.ListOptions{Filters: filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))})
	jobs, err := d.Submit(ctx, deploy.Request{Target: name, Trigger: deploy.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}
	j, err := d.WaitJob(ctx, jobs[0].ID)
	if err != nil || j.Status != deploy.StatusSucceeded {
		t.Fatalf("job = %s %q, %v; want succeeded", j.Status, j.Error, err)
	}
	// renamed: the new container took the name; stopped: the old one got
	// its stop signal (kill) or died.
	var renamed, stopped time.Time
	for stopped.IsZero() {
		select {
		case m := <-msgs:
			switch {
			case m.Action == events.ActionRename && m.Actor.Attributes["name"] == name && m.Actor.ID != oldID:
				renamed = time.Unix(0, m.TimeNano)
			case m.Actor.ID == oldID && (m.Action == events.ActionKill || m.Action == events.ActionDie):
				stopped = time.Unix(0, m.TimeNano)
			}
		case err := <-errs:
			t.Fatalf("events: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("no stop of the old container among the events (renamed at %v)", renamed)
		}
	}
	if renamed.IsZero() {
		t.Fatal("the new container never took the target's name before the old one stopped")
	}
	if gap := stopped.Sub(renamed); gap < drain {
		t.Errorf("the old container got its stop signal %v after the new one took the name, want at least %v (hookd.drain)", gap, drain)
	} else {
		t.Logf("the old container served %v next to the new one", gap.Round(time.Millisecond))
	}
	if left := containersNamed(ctx, t, cli, name); len(left) != 1 {
		t.Errorf("containers named %s* = %v, want %s alone", name, keys(left), name)
	}
	if c := inspect(ctx, t, cli, name); c.ID == oldID || !c.State.Running {
		t.Errorf("%s = %s running %v, want the new one running", name, containers.ShortID(c.ID), c.State.Running)
	}
}

// TestIntegrationStartFirstRestartsDependents: a container that asked to be
// restarted when the target is redeployed (hookd.depends-on, as Compose's
// depends_on with restart: true) is restarted, gated, once the start-first
// swap is done: the same container, started anew, and the job says so.
func TestIntegrationStartFirstRestartsDependents(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo, workerRepo = "hookd/sfdeps", "hookd/sfdeps-worker"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	reg.PushApp(ctx, t, workerRepo, "latest", dockertest.App{Version: "w1"})
	net := dockertest.CreateNetwork(ctx, t, cli)
	oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "sfdeps", Labels: enabled(startFirst), Network: net, Aliases: []string{"app"},
	})
	workerID, worker := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(workerRepo, "latest"), Name: "sfworker", Network: net,
		Labels: enabled(map[string]string{deploy.LabelDependsOn: name}),
	})
	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, name)
	waitTarget(ctx, t, d.Deployer, worker)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	started := inspect(ctx, t, cli, worker).State.StartedAt
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("deploy = %s %q, want succeeded", j.Status, j.Error)
	}
	if c := inspect(ctx, t, cli, worker); c.ID != workerID || c.State.StartedAt == started || !c.State.Running {
		t.Errorf("%s = %s started %s (was %s) running %v, want the same container restarted", worker, containers.ShortID(c.ID), c.State.StartedAt, started, c.State.Running)
	}
	if !slices.ContainsFunc(j.Notes, func(n string) bool { return strings.Contains(n, "restarted "+worker) }) {
		t.Errorf("job notes = %q, want one saying %s was restarted", j.Notes, worker)
	}
	if c := inspect(ctx, t, cli, name); c.ID == oldID || !c.State.Running {
		t.Errorf("%s = %s running %v, want the new version running", name, containers.ShortID(c.ID), c.State.Running)
	}
}
