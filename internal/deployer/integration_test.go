package deployer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// Integration tests: a real engine and the rig's in-process registry.
// Every deployer here is scoped (LabelFilter) to the test's own containers,
// because the engine is shared with other tests running at the same time.

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

type runningDeployer struct {
	*Deployer
	metrics *metrics.Metrics
	stop    func() // cancels Run and waits for it to return
}

// startDeployer runs a Deployer scoped to t's containers and waits until it
// is ready.
func startDeployer(ctx context.Context, t *testing.T, cli *client.Client, cfg rig) runningDeployer {
	t.Helper()
	if cfg.LabelFilter == "" {
		cfg.LabelFilter = dockertest.LabelKey + "=" + dockertest.LabelValue(t)
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = 15 * time.Second
	}
	if cfg.SettleTime == 0 {
		cfg.SettleTime = time.Second
	}
	if cfg.Keychain == nil {
		cfg.Keychain = staticKeychain{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	d := cfg.deployer(t, cli)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil after cancel", err)
		}
	}
	t.Cleanup(stop)
	dockertest.WaitFor(t, 20*time.Second, "deployer ready", func() (bool, string) {
		err := d.Ready(ctx)
		return err == nil, fmt.Sprint(err)
	})
	return runningDeployer{Deployer: d, metrics: cfg.Metrics, stop: stop}
}

func waitTarget(ctx context.Context, t *testing.T, d *Deployer, name string) deploy.Target {
	t.Helper()
	var got deploy.Target
	dockertest.WaitFor(t, 10*time.Second, "target "+name, func() (bool, string) {
		for _, tg := range d.Targets() {
			if tg.Name == name {
				got = tg
				return true, ""
			}
		}
		return false, fmt.Sprintf("targets = %v", d.Targets())
	})
	return got
}

