package deployer

import (
	"context"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/container"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// TestIntegrationDeployMetrics: a successful webhook deploy moves every
// series an operator reads to answer "did my push reach the Pi, and how
// long did it take"; a vanished target drops its info series.
func TestIntegrationDeployMetrics(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const repo = "hookd/metrics"
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "metrics", Labels: enabled(nil),
	})
	promReg := prometheus.NewRegistry()
	m := metrics.New(promReg, metrics.BuildInfo{})
	d := startDeployer(ctx, t, cli, rig{Metrics: m})
	waitTarget(ctx, t, d.Deployer, name)

	image := reg.Host + "/" + repo
	if got := testutil.ToFloat64(m.TargetInfo.WithLabelValues(name, image, "latest")); got != 1 {
		t.Errorf("hookd_target_info{target=%q,image=%q,tag=latest} = %v, want 1", name, image, got)
	}

	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	received := time.Now()
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: image, Tag: "latest", Trigger: deploy.TriggerWebhook, ID: "delivery-m", ReceivedAt: received})
	if j.Status != deploy.StatusSucceeded {
		t.Fatalf("job status = %s (error %q), want succeeded", j.Status, j.Error)
	}

	if got := testutil.ToFloat64(m.Deploys.WithLabelValues(name, "webhook", "succeeded")); got != 1 {
		t.Errorf("hookd_deploys_total{outcome=succeeded} = %v, want 1", got)
	}
	for _, phase := range []string{"pull", "swap", "health", "total"} {
		if n := histogramCount(t, promReg, "hookd_deploy_duration_seconds", "phase", phase); n != 1 {
			t.Errorf("hookd_deploy_duration_seconds{phase=%q} count = %d, want 1", phase, n)
		}
	}
	if n := histogramCount(t, promReg, "hookd_deploy_lead_time_seconds", "trigger", "webhook"); n != 1 {
		t.Errorf("hookd_deploy_lead_time_seconds{trigger=webhook} count = %d, want 1", n)
	}
	// The rig stamps images with their build time: a plausible age.
	if n := histogramCount(t, promReg, "hookd_image_age_at_deploy_seconds", "", ""); n != 1 {
		t.Errorf("hookd_image_age_at_deploy_seconds count = %d, want 1", n)
	}
	if got := testutil.ToFloat64(m.DeployInProgress.WithLabelValues(name)); got != 0 {
		t.Errorf("hookd_deploy_in_progress after the job = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.QueuePending); got != 0 {
		t.Errorf("hookd_queue_pending after the job = %v, want 0", got)
	}
	last := testutil.ToFloat64(m.LastSuccessfulDeploy.WithLabelValues(name))
	if last < float64(received.Unix()) || last > float64(time.Now().Unix()+1) {
		t.Errorf("hookd_last_successful_deploy_timestamp_seconds = %v, want between %d and now", last, received.Unix())
	}

	// The target goes away: its info series goes with it.
	if err := cli.ContainerRemove(context.Background(), name, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, 10*time.Second, "target info dropped", func() (bool, string) {
		n := testutil.CollectAndCount(m.TargetInfo, "hookd_target_info")
		return n == 0, "series left"
	})
}

// histogramCount returns the sample count of the histogram name whose label
// key has value (any series when key is empty).
func histogramCount(t *testing.T, reg *prometheus.Registry, name, key, value string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if key == "" {
				return m.GetHistogram().GetSampleCount()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == key && l.GetValue() == value {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
