package deployer

import (
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// strategies are the container strategies the probe serves.
var strategies = []string{containers.Name, containers.StartFirstName}

// TestIntegrationProbe deploys images without a HEALTHCHECK (and one with)
// gated by hookd.probe, with both strategies: the gate opens only once the
// probe passed twice in a row; a probe that keeps failing rolls back with
// its last error in the job; a HEALTHCHECK and a probe must both pass.
// hookd runs on the host here and reaches the container on its user-defined
// network, which publishes no port.
func TestIntegrationProbe(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	noHC := func(a dockertest.App) dockertest.App { a.NoHealthcheck = true; return a }
	tests := []struct {
		name    string
		app     dockertest.App // v2
		labels  map[string]string
		want    deploy.Status
		detail  string        // in the rollback detail
		minGate time.Duration // the gate took at least this long
	}{
		{name: "http passes once ready", app: noHC(dockertest.App{SlowStart: 2 * time.Second}),
			labels: map[string]string{deploy.LabelProbe: "http://:8080/healthz", deploy.LabelProbeInterval: "250ms"},
			want:   deploy.StatusSucceeded, minGate: 2 * time.Second},
		{name: "http never ready", app: noHC(dockertest.App{SlowStart: time.Hour}),
			labels: map[string]string{deploy.LabelProbe: "http://:8080/healthz"},
			want:   deploy.StatusRolledBack, detail: "/healthz: status 503: starting"},
		{name: "http wrong status", app: noHC(dockertest.App{}),
			labels: map[string]string{deploy.LabelProbe: "http://:8080/healthz", deploy.LabelProbeExpect: "204"},
			want:   deploy.StatusRolledBack, detail: "status 200"},
		{name: "tcp passes", app: noHC(dockertest.App{}),
			labels: map[string]string{deploy.LabelProbe: "tcp://:8080", deploy.LabelProbeSuccesses: "3"},
			want:   deploy.StatusSucceeded},
		{name: "tcp refused", app: noHC(dockertest.App{}),
			labels: map[string]string{deploy.LabelProbe: "tcp://:9"},
			want:   deploy.StatusRolledBack, detail: "connection refused"},
		{name: "healthy but probe fails", app: dockertest.App{},
			labels: map[string]string{deploy.LabelProbe: "http://:8080/missing"},
			want:   deploy.StatusRolledBack, detail: "/missing: status 404"},
		{name: "probe passes but unhealthy", app: dockertest.App{Unhealthy: true},
			labels: map[string]string{deploy.LabelProbe: "http://:8080/healthz"},
			want:   deploy.StatusRolledBack, detail: "configured unhealthy"},
	}
	for _, strat := range strategies {
		for _, tt := range tests {
			t.Run(strat+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				repo := "hookd/probe-" + strat + "-" + strings.ReplaceAll(tt.name, " ", "-")
				reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1", NoHealthcheck: true})
				labels := map[string]string{deploy.LabelStrategy: strat}
				for k, v := range tt.labels {
					labels[k] = v
				}
				net := dockertest.CreateNetwork(ctx, t, cli)
				_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
					Image: reg.Ref(repo, "latest"), Name: "probe", Labels: enabled(labels), Network: net,
				})
				d := startDeployer(ctx, t, cli, rig{HealthTimeout: 6 * time.Second, SettleTime: 500 * time.Millisecond})
				waitTarget(ctx, t, d.Deployer, name)
				app := tt.app
				app.Version = "v2"
				reg.PushApp(ctx, t, repo, "latest", app)

				j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
				if j.Status != tt.want {
					t.Fatalf("job = %s %q (rollback %q: %q), want %s", j.Status, j.Error, j.RollbackReason, j.RollbackDetail, tt.want)
				}
				if !strings.Contains(j.RollbackDetail, tt.detail) {
					t.Errorf("rollback detail = %q, want it to contain %q", j.RollbackDetail, tt.detail)
				}
				if gate := time.Duration(j.Phases["health"] * float64(time.Second)); gate < tt.minGate {
					t.Errorf("health gate took %v, want at least %v (until the app is ready)", gate, tt.minGate)
				}
				want := "v2"
				if tt.want == deploy.StatusRolledBack {
					want = "v1"
				}
				waitVersion(ctx, t, containerAddr(ctx, t, cli, name), want)
			})
		}
	}
}

