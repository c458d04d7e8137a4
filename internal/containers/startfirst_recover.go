package containers

import (
	"context"
	"fmt"
	"sort"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// settleStep settles an unfinished journal entry of name by the rules of
// the strategy that wrote it.
func (r *Recreate) settleStep(ctx context.Context, name string, st deploy.Step) (direction, error) {
	if st.Strategy == StartFirstName {
		return r.recoverStartFirst(ctx, name, st)
	}
	return r.recover(ctx, name, st)
}

// recoverStartFirst settles a start-first swap of name so that exactly one
// container called name runs, from what it finds, with the journal entry
// st as the guide:
//
//   - Forward (the new container under the name, the old one stopped and
//     removed) once the swap was retiring the old one: the new one had
//     passed its gate and was serving; also when the old one is gone,
//     unless the new one failed its gate.
//   - Back in every other case: until the retire the old one was never
//     touched, so the new one is removed (stopped first, so that it
//     drains, when it may have taken requests) and the old one runs on
//     under its name. The job, if any, runs again after a restart.
//
// Only containers labelled hookd.enable=true are ever touched.
func (r *Recreate) recoverStartFirst(ctx context.Context, name string, st deploy.Step) (direction, error) {
	var oldC, newC *containerInspect
	var err error
	if st.OldID != "" {
		if oldC, err = r.findID(ctx, st.OldID); err != nil {
			return dirNone, err
		}
	}
	if st.NewID != "" {
		newC, err = r.findID(ctx, st.NewID)
	} else {
		newC, err = r.findNamed(ctx, name+deploy.SuffixNew)
	}
	if err != nil {
		return dirNone, err
	}
	if oldC == nil && newC == nil {
		return dirNone, nil
	}
	forward := newC != nil && st.Phase != PhaseSFAbort && (st.Phase == PhaseSFRetire || oldC == nil)
	if forward {
		if oldC != nil {
			if err := r.retireOld(ctx, oldC); err != nil {
				return dirForward, err
			}
		}
		return dirForward, r.bringUp(ctx, newC, name)
	}
	if newC != nil {
		if st.Phase == PhaseSFPromote || st.Phase == PhaseSFRetire {
			if err := r.docker.ContainerStop(ctx, newC.ID, container.StopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				return dirBack, fmt.Errorf("stop new container: %w", err)
			}
		}
		if err := r.docker.ContainerRemove(ctx, newC.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return dirBack, fmt.Errorf("remove new container: %w", err)
		}
	}
	if oldC == nil {
		return dirBack, nil
	}
	return dirBack, r.bringUp(ctx, oldC, name)
}

// retireOld stops c with its own stop signal, so that it drains, and
// removes it.
func (r *Recreate) retireOld(ctx context.Context, c *containerInspect) error {
	if c.State.Running {
		if err := r.docker.ContainerStop(ctx, c.ID, container.StopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("stop old container: %w", err)
		}
	}
	if err := r.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove old container: %w", err)
	}
	return nil
}

// Reconcile settles, at start-up, the start-first swaps an earlier run
// left half done (the journal entries it wrote; containers a lost journal
// left behind are the recreate's Reconcile's, whose rules keep the old
// container). For each interrupted job it calls settle with what became of
// it: succeeded when the swap was finished, rolled back when the new
// version had failed its gate; a job whose swap was undone is not settled
// (it runs again). A target that cannot be settled keeps its journal entry
// and is retried before its next deploy.
func (s *StartFirst) Reconcile(ctx context.Context, jr strategy.Journal, settle func(context.Context, deploy.Step, deploy.Status) error) error {
	steps, err := jr.Steps(ctx)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	sort.Slice(steps, func(a, b int) bool { return steps[a].Target < steps[b].Target })
	for _, st := range steps {
		if st.Strategy != StartFirstName {
			continue
		}
		log := s.log.With("target", st.Target, "job_id", st.JobID, "phase", st.Phase)
		dir, err := s.rc.recoverStartFirst(ctx, st.Target, st)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Error("reconcile failed; will retry before the next deploy", "err", err)
			continue
		}
		if err := jr.DeleteStep(ctx, st.Target); err != nil {
			return fmt.Errorf("delete journal step: %w", err)
		}
		log.Info("reconciled half-done start-first swap", "direction", dir.String())
		var status deploy.Status
		switch {
		case dir == dirForward:
			status = deploy.StatusSucceeded
		case st.Phase == PhaseSFAbort:
			status = deploy.StatusRolledBack
		}
		if st.JobID != "" && status != "" {
			if err := settle(ctx, st, status); err != nil {
				return err
			}
		}
	}
	return nil
}
