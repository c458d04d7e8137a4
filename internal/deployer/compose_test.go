package deployer

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// These tests drive real compose.yml projects with the real Compose CLI,
// as a user would: `docker compose up -d`, then hookd deploys (or refuses,
// or rolls back), then `docker compose ps -a`, `up -d` and `down` must
// behave as if Compose had done the deploy itself. What each command
// printed is logged (go test -v shows it).

// composeLabels are the labels every service of these projects carries:
// opted in, and in the test's scope.
const composeLabels = `{hookd.enable: "true", hookd.test: "{{LABEL}}"}`

// composeNetwork gives the default network the test's label, so that the
// rig's sweep removes it even if `down` did not.
const composeNetwork = `
networks:
  default:
    labels: {hookd.test: "{{LABEL}}"}
`

// composeUp starts the project and waits until its services' containers
// run (and are healthy, where they have a healthcheck).
func composeUp(ctx context.Context, t *testing.T, c *dockertest.Compose) {
	t.Helper()
	out := c.Must(ctx, "up", "-d", "--wait", "--wait-timeout", "60")
	t.Logf("docker compose up -d (first):\n%s", out)
}

// composeRoundTrip checks what a Compose user sees after a hookd outcome:
// `ps -a` lists one container per service, all running; `up -d` recreates
// and restarts nothing and reports no error. It returns the containers' ids.
func composeRoundTrip(ctx context.Context, t *testing.T, cli *client.Client, c *dockertest.Compose, outcome string, services ...string) map[string]string {
	t.Helper()
	ps := c.Must(ctx, "ps", "-a", "--format", "{{.Name}}\t{{.Service}}\t{{.State}}")
	t.Logf("after %s: docker compose ps -a:\n%s", outcome, ps)
	seen := map[string]int{}
	for line := range strings.Lines(strings.TrimSpace(ps)) {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) != 3 {
			t.Fatalf("after %s: ps -a line %q, want name, service, state", outcome, line)
		}
		seen[f[1]]++
		if f[2] != "running" {
			t.Errorf("after %s: ps -a shows %s %s, want running", outcome, f[0], f[2])
		}
	}
	for _, s := range services {
		if seen[s] != 1 {
			t.Errorf("after %s: ps -a lists %d containers for service %s, want 1", outcome, seen[s], s)
		}
	}
	if len(seen) != len(services) {
		t.Errorf("after %s: ps -a lists services %v, want %v", outcome, seen, services)
	}

	before := composeStarts(ctx, t, cli, c, services)
	out, err := c.Run(ctx, "up", "-d")
	t.Logf("after %s: docker compose up -d:\n%s", outcome, out)
	if err != nil {
		t.Fatalf("after %s: docker compose up -d: %v", outcome, err)
	}
	for line := range strings.Lines(out) {
		// "Waiting" and "Healthy" are Compose checking a depends_on condition.
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasSuffix(l, " Running") && !strings.HasSuffix(l, " Waiting") && !strings.HasSuffix(l, " Healthy") {
			t.Errorf("after %s: docker compose up -d printed %q; want every container reported Running (nothing recreated, restarted or in conflict)", outcome, l)
		}
	}
	after := composeStarts(ctx, t, cli, c, services)
	for s, b := range before {
		if after[s] != b {
			t.Errorf("after %s: docker compose up -d changed %s: %s, want untouched %s", outcome, s, after[s], b)
		}
	}
	ids := map[string]string{}
	for s, v := range before {
		ids[s], _, _ = strings.Cut(v, "@")
	}
	return ids
}

// composeStarts returns, per service, its container's id and start time.
func composeStarts(ctx context.Context, t *testing.T, cli *client.Client, c *dockertest.Compose, services []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range services {
		ci := inspect(ctx, t, cli, c.Container(s))
		out[s] = ci.ID + "@" + ci.State.StartedAt
	}
	return out
}

