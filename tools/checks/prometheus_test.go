package checks

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/rulefmt"
)

// The alerts issue 5 asks for, by what they must read.
var wantAlerts = map[string][]string{
	"deploy failed":                         {"hookd_deploys_total"},
	"deploy rolled back":                    {"hookd_rollbacks_total"},
	"no successful deploy after a delivery": {"hookd_webhook_deliveries_total", "hookd_deploys_total"},
	"invalid signatures":                    {"hookd_webhook_deliveries_total"},
	"no deliveries for 24h":                 {"hookd_webhook_last_delivery_timestamp_seconds"},
	"hookd down":                            {"up"},
	"registry rate-limited":                 {"hookd_poll_checks_total", "hookd_registry_requests_total"},
}

func TestAlertRules(t *testing.T) {
	path := repoFile(t, "deploy/prometheus/alerts.yml")
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("rulefmt: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	series := exportedSeries(t)

	var exprs []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			exprs = append(exprs, r.Expr)
			names, problems := checkExpr(r.Expr, series)
			for _, p := range problems {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
			if len(names) == 0 {
				t.Errorf("alert %s reads no series", r.Alert)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", r.Alert)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a summary or description", r.Alert)
			}
		}
	}
	for what, reads := range wantAlerts {
		found := false
		for _, e := range exprs {
			all := true
			for _, name := range reads {
				all = all && strings.Contains(e, name)
			}
			found = found || all
		}
		if !found {
			t.Errorf("no alert for %q (reading %v)", what, reads)
		}
	}
}

func TestPrometheusScrapeConfig(t *testing.T) {
	path := repoFile(t, "deploy/prometheus/prometheus.yml")
	cfg, err := config.LoadFile(path, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	var job bool
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName == "hookd" {
			job = true
			if got := sc.MetricsPath; got != "/metrics" {
				t.Errorf("job hookd scrapes %q, want /metrics", got)
			}
		}
	}
	if !job {
		t.Errorf("no scrape job named hookd, which the alert rules select")
	}
	if len(cfg.RuleFiles) != 1 || !strings.HasSuffix(cfg.RuleFiles[0], "alerts.yml") {
		t.Errorf("rule_files = %v, want alerts.yml", cfg.RuleFiles)
	}
}
