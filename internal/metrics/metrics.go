// Package metrics owns every hookd metric. New registers them on a registry
// made by the caller; nothing here is global.
package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Fixed label values. Label values only ever come from these sets or from
// configured target names, so a flood of deliveries cannot add series.
const (
	OutcomeQueued           = "queued"
	OutcomeIgnored          = "ignored"
	OutcomeDuplicate        = "duplicate"
	OutcomeInvalidSignature = "invalid_signature"
	OutcomeBadRequest       = "bad_request"
	OutcomeTooLarge         = "too_large"
	OutcomeQueueFull        = "queue_full"

	PollUnchanged   = "unchanged"
	PollChanged     = "changed"
	PollError       = "error"
	PollRateLimited = "rate_limited"

	// Outcomes of verifying an image's signature: a signature by the
	// expected identity covers the digest; none was found; those found
	// are not acceptable (another signer, other content, invalid); or no
	// verdict could be reached (the registry or the trusted root could
	// not be read, the target's labels are wrong).
	VerifyVerified = "verified"
	VerifyUnsigned = "unsigned"
	VerifyRejected = "rejected"
	VerifyError    = "error"
)

// Metrics holds every hookd series.
type Metrics struct {
	WebhookDeliveries   *prometheus.CounterVec // event, outcome
	WebhookLastDelivery prometheus.Gauge

	Deploys              *prometheus.CounterVec   // target, trigger, outcome
	DeployDuration       *prometheus.HistogramVec // phase
	DeployLeadTime       *prometheus.HistogramVec // trigger
	ImageAgeAtDeploy     prometheus.Histogram
	Rollbacks            *prometheus.CounterVec // target, reason
	DeployInProgress     *prometheus.GaugeVec   // target
	QueuePending         prometheus.Gauge
	LastSuccessfulDeploy *prometheus.GaugeVec   // target
	TargetInfo           *prometheus.GaugeVec   // target, image, tag
	PollChecks           *prometheus.CounterVec // outcome
	RegistryRequests     *prometheus.CounterVec // registry, method, code
	// EventsDropped counts job events a slow subscriber missed: a
	// subscriber never slows a deploy, it loses events instead.
	EventsDropped *prometheus.CounterVec // subscriber

	// Reporters: GitHub deployment statuses and notifications.
	GitHubReports *prometheus.CounterVec // outcome
	Notifications *prometheus.CounterVec // service, outcome
	// Verifications counts image signature checks by outcome.
	Verifications *prometheus.CounterVec // outcome
}

// Outcomes of a request to GitHub's deployments API
// (hookd_github_reports_total).
const (
	GitHubSent        = "sent"         // created or posted
	GitHubFailed      = "failed"       // unreachable or 5xx: retried
	GitHubRateLimited = "rate_limited" // retried after the reset
	GitHubDenied      = "denied"       // 401, 403, 404: the token; retried
	GitHubInvalid     = "invalid"      // 422 and the like: not retried
	GitHubChecksRed   = "checks_red"   // the checks gate: a check failed
	GitHubPending     = "checks_pending"
	GitHubDropped     = "dropped" // given up, or more jobs than the queue holds
)

// Outcomes of a notification (hookd_notifications_total).
const (
	NotifySent    = "sent"
	NotifyFailed  = "failed"  // an attempt failed; retried
	NotifyDropped = "dropped" // given up, or the queue was full
)

// BuildInfo is stamped into hookd_build_info.
type BuildInfo struct {
	Version  string
	Revision string
}

