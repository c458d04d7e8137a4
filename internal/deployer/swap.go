package deployer

import (
	"context"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Journal phases, in the order a swap takes them.
const (
	phaseCreate    = "create"     // create <name>.hookd-new, join networks
	phaseStopOld   = "stop_old"   // stop the old container
	phaseRenameOld = "rename_old" // old → <name>.hookd-old
	phaseRenameNew = "rename_new" // new → <name>
	phaseStartNew  = "start_new"  // start the new container
	phaseHealth    = "health"     // wait for the health gate
	phaseCleanup   = "cleanup"    // healthy: remove the old container
	phaseRollback  = "rollback"   // not healthy: keep new as .hookd-failed, restore old
)

// Rollback reasons recorded on jobs and in the rollbacks metric.
const (
	ReasonUnhealthy   = "unhealthy"
	ReasonExited      = "exited"
	ReasonTimeout     = "timeout"
	ReasonStartFailed = "start_failed"
)

// verdict is the health gate's result; an empty reason means healthy.
type verdict struct {
	reason, detail string
}

// hook lets tests stop the worker dead at a named point.
func (d *Deployer) hook(point string) error {
	if d.crashAfter != nil && d.crashAfter(point) {
		d.crashed.Store(true)
		return errCrashed
	}
	return nil
}

// journal records st as being at phase, before the phase is taken.
func (d *Deployer) journal(ctx context.Context, st *deploy.Step, phase string) error {
	st.Phase = phase
	st.At = time.Now().UTC()
	if err := d.state.PutStep(ctx, *st); err != nil {
		return fmt.Errorf("journal %s: %w", phase, err)
	}
	return d.hook(phase + ":journal")
}

// swap replaces cur by a container built from sp and gates it on its health,
// rolling back when it fails. Each Docker step runs to completion even when
// shutdown begins (a half-taken step is what nobody can judge afterwards);
// between steps and during the health gate, shutdown restores the old
// container and hands the job back to the queue.
func (d *Deployer) swap(ctx, runCtx context.Context, j *deploy.Job, cur containerInspect, sp spec, log *slog.Logger) outcome {
	name := j.Target
	grace := 10 * time.Second
	if cur.Config.StopTimeout != nil && *cur.Config.StopTimeout > 0 {
		grace = time.Duration(*cur.Config.StopTimeout) * time.Second
	}
	timeout := d.healthTimeout(cur.Config.Labels)
	// Enough for two stops, the gate and the other steps; the job's own
	// deadline does not cut a step short.
	budget := 2*grace + max(timeout, d.cfg.SettleTime) + 2*time.Minute
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer scancel()

	if err := d.settleEarlier(sctx, name); err != nil {
		return outcome{status: deploy.StatusFailed, err: err}
	}
	st := deploy.Step{Target: name, JobID: j.ID, OldID: cur.ID}
	// undo puts the old container back after a failed step.
	undo := func(cause error) outcome {
		if errors.Is(cause, errCrashed) {
			return outcome{err: cause}
		}
		if _, err := d.recover(sctx, name, st); err != nil {
			log.Error("restore after failed step failed; left for reconcile", "err", err)
			return outcome{status: deploy.StatusFailed, err: fmt.Errorf("restoring the old container failed too (%v), after: %w", err, cause)}
		}
		d.deleteStep(sctx, name, log)
		o := outcome{status: deploy.StatusFailed, err: fmt.Errorf("old container restored after: %w", cause)}
		return d.interrupted(runCtx, o)
	}
	stopping := func() bool { return runCtx.Err() != nil }

	t0 := time.Now()
	if err := d.journal(sctx, &st, phaseCreate); err != nil {
		return undo(err)
	}
	created, err := d.docker.ContainerCreate(sctx, sp.Config, sp.HostConfig, sp.Networking, nil, name+suffixNew)
	if err != nil {
		return undo(fmt.Errorf("create %s: %w", name+suffixNew, err))
	}
	st.NewID = created.ID
	if err := d.journal(sctx, &st, phaseCreate); err != nil {
		return undo(err)
	}
	for _, nj := range sp.Connect {
		if err := d.docker.NetworkConnect(sctx, nj.Network, created.ID, nj.Endpoint); err != nil {
			return undo(fmt.Errorf("connect %s to network %s: %w", name+suffixNew, nj.Network, err))
		}
	}
	newC, err := d.docker.ContainerInspect(sctx, created.ID)
	if err != nil {
		return undo(fmt.Errorf("inspect %s: %w", name+suffixNew, err))
	}
	if err := d.hook(phaseCreate); err != nil {
		return undo(err)
	}
	log.Info("replacement created", "container", shortID(created.ID))

	// Subscribe to the new container's events now, while the old one still
	// serves, so that subscribing adds nothing to the downtime. Since replays
	// anything that happens before the subscription is live.
	evCtx, evCancel := context.WithCancel(ctx)
	defer evCancel()
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	subscribe := func() (<-chan events.Message, <-chan error) {
		return d.docker.Events(evCtx, events.ListOptions{Since: since, Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("container", created.ID),
		)})
	}
	msgs, errs := subscribe()

	steps := []struct {
		phase string
		do    func() error
	}{
		{phaseStopOld, func() error { return d.docker.ContainerStop(sctx, cur.ID, container.StopOptions{}) }},
		{phaseRenameOld, func() error { return d.docker.ContainerRename(sctx, cur.ID, name+suffixOld) }},
		{phaseRenameNew, func() error { return d.docker.ContainerRename(sctx, created.ID, name) }},
	}
	for _, s := range steps {
		if stopping() {
			return undo(fmt.Errorf("shutting down before %s: %w", s.phase, runCtx.Err()))
		}
		if err := d.journal(sctx, &st, s.phase); err != nil {
			return undo(err)
		}
		if err := s.do(); err != nil {
			return undo(fmt.Errorf("%s: %w", strings.ReplaceAll(s.phase, "_", " "), err))
		}
		if err := d.hook(s.phase); err != nil {
			return undo(err)
		}
	}
	if err := d.journal(sctx, &st, phaseStartNew); err != nil {
		return undo(err)
	}
	startErr := d.docker.ContainerStart(sctx, created.ID, container.StartOptions{})
	if err := d.hook(phaseStartNew); err != nil {
		return undo(err)
	}
	d.phase(j, "swap", t0)

	var v verdict
	if startErr != nil {
		v = verdict{reason: ReasonStartFailed, detail: startErr.Error()}
	} else {
		if err := d.journal(sctx, &st, phaseHealth); err != nil {
			return undo(err)
		}
		hasHealth := hasHealthcheck(newC.Config)
		log.Info("replacement started; waiting for health gate", "healthcheck", hasHealth, "timeout_seconds", timeout.Seconds())
		t1 := time.Now()
		v, err = d.gate(ctx, created.ID, msgs, errs, subscribe, hasHealth, timeout, d.cfg.SettleTime)
		d.phase(j, "health", t1)
		if err != nil {
			if stopping() {
				return d.abandonGate(sctx, j, st, log)
			}
			// The job's own deadline ran out during the gate.
			v = verdict{reason: ReasonTimeout, detail: "deploy timeout reached during health gate"}
		}
	}

	if v.reason == "" {
		healthyAt := time.Now()
		if err := d.journal(sctx, &st, phaseCleanup); err != nil {
			if errors.Is(err, errCrashed) {
				return outcome{err: err}
			}
			// The gate passed: finish the swap all the same.
			log.Error("journal cleanup failed", "err", err)
		}
		if err := d.docker.ContainerRemove(sctx, cur.ID, container.RemoveOptions{Force: true}); err != nil {
			// Keep the journal: a restart must finish this swap, not undo it.
			log.Error("remove old container failed", "container", name+suffixOld, "err", err)
			return outcome{status: deploy.StatusSucceeded, healthyAt: healthyAt}
		}
		if err := d.hook(phaseCleanup); err != nil {
			return outcome{err: err}
		}
		d.deleteStep(sctx, name, log)
		return outcome{status: deploy.StatusSucceeded, healthyAt: healthyAt}
	}

	j.RollbackReason, j.RollbackDetail = v.reason, v.detail
	d.saveJob(runCtx, *j) // a crash during the rollback must not lose the reason
	log.Warn("replacement not healthy; rolling back", "reason", v.reason, "detail", v.detail)
	if err := d.journal(sctx, &st, phaseRollback); err != nil {
		if errors.Is(err, errCrashed) {
			return outcome{err: err}
		}
		log.Error("journal rollback failed", "err", err)
	}
	_, rerr := d.recover(sctx, name, st)
	if err := d.hook(phaseRollback); err != nil {
		return outcome{err: err}
	}
	cause := fmt.Sprintf("new container %s: %s", v.reason, v.detail)
	if rerr != nil {
		return outcome{status: deploy.StatusFailed, err: fmt.Errorf("%s; rollback failed, left for reconcile: %w", cause, rerr)}
	}
	d.deleteStep(sctx, name, log)
	return outcome{status: deploy.StatusRolledBack, err: errors.New(cause + "; rolled back to the previous container")}
}