// deployOne submits req, expects exactly one job and waits for it.
func deployOne(ctx context.Context, t *testing.T, d *Deployer, req deploy.Request) deploy.Job {
	t.Helper()
	if req.Trigger == "" {
		req.Trigger = deploy.TriggerManual
	}
	jobs, err := d.Submit(ctx, req)
	if err != nil {
		t.Fatalf("Submit(%+v) error = %v", req, err)
	}
	if len(jobs) != 1 {
		t.Fatalf("Submit(%+v) = %d jobs, want 1", req, len(jobs))
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	j, err := d.WaitJob(wctx, jobs[0].ID)
	if err != nil {
		t.Fatalf("WaitJob(%s) error = %v (job %+v)", jobs[0].ID, err, j)
	}
	return j
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func httpGet(ctx context.Context, url string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return strings.TrimSpace(string(b)), resp.StatusCode, err
}

func httpPut(ctx context.Context, t *testing.T, url, body string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT %s: status %d", url, resp.StatusCode)
	}
}

func inspect(ctx context.Context, t *testing.T, cli *client.Client, nameOrID string) container.InspectResponse {
	t.Helper()
	c, err := cli.ContainerInspect(ctx, nameOrID)
	if err != nil {
		t.Fatalf("inspect %s: %v", nameOrID, err)
	}
	return c
}

// containersNamed lists the test's containers whose name starts with base.
func containersNamed(ctx context.Context, t *testing.T, cli *client.Client, base string) map[string]container.Summary {
	t.Helper()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", dockertest.LabelKey+"="+dockertest.LabelValue(t)))})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	out := map[string]container.Summary{}
	for _, c := range list {
		for _, n := range c.Names {
			n = strings.TrimPrefix(n, "/")
			if n == base || strings.HasPrefix(n, base+".hookd-") {
				out[n] = c
			}
		}
	}
	return out
}

func enabled(extra map[string]string) map[string]string {
	l := map[string]string{deploy.LabelEnable: "true"}
	for k, v := range extra {
		l[k] = v
	}
	return l
}

func TestIntegrationDeployCarriesEverythingOver(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/carry"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{
		Version: "v1",
		Env:     []string{"GREETING=hello", "MODE=prod"},
		Labels:  map[string]string{"img.version": "one", "img.kept": "same"},
		Volumes: []string{"/data"},
	})
	netA := dockertest.CreateNetwork(ctx, t, cli)
	netB := dockertest.CreateNetwork(ctx, t, cli)
	vol := dockertest.CreateVolume(ctx, t, cli)
	port := freePort(t)
	oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image:         reg.Ref(repo, "latest"),
		Name:          "carry",
		Labels:        enabled(map[string]string{"user.label": "mine", "com.docker.compose.service": "carry"}),
		Env:           []string{"USER_VAR=u1", "MODE=dev"},
		Ports:         map[string]string{dockertest.AppPort: port},
		Volumes:       []string{vol + ":/named"},
		Network:       netA,
		Aliases:       []string{"svc-a"},
		RestartPolicy: "unless-stopped",
		Customize: func(c *container.Config, hc *container.HostConfig, _ *network.NetworkingConfig) {
			stop := 7
			c.StopTimeout = &stop
			hc.ExtraHosts = []string{"example.internal:10.1.2.3"}
			hc.Resources.Memory = 128 << 20
		},
	})
	if err := cli.NetworkConnect(ctx, netB, oldID, &network.EndpointSettings{Aliases: []string{"svc-b"}}); err != nil {
		t.Fatalf("connect %s: %v", netB, err)
	}
	addr := "127.0.0.1:" + port
	httpPut(ctx, t, "http://"+addr+"/file?path=/data/anon.txt", "anonymous data")
	httpPut(ctx, t, "http://"+addr+"/file?path=/named/named.txt", "named data")

	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, name)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{
		Version: "v2",
		Env:     []string{"GREETING=bonjour", "MODE=prod2"},
		Labels:  map[string]string{"img.version": "two", "img.kept": "same"},
		Volumes: []string{"/data"},
		Cmd:     []string{"/app", "serve", "from-v2"},
	})

	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/" + repo, Tag: "latest", Trigger: deploy.TriggerWebhook, ID: "delivery-1"})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("job status = %s (error %q), want succeeded", j.Status, j.Error)
	}
	if j.DigestAfter == "" || j.DigestAfter == j.DigestBefore {
		t.Errorf("job digests before, after = %q, %q, want two different digests", j.DigestBefore, j.DigestAfter)
	}
	for _, p := range []string{"pull", "swap", "health"} {
		if _, ok := j.Phases[p]; !ok {
			t.Errorf("job phases = %v, want %q among them", j.Phases, p)
		}
	}

	if v, err := dockertest.Version(ctx, addr); err != nil || v != "v2" {
		t.Errorf("service on %s answers %q, %v, want v2", addr, v, err)
	}
	c := inspect(ctx, t, cli, name)
	if c.ID == oldID {
		t.Fatalf("container id unchanged after deploy")
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"label user.label", c.Config.Labels["user.label"], "mine"},
		{"label com.docker.compose.service", c.Config.Labels["com.docker.compose.service"], "carry"},
		{"label img.version (image default)", c.Config.Labels["img.version"], "two"},
		{"label hookd.enable", c.Config.Labels[deploy.LabelEnable], "true"},
		{"restart policy", string(c.HostConfig.RestartPolicy.Name), "unless-stopped"},
		{"stop timeout", fmt.Sprint(derefInt(c.Config.StopTimeout)), "7"},
		{"extra hosts", fmt.Sprint(c.HostConfig.ExtraHosts), "[example.internal:10.1.2.3]"},
		{"memory", c.HostConfig.Memory, int64(128 << 20)},
		{"cmd (image default)", fmt.Sprint(c.Config.Cmd), "[/app serve from-v2]"},
		{"port binding", fmt.Sprint(c.HostConfig.PortBindings["8080/tcp"]), "[{127.0.0.1 " + port + "}]"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	for name, want := range map[string]string{"USER_VAR": "u1", "MODE": "dev", "GREETING": "bonjour"} {
		got, _, err := httpGet(ctx, "http://"+addr+"/env?name="+name)
		if err != nil || got != want {
			t.Errorf("env %s = %q, %v, want %q", name, got, err, want)
		}
	}
	for path, want := range map[string]string{"/data/anon.txt": "anonymous data", "/named/named.txt": "named data"} {
		got, _, err := httpGet(ctx, "http://"+addr+"/file?path="+path)
		if err != nil || got != want {
			t.Errorf("file %s = %q, %v, want %q (volume data must survive)", path, got, err, want)
		}
	}
	for netName, alias := range map[string]string{netA: "svc-a", netB: "svc-b"} {
		ep := c.NetworkSettings.Networks[netName]
		if ep == nil || !slices.Contains(ep.Aliases, alias) {
			t.Errorf("network %s endpoint = %+v, want alias %s", netName, ep, alias)
			continue
		}
		if slices.Contains(ep.Aliases, oldID[:12]) {
			t.Errorf("network %s aliases = %v, want the old short id gone", netName, ep.Aliases)
		}
	}
	if left := containersNamed(ctx, t, cli, name); len(left) != 1 {
		t.Errorf("containers named %s* = %v, want only %s", name, keys(left), name)
	}
	if got := testutilCounter(d.metrics.Deploys, name, "webhook", "succeeded"); got != 1 {
		t.Errorf("deploys{succeeded} = %v, want 1", got)
	}
	if got := testutilGauge(d.metrics.LastSuccessfulDeploy, name); got <= 0 {
		t.Errorf("last successful deploy = %v, want a timestamp", got)
	}
	tg := waitTarget(ctx, t, d.Deployer, name)
	if tg.ID != c.ID {
		t.Errorf("target id = %s, want the new container %s", containers.ShortID(tg.ID), containers.ShortID(c.ID))
	}
}