// New creates the metrics and registers them, together with the Go and
// process collectors, on reg. It panics if a name is registered twice, which
// is a programming error.
func New(reg prometheus.Registerer, bi BuildInfo) *Metrics {
	// Seconds to minutes: a Pi pulling a few hundred MB takes minutes.
	slow := []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200}
	m := &Metrics{
		WebhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookd_webhook_deliveries_total",
			Help: "GitHub webhook deliveries received, by event type and outcome.",
		}, []string{"event", "outcome"}),
		WebhookLastDelivery: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookd_webhook_last_delivery_timestamp_seconds",
			Help: "Unix time of the last correctly signed webhook delivery.",
		}),
		Deploys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookd_deploys_total",
			Help: "Finished deploy jobs, by target, trigger and outcome.",
		}, []string{"target", "trigger", "outcome"}),
		DeployDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hookd_deploy_duration_seconds",
			Help:    "Time spent in each deploy phase (pull, swap, health) and in total.",
			Buckets: slow,
		}, []string{"phase"}),
		DeployLeadTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hookd_deploy_lead_time_seconds",
			Help:    "Time from hookd learning of an image to the new container passing its health gate.",
			Buckets: slow,
		}, []string{"trigger"}),
		ImageAgeAtDeploy: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hookd_image_age_at_deploy_seconds",
			Help:    "Age of the image (from its config's created time) when it went live.",
			Buckets: []float64{10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600},
		}),
		Rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookd_rollbacks_total",
			Help: "Deploys rolled back, by target and reason (unhealthy, exited, timeout, start_failed).",
		}, []string{"target", "reason"}),
		DeployInProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookd_deploy_in_progress",
			Help: "1 while a deploy of the target runs.",
		}, []string{"target"}),
		QueuePending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookd_queue_pending",
			Help: "Deploy jobs waiting in the queue.",
		}),
		LastSuccessfulDeploy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookd_last_successful_deploy_timestamp_seconds",
			Help: "Unix time of the target's last successful deploy.",
		}, []string{"target"}),
		TargetInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookd_target_info",
			Help: "1 for each discovered target, with the image and tag it follows.",
		}, []string{"target", "image", "tag"}),
		PollChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookd_poll_checks_total",
			Help: "Registry poll checks, by outcome (unchanged, changed, error, rate_limited).",
		}, []string{"outcome"}),
		RegistryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookd_registry_requests_total",
			Help: "HTTP requests hookd made to registries, by registry host, method and status code.",
		}, []string{"registry", "method", "code"}),
	}
	m.EventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hookd_job_events_dropped_total",
		Help: "Job events a subscriber (notifications, status page, …) missed because it fell behind.",
	}, []string{"subscriber"})
	m.GitHubReports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hookd_github_reports_total",
		Help: "Requests to GitHub's deployments API, by outcome (sent, failed, rate_limited, denied, invalid, checks_red, checks_pending, dropped).",
	}, []string{"outcome"})
	m.Notifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hookd_notifications_total",
		Help: "Notification messages, by service (the URL's scheme) and outcome (sent, failed, dropped).",
	}, []string{"service", "outcome"})
	for _, o := range []string{GitHubSent, GitHubFailed, GitHubRateLimited, GitHubDenied, GitHubInvalid, GitHubChecksRed, GitHubPending, GitHubDropped} {
		m.GitHubReports.WithLabelValues(o)
	}
	reg.MustRegister(m.GitHubReports, m.Notifications)
	m.Verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hookd_verifications_total",
		Help: "Image signature verifications before a deploy, by outcome (verified, unsigned, rejected, error).",
	}, []string{"outcome"})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hookd_build_info",
		Help: "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{
			"version":   orDefault(bi.Version, "dev"),
			"revision":  orDefault(bi.Revision, revision()),
			"goversion": runtime.Version(),
		},
	})
	info.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
		m.WebhookDeliveries, m.WebhookLastDelivery,
		m.Deploys, m.DeployDuration, m.DeployLeadTime, m.ImageAgeAtDeploy,
		m.Rollbacks, m.DeployInProgress, m.QueuePending, m.LastSuccessfulDeploy,
		m.TargetInfo, m.PollChecks, m.RegistryRequests, m.EventsDropped,
		m.Verifications,
	)
	// Outcomes every operator alerts on exist from the start, at zero, so a
	// rate() over them works before the first event.
	for _, o := range []string{PollUnchanged, PollChanged, PollError, PollRateLimited} {
		m.PollChecks.WithLabelValues(o)
	}
	for _, o := range []string{VerifyVerified, VerifyUnsigned, VerifyRejected, VerifyError} {
		m.Verifications.WithLabelValues(o)
	}
	return m
}

// Discard returns metrics registered on a throw-away registry, for callers
// (mostly tests) that do not scrape.
func Discard() *Metrics {
	return New(prometheus.NewRegistry(), BuildInfo{})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// revision reads the VCS revision the Go toolchain stamps into the binary.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