// abandonGate handles shutdown during the health gate: a replacement that
// is already healthy is kept, anything else is undone and the job requeued.
func (d *Deployer) abandonGate(ctx context.Context, j *deploy.Job, st deploy.Step, log *slog.Logger) outcome {
	dir, err := d.recover(ctx, j.Target, st)
	if err != nil {
		log.Error("restore at shutdown failed; left for reconcile", "err", err)
		return outcome{abandoned: true}
	}
	d.deleteStep(ctx, j.Target, log)
	if dir == dirForward {
		return outcome{status: deploy.StatusSucceeded}
	}
	return outcome{abandoned: true}
}

func (d *Deployer) deleteStep(ctx context.Context, target string, log *slog.Logger) {
	if err := d.state.DeleteStep(ctx, target); err != nil {
		log.Error("delete journal step failed", "err", err)
	}
}

// settleEarlier makes sure nothing of an earlier swap of name is left: an
// unfinished journal entry is reconciled first, stale stopped leftovers
// removed.
func (d *Deployer) settleEarlier(ctx context.Context, name string) error {
	steps, err := d.state.Steps(ctx)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	for _, st := range steps {
		if st.Target != name {
			continue
		}
		if _, err := d.recover(ctx, name, st); err != nil {
			return fmt.Errorf("unfinished swap of %q from job %s could not be reconciled: %w", name, st.JobID, err)
		}
		if err := d.state.DeleteStep(ctx, name); err != nil {
			return fmt.Errorf("delete journal step: %w", err)
		}
	}
	for _, suffix := range []string{suffixNew, suffixOld} {
		c, err := d.findNamed(ctx, name+suffix)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		if c.State != nil && (c.State.Running || c.State.Restarting) {
			return fmt.Errorf("leftover container %q is running; restart hookd to reconcile it or remove it", name+suffix)
		}
		if err := d.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
			return fmt.Errorf("remove leftover %s: %w", name+suffix, err)
		}
	}
	return nil
}