func derefInt(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestIntegrationUpToDate(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/same"
	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "same", Labels: enabled(nil),
	})
	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, name)

	tests := []struct {
		name string
		req  deploy.Request
	}{
		{"by digest, no pull", deploy.Request{Repository: reg.Host + "/" + repo, Digest: digest}},
		{"by tag after pull", deploy.Request{Repository: reg.Host + "/" + repo}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.ResetRequests()
			j := deployOne(ctx, t, d.Deployer, tt.req)
			if j.Status != deploy.StatusUpToDate {
				t.Errorf("job status = %s (error %q), want up_to_date", j.Status, j.Error)
			}
			if got := inspect(ctx, t, cli, name).ID; got != id {
				t.Errorf("container id = %s, want unchanged %s", containers.ShortID(got), containers.ShortID(id))
			}
			pulled := false
			for _, r := range reg.Requests() {
				if strings.Contains(r.Path, "/manifests/") {
					pulled = true
				}
			}
			if want := tt.req.Digest == ""; pulled != want {
				t.Errorf("registry manifest requests seen = %v, want %v", pulled, want)
			}
		})
	}

	t.Run("force recreates", func(t *testing.T) {
		j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name, Force: true})
		if j.Status != deploy.StatusSucceeded {
			t.Errorf("forced job status = %s (error %q), want succeeded", j.Status, j.Error)
		}
		if got := inspect(ctx, t, cli, name).ID; got == id {
			t.Errorf("container id unchanged after a forced deploy")
		}
	})
}

func TestIntegrationAttestationOnlyChangeIsUpToDate(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/attest"
	first := reg.PushIndex(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "attest", Labels: enabled(nil),
	})
	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, name)

	// The rig rebuilds images on every push (new created time), so the
	// rebuild with only new attestations is made here from the pushed index.
	second := addAttestations(ctx, t, reg.Ref(repo, "latest"))
	if first == second {
		t.Fatalf("index digest unchanged by attestations; the test proves nothing")
	}
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/" + repo, Digest: second})
	if j.Status != deploy.StatusUpToDate {
		t.Errorf("job status = %s (error %q), want up_to_date: the platform image did not change", j.Status, j.Error)
	}
	if got := inspect(ctx, t, cli, name).ID; got != id {
		t.Errorf("container id = %s, want unchanged", containers.ShortID(got))
	}
}