// composeDown runs `docker compose down` and checks that nothing of the
// project is left: no container, no network.
func composeDown(ctx context.Context, t *testing.T, cli *client.Client, c *dockertest.Compose) {
	t.Helper()
	out := c.Must(ctx, "down", "--timeout", "2")
	t.Logf("docker compose down:\n%s", out)
	project := filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+c.Name))
	left, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: project})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range left {
		t.Errorf("after docker compose down: container %v (%s) is left", l.Names, l.State)
	}
	nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: project})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		t.Errorf("after docker compose down: network %s is left", n.Name)
	}
}

// hostPortOf returns where the host reaches port of the container.
func hostPortOf(ctx context.Context, t *testing.T, cli *client.Client, name, port string) string {
	t.Helper()
	var addr string
	dockertest.WaitFor(t, 10*time.Second, "host port "+port+" of "+name, func() (bool, string) {
		c, err := cli.ContainerInspect(ctx, name)
		if err != nil || c.NetworkSettings == nil {
			return false, fmt.Sprint(err)
		}
		for _, b := range c.NetworkSettings.Ports[nat.Port(port)] {
			if b.HostPort != "" {
				addr = net.JoinHostPort("127.0.0.1", b.HostPort)
				return true, ""
			}
		}
		return false, fmt.Sprintf("ports %v", c.NetworkSettings.Ports)
	})
	return addr
}

// TestIntegrationComposeDependencyRedeployed: a database redeployed by hookd
// restarts the service that asked for it (depends_on with restart: true),
// gated, and not the one that did not; a push that updates two services of
// which one depends on the other deploys them in dependency order.
func TestIntegrationComposeDependencyRedeployed(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/cdb", "latest", dockertest.App{Version: "db1"})
	reg.PushApp(ctx, t, "hookd/capp", "latest", dockertest.App{Version: "app1"})
	reg.PushApp(ctx, t, "hookd/cstack", "latest", dockertest.App{Version: "s1"})
	c := dockertest.NewCompose(t, `
services:
  db:
    image: `+reg.Ref("hookd/cdb", "latest")+`
    labels: `+composeLabels+`
  app:
    image: `+reg.Ref("hookd/capp", "latest")+`
    depends_on:
      db: {condition: service_healthy, restart: true}
    labels: `+composeLabels+`
  worker:
    image: `+reg.Ref("hookd/capp", "latest")+`
    depends_on:
      db: {condition: service_started}
    labels: `+composeLabels+`
  # one image, two services, one depending on the other
  store:
    image: `+reg.Ref("hookd/cstack", "latest")+`
    labels: `+composeLabels+`
  api:
    image: `+reg.Ref("hookd/cstack", "latest")+`
    depends_on:
      store: {condition: service_healthy, restart: true}
    labels: `+composeLabels+`
`+composeNetwork)
	composeUp(ctx, t, c)
	services := []string{"db", "app", "worker", "store", "api"}
	d := startDeployer(ctx, t, cli, rig{})
	for _, s := range services {
		waitTarget(ctx, t, d.Deployer, c.Container(s))
	}
	before := composeStarts(ctx, t, cli, c, services)

	reg.PushApp(ctx, t, "hookd/cdb", "latest", dockertest.App{Version: "db2"})
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/hookd/cdb", Trigger: deploy.TriggerWebhook})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("db deploy = %s %q, want succeeded", j.Status, j.Error)
	}
	t.Logf("db job notes: %q", j.Notes)
	after := composeStarts(ctx, t, cli, c, services)
	app, _, _ := strings.Cut(after["app"], "@")
	switch {
	case after["db"] == before["db"]:
		t.Errorf("db not redeployed")
	case !strings.HasPrefix(before["app"], app+"@") || after["app"] == before["app"]:
		t.Errorf("app = %s, was %s; want the same container restarted (restart: true)", after["app"], before["app"])
	case after["worker"] != before["worker"]:
		t.Errorf("worker = %s, was %s; want untouched (depends_on without restart)", after["worker"], before["worker"])
	}
	if !slices.ContainsFunc(j.Notes, func(n string) bool { return strings.Contains(n, "restarted "+c.Container("app")) }) {
		t.Errorf("job notes = %q, want one saying app was restarted", j.Notes)
	}
	composeRoundTrip(ctx, t, cli, c, "a dependency redeployed", services...)

	// One push, two services: store first, since api depends on it.
	reg.PushApp(ctx, t, "hookd/cstack", "latest", dockertest.App{Version: "s2"})
	jobs, err := d.Submit(ctx, deploy.Request{Repository: reg.Host + "/hookd/cstack", Trigger: deploy.TriggerWebhook})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("Submit = %v, %v, want two jobs", jobs, err)
	}
	if jobs[0].Target != c.Container("store") {
		t.Errorf("jobs queued for %s then %s, want store first (api depends on it)", jobs[0].Target, jobs[1].Target)
	}
	var done []deploy.Job
	for _, q := range jobs {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		j, err := d.WaitJob(wctx, q.ID)
		cancel()
		if err != nil || j.Status != deploy.StatusSucceeded {
			t.Fatalf("job for %s = %s %q, %v, want succeeded", j.Target, j.Status, j.Error, err)
		}
		done = append(done, j)
	}
	if done[1].StartedAt.Before(done[0].FinishedAt) {
		t.Errorf("%s started at %s, before %s finished at %s", done[1].Target, done[1].StartedAt, done[0].Target, done[0].FinishedAt)
	}
	// api is not restarted by store's deploy: its own deploy follows.
	if !slices.ContainsFunc(done[0].Notes, func(n string) bool { return strings.Contains(n, c.Container("api")+" follows the same image") }) {
		t.Errorf("store's job notes = %q, want one saying api's own job deploys it", done[0].Notes)
	}
	for _, s := range []string{"store", "api"} {
		img, err := cli.ImageInspect(ctx, reg.Ref("hookd/cstack", "latest"))
		if ci := inspect(ctx, t, cli, c.Container(s)); err != nil || ci.Image != img.ID {
			t.Errorf("%s runs %s, want the new image the tag names, %s (%v)", s, ci.Image, img.ID, err)
		}
	}
	composeRoundTrip(ctx, t, cli, c, "one push updating two dependent services", services...)
	composeDown(ctx, t, cli, c)
}