// TestIntegrationProbeUnreachable: when hookd cannot reach the container
// to probe it, the job fails before anything is touched, with an error
// that names the fix. hookd in a container reaches only the networks its
// container is attached to (a stand-in container plays hookd's own here:
// the selection is what is tested; TestImageProbeNetworks in cmd/hookd
// runs the real image); once it joins the target's network, the deploy
// goes through.
func TestIntegrationProbeUnreachable(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	for _, strat := range strategies {
		t.Run(strat+"/no network", func(t *testing.T) {
			t.Parallel()
			repo := "hookd/unreachable-none-" + strat
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1", NoHealthcheck: true})
			id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "unreach", NetworkMode: "none",
				Labels: enabled(map[string]string{deploy.LabelStrategy: strat, deploy.LabelProbe: "tcp://:8080"}),
			})
			d := startDeployer(ctx, t, cli, rig{})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", NoHealthcheck: true})
			j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
			if j.Status != deploy.StatusFailed || !strings.Contains(j.Error, "no network address (network_mode none)") ||
				!strings.Contains(j.Error, "nothing was changed") {
				t.Errorf("job = %s %q, want failed: no network address, nothing changed", j.Status, j.Error)
			}
			if c := inspect(ctx, t, cli, name); c.ID != id || !c.State.Running {
				t.Errorf("%s is %s, running %v; want the old one untouched", name, containers.ShortID(c.ID), c.State.Running)
			}
		})
		t.Run(strat+"/hookd on another network", func(t *testing.T) {
			t.Parallel()
			repo := "hookd/unreachable-net-" + strat
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1", NoHealthcheck: true})
			hookdNet, appNet := dockertest.CreateNetwork(ctx, t, cli), dockertest.CreateNetwork(ctx, t, cli)
			selfID, _ := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "fakehookd", Network: hookdNet,
			})
			id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "unreach", Network: appNet,
				Labels: enabled(map[string]string{deploy.LabelStrategy: strat, deploy.LabelProbe: "http://:8080/healthz"}),
			})
			d := startDeployer(ctx, t, cli, rig{SelfID: selfID})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", NoHealthcheck: true})
			j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
			for _, want := range []string{"hookd's container shares no network with it (it is on " + appNet + ")",
				"docker network connect " + appNet, "nothing was changed"} {
				if j.Status != deploy.StatusFailed || !strings.Contains(j.Error, want) {
					t.Errorf("job = %s %q, want failed naming %q", j.Status, j.Error, want)
				}
			}
			if c := inspect(ctx, t, cli, name); c.ID != id || !c.State.Running {
				t.Errorf("%s is %s, running %v; want the old one untouched", name, containers.ShortID(c.ID), c.State.Running)
			}
			if err := cli.NetworkConnect(ctx, appNet, selfID, &network.EndpointSettings{}); err != nil {
				t.Fatal(err)
			}
			if j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name}); j.Status != deploy.StatusSucceeded {
				t.Errorf("once hookd shares the network: job = %s %q, want succeeded", j.Status, j.Error)
			}
			waitVersion(ctx, t, containerAddr(ctx, t, cli, name), "v2")
		})
	}
}

// TestIntegrationProbeSharedNetworks: hookd on the host probes a recreate
// target on the host's network at 127.0.0.1, one on an internal network
// (no way out, but the host reaches it), and one in another container's
// namespace at that container's address.
func TestIntegrationProbeSharedNetworks(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	tests := []struct {
		name string
		opts func(t *testing.T, image string) (dockertest.ContainerOptions, string)
	}{
		{"host", func(t *testing.T, image string) (dockertest.ContainerOptions, string) {
			port := freePort(t)
			return dockertest.ContainerOptions{NetworkMode: "host", Env: []string{"TESTAPP_PORT=" + port}}, "http://:" + port + "/healthz"
		}},
		{"internal", func(t *testing.T, image string) (dockertest.ContainerOptions, string) {
			net := "hookd-test-internal-" + strings.ReplaceAll(dockertest.LabelValue(t)[:8], "-", "")
			if _, err := cli.NetworkCreate(ctx, net, network.CreateOptions{Internal: true, Labels: dockertest.Labels(t, nil)}); err != nil {
				t.Fatal(err)
			}
			return dockertest.ContainerOptions{Network: net}, "http://:8080/healthz"
		}},
		{"container", func(t *testing.T, image string) (dockertest.ContainerOptions, string) {
			net := dockertest.CreateNetwork(ctx, t, cli)
			_, holder := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: image, Name: "holder", Network: net, Env: []string{"TESTAPP_PORT=9090"},
			})
			return dockertest.ContainerOptions{NetworkMode: "container:" + holder}, "http://:8080/healthz"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "hookd/probe-mode-" + tt.name
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1", NoHealthcheck: true})
			o, probe := tt.opts(t, reg.Ref(repo, "latest"))
			o.Image, o.Name = reg.Ref(repo, "latest"), "probemode"
			o.Labels = enabled(map[string]string{deploy.LabelProbe: probe})
			_, name := dockertest.RunContainer(ctx, t, cli, o)
			d := startDeployer(ctx, t, cli, rig{HealthTimeout: 6 * time.Second, SettleTime: 500 * time.Millisecond})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", NoHealthcheck: true, SlowStart: time.Second})
			j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
			if j.Status != deploy.StatusSucceeded {
				t.Fatalf("job = %s %q (%s: %s), want succeeded", j.Status, j.Error, j.RollbackReason, j.RollbackDetail)
			}
			if gate := time.Duration(j.Phases["health"] * float64(time.Second)); gate < time.Second {
				t.Errorf("health gate took %v, want at least the app's 1s to get ready", gate)
			}
		})
	}
}