func TestIntegrationRollback(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	tests := []struct {
		name       string
		app        dockertest.App
		reason     string
		detailWant string
		// what the job records of the failed version
		exitCode *int
		health   string
		log      string
	}{
		{"unhealthy", dockertest.App{Version: "v3", Unhealthy: true}, deploy.ReasonUnhealthy, "unhealthy", nil, "configured unhealthy", "testapp v3 serving"},
		{"crashing", dockertest.App{Version: "v3", Crash: true}, deploy.ReasonExited, "exit code 3", ptr(3), "", "testapp crashing as configured"},
		{"never healthy", dockertest.App{Version: "v3", SlowStart: time.Minute}, deploy.ReasonTimeout, "not healthy within 3s", nil, "healthz answered 503", "testapp v3 serving"},
		// An image whose default command does not exist: the engine creates
		// the container but cannot start it.
		{"start fails", dockertest.App{Version: "v3", Cmd: []string{"/no-such-binary"}}, deploy.ReasonStartFailed, "/no-such-binary", ptr(127), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "hookd/rollback-" + strings.ReplaceAll(tt.name, " ", "-")
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
			oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, "latest"), Name: "rb", Labels: enabled(nil),
				Ports: map[string]string{dockertest.AppPort: ""}, RestartPolicy: "always",
			})
			d := startDeployer(ctx, t, cli, rig{HealthTimeout: 3 * time.Second})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", tt.app)

			j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/" + repo})
			if j.Status != deploy.StatusRolledBack || j.RollbackReason != tt.reason {
				t.Fatalf("job status, reason = %s, %q (error %q), want rolled_back, %q", j.Status, j.RollbackReason, j.Error, tt.reason)
			}
			if !strings.Contains(j.RollbackDetail, tt.detailWant) {
				t.Errorf("rollback detail = %q, want it to contain %q", j.RollbackDetail, tt.detailWant)
			}
			waitVersion(ctx, t, dockertest.HostPort(ctx, t, cli, name), "v2")
			if got := inspect(ctx, t, cli, name).ID; got != oldID {
				t.Errorf("container under %s = %s, want the old one %s back", name, containers.ShortID(got), containers.ShortID(oldID))
			}
			// The failed version is gone (a kept container would carry the
			// service's Compose labels); what tells why is in the job.
			if left := containersNamed(ctx, t, cli, name); len(left) != 1 {
				t.Errorf("containers named %s* = %v, want %s only", name, keys(left), name)
			}
			if f := j.Failed; f == nil || f.Container != name || !sameExit(f.ExitCode, tt.exitCode) ||
				tt.health != "" && !strings.Contains(f.Health, tt.health) || tt.log != "" && !slices.ContainsFunc(f.Logs, func(l string) bool { return strings.Contains(l, tt.log) }) {
				t.Errorf("job.Failed = %s, want container %s, exit code %v, health output with %q, a log line with %q", describeFailed(f), name, tt.exitCode, tt.health, tt.log)
			}
			if got := testutilCounter(d.metrics.Rollbacks, name, tt.reason); got != 1 {
				t.Errorf("rollbacks{%s} = %v, want 1", tt.reason, got)
			}
		})
	}
}

// TestIntegrationRolledBackDigestRefused: once a digest was rolled back, a
// replayed webhook for it, or a poll or API request without a digest, is
// refused before anything is touched; a forced request tries it again.
func sameExit(got, want *int) bool {
	return got == nil && want == nil || got != nil && want != nil && *got == *want
}

func describeFailed(f *deploy.FailedVersion) string {
	if f == nil {
		return "nil"
	}
	code := "nil"
	if f.ExitCode != nil {
		code = fmt.Sprint(*f.ExitCode)
	}
	return fmt.Sprintf("{container %s, exit code %s, health %q, logs %q}", f.Container, code, f.Health, f.Logs)
}

func TestIntegrationRolledBackDigestRefused(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/refuse"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "refuse", Labels: enabled(nil),
		Ports: map[string]string{dockertest.AppPort: ""},
	})
	d := startDeployer(ctx, t, cli, rig{HealthTimeout: 3 * time.Second})
	waitTarget(ctx, t, d.Deployer, name)
	bad := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", Unhealthy: true})

	delivery := deploy.Request{Repository: reg.Host + "/" + repo, Digest: bad, Trigger: deploy.TriggerWebhook, ID: "delivery-1"}
	if j := deployOne(ctx, t, d.Deployer, delivery); j.Status != deploy.StatusRolledBack || j.DigestAfter != bad {
		t.Fatalf("first deploy = %s (digest %s), want rolled_back of %s", j.Status, j.DigestAfter, bad)
	}
	if tg := waitTarget(ctx, t, d.Deployer, name); tg.RolledBack != bad {
		t.Errorf("target rolled-back digest = %q, want %q", tg.RolledBack, bad)
	}

	for _, req := range []deploy.Request{
		delivery, // GitHub redelivers, or someone replays the signed delivery
		{Target: name, Trigger: deploy.TriggerManual},                    // no digest: found after the pull
		{Repository: reg.Host + "/" + repo, Trigger: deploy.TriggerPoll}, // likewise
	} {
		j := deployOne(ctx, t, d.Deployer, req)
		if j.Status != deploy.StatusRefused || !strings.Contains(j.Error, "rolled back") || !strings.Contains(j.Error, "force") {
			t.Errorf("%s request after the rollback = %s %q, want refused, saying it was rolled back and how to force it", req.Trigger, j.Status, j.Error)
		}
		if got := inspect(ctx, t, cli, name).ID; got != oldID {
			t.Fatalf("a refused request replaced the container: %s, want %s", containers.ShortID(got), containers.ShortID(oldID))
		}
	}
	if got := testutilCounter(d.metrics.Deploys, name, string(deploy.TriggerWebhook), string(deploy.StatusRefused)); got != 1 {
		t.Errorf("deploys{webhook, refused} = %v, want 1", got)
	}

	forced := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name, Force: true, Trigger: deploy.TriggerManual})
	if forced.Status != deploy.StatusRolledBack {
		t.Errorf("forced request = %s %q, want the swap tried again (and rolled back)", forced.Status, forced.Error)
	}
}

