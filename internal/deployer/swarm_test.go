package deployer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// Swarm integration tests: the engine becomes a single-node swarm manager
// for the test (unless it already is one) and leaves the swarm afterwards.
// The node pulls from the rig's registry on 127.0.0.1 like any image.

// swarmManager makes the engine a swarm manager for the test: it
// initialises a single-node swarm when the engine is in none and leaves it
// in cleanup. An engine that already is a manager is used as it is.
func swarmManager(ctx context.Context, t *testing.T, cli *client.Client) {
	t.Helper()
	info, err := cli.Info(ctx)
	if err != nil {
		t.Fatalf("docker info: %v", err)
	}
	switch info.Swarm.LocalNodeState {
	case swarm.LocalNodeStateActive:
		if !info.Swarm.ControlAvailable {
			t.Skip("the engine is a swarm worker; service tests need a manager")
		}
		return
	case swarm.LocalNodeStateInactive:
	default:
		t.Skipf("the engine's swarm state is %q", info.Swarm.LocalNodeState)
	}
	if _, err := cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: "127.0.0.1", AdvertiseAddr: "127.0.0.1"}); err != nil {
		t.Fatalf("swarm init: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cli.SwarmLeave(cctx, true); err != nil {
			t.Errorf("swarm leave: %v", err)
		}
	})
}

type serviceOptions struct {
	name            string
	image           string
	labels          map[string]string // service labels (hookd.test is added)
	containerLabels map[string]string // labels of the task containers
	update          *swarm.UpdateConfig
	publish         bool // publish the app's port in host mode on a free port
	registryAuth    string
}

// createService creates a one-replica service pinned to its image's digest
// (as `docker service create` does; an image given with a digest is taken
// as it is), waits for its task to run and returns
// the service id, name and, when published, the app's address. A cleanup
// removes it and waits until Swarm removed its task containers.
func createService(ctx context.Context, t *testing.T, cli *client.Client, o serviceOptions) (id, name, addr string) {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name = "hookd-" + o.name + "-" + hex.EncodeToString(b)
	one := uint64(1)
	labels := dockertest.Labels(t, o.labels)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: o.image, Labels: dockertest.Labels(t, o.containerLabels)},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: ptr(200 * time.Millisecond)},
		},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
		UpdateConfig: o.update,
	}
	if o.publish {
		port, err := strconv.ParseUint(freePort(t), 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		spec.EndpointSpec = &swarm.EndpointSpec{Ports: []swarm.PortConfig{{
			Protocol: swarm.PortConfigProtocolTCP, TargetPort: 8080, PublishedPort: uint32(port), PublishMode: swarm.PortConfigPublishModeHost,
		}}}
		addr = net.JoinHostPort("127.0.0.1", strconv.FormatUint(port, 10))
	}
	resp, err := cli.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{
		EncodedRegistryAuth: o.registryAuth,
		QueryRegistry:       !strings.Contains(o.image, "@"),
	})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	id = resp.ID
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cli.ServiceRemove(cctx, id); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove service %s: %v", name, err)
			return
		}
		for cctx.Err() == nil {
			left, err := cli.ContainerList(cctx, container.ListOptions{All: true, Filters: filters.NewArgs(
				filters.Arg("label", "com.docker.swarm.service.id="+id))})
			if err == nil && len(left) == 0 {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("task containers of service %s still there after removal", name)
	})
	runningTask(ctx, t, cli, id)
	return id, name, addr
}

func ptr[T any](v T) *T { return &v }

// runningTask waits until the service has a running task and returns it.
func runningTask(ctx context.Context, t *testing.T, cli *client.Client, serviceID string) swarm.Task {
	t.Helper()
	var got swarm.Task
	dockertest.WaitFor(t, 60*time.Second, "a running task", func() (bool, string) {
		tasks, err := cli.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
			filters.Arg("service", serviceID), filters.Arg("desired-state", "running"))})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, tk := range tasks {
			if tk.Status.State == swarm.TaskStateRunning && tk.Status.ContainerStatus != nil {
				got = tk
				return true, ""
			}
			states = append(states, fmt.Sprintf("%s %s %s", tk.Status.State, tk.Status.Message, tk.Status.Err))
		}
		return false, fmt.Sprint(states)
	})
	return got
}

