package deployer

import (
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// record turns job events into metrics and log lines: the deployer's own
// observer of its events.
func (d *Deployer) record(e deploy.Event) {
	j := e.Job
	m := d.metrics
	log := d.log.With("job_id", j.ID, "target", j.Target)
	switch deploy.Status(e.Kind) {
	case deploy.StatusRunning:
		log.Info("deploy started", "trigger", string(j.Request.Trigger), "request_id", j.Request.ID)
		return
	}
	if !e.Final() {
		return // queued, or a stage
	}
	m.Deploys.WithLabelValues(j.Target, string(j.Request.Trigger), string(j.Status)).Inc()
	for phase, s := range j.Phases {
		m.DeployDuration.WithLabelValues(phase).Observe(s)
	}
	if !j.StartedAt.IsZero() {
		m.DeployDuration.WithLabelValues("total").Observe(j.FinishedAt.Sub(j.StartedAt).Seconds())
	}
	attrs := []any{"status", string(j.Status), "image", j.Image, "digest", j.DigestAfter}
	if !j.StartedAt.IsZero() {
		attrs = append(attrs, "duration_seconds", j.FinishedAt.Sub(j.StartedAt).Seconds())
	}
	switch j.Status {
	case deploy.StatusSucceeded:
		healthy := j.HealthyAt
		if healthy.IsZero() {
			healthy = j.FinishedAt
		}
		m.LastSuccessfulDeploy.WithLabelValues(j.Target).Set(float64(j.FinishedAt.Unix()))
		if !j.Request.ReceivedAt.IsZero() && healthy.After(j.Request.ReceivedAt) {
			m.DeployLeadTime.WithLabelValues(string(j.Request.Trigger)).Observe(healthy.Sub(j.Request.ReceivedAt).Seconds())
		}
		if age, ok := imageAge(j.ImageCreated, healthy); ok {
			m.ImageAgeAtDeploy.Observe(age.Seconds())
		}
		log.Info("deploy finished", attrs...)
	case deploy.StatusRolledBack:
		if j.RollbackReason != "" {
			m.Rollbacks.WithLabelValues(j.Target, j.RollbackReason).Inc()
		}
		log.Warn("deploy rolled back", append(attrs, "reason", j.RollbackReason, "detail", j.RollbackDetail)...)
	case deploy.StatusFailed:
		log.Error("deploy failed", append(attrs, "err", j.Error)...)
	case deploy.StatusRefused:
		log.Warn("deploy refused", append(attrs, "reason", j.Error)...)
	default:
		log.Info("deploy finished", attrs...)
	}
}

// imageAge is now minus the image's created time, when that is plausible:
// set, not in the future, and under a year (reproducible builds stamp 1970).
func imageAge(created, now time.Time) (time.Duration, bool) {
	if created.IsZero() || created.Unix() <= 0 {
		return 0, false
	}
	age := now.Sub(created)
	if age < 0 || age > 365*24*time.Hour {
		return 0, false
	}
	return age, true
}