func hasHealthcheck(c *container.Config) bool {
	return c != nil && c.Healthcheck != nil && len(c.Healthcheck.Test) > 0 && c.Healthcheck.Test[0] != "NONE"
}

// gate waits for the started container to prove itself. It must stay
// running, unrestarted, for settle and, with a healthcheck, also report
// "healthy" within timeout. The settle window also catches a container that
// passes its first check and dies right after. The gate reacts to events and
// timers, never polls. An error means ctx ended first.
func (d *Deployer) gate(ctx context.Context, id string, msgs <-chan events.Message, errs <-chan error,
	subscribe func() (<-chan events.Message, <-chan error), hasHealth bool, timeout, settle time.Duration,
) (verdict, error) {
	settled := time.NewTimer(settle)
	defer settled.Stop()
	var deadline <-chan time.Time
	if hasHealth {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	isSettled, healthy := false, false
	for {
		select {
		case m := <-msgs:
			action := string(m.Action)
			switch {
			case m.Action == events.ActionDie:
				code := m.Actor.Attributes["exitCode"]
				if code == "" {
					code = "unknown"
				}
				return verdict{reason: ReasonExited, detail: "exit code " + code}, nil
			case strings.HasPrefix(action, string(events.ActionHealthStatus)):
				status := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(action, string(events.ActionHealthStatus)), ":"))
				switch status {
				case container.Healthy:
					if hasHealth && !healthy {
						healthy, deadline = true, nil
						if isSettled {
							return d.confirm(ctx, id, hasHealth, timeout), nil
						}
					}
				case container.Unhealthy:
					return verdict{reason: ReasonUnhealthy, detail: d.lastHealthOutput(ctx, id)}, nil
				}
			}
		case err := <-errs:
			if ctx.Err() != nil {
				return verdict{}, ctx.Err()
			}
			// Stream lost: subscribe again; Since replays what was missed.
			d.log.Warn("health gate event stream lost; resubscribing", "err", err)
			if !sleepCtx(ctx, 250*time.Millisecond) {
				return verdict{}, ctx.Err()
			}
			msgs, errs = subscribe()
		case <-settled.C:
			isSettled = true
			if !hasHealth || healthy {
				return d.confirm(ctx, id, hasHealth, timeout), nil
			}
		case <-deadline:
			return d.confirm(ctx, id, hasHealth, timeout), nil
		case <-ctx.Done():
			return verdict{}, ctx.Err()
		}
	}
}

