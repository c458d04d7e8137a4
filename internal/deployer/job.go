package deployer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// runJob runs one job through its target's strategy and records the
// result: the job state machine. Every transition is saved, then published.
func (d *Deployer) runJob(runCtx context.Context, j deploy.Job) {
	start := time.Now()
	log := d.log.With("job_id", j.ID, "target", j.Target)
	j.Status = deploy.StatusRunning
	j.Stage = ""
	j.StartedAt = start.UTC()
	j.Phases = map[string]float64{}
	j.Error, j.RollbackReason, j.RollbackDetail = "", "", ""
	d.transition(runCtx, j, string(j.Status))
	inProgress := d.metrics.DeployInProgress.WithLabelValues(j.Target)
	inProgress.Set(1)

	ctx, cancel := context.WithTimeout(runCtx, d.cfg.DeployTimeout)
	defer cancel()
	run := &strategy.Run{
		Job:     &j,
		Log:     log,
		Life:    runCtx,
		Journal: journal{d},
		OnStage: func(s deploy.Stage) { d.transition(runCtx, j, string(s)) },
		OnSave:  func() { d.saveJob(runCtx, j) },
		Policy: func(ctx context.Context, digest string) error {
			d.mu.Lock()
			err := d.refusalLocked(j.Target, digest, j.Request.Force)
			d.mu.Unlock()
			if err != nil || len(d.cfg.Gates) == 0 {
				return err
			}
			j.DigestAfter = digest
			j.Stage = deploy.StageVerifying
			d.transition(runCtx, j, string(j.Stage))
			for _, g := range d.cfg.Gates {
				if err := g.Admit(ctx, &j); err != nil {
					if errors.Is(err, deploy.ErrRejected) {
						j.Rejected = true
						d.noteRejection(j.Target, digest, err)
					}
					return err
				}
			}
			return nil
		},
	}
	var out strategy.Outcome
	if s, err := d.strategyFor(j.Target); err != nil {
		out = strategy.Refused(err)
	} else {
		out = s.Deploy(ctx, run)
	}
	j.Stage = ""
	inProgress.Set(0)
	if out.Abandoned {
		j.Status = deploy.StatusQueued
		j.StartedAt = time.Time{}
		d.transition(runCtx, j, string(j.Status))
		log.Info("deploy abandoned for shutdown; job stays queued")
		return
	}
	j.Status = out.Status
	if out.Err != nil {
		j.Error = out.Err.Error()
	}
	j.FinishedAt = time.Now().UTC()
	d.noteRollback(j)
	d.transition(runCtx, j, string(j.Status))
	d.finishCoalesced(runCtx, j)
	d.refresh(context.WithoutCancel(runCtx), j.Kind, j.Target)
}

// transition saves j and publishes kind (a status or a stage).
//
// Observers (metrics, logs) see the event before WaitJob callers wake, so
// that whoever waited for a job finds it counted.
func (d *Deployer) transition(ctx context.Context, j deploy.Job, kind string) {
	if err := d.state.PutJob(context.WithoutCancel(ctx), j); err != nil {
		d.log.Error("persist job failed", "job_id", j.ID, "target", j.Target, "err", err)
	}
	d.events.publish(kind, j)
	d.notify()
}

// strategyFor returns the strategy of the target, or why there is none.
func (d *Deployer) strategyFor(target string) (Strategy, error) {
	d.mu.Lock()
	t, ok := d.targets[target]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("target %q not found", target)
	}
	s, ok := d.cfg.Strategies[t.Strategy]
	if !ok {
		return nil, fmt.Errorf("target %q asks for the strategy %q, which hookd does not have for a %s", target, t.Strategy, t.Kind)
	}
	return s, nil
}

// settle records what start-up reconciliation did with an interrupted job.
func (d *Deployer) settle(ctx context.Context, st deploy.Step, status deploy.Status) error {
	j, err := d.state.Job(ctx, st.JobID)
	if err != nil {
		if errors.Is(err, deploy.ErrJobNotFound) {
			return nil
		}
		return fmt.Errorf("read job %s: %w", st.JobID, err)
	}
	if j.Status.Final() {
		return nil
	}
	j.Status, j.Stage = status, ""
	if status == deploy.StatusRolledBack && j.Error == "" {
		j.Error = fmt.Sprintf("new container %s: %s; rolled back to the previous container", j.RollbackReason, j.RollbackDetail)
	}
	j.FinishedAt = time.Now().UTC()
	if err := d.state.PutJob(ctx, j); err != nil {
		return fmt.Errorf("save job %s: %w", j.ID, err)
	}
	d.noteRollback(j)
	d.notify()
	d.events.publish(string(j.Status), j)
	return nil
}
