package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// Journal phases, in the order a swap takes them.
const (
	PhaseCreate    = "create"     // create <name>.hookd-new, join networks
	PhaseStopOld   = "stop_old"   // stop the old container
	PhaseRenameOld = "rename_old" // old → <name>.hookd-old
	PhaseRenameNew = "rename_new" // new → <name>
	PhaseStartNew  = "start_new"  // start the new container
	PhaseHealth    = "health"     // wait for the health gate
	PhaseCleanup   = "cleanup"    // healthy: remove the old container
	PhaseRollback  = "rollback"   // not healthy: record and remove new, restore old
	// PhaseJoin is the entry of a container that shares the target's
	// namespace, written before the target's swap begins: it is recreated
	// to join the replacement (or restarted to join the old container
	// again), as the target's swap goes.
	PhaseJoin = "join"
)

// verdict is the health gate's result; an empty reason means healthy.
type verdict struct {
	reason, detail string
}

// journal records st as being at phase, before the phase is taken.
func journal(ctx context.Context, jr strategy.Journal, st *deploy.Step, phase string) error {
	st.Phase = phase
	st.At = time.Now().UTC()
	if err := jr.PutStep(ctx, *st); err != nil {
		return fmt.Errorf("journal %s: %w", phase, err)
	}
	return nil
}

// createNew creates name+SuffixNew (name is st.Target) from sp, journals
// its id under phase, connects it to sp's other networks and inspects it.
// Whatever the error, a container it created is named in st.NewID, for the
// caller to remove.
func (r *Recreate) createNew(ctx context.Context, jr strategy.Journal, st *deploy.Step, phase string, sp spec) (containerInspect, error) {
	name := st.Target + deploy.SuffixNew
	id, err := r.createTagged(ctx, sp, name)
	if err != nil {
		return containerInspect{}, fmt.Errorf("create %s: %w", name, err)
	}
	st.NewID = id
	if err := journal(ctx, jr, st, phase); err != nil {
		return containerInspect{}, err
	}
	for _, nj := range sp.Connect {
		if err := r.docker.NetworkConnect(ctx, nj.Network, id, nj.Endpoint); err != nil {
			return containerInspect{}, fmt.Errorf("connect %s to network %s: %w", name, nj.Network, err)
		}
	}
	c, err := r.docker.ContainerInspect(ctx, id)
	if err != nil {
		return containerInspect{}, fmt.Errorf("inspect %s: %w", name, err)
	}
	if sp.ImageID != "" && c.Image != sp.ImageID {
		return containerInspect{}, fmt.Errorf("%s was created from image %s, not %s: the tag %s moved meanwhile", name, ShortID(c.Image), ShortID(sp.ImageID), sp.Tag)
	}
	return c, nil
}