// confirm asks the engine for the verdict once the events say the gate is
// decided, in case an event was missed or is still in flight.
func (d *Deployer) confirm(ctx context.Context, id string, hasHealth bool, timeout time.Duration) verdict {
	c, err := d.docker.ContainerInspect(ctx, id)
	if err == nil && c.State != nil {
		switch {
		case !c.State.Running || c.State.Restarting:
			return verdict{reason: ReasonExited, detail: fmt.Sprintf("exit code %d", c.State.ExitCode)}
		case c.RestartCount > 0:
			return verdict{reason: ReasonExited, detail: fmt.Sprintf("restarted %d times", c.RestartCount)}
		case !hasHealth:
			return verdict{}
		case c.State.Health != nil && c.State.Health.Status == container.Healthy:
			return verdict{}
		case c.State.Health != nil && c.State.Health.Status == container.Unhealthy:
			return verdict{reason: ReasonUnhealthy, detail: healthOutput(c)}
		}
	}
	if err != nil && !hasHealth {
		return verdict{} // the engine did not answer, but no die event came either
	}
	detail := fmt.Sprintf("not healthy within %s", timeout)
	if out := healthOutput(c); out != "" {
		detail += "; last check: " + out
	}
	return verdict{reason: ReasonTimeout, detail: detail}
}

func (d *Deployer) lastHealthOutput(ctx context.Context, id string) string {
	c, err := d.docker.ContainerInspect(ctx, id)
	if err != nil {
		return "health check failed"
	}
	if out := healthOutput(c); out != "" {
		return out
	}
	return "health check failed"
}

// healthOutput is the last health check's output, trimmed and capped.
func healthOutput(c containerInspect) string {
	if c.ContainerJSONBase == nil || c.State == nil || c.State.Health == nil || len(c.State.Health.Log) == 0 {
		return ""
	}
	last := c.State.Health.Log[len(c.State.Health.Log)-1]
	out := strings.TrimSpace(last.Output)
	if out == "" {
		out = fmt.Sprintf("exit code %d", last.ExitCode)
	}
	if len(out) > 512 {
		out = out[:512] + "…"
	}
	return out
}