func testutilCounter(v *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(v.WithLabelValues(labels...))
}

func testutilGauge(v *prometheus.GaugeVec, labels ...string) float64 {
	return testutil.ToFloat64(v.WithLabelValues(labels...))
}

func TestIntegrationPullFailureLeavesTargetUntouched(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)

	tests := []struct {
		name    string
		bearer  bool
		breakIt func(reg *dockertest.Registry)
		tag     string
		kc      staticKeychain
		errWant string
	}{
		{name: "registry down", breakIt: func(r *dockertest.Registry) { r.Down() }, errWant: "connection refused"},
		{name: "tag missing", tag: "nope", errWant: "manifest unknown"}, // the registry's answer when the tag is resolved
		{name: "wrong credentials", bearer: true, kc: staticKeychain{"bot", "wrong"}, errWant: "unauthorized"},
		{name: "rate limited", breakIt: func(r *dockertest.Registry) { r.Fail(http.StatusTooManyRequests, "60") }, errWant: "toomanyrequests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reg *dockertest.Registry
			auth := ""
			if tt.bearer {
				reg = dockertest.NewRegistry(t, dockertest.WithBearerAuth("bot", "right"))
				auth = reg.RegistryAuth("bot", "right")
			} else {
				reg = dockertest.NewRegistry(t)
			}
			const repo = "hookd/pullfail"
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
			tag := "latest"
			if tt.tag != "" {
				// Follow a tag the registry does not have (any more).
				tag = tt.tag
				dockertest.Pull(ctx, t, cli, reg.Ref(repo, "latest"), auth)
				if err := cli.ImageTag(ctx, reg.Ref(repo, "latest"), reg.Ref(repo, tag)); err != nil {
					t.Fatal(err)
				}
			}
			id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: reg.Ref(repo, tag), Name: "pullfail", Labels: enabled(nil), RegistryAuth: auth,
				Ports: map[string]string{dockertest.AppPort: ""},
			})
			d := startDeployer(ctx, t, cli, rig{Keychain: tt.kc})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
			if tt.breakIt != nil {
				tt.breakIt(reg)
			}

			j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name, Trigger: deploy.TriggerPoll})
			if j.Status != deploy.StatusFailed || !strings.Contains(strings.ToLower(j.Error), tt.errWant) {
				t.Errorf("job status, error = %s, %q, want failed with %q", j.Status, j.Error, tt.errWant)
			}
			if strings.Contains(j.Error, "right") || strings.Contains(j.Error, "wrong") {
				t.Errorf("job error %q contains a password", j.Error)
			}
			c := inspect(ctx, t, cli, name)
			if c.ID != id || !c.State.Running {
				t.Errorf("container %s = %s running %v, want untouched %s running", name, containers.ShortID(c.ID), c.State.Running, containers.ShortID(id))
			}
			if v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name)); err != nil || v != "v1" {
				t.Errorf("service answers %q, %v, want v1", v, err)
			}
			if got := testutilCounter(d.metrics.Deploys, name, "poll", "failed"); got != 1 {
				t.Errorf("deploys{failed} = %v, want 1", got)
			}
		})
	}
}

func TestIntegrationBearerCredentialsFromKeychain(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t, dockertest.WithBearerAuth("bot", "right"))
	const repo = "hookd/private"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "private", Labels: enabled(nil),
		RegistryAuth: reg.RegistryAuth("bot", "right"), Ports: map[string]string{dockertest.AppPort: ""},
	})
	d := startDeployer(ctx, t, cli, rig{Keychain: staticKeychain{"bot", "right"}})
	waitTarget(ctx, t, d.Deployer, name)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("job status = %s (error %q), want succeeded", j.Status, j.Error)
	}
	if v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name)); err != nil || v != "v2" {
		t.Errorf("service answers %q, %v, want v2", v, err)
	}
}

