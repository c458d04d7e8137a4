package metrics

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, BuildInfo{Version: "v1.0.0", Revision: "abc"})
	// Touch every vector so that each series family is present.
	m.WebhookDeliveries.WithLabelValues("package", OutcomeQueued).Inc()
	m.Deploys.WithLabelValues("app", "webhook", "succeeded").Inc()
	m.DeployDuration.WithLabelValues("pull").Observe(1)
	m.DeployLeadTime.WithLabelValues("webhook").Observe(3)
	m.ImageAgeAtDeploy.Observe(60)
	m.Rollbacks.WithLabelValues("app", "unhealthy").Inc()
	m.DeployInProgress.WithLabelValues("app").Set(0)
	m.LastSuccessfulDeploy.WithLabelValues("app").SetToCurrentTime()
	m.TargetInfo.WithLabelValues("app", "ghcr.io/o/app", "latest").Set(1)
	m.RegistryRequests.WithLabelValues("ghcr.io", "HEAD", "200").Inc()

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint() error = %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "hookd_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s lacks the hookd_ prefix", name)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, BuildInfo{Version: "v1.2.3", Revision: "deadbeef"})
	const want = `
# HELP hookd_build_info Build information; the value is always 1.
# TYPE hookd_build_info gauge
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want+buildInfoLine()), "hookd_build_info")
	if err != nil {
		t.Error(err)
	}
}

func buildInfoLine() string {
	return `hookd_build_info{goversion="` + runtime.Version() + `",revision="deadbeef",version="v1.2.3"} 1` + "\n"
}

func TestPollOutcomesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, BuildInfo{})
	if n := testutil.CollectAndCount(reg, "hookd_poll_checks_total"); n != 4 {
		t.Errorf("hookd_poll_checks_total series = %d, want 4 (one per outcome, at zero)", n)
	}
}