func inspectService(ctx context.Context, t *testing.T, cli *client.Client, id string) swarm.Service {
	t.Helper()
	s, _, err := cli.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatalf("inspect service %s: %v", id, err)
	}
	return s
}

func pinnedDigest(t *testing.T, s swarm.Service) string {
	t.Helper()
	_, dg, _ := strings.Cut(s.Spec.TaskTemplate.ContainerSpec.Image, "@")
	return dg
}

func TestIntegrationSwarmService(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	cli := dockertest.Docker(t)
	swarmManager(ctx, t, cli)

	t.Run("webhook rolls v2 out, pinned by digest", func(t *testing.T) {
		cli := dockertest.Docker(t)
		reg := dockertest.NewRegistry(t)
		const repo = "hookd/swarm-web"
		d1 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
		id, name, addr := createService(ctx, t, cli, serviceOptions{
			name: "web", image: reg.Ref(repo, "latest"), labels: enabled(nil), publish: true,
		})
		waitVersion(ctx, t, addr, "v1")
		promReg := prometheus.NewRegistry()
		d := startDeployer(ctx, t, cli, rig{Metrics: metrics.New(promReg, metrics.BuildInfo{})})
		tg := waitTarget(ctx, t, d.Deployer, name)
		if tg.Kind != deploy.KindService || tg.ID != id || tg.Image != reg.Host+"/"+repo || tg.Tag != "latest" || tg.Digest != d1 || tg.ImageID != "" {
			t.Errorf("target = %+v, want service %s following %s/%s:latest pinned to %s, no image id", tg, containers.ShortID(id), reg.Host, repo, d1)
		}

		d2 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
		req := deploy.Request{Repository: reg.Host + "/" + repo, Tag: "latest", Digest: d2, Trigger: deploy.TriggerWebhook, ID: "delivery-1"}
		j := deployOne(ctx, t, d.Deployer, req)
		if j.Status != deploy.StatusSucceeded || j.Kind != deploy.KindService {
			t.Fatalf("job kind, status = %s, %s (error %q), want service, succeeded", j.Kind, j.Status, j.Error)
		}
		if j.DigestBefore != d1 || j.DigestAfter != d2 {
			t.Errorf("job digests before, after = %s, %s, want %s, %s", j.DigestBefore, j.DigestAfter, d1, d2)
		}
		for _, p := range []string{"pull", "swap", "health"} {
			if _, ok := j.Phases[p]; !ok {
				t.Errorf("job phases = %v, want %q among them", j.Phases, p)
			}
		}
		if v, err := dockertest.Version(ctx, addr); err != nil || v != "v2" {
			t.Errorf("service task on %s answers %q, %v, want v2", addr, v, err)
		}
		s := inspectService(ctx, t, cli, id)
		if got := pinnedDigest(t, s); got != d2 {
			t.Errorf("service image = %q, want it pinned to %s", s.Spec.TaskTemplate.ContainerSpec.Image, d2)
		}
		if uc := s.Spec.UpdateConfig; uc == nil || uc.FailureAction != swarm.UpdateFailureActionRollback ||
			uc.Order != swarm.UpdateOrderStopFirst || uc.Parallelism != 1 || uc.Monitor <= 0 {
			t.Errorf("service update config = %+v, want hookd's safe one (rollback, stop-first for a host port, one at a time, a monitor period)", uc)
		}
		if got := testutilCounter(d.metrics.Deploys, name, "webhook", "succeeded"); got != 1 {
			t.Errorf("deploys{succeeded} = %v, want 1", got)
		}
		if got := testutilGauge(d.metrics.LastSuccessfulDeploy, name); got <= 0 {
			t.Errorf("last successful deploy = %v, want a timestamp", got)
		}
		if got := histogramCount(t, promReg, "hookd_deploy_lead_time_seconds", "trigger", "webhook"); got != 1 {
			t.Errorf("lead time observations = %d, want 1", got)
		}
		if got := histogramCount(t, promReg, "hookd_image_age_at_deploy_seconds", "", ""); got != 1 {
			t.Errorf("image age observations = %d, want 1 (a task ran on this node)", got)
		}
		dockertest.WaitFor(t, 10*time.Second, "target pinned to v2", func() (bool, string) {
			tg := waitTarget(ctx, t, d.Deployer, name)
			return tg.Digest == d2, tg.Digest
		})

		// The same delivery again: the spec already pins d2.
		version := s.Version.Index
		j = deployOne(ctx, t, d.Deployer, req)
		if j.Status != deploy.StatusUpToDate {
			t.Errorf("repeated job status = %s (error %q), want up_to_date", j.Status, j.Error)
		}
		if got := inspectService(ctx, t, cli, id).Version.Index; got != version {
			t.Errorf("service version = %d after an up-to-date job, want unchanged %d (no update issued)", got, version)
		}
	})

	t.Run("unhealthy v3 is rolled back by swarm", func(t *testing.T) {
		cli := dockertest.Docker(t)
		reg := dockertest.NewRegistry(t)
		const repo = "hookd/swarm-rollback"
		d2 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
		own := &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: 2 * time.Second, Order: swarm.UpdateOrderStopFirst}
		id, name, addr := createService(ctx, t, cli, serviceOptions{
			name: "rb", image: reg.Ref(repo, "latest"), labels: enabled(nil), publish: true, update: own,
		})
		waitVersion(ctx, t, addr, "v2")
		d := startDeployer(ctx, t, cli, rig{})
		waitTarget(ctx, t, d.Deployer, name)
		d3 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3", Unhealthy: true})

		j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/" + repo, Trigger: deploy.TriggerWebhook})
		s := inspectService(ctx, t, cli, id)
		if j.Status != deploy.StatusRolledBack || j.RollbackReason != deploy.ReasonUnhealthy {
			t.Fatalf("job status, reason = %s, %q (error %q, detail %q), want rolled_back, unhealthy", j.Status, j.RollbackReason, j.Error, j.RollbackDetail)
		}
		if s.UpdateStatus == nil || s.UpdateStatus.State != swarm.UpdateStateRollbackCompleted {
			t.Fatalf("service update status = %+v, want rollback_completed", s.UpdateStatus)
		}
		if !strings.Contains(j.RollbackDetail, s.UpdateStatus.Message) {
			t.Errorf("rollback detail = %q, want swarm's message %q in it", j.RollbackDetail, s.UpdateStatus.Message)
		}
		if j.DigestAfter != d3 {
			t.Errorf("job digest after = %s, want the attempted %s", j.DigestAfter, d3)
		}
		if got := pinnedDigest(t, s); got != d2 {
			t.Errorf("service image = %q after rollback, want it pinned to %s again", s.Spec.TaskTemplate.ContainerSpec.Image, d2)
		}
		if uc := s.Spec.UpdateConfig; uc == nil || *uc != *own {
			t.Errorf("service update config = %+v, want the service's own %+v kept", uc, own)
		}
		runningTask(ctx, t, cli, id)
		waitVersion(ctx, t, addr, "v2")
		if got := testutilCounter(d.metrics.Rollbacks, name, deploy.ReasonUnhealthy); got != 1 {
			t.Errorf("rollbacks{unhealthy} = %v, want 1", got)
		}
	})

	t.Run("unlabelled services and task containers untouched", func(t *testing.T) {
		cli := dockertest.Docker(t)
		reg := dockertest.NewRegistry(t)
		const repo = "hookd/swarm-optin"
		d1 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
		// on is labelled as a service and (needlessly) on its containers
		// too; off only on its containers, a common mistake in stack
		// files (labels: instead of deploy.labels:).
		onID, on, _ := createService(ctx, t, cli, serviceOptions{
			name: "on", image: reg.Ref(repo, "latest"), labels: enabled(nil), containerLabels: enabled(nil),
		})
		offID, off, _ := createService(ctx, t, cli, serviceOptions{
			name: "off", image: reg.Ref(repo, "latest"), containerLabels: enabled(nil),
		})
		offTask := runningTask(ctx, t, cli, offID)
		onTask := runningTask(ctx, t, cli, onID)
		offBefore := inspectService(ctx, t, cli, offID)

		d := startDeployer(ctx, t, cli, rig{})
		waitTarget(ctx, t, d.Deployer, on)
		if got := d.Targets(); len(got) != 1 {
			t.Errorf("targets = %+v, want only service %s (task containers are never targets)", got, on)
		}
		onTaskName := inspect(ctx, t, cli, onTask.Status.ContainerStatus.ContainerID).Name
		for _, target := range []string{off, strings.TrimPrefix(onTaskName, "/")} {
			if _, err := d.Submit(ctx, deploy.Request{Target: target}); !errors.Is(err, deploy.ErrUnknownTarget) {
				t.Errorf("Submit(target %s) error = %v, want ErrUnknownTarget", target, err)
			}
		}

		reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
		jobs, err := d.Submit(ctx, deploy.Request{Repository: reg.Host + "/" + repo})
		if err != nil || len(jobs) != 1 || jobs[0].Target != on {
			t.Fatalf("Submit = %+v, %v, want one job for %s", jobs, err, on)
		}
		if j, err := d.WaitJob(ctx, jobs[0].ID); err != nil || j.Status != deploy.StatusSucceeded {
			t.Fatalf("job = %s %q, %v, want succeeded", j.Status, j.Error, err)
		}

		offAfter := inspectService(ctx, t, cli, offID)
		if offAfter.Version.Index != offBefore.Version.Index || pinnedDigest(t, offAfter) != d1 {
			t.Errorf("unlabelled service version, digest = %d, %s, want untouched %d, %s",
				offAfter.Version.Index, pinnedDigest(t, offAfter), offBefore.Version.Index, d1)
		}
		if c := inspect(ctx, t, cli, offTask.Status.ContainerStatus.ContainerID); !c.State.Running {
			t.Errorf("task container of the unlabelled service stopped, want it untouched")
		}
		// Swarm replaced on's task; hookd never recreated a task container.
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", dockertest.LabelKey+"="+dockertest.LabelValue(t)))})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			for _, n := range c.Names {
				if strings.Contains(n, ".hookd-") {
					t.Errorf("container %s exists: hookd recreated a task container behind swarm's back", n)
				}
			}
		}
		if got := runningTask(ctx, t, cli, onID); got.ID == onTask.ID {
			t.Errorf("running task of %s = %s, want a new task", on, got.ID)
		}
		// The old task is Swarm's to stop (start-first: after the new one runs).
		dockertest.WaitFor(t, 20*time.Second, "old task container stopped by swarm", func() (bool, string) {
			c, err := cli.ContainerInspect(ctx, onTask.Status.ContainerStatus.ContainerID)
			return err != nil || !c.State.Running, fmt.Sprint(err)
		})
	})
	t.Run("private registry: credentials reach the nodes", func(t *testing.T) {
		cli := dockertest.Docker(t)
		reg := dockertest.NewRegistry(t, dockertest.WithBearerAuth("bot", "right"))
		const repo = "hookd/swarm-private"
		d1 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
		// v1 is on the node already and the service holds no credentials:
		// only those hookd passes with its update let the node pull v2.
		dockertest.Pull(ctx, t, cli, reg.Ref(repo, "latest"), reg.RegistryAuth("bot", "right"))
		own := &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: time.Second, Order: swarm.UpdateOrderStopFirst}
		id, name, addr := createService(ctx, t, cli, serviceOptions{
			name: "private", image: reg.Ref(repo, "latest") + "@" + d1, labels: enabled(nil), publish: true, update: own,
		})
		waitVersion(ctx, t, addr, "v1")
		d := startDeployer(ctx, t, cli, rig{Keychain: staticKeychain{"bot", "right"}})
		waitTarget(ctx, t, d.Deployer, name)
		d2 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
		reg.ResetRequests()

		j := deployOne(ctx, t, d.Deployer, deploy.Request{Target: name})
		if j.Status != deploy.StatusSucceeded {
			t.Fatalf("job status = %s (error %q, detail %q), want succeeded", j.Status, j.Error, j.RollbackDetail)
		}
		waitVersion(ctx, t, addr, "v2")
		if got := pinnedDigest(t, inspectService(ctx, t, cli, id)); got != d2 {
			t.Errorf("service pinned to %s, want %s", got, d2)
		}
		pulled := false
		for _, r := range reg.Requests() {
			if r.Method == "GET" && strings.HasSuffix(r.Path, "/manifests/"+d2) && r.Status == 200 && r.Auth == "bearer" {
				pulled = true
			}
		}
		if !pulled {
			t.Errorf("registry saw no authorised GET of manifest %s: the node did not pull with hookd's credentials", d2)
		}
	})

	t.Run("restart during the rollout follows it", func(t *testing.T) {
		cli := dockertest.Docker(t)
		reg := dockertest.NewRegistry(t)
		const repo = "hookd/swarm-restart"
		d1 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
		own := &swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: 5 * time.Second, Order: swarm.UpdateOrderStopFirst}
		id, name, addr := createService(ctx, t, cli, serviceOptions{
			name: "restart", image: reg.Ref(repo, "latest"), labels: enabled(nil), publish: true, update: own,
		})
		state := newMemState(0)
		a := startDeployer(ctx, t, cli, rig{State: state})
		waitTarget(ctx, t, a.Deployer, name)
		d2 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
		jobs, err := a.Submit(ctx, deploy.Request{Target: name, Trigger: deploy.TriggerWebhook})
		if err != nil || len(jobs) != 1 {
			t.Fatalf("Submit = %v, %v", jobs, err)
		}
		var started *time.Time
		dockertest.WaitFor(t, 20*time.Second, "swarm updating", func() (bool, string) {
			us := inspectService(ctx, t, cli, id).UpdateStatus
			if us != nil && us.State == swarm.UpdateStateUpdating {
				started = us.StartedAt
				return true, ""
			}
			return false, fmt.Sprintf("%+v", us)
		})
		a.stop()
		if j, _ := state.Job(ctx, jobs[0].ID); j.Status != deploy.StatusQueued {
			t.Fatalf("job after shutdown mid-rollout = %s (error %q), want queued", j.Status, j.Error)
		}

		b := startDeployer(ctx, t, cli, rig{State: state})
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		j, err := b.WaitJob(wctx, jobs[0].ID)
		if err != nil || j.Status != deploy.StatusSucceeded {
			t.Fatalf("resumed job = %s %q, %v, want succeeded (the rollout under way followed to its end)", j.Status, j.Error, err)
		}
		us := inspectService(ctx, t, cli, id).UpdateStatus
		if us == nil || us.State != swarm.UpdateStateCompleted || us.StartedAt == nil || started == nil || !us.StartedAt.Equal(*started) {
			t.Errorf("update status = %+v, want the one update started at %v, completed (no second update issued)", us, started)
		}
		if j.DigestBefore != d1 || j.DigestAfter != d2 {
			t.Errorf("job digests before, after = %s, %s, want %s, %s", j.DigestBefore, j.DigestAfter, d1, d2)
		}
		waitVersion(ctx, t, addr, "v2")
	})

	t.Run("services found and dropped from events", func(t *testing.T) {
		cli := dockertest.Docker(t)
		reg := dockertest.NewRegistry(t)
		const repo = "hookd/swarm-events"
		d1 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
		d := startDeployer(ctx, t, cli, rig{})
		id, name, _ := createService(ctx, t, cli, serviceOptions{name: "later", image: reg.Ref(repo, "latest"), labels: enabled(nil)})
		if tg := waitTarget(ctx, t, d.Deployer, name); tg.Kind != deploy.KindService || tg.Digest != d1 {
			t.Errorf("target = %+v, want service pinned to %s", tg, d1)
		}
		if err := cli.ServiceRemove(ctx, id); err != nil {
			t.Fatal(err)
		}
		dockertest.WaitFor(t, 10*time.Second, "removed service gone from targets", func() (bool, string) {
			return len(d.Targets()) == 0, fmt.Sprint(d.Targets())
		})
	})
}