func TestIntegrationCoalescesDuringSlowDeploy(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/slow"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "slow", Labels: enabled(nil),
	})
	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, name)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", SlowStart: 2 * time.Second})

	req := deploy.Request{Repository: reg.Host + "/" + repo, Trigger: deploy.TriggerWebhook}
	first, err := d.Submit(ctx, req)
	if err != nil || len(first) != 1 {
		t.Fatalf("Submit = %v, %v", first, err)
	}
	dockertest.WaitFor(t, 10*time.Second, "first job running", func() (bool, string) {
		j, _ := d.Job(ctx, first[0].ID)
		return j.Status == deploy.StatusRunning, string(j.Status)
	})
	ids := map[string]bool{first[0].ID: true}
	for i := range 19 {
		req.ID = fmt.Sprintf("delivery-%d", i)
		jobs, err := d.Submit(ctx, req)
		if err != nil || len(jobs) != 1 {
			t.Fatalf("Submit #%d = %v, %v", i+2, jobs, err)
		}
		ids[jobs[0].ID] = true
	}
	if len(ids) != 2 {
		t.Errorf("distinct jobs for 20 requests = %d, want 2 (one running, one waiting)", len(ids))
	}
	for id := range ids {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		j, err := d.WaitJob(wctx, id)
		cancel()
		if err != nil {
			t.Fatalf("WaitJob(%s): %v", id, err)
		}
		if id != first[0].ID && j.Request.ID != "delivery-18" {
			t.Errorf("coalesced job request id = %q, want the newest, delivery-18", j.Request.ID)
		}
	}
	jobs, _ := d.Jobs(ctx, deploy.JobFilter{Target: name})
	if len(jobs) != 2 {
		t.Errorf("jobs run for %s = %d, want at most 2", name, len(jobs))
	}
	deploys := 0.0
	for _, o := range []deploy.Status{deploy.StatusSucceeded, deploy.StatusUpToDate, deploy.StatusFailed, deploy.StatusRolledBack} {
		deploys += testutilCounter(d.metrics.Deploys, name, "webhook", string(o))
	}
	if deploys != 2 {
		t.Errorf("deploys counted = %v, want 2", deploys)
	}
}

func TestIntegrationUnlabelledUntouched(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/optin"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	plainID, plain := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "plain",
	})
	offID, off := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "off", Labels: map[string]string{deploy.LabelEnable: "false"},
	})
	_, on := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "on", Labels: enabled(nil),
	})
	d := startDeployer(ctx, t, cli, rig{})
	waitTarget(ctx, t, d.Deployer, on)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	jobs, err := d.Submit(ctx, deploy.Request{Repository: reg.Host + "/" + repo})
	if err != nil || len(jobs) != 1 || jobs[0].Target != on {
		t.Fatalf("Submit = %+v, %v, want one job for %s", jobs, err, on)
	}
	if j, err := d.WaitJob(ctx, jobs[0].ID); err != nil || j.Status != deploy.StatusSucceeded {
		t.Fatalf("job = %s %q, %v, want succeeded", j.Status, j.Error, err)
	}
	if _, err := d.Submit(ctx, deploy.Request{Target: plain}); err == nil {
		t.Errorf("Submit(target %s without label) error = nil, want ErrUnknownTarget", plain)
	}
	for n, id := range map[string]string{plain: plainID, off: offID} {
		c := inspect(ctx, t, cli, n)
		if c.ID != id || !c.State.Running {
			t.Errorf("unlabelled %s = %s running %v, want untouched", n, containers.ShortID(c.ID), c.State.Running)
		}
	}
}

func TestIntegrationRefusals(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/refuse"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})

	rmID, rm := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "autoremove", Labels: enabled(nil), AutoRemove: true,
	})
	selfID, self := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "self", Labels: enabled(nil),
	})
	hostID, host := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "nshost", Labels: enabled(nil),
	})
	// A sidecar in host's network namespace, like compose's network_mode: service:x.
	dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "sidecar", NetworkMode: "container:" + host,
		Cmd: []string{"/app", "health"}, RestartPolicy: "no",
	})
	d := startDeployer(ctx, t, cli, rig{SelfID: selfID[:12]})
	for _, n := range []string{rm, self, host} {
		waitTarget(ctx, t, d.Deployer, n)
	}
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	tests := []struct {
		target, id, want string
		status           deploy.Status
	}{
		{rm, rmID, "--rm", deploy.StatusFailed},
		{self, selfID, "cannot replace its own container", deploy.StatusFailed},
		// The sidecar is not labelled hookd.enable=true: hookd may not
		// recreate it to join the new container, so it refuses to cut it off.
		{host, hostID, "shares the namespace of", deploy.StatusRefused},
	}
	for _, tt := range tests {
		j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: tt.target})
		if j.Status != tt.status || !strings.Contains(j.Error, tt.want) {
			t.Errorf("deploy %s = %s %q, want %s with %q", tt.target, j.Status, j.Error, tt.status, tt.want)
		}
		if c := inspect(ctx, t, cli, tt.target); c.ID != tt.id || !c.State.Running {
			t.Errorf("%s = %s running %v, want untouched", tt.target, containers.ShortID(c.ID), c.State.Running)
		}
	}
}