// swap replaces cur by a container built from sp and gates it on its health,
// rolling back when it fails. Each Docker step runs to completion even when
// shutdown begins (a half-taken step is what nobody can judge afterwards);
// between steps and during the health gate, shutdown restores the old
// container and hands the job back to the queue.
func (r *Recreate) swap(ctx context.Context, run *strategy.Run, cur containerInspect, sp spec, rel relations, log *slog.Logger) strategy.Outcome {
	j := run.Job
	name := j.Target
	grace := 10 * time.Second
	if cur.Config.StopTimeout != nil && *cur.Config.StopTimeout > 0 {
		grace = time.Duration(*cur.Config.StopTimeout) * time.Second
	}
	timeout := r.healthTimeout(cur.Config.Labels)
	// Enough for two stops, the gate and the other steps; the job's own
	// deadline does not cut a step short.
	budget := 2*grace + max(timeout, r.cfg.SettleTime) + 2*time.Minute + r.dependentsBudget(rel)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer scancel()

	if err := r.settleEarlier(sctx, run.Journal, name); err != nil {
		return strategy.Failed(err)
	}
	st := deploy.Step{Target: name, JobID: j.ID, OldID: cur.ID, Tag: sp.Tag, OldImage: sp.PrevImageID, NewImage: sp.ImageID}
	if err := r.journalJoiners(sctx, run, rel); err != nil {
		return strategy.Failed(err)
	}
	// undo puts the old container back after a failed step.
	undo := func(cause error) strategy.Outcome {
		if r.lost(cause) {
			return r.afterEngineLoss(run, st, verdict{}, cause, log)
		}
		if _, err := r.recover(sctx, name, st); err != nil {
			if r.lost(err) {
				return r.afterEngineLoss(run, st, verdict{}, err, log)
			}
			log.Error("restore after failed step failed; left for reconcile", "err", err)
			return strategy.Failed(fmt.Errorf("restoring the old container failed too (%v), after: %w", err, cause))
		}
		// The joiners lost their namespace if the old container was stopped.
		r.rejoinOld(sctx, run, rel, nil, st.Phase != PhaseCreate, log)
		r.deleteStep(sctx, run.Journal, name, log)
		return run.Interrupted(strategy.Failed(fmt.Errorf("old container restored after: %w", cause)))
	}

	run.Stage(deploy.StageSwapping)
	t0 := time.Now()
	if err := journal(sctx, run.Journal, &st, PhaseCreate); err != nil {
		return undo(err)
	}
	newC, err := r.createNew(sctx, run.Journal, &st, PhaseCreate, sp)
	if err != nil {
		return undo(err)
	}
	log.Info("replacement created", "container", ShortID(newC.ID))

	// Subscribe to the new container's events now, while the old one still
	// serves, so that subscribing adds nothing to the downtime. Since replays
	// anything that happens before the subscription is live.
	evCtx, evCancel := context.WithCancel(ctx)
	defer evCancel()
	subscribe := r.containerEvents(evCtx, newC.ID, time.Now().Add(-time.Second))
	msgs, errs := subscribe()

	steps := []struct {
		phase string
		do    func() error
	}{
		{PhaseStopOld, func() error { return r.docker.ContainerStop(sctx, cur.ID, container.StopOptions{}) }},
		{PhaseRenameOld, func() error { return r.docker.ContainerRename(sctx, cur.ID, name+deploy.SuffixOld) }},
		{PhaseRenameNew, func() error { return r.docker.ContainerRename(sctx, newC.ID, name) }},
	}
	for _, s := range steps {
		if run.Stopping() {
			return undo(fmt.Errorf("shutting down before %s: %w", s.phase, run.Life.Err()))
		}
		if err := journal(sctx, run.Journal, &st, s.phase); err != nil {
			return undo(err)
		}
		if err := s.do(); err != nil {
			return undo(fmt.Errorf("%s: %w", strings.ReplaceAll(s.phase, "_", " "), err))
		}
	}
	if err := journal(sctx, run.Journal, &st, PhaseStartNew); err != nil {
		return undo(err)
	}
	startErr := r.docker.ContainerStart(sctx, newC.ID, container.StartOptions{})
	run.Phase("swap", t0)
	if r.lost(startErr) {
		return r.afterEngineLoss(run, st, verdict{}, startErr, log)
	}

	var v verdict
	if startErr != nil {
		v = verdict{reason: deploy.ReasonStartFailed, detail: startErr.Error()}
	} else {
		if err := journal(sctx, run.Journal, &st, PhaseHealth); err != nil {
			return undo(err)
		}
		run.Stage(deploy.StageGating)
		hasHealth := hasHealthcheck(newC.Config)
		log.Info("replacement started; waiting for health gate", "healthcheck", hasHealth, "timeout_seconds", timeout.Seconds())
		t1 := time.Now()
		v, err = r.gateProbed(ctx, cur, newC.ID, msgs, errs, subscribe, hasHealth, timeout, r.cfg.SettleTime) // probe.go
		run.Phase("health", t1)
		if lost := r.gateLost(err, v); lost != nil {
			return r.afterEngineLoss(run, st, verdict{}, lost, log)
		}
		if err != nil {
			if run.Stopping() {
				return r.abandonGate(sctx, run, st, cur, newC, rel, log)
			}
			// The job's own deadline ran out during the gate.
			v = verdict{reason: deploy.ReasonTimeout, detail: "deploy timeout reached during health gate"}
		}
	}

	failedID, failedName := newC.ID, name
	var dep dependentsDone
	if v.reason == "" {
		j.HealthyAt = time.Now().UTC()
		dep = r.afterGate(ctx, sctx, run, cur, newC, rel, log)
		v = dep.v
		if dep.failedID != "" {
			failedID, failedName = dep.failedID, dep.failedName
		}
	}
	if v.reason == "" {
		if err := journal(sctx, run.Journal, &st, PhaseCleanup); err != nil {
			// The gate passed: finish the swap all the same.
			log.Error("journal cleanup failed", "err", err)
		}
		if err := r.moveTag(sctx, sp.Tag, sp.ImageID, sp.PrevImageID); err != nil {
			log.Error("moving the local tag to the new image failed", "err", err)
		}
		r.finishJoiners(sctx, run, dep.joined, log)
		if err := r.docker.ContainerRemove(sctx, cur.ID, container.RemoveOptions{Force: true}); err != nil {
			if r.lost(err) {
				return r.afterEngineLoss(run, st, v, err, log)
			}
			// Keep the journal: a restart must finish this swap, not undo it.
			log.Error("remove old container failed", "container", name+deploy.SuffixOld, "err", err)
		} else {
			r.deleteStep(sctx, run.Journal, name, log)
		}
		r.postUpdates(sctx, run, newC, dep.joined)
		return strategy.Outcome{Status: deploy.StatusSucceeded}
	}

	j.RollbackReason, j.RollbackDetail = v.reason, v.detail
	run.Stage(deploy.StageRollback)
	fv := v
	if dep.failedID != "" {
		fv = dep.failedVerdict
	}
	j.Failed = r.failedVersion(sctx, failedID, failedName, fv)
	run.Save() // a crash during the rollback must not lose the reason
	log.Warn("replacement not healthy; rolling back", "reason", v.reason, "detail", v.detail)
	if err := journal(sctx, run.Journal, &st, PhaseRollback); err != nil {
		log.Error("journal rollback failed", "err", err)
	}
	_, rerr := r.recover(sctx, name, st)
	cause := fmt.Sprintf("new container %s: %s", v.reason, v.detail)
	if r.lost(rerr) {
		return r.afterEngineLoss(run, st, v, rerr, log)
	}
	if v.reason == deploy.ReasonDependent {
		cause = "a container depending on the new version failed: " + v.detail
	}
	if rerr != nil {
		return strategy.Failed(fmt.Errorf("%s; rollback failed, left for reconcile: %w", cause, rerr))
	}
	r.rejoinOld(sctx, run, rel, dep.joined, true, log)
	r.restartAgain(sctx, run, dep.restarted, log)
	r.deleteStep(sctx, run.Journal, name, log)
	return strategy.Outcome{Status: deploy.StatusRolledBack, Err: errors.New(cause + "; rolled back to the previous container")}
}