// TestIntegrationComposeOutcomes: after each outcome (up to date,
// deployed, rolled back, failed) a Compose user's commands agree with what
// runs; a rolled-back version leaves no container behind, its exit code,
// health output and last log lines are in the job, and the local tag still
// names the version that runs.
func TestIntegrationComposeOutcomes(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/cweb"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	c := dockertest.NewCompose(t, `
services:
  web:
    image: `+reg.Ref(repo, "latest")+`
    ports: ["127.0.0.1::8080"]
    restart: unless-stopped
    labels: `+composeLabels+`
`+composeNetwork)
	composeUp(ctx, t, c)
	name := c.Container("web")
	d := startDeployer(ctx, t, cli, rig{HealthTimeout: 4 * time.Second})
	waitTarget(ctx, t, d.Deployer, name)
	tagID := func() string {
		img, err := cli.ImageInspect(ctx, reg.Ref(repo, "latest"))
		if err != nil {
			t.Fatalf("inspect the local tag: %v", err)
		}
		return img.ID
	}

	j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
	if j.Status != deploy.StatusUpToDate {
		t.Fatalf("deploy = %s %q, want up_to_date", j.Status, j.Error)
	}
	composeRoundTrip(ctx, t, cli, c, "up to date", "web")

	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	if j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name}); j.Status != deploy.StatusSucceeded {
		t.Fatalf("deploy v2 = %s %q, want succeeded", j.Status, j.Error)
	}
	v2 := inspect(ctx, t, cli, name)
	if got := v2.Config.Labels["com.docker.compose.image"]; got != v2.Image || tagID() != v2.Image {
		t.Errorf("com.docker.compose.image = %s, local tag = %s, want both the image that runs, %s", got, tagID(), v2.Image)
	}
	waitVersion(ctx, t, hostPortOf(ctx, t, cli, name, dockertest.AppPort), "v2")
	composeRoundTrip(ctx, t, cli, c, "deployed", "web")

	bad := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3", Crash: true})
	j = deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
	if j.Status != deploy.StatusRolledBack || j.DigestAfter != bad {
		t.Fatalf("deploy v3 = %s %q (digest %s), want rolled_back of %s", j.Status, j.Error, j.DigestAfter, bad)
	}
	t.Logf("rolled-back job: reason %s, detail %q, failed version %s", j.RollbackReason, j.RollbackDetail, describeFailed(j.Failed))
	if f := j.Failed; f == nil || f.ExitCode == nil || *f.ExitCode != 3 || !slices.Contains(f.Logs, "testapp crashing as configured") {
		t.Errorf("job.Failed = %s, want exit code 3 and the log line saying it crashes", describeFailed(j.Failed))
	}
	if got := tagID(); got != v2.Image {
		t.Errorf("local tag names %s after the rollback, want the version that runs, %s", got, v2.Image)
	}
	if left := containersNamed(ctx, t, cli, name); len(left) != 1 {
		t.Errorf("containers named %s* = %v, want %s only", name, keys(left), name)
	}
	ids := composeRoundTrip(ctx, t, cli, c, "rolled back", "web")
	if ids["web"] != v2.ID {
		t.Errorf("web = %s after the rollback and up -d, want v2's container %s", ids["web"], v2.ID)
	}
	waitVersion(ctx, t, hostPortOf(ctx, t, cli, name, dockertest.AppPort), "v2")

	reg.Fail(500, "")
	j = deployOne(ctx, t, d.Deployer, deploy.Request{Target: name, Force: true})
	reg.Fail(0, "")
	if j.Status != deploy.StatusFailed {
		t.Fatalf("deploy with the registry failing = %s %q, want failed", j.Status, j.Error)
	}
	composeRoundTrip(ctx, t, cli, c, "failed", "web")
	composeDown(ctx, t, cli, c)
}

// TestIntegrationComposeSharedNamespace: a VPN container that another
// joined (network_mode: service:vpn) is redeployed, and the joined
// container recreated to join the new one, with the config hash Compose
// expects; when the new VPN fails its gate, the joined container follows
// the old one back.
func TestIntegrationComposeSharedNamespace(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/cvpn", "latest", dockertest.App{Version: "vpn1"})
	reg.PushApp(ctx, t, "hookd/ctorrent", "latest", dockertest.App{Version: "torrent1"})
	c := dockertest.NewCompose(t, `
services:
  vpn:
    image: `+reg.Ref("hookd/cvpn", "latest")+`
    ports: ["127.0.0.1::8081"]
    labels: `+composeLabels+`
  torrent:
    image: `+reg.Ref("hookd/ctorrent", "latest")+`
    network_mode: service:vpn
    environment: [TESTAPP_PORT=8081]
    labels: `+composeLabels+`
`+composeNetwork)
	composeUp(ctx, t, c)
	vpn, torrent := c.Container("vpn"), c.Container("torrent")
	d := startDeployer(ctx, t, cli, rig{HealthTimeout: 4 * time.Second})
	waitTarget(ctx, t, d.Deployer, vpn)
	waitTarget(ctx, t, d.Deployer, torrent)
	waitVersion(ctx, t, hostPortOf(ctx, t, cli, vpn, "8081/tcp"), "torrent1")
	oldTorrent := inspect(ctx, t, cli, torrent)

	reg.PushApp(ctx, t, "hookd/cvpn", "latest", dockertest.App{Version: "vpn2"})
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/hookd/cvpn", Trigger: deploy.TriggerWebhook})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("vpn deploy = %s %q, want succeeded", j.Status, j.Error)
	}
	t.Logf("vpn job notes: %q", j.Notes)
	newVPN, newTorrent := inspect(ctx, t, cli, vpn), inspect(ctx, t, cli, torrent)
	if newTorrent.ID == oldTorrent.ID || string(newTorrent.HostConfig.NetworkMode) != "container:"+newVPN.ID {
		t.Errorf("torrent = %s in %s, want a new container in container:%s", newTorrent.ID[:12], newTorrent.HostConfig.NetworkMode, newVPN.ID)
	}
	if newTorrent.Config.Labels["com.docker.compose.config-hash"] == oldTorrent.Config.Labels["com.docker.compose.config-hash"] {
		t.Errorf("torrent's config hash unchanged: Compose hashes it with the vpn container's id")
	}
	waitVersion(ctx, t, hostPortOf(ctx, t, cli, vpn, "8081/tcp"), "torrent1")
	composeRoundTrip(ctx, t, cli, c, "the VPN redeployed", "vpn", "torrent")

	reg.PushApp(ctx, t, "hookd/cvpn", "latest", dockertest.App{Version: "vpn3", Unhealthy: true})
	j = deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/hookd/cvpn", Trigger: deploy.TriggerWebhook})
	if j.Status != deploy.StatusRolledBack {
		t.Fatalf("vpn3 deploy = %s %q, want rolled_back", j.Status, j.Error)
	}
	if got := inspect(ctx, t, cli, vpn).ID; got != newVPN.ID {
		t.Errorf("vpn = %s after the rollback, want %s back", got[:12], newVPN.ID[:12])
	}
	// The torrent container was cut off when vpn2 stopped; it must have
	// joined vpn2 again.
	waitVersion(ctx, t, hostPortOf(ctx, t, cli, vpn, "8081/tcp"), "torrent1")
	composeRoundTrip(ctx, t, cli, c, "the VPN rolled back", "vpn", "torrent")
	composeDown(ctx, t, cli, c)
}

// TestIntegrationComposeHooks: a failing pre-update hook stops the deploy
// before anything is changed, with its output in the job; a passing one
// runs in the old container before it stops (what it saves, the new one
// finds), post-update in the new one; watchtower's labels work too; a
// hook that takes too long stops the deploy.
func TestIntegrationComposeHooks(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	// One repository per service: containers that follow one tag share
	// the local tag, so once one of them runs the new version, `docker
	// compose up -d` brings the others to it too.
	services := []string{"bad", "good", "tower", "slow"}
	image := map[string]string{}
	for _, s := range services {
		reg.PushApp(ctx, t, "hookd/chook-"+s, "latest", dockertest.App{Version: "v1"})
		image[s] = reg.Ref("hookd/chook-"+s, "latest")
	}
	c := dockertest.NewCompose(t, `
services:
  bad:
    image: `+image["bad"]+`
    labels: {hookd.enable: "true", hookd.test: "{{LABEL}}", hookd.pre-update: '["/app", "hook", "3"]'}
  good:
    image: `+image["good"]+`
    ports: ["127.0.0.1::8080"]
    volumes: [data:/data]
    labels:
      hookd.enable: "true"
      hookd.test: "{{LABEL}}"
      hookd.pre-update: '["/app", "hook", "0", "/data/pre"]'
      hookd.post-update: '["/app", "hook", "0", "/data/post"]'
  tower:
    image: `+image["tower"]+`
    ports: ["127.0.0.1::8080"]
    labels:
      hookd.enable: "true"
      hookd.test: "{{LABEL}}"
      com.centurylinklabs.watchtower.lifecycle.pre-update: '["/app", "hook", "0", "/tmp/tower"]'
      com.centurylinklabs.watchtower.lifecycle.post-update: '["/app", "hook", "0", "/tmp/tower-post"]'
  slow:
    image: `+image["slow"]+`
    labels: {hookd.enable: "true", hookd.test: "{{LABEL}}", hookd.pre-update: '["/app", "sleep", "30s"]', hookd.hook-timeout: 1s}
volumes:
  data:
    labels: {hookd.test: "{{LABEL}}"}
`+composeNetwork)
	composeUp(ctx, t, c)
	d := startDeployer(ctx, t, cli, rig{})
	for _, s := range services {
		waitTarget(ctx, t, d.Deployer, c.Container(s))
	}
	before := composeStarts(ctx, t, cli, c, services)

	events, unsubscribe := d.Subscribe("compose-hooks-test", 1024)
	defer unsubscribe()
	var jobs []deploy.Job
	for _, s := range services {
		reg.PushApp(ctx, t, "hookd/chook-"+s, "latest", dockertest.App{Version: "v2"})
		js, err := d.Submit(ctx, deploy.Request{Repository: reg.Host + "/hookd/chook-" + s, Trigger: deploy.TriggerWebhook})
		if err != nil || len(js) != 1 {
			t.Fatalf("Submit(%s) = %v, %v, want one job", s, js, err)
		}
		jobs = append(jobs, js...)
	}
	got := map[string]deploy.Job{}
	for _, q := range jobs {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		j, err := d.WaitJob(wctx, q.ID)
		cancel()
		if err != nil {
			t.Fatalf("WaitJob(%s): %v", q.Target, err)
		}
		got[strings.TrimSuffix(strings.TrimPrefix(j.Target, c.Name+"-"), "-1")] = j
		t.Logf("%s: %s, error %q, notes %q", j.Target, j.Status, j.Error, j.Notes)
	}
	after := composeStarts(ctx, t, cli, c, services)
	hooksStage := map[string]int{} // target → running_hooks events
	for drained := false; !drained; {
		select {
		case e := <-events:
			if e.Kind == string(deploy.StageHooks) {
				hooksStage[e.Job.Target]++
			}
		default:
			drained = true
		}
	}
	// pre-update, then post-update once the gate passed; a failing
	// pre-update hook ends the job there.
	for s, want := range map[string]int{"good": 2, "tower": 2, "bad": 1, "slow": 1} {
		if got := hooksStage[c.Container(s)]; got != want {
			t.Errorf("%s: %d running_hooks events, want %d", s, got, want)
		}
	}

	// The hook's stdout and stderr lines may come in either order.
	if j := got["bad"]; j.Status != deploy.StatusFailed || !strings.Contains(j.Error, "(hookd.pre-update) exited 3: ") ||
		!strings.Contains(j.Error, "hook ran in v1") || !strings.Contains(j.Error, "hook exits 3") || after["bad"] != before["bad"] {
		t.Errorf("bad = %s %q (container changed: %v), want failed with the hook's exit code and output, untouched", j.Status, j.Error, after["bad"] != before["bad"])
	}
	if j := got["slow"]; j.Status != deploy.StatusFailed || !strings.Contains(j.Error, "did not finish in time") || after["slow"] != before["slow"] {
		t.Errorf("slow = %s %q, want failed: its hook did not finish within 1s, untouched", j.Status, j.Error)
	}
	for _, s := range []string{"good", "tower"} {
		if j := got[s]; j.Status != deploy.StatusSucceeded || len(j.Notes) < 2 {
			t.Errorf("%s = %s %q, notes %q, want succeeded with both hooks noted", s, j.Status, j.Error, j.Notes)
		}
	}
	addr := hostPortOf(ctx, t, cli, c.Container("good"), dockertest.AppPort)
	for file, want := range map[string]string{"/data/pre": "v1", "/data/post": "v2"} {
		body, code, err := httpGet(ctx, "http://"+addr+"/file?path="+file)
		if err != nil || code != 200 || strings.TrimSpace(body) != want {
			t.Errorf("%s in the new good container = %q (%d, %v), want %q", file, body, code, err, want)
		}
	}
	towerAddr := hostPortOf(ctx, t, cli, c.Container("tower"), dockertest.AppPort)
	if body, code, _ := httpGet(ctx, "http://"+towerAddr+"/file?path=/tmp/tower-post"); code != 200 || strings.TrimSpace(body) != "v2" {
		t.Errorf("watchtower's post-update hook: /tmp/tower-post = %q (%d), want v2", body, code)
	}
	composeRoundTrip(ctx, t, cli, c, "pre-update hooks failed and passed", services...)
	composeDown(ctx, t, cli, c)
}