// TestIntegrationNetworkModes deploys containers that are not on a bridge
// network: none; the host's, where the new container can bind its port only
// once the old one has stopped; and another container's namespace
// (network_mode container:NAME, a VPN sidecar's usual set-up), which the
// replacement must join to answer through the port the other container
// publishes.
func TestIntegrationNetworkModes(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	tests := []struct {
		name string
		// run starts the target on image and returns its name, the address
		// it answers on ("" when none can reach it) and the network modes
		// it may show afterwards.
		run func(t *testing.T, image string) (name, addr string, modes []string)
	}{
		{"none", func(t *testing.T, image string) (string, string, []string) {
			_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: image, Name: "nonet", Labels: enabled(nil), NetworkMode: "none",
			})
			return name, "", []string{"none"}
		}},
		{"host", func(t *testing.T, image string) (string, string, []string) {
			port := freePort(t)
			_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: image, Name: "hostnet", Labels: enabled(nil), NetworkMode: "host",
				Env: []string{"TESTAPP_PORT=" + port},
			})
			return name, "127.0.0.1:" + port, []string{"host"}
		}},
		{"container", func(t *testing.T, image string) (string, string, []string) {
			// The namespace's owner is not a target; it publishes the
			// app's port and serves on another one itself.
			holderID, holder := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: image, Name: "netholder",
				Ports: map[string]string{dockertest.AppPort: ""}, Env: []string{"TESTAPP_PORT=9090"},
			})
			_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
				Image: image, Name: "sharednet", Labels: enabled(nil), NetworkMode: "container:" + holder,
			})
			return name, dockertest.HostPort(ctx, t, cli, holder), []string{"container:" + holder, "container:" + holderID}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "hookd/netmode-" + tt.name
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
			name, addr, modes := tt.run(t, reg.Ref(repo, "latest"))
			if addr != "" {
				waitVersion(ctx, t, addr, "v1")
			}
			d := startDeployer(ctx, t, cli, rig{})
			waitTarget(ctx, t, d.Deployer, name)
			reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
			j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
			if j.Status != deploy.StatusSucceeded {
				t.Fatalf("job status = %s (error %q), want succeeded", j.Status, j.Error)
			}
			if addr != "" {
				waitVersion(ctx, t, addr, "v2")
			}
			if mode := string(inspect(ctx, t, cli, name).HostConfig.NetworkMode); !slices.Contains(modes, mode) {
				t.Errorf("network mode = %q, want %s", mode, modes[0])
			}
		})
	}
}

func TestIntegrationDiscoversTargetsStartedLater(t *testing.T) {
	ctx := testContext(t, time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/later"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	d := startDeployer(ctx, t, cli, rig{})
	if n := len(d.Targets()); n != 0 {
		t.Fatalf("targets before any container = %d, want 0", n)
	}
	id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "later", Labels: enabled(nil),
	})
	tg := waitTarget(ctx, t, d.Deployer, name)
	if tg.ID != id || tg.Image != reg.Host+"/"+repo || tg.Tag != "latest" || tg.Digest == "" {
		t.Errorf("target = %+v, want id %s, image %s, tag latest, a digest", tg, containers.ShortID(id), reg.Host+"/"+repo)
	}
	if err := cli.ContainerStop(ctx, id, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, 10*time.Second, "stopped target gone", func() (bool, string) {
		return len(d.Targets()) == 0, fmt.Sprint(d.Targets())
	})
}

// addAttestations re-pushes the index at ref with one in-toto attestation
// manifest per platform added, as a rebuild with new provenance would: the
// index digest changes, the platform images stay the same. It returns the
// new index digest. (A local helper: the rig's PushIndex always rebuilds.)
func addAttestations(ctx context.Context, t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("get index %s: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := idx
	for _, m := range im.Manifests {
		layer := static.NewLayer([]byte(`{"_type":"https://in-toto.io/Statement/v0.1","subject":[{"digest":{"sha256":"`+m.Digest.Hex+`"}}]}`),
			"application/vnd.in-toto+json")
		att, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			t.Fatal(err)
		}
		att, err = mutate.ConfigFile(att, &v1.ConfigFile{Architecture: "unknown", OS: "unknown", RootFS: v1.RootFS{Type: "layers"}})
		if err != nil {
			t.Fatal(err)
		}
		att = mutate.ConfigMediaType(mutate.MediaType(att, types.OCIManifestSchema1), types.OCIConfigJSON)
		out = mutate.AppendManifests(out, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{
				"vnd.docker.reference.type":   "attestation-manifest",
				"vnd.docker.reference.digest": m.Digest.String(),
			},
		}})
	}
	if err := remote.WriteIndex(r, out, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	dg, err := out.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg.String()
}