// abandonGate handles shutdown during the health gate: a replacement that
// is already healthy is kept, anything else is undone and the job requeued.
func (r *Recreate) abandonGate(ctx context.Context, run *strategy.Run, st deploy.Step, oldT, newT containerInspect, rel relations, log *slog.Logger) strategy.Outcome {
	dir, err := r.recover(ctx, run.Job.Target, st)
	if err != nil {
		log.Error("restore at shutdown failed; left for reconcile", "err", err)
		return strategy.Outcome{Abandoned: true}
	}
	if dir == dirForward {
		// Kept: the containers sharing its namespace join it, ungated.
		var joined []joinedDep
		for _, d := range rel.joiners {
			jd, v := r.rejoinOne(ctx, ctx, run, oldT, newT, d, rel.graph, false, log)
			if v.reason != "" {
				log.Error("recreating a container sharing the target's namespace at shutdown failed; left for reconcile", "container", jd.st.Target, "detail", v.detail)
				continue
			}
			joined = append(joined, jd)
		}
		r.finishJoiners(ctx, run, joined, log)
		r.deleteStep(ctx, run.Journal, run.Job.Target, log)
		return strategy.Outcome{Status: deploy.StatusSucceeded}
	}
	r.rejoinOld(ctx, run, rel, nil, true, log)
	r.deleteStep(ctx, run.Journal, run.Job.Target, log)
	return strategy.Outcome{Abandoned: true}
}

func (r *Recreate) deleteStep(ctx context.Context, jr strategy.Journal, target string, log *slog.Logger) {
	if err := jr.DeleteStep(ctx, target); err != nil {
		log.Error("delete journal step failed", "err", err)
	}
}