// TestIntegrationComposeDependentFails: the new database passes its own
// gate, but the app that asked to be restarted with it (restart: true)
// does not come back healthy: hookd rolls the database back, restarts the
// app against the old one, and records the app's failure.
func TestIntegrationComposeDependentFails(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/cdb", "latest", dockertest.App{Version: "db1"})
	reg.PushApp(ctx, t, "hookd/capp", "latest", dockertest.App{Version: "app1"})
	c := dockertest.NewCompose(t, `
services:
  db:
    image: `+reg.Ref("hookd/cdb", "latest")+`
    labels: `+composeLabels+`
  app:
    image: `+reg.Ref("hookd/capp", "latest")+`
    environment: ["TESTAPP_NEEDS=http://db:8080/=db1"]
    depends_on:
      db: {condition: service_healthy, restart: true}
    labels: `+composeLabels+`
`+composeNetwork)
	composeUp(ctx, t, c)
	db, app := c.Container("db"), c.Container("app")
	d := startDeployer(ctx, t, cli, rig{HealthTimeout: 5 * time.Second})
	waitTarget(ctx, t, d.Deployer, db)
	oldDB := inspect(ctx, t, cli, db)
	oldTag, err := cli.ImageInspect(ctx, reg.Ref("hookd/cdb", "latest"))
	if err != nil {
		t.Fatal(err)
	}

	reg.PushApp(ctx, t, "hookd/cdb", "latest", dockertest.App{Version: "db2"})
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/hookd/cdb", Trigger: deploy.TriggerWebhook})
	t.Logf("db job: %s %q, reason %s, detail %q, failed version %s, notes %q", j.Status, j.Error, j.RollbackReason, j.RollbackDetail, describeFailed(j.Failed), j.Notes)
	if j.Status != deploy.StatusRolledBack || j.RollbackReason != deploy.ReasonDependent || !strings.Contains(j.RollbackDetail, app) {
		t.Fatalf("db deploy = %s, %s %q, want rolled_back for %s", j.Status, j.RollbackReason, j.RollbackDetail, deploy.ReasonDependent)
	}
	if f := j.Failed; f == nil || f.Container != app || !strings.Contains(f.Health, "to answer db1") {
		t.Errorf("job.Failed = %s, want app's failed health check", describeFailed(j.Failed))
	}
	if got := inspect(ctx, t, cli, db); got.ID != oldDB.ID || !got.State.Running {
		t.Errorf("db = %s, want the old container %s running again", got.ID[:12], oldDB.ID[:12])
	}
	if img, _ := cli.ImageInspect(ctx, reg.Ref("hookd/cdb", "latest")); img.ID != oldTag.ID {
		t.Errorf("the local tag names %s after the rollback, want db1's image %s", img.ID, oldTag.ID)
	}
	dockertest.WaitFor(t, 30*time.Second, "app healthy again against the old db", func() (bool, string) {
		c := inspect(ctx, t, cli, app)
		return c.State.Health != nil && c.State.Health.Status == container.Healthy, fmt.Sprintf("%+v", c.State.Health)
	})
	composeRoundTrip(ctx, t, cli, c, "a dependent failed its gate", "db", "app")
	composeDown(ctx, t, cli, c)
}