func TestIntegrationPruneImages(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/prune"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "prune", Labels: enabled(nil),
	})
	v1 := inspect(ctx, t, cli, id).Image
	// Another container still uses v1: it must never be pruned.
	dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{Image: v1, Name: "keeper"})
	d := startDeployer(ctx, t, cli, rig{PruneImages: true})
	waitTarget(ctx, t, d.Deployer, name)

	ids := map[string]string{"v1": v1}
	for _, v := range []string{"v2", "v3", "v4"} {
		reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: v})
		if j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name}); j.Status != deploy.StatusSucceeded {
			t.Fatalf("deploy %s = %s %q, want succeeded", v, j.Status, j.Error)
		}
		ids[v] = inspect(ctx, t, cli, name).Image
	}
	for v, want := range map[string]bool{"v1": true, "v2": false, "v3": true, "v4": true} {
		_, err := cli.ImageInspect(ctx, ids[v])
		if got := err == nil; got != want {
			t.Errorf("image %s present = %v (%v), want %v (v1 in use, v2 old, v3 previous, v4 running)", v, got, err, want)
		}
	}
}

// TestIntegrationDependsOnLabel: outside Compose, hookd.depends-on gives
// the same as depends_on with restart: true; a dependency that does not
// exist, or a cycle, refuses the deploy before anything is touched.
func TestIntegrationDependsOnLabel(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/dependson"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	run := func(name string, labels map[string]string) (string, string) {
		return dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{Image: reg.Ref(repo, "latest"), Name: name, Labels: enabled(labels)})
	}
	_, api := run("api", nil)
	webID, web := run("web", map[string]string{deploy.LabelDependsOn: api})
	loneID, lone := run("lone", map[string]string{deploy.LabelDependsOn: "no-such-container"})
	// Two containers naming each other: their names must be known first.
	lv := dockertest.LabelValue(t)
	a, b := "cyca-"+lv[:8]+lv[len(lv)-6:], "cycb-"+lv[:8]+lv[len(lv)-6:]
	var bID string
	for _, c := range []struct{ name, dep string }{{a, b}, {b, a}} {
		created, err := cli.ContainerCreate(ctx, &container.Config{Image: reg.Ref(repo, "latest"),
			Labels: dockertest.Labels(t, enabled(map[string]string{deploy.LabelDependsOn: c.dep}))}, nil, nil, nil, c.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		bID = created.ID // the last one is b
	}
	d := startDeployer(ctx, t, cli, rig{})
	for _, n := range []string{api, web, lone, a, b} {
		waitTarget(ctx, t, d.Deployer, n)
	}
	if got := waitTarget(ctx, t, d.Deployer, web).DependsOn; !slices.Equal(got, []string{api}) {
		t.Errorf("target %s depends on %v, want [%s]", web, got, api)
	}
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	startedWeb := inspect(ctx, t, cli, web).State.StartedAt
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: api})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("api deploy = %s %q, want succeeded", j.Status, j.Error)
	}
	if c := inspect(ctx, t, cli, web); c.ID != webID || c.State.StartedAt == startedWeb || !c.State.Running {
		t.Errorf("web = %s started %s (was %s), want the same container restarted", c.ID[:12], c.State.StartedAt, startedWeb)
	}

	for _, tt := range []struct{ target, id, want string }{
		{lone, loneID, "depends on no-such-container (hookd.depends-on), which has no container"},
		{b, bID, "form a cycle"},
	} {
		j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: tt.target})
		if j.Status != deploy.StatusRefused || !strings.Contains(j.Error, tt.want) {
			t.Errorf("deploy %s = %s %q, want refused with %q", tt.target, j.Status, j.Error, tt.want)
		}
		if c := inspect(ctx, t, cli, tt.target); c.ID != tt.id || !c.State.Running {
			t.Errorf("%s = %s running %v, want untouched", tt.target, c.ID[:12], c.State.Running)
		}
	}
}