// settleEarlier makes sure nothing of an earlier swap of name is left: an
// unfinished journal entry is reconciled first, stale stopped leftovers
// removed (a <name>.hookd-failed an earlier hookd kept among them).
func (r *Recreate) settleEarlier(ctx context.Context, jr strategy.Journal, name string) error {
	steps, err := jr.Steps(ctx)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	for _, st := range steps {
		if st.Target != name {
			continue
		}
		if _, err := r.settleStep(ctx, name, st); err != nil { // the entry may be start-first's
			return fmt.Errorf("unfinished swap of %q from job %s could not be reconciled: %w", name, st.JobID, err)
		}
		if err := jr.DeleteStep(ctx, name); err != nil {
			return fmt.Errorf("delete journal step: %w", err)
		}
	}
	for _, suffix := range []string{deploy.SuffixNew, deploy.SuffixOld, deploy.SuffixFailed} {
		c, err := r.findNamed(ctx, name+suffix)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		if c.State != nil && (c.State.Running || c.State.Restarting) {
			return fmt.Errorf("leftover container %q is running; restart hookd to reconcile it or remove it", name+suffix)
		}
		if err := r.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
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
func (r *Recreate) gate(ctx context.Context, id string, msgs <-chan events.Message, errs <-chan error,
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
				return verdict{reason: deploy.ReasonExited, detail: "exit code " + code}, nil
			case strings.HasPrefix(action, string(events.ActionHealthStatus)):
				status := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(action, string(events.ActionHealthStatus)), ":"))
				switch status {
				case container.Healthy:
					if hasHealth && !healthy {
						healthy, deadline = true, nil
						if isSettled {
							return r.confirm(ctx, id, hasHealth, timeout), nil
						}
					}
				case container.Unhealthy:
					return verdict{reason: deploy.ReasonUnhealthy, detail: r.lastHealthOutput(ctx, id)}, nil
				}
			}
		case err := <-errs:
			if ctx.Err() != nil {
				return verdict{}, ctx.Err()
			}
			if r.engineGoingAway(ctx) {
				return verdict{}, fmt.Errorf("%w: health gate event stream: %w", errEngineLost, err)
			}
			// Stream lost: subscribe again; Since replays what was missed.
			r.log.Warn("health gate event stream lost; resubscribing", "err", err)
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return verdict{}, ctx.Err()
			}
			msgs, errs = subscribe()
		case <-settled.C:
			isSettled = true
			if !hasHealth || healthy {
				return r.confirm(ctx, id, hasHealth, timeout), nil
			}
		case <-deadline:
			return r.confirm(ctx, id, hasHealth, timeout), nil
		case <-ctx.Done():
			return verdict{}, ctx.Err()
		}
	}
}

// confirm asks the engine for the verdict once the events say the gate is
// decided, in case an event was missed or is still in flight.
func (r *Recreate) confirm(ctx context.Context, id string, hasHealth bool, timeout time.Duration) verdict {
	c, err := r.docker.ContainerInspect(ctx, id)
	if err == nil && c.State != nil {
		switch {
		case !c.State.Running || c.State.Restarting:
			return verdict{reason: deploy.ReasonExited, detail: fmt.Sprintf("exit code %d", c.State.ExitCode)}
		case c.RestartCount > 0:
			return verdict{reason: deploy.ReasonExited, detail: fmt.Sprintf("restarted %d times", c.RestartCount)}
		case !hasHealth:
			return verdict{}
		case c.State.Health != nil && c.State.Health.Status == container.Healthy:
			return verdict{}
		case c.State.Health != nil && c.State.Health.Status == container.Unhealthy:
			return verdict{reason: deploy.ReasonUnhealthy, detail: HealthOutput(c)}
		}
	}
	if engineLost(err) {
		return verdict{reason: reasonEngineLost, detail: err.Error()}
	}
	if err != nil && !hasHealth {
		return verdict{} // the engine did not answer, but no die event came either
	}
	detail := fmt.Sprintf("not healthy within %s", timeout)
	if out := HealthOutput(c); out != "" {
		detail += "; last check: " + out
	}
	return verdict{reason: deploy.ReasonTimeout, detail: detail}
}

func (r *Recreate) lastHealthOutput(ctx context.Context, id string) string {
	c, err := r.docker.ContainerInspect(ctx, id)
	if err != nil {
		return "health check failed"
	}
	if out := HealthOutput(c); out != "" {
		return out
	}
	return "health check failed"
}

// HealthOutput is the last health check's output, trimmed and capped.
func HealthOutput(c containerInspect) string {
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
