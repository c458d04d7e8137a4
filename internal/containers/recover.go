package containers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
)

// direction is which way recover settled a half-done swap.
type direction int

const (
	dirNone    direction = iota // nothing to do
	dirForward                  // the new container stays, the old one is removed
	dirBack                     // the old container is restored
)

// recover settles a half-done swap of name so that exactly one container
// called name runs. It decides from what it finds, with the journal entry st
// as a hint (st may be the zero Step when the journal was lost):
//
//   - Forward (keep the new container, remove the old) when the swap was
//     cleaning up after a passed gate, when the new container runs under the
//     name and Docker reports it healthy, or when the old one is gone.
//   - Back in every other case: a replacement that never passed its gate is
//     not trusted. The new container is removed (kept as <name>.hookd-failed
//     when the journal says a rollback was under way), the old one renamed
//     back and started. The job, if any, runs again after a restart.
//
// Only containers labelled hookd.enable=true are ever touched.
func (r *Recreate) recover(ctx context.Context, name string, st deploy.Step) (direction, error) {
	var oldC, newC *containerInspect
	var err error
	if st.OldID != "" {
		if oldC, err = r.findID(ctx, st.OldID); err != nil {
			return dirNone, err
		}
	}
	if st.NewID != "" {
		if newC, err = r.findID(ctx, st.NewID); err != nil {
			return dirNone, err
		}
	}
	if newC == nil {
		if newC, err = r.findNamed(ctx, name+deploy.SuffixNew); err != nil {
			return dirNone, err
		}
	}
	if oldC == nil && st.OldID == "" {
		if oldC, err = r.findNamed(ctx, name+deploy.SuffixOld); err != nil {
			return dirNone, err
		}
	}
	cur, err := r.findNamed(ctx, name)
	if err != nil {
		return dirNone, err
	}
	if cur != nil && !sameID(cur, oldC) && !sameID(cur, newC) {
		switch {
		case st.OldID != "" && oldC == nil && newC == nil:
			return dirNone, nil // the journalled containers are gone; whatever runs now is not ours to judge
		case st.OldID == "" && oldC != nil && newC == nil:
			newC = cur // no journal: the old one was moved aside, so this is the new one
		case st.OldID == "" && oldC == nil:
			oldC = cur
		default:
			return dirNone, fmt.Errorf("unexpected container %s under the name %q", ShortID(cur.ID), name)
		}
	}
	if oldC == nil && newC == nil {
		return dirNone, nil
	}
	if newC == nil && strings.TrimPrefix(oldC.Name, "/") == name && oldC.State.Running {
		return dirNone, nil // nothing was changed yet
	}

	forward := newC != nil && (oldC == nil || st.Phase == PhaseCleanup ||
		st.Phase != PhaseRollback && newC != nil && strings.TrimPrefix(newC.Name, "/") == name &&
			newC.State.Running && newC.State.Health != nil && newC.State.Health.Status == container.Healthy)
	if forward {
		if oldC != nil {
			if err := r.docker.ContainerRemove(ctx, oldC.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				return dirForward, fmt.Errorf("remove old container: %w", err)
			}
		}
		return dirForward, r.bringUp(ctx, newC, name)
	}

	if newC != nil {
		if st.Phase == PhaseRollback {
			if err := r.keepFailed(ctx, newC, name); err != nil {
				return dirBack, err
			}
		} else if err := r.docker.ContainerRemove(ctx, newC.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return dirBack, fmt.Errorf("remove new container: %w", err)
		}
	}
	return dirBack, r.bringUp(ctx, oldC, name)
}

// bringUp makes c run under name.
func (r *Recreate) bringUp(ctx context.Context, c *containerInspect, name string) error {
	if strings.TrimPrefix(c.Name, "/") != name {
		if err := r.docker.ContainerRename(ctx, c.ID, name); err != nil {
			return fmt.Errorf("rename %s to %s: %w", ShortID(c.ID), name, err)
		}
	}
	if !c.State.Running || c.State.Paused {
		if err := r.docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
	}
	return nil
}

// keepFailed stops a replacement that failed its gate and keeps it as
// <name>.hookd-failed for `docker logs`, replacing an older one. Its restart
// policy is cleared so that a daemon restart does not bring it back.
func (r *Recreate) keepFailed(ctx context.Context, c *containerInspect, name string) error {
	if err := r.docker.ContainerStop(ctx, c.ID, container.StopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop failed container: %w", err)
	}
	failed := name + deploy.SuffixFailed
	if strings.TrimPrefix(c.Name, "/") != failed {
		older, err := r.findNamed(ctx, failed)
		if err != nil {
			return err
		}
		if older != nil && older.ID != c.ID {
			if err := r.docker.ContainerRemove(ctx, older.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				return fmt.Errorf("remove older %s: %w", failed, err)
			}
		}
		if err := r.docker.ContainerRename(ctx, c.ID, failed); err != nil {
			return fmt.Errorf("rename failed container to %s: %w", failed, err)
		}
	}
	if _, err := r.docker.ContainerUpdate(ctx, c.ID, container.UpdateConfig{
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}); err != nil {
		r.log.Warn("clear restart policy of failed container failed", "container", failed, "err", err)
	}
	return nil
}

func sameID(a, b *containerInspect) bool { return a != nil && b != nil && a.ID == b.ID }

// findNamed returns the labelled container called exactly name, or nil.
func (r *Recreate) findNamed(ctx context.Context, name string) (*containerInspect, error) {
	c, err := r.find(ctx, name)
	if c != nil && strings.TrimPrefix(c.Name, "/") != name {
		return nil, nil // the engine also matches id prefixes
	}
	return c, err
}

// findID returns the labelled container with id, or nil.
func (r *Recreate) findID(ctx context.Context, id string) (*containerInspect, error) {
	c, err := r.find(ctx, id)
	if c != nil && c.ID != id {
		return nil, nil
	}
	return c, err
}

func (r *Recreate) find(ctx context.Context, ref string) (*containerInspect, error) {
	c, err := r.docker.ContainerInspect(ctx, ref)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("inspect %s: %w", ref, err)
	}
	if c.ContainerJSONBase == nil || c.Config == nil || c.State == nil || c.Config.Labels[deploy.LabelEnable] != "true" || !r.cfg.Scope.Contains(c.Config.Labels) {
		return nil, nil
	}
	return &c, nil
}

// Reconcile settles, at start-up, every swap an earlier run left half done:
// those in the journal and, for a journal that was lost, every container
// named *.hookd-new or *.hookd-old. For each interrupted job it calls
// settle with what became of it: succeeded when the swap was finished,
// rolled back when the rollback was; a job whose swap was undone is not
// settled (it runs again). A target that cannot be settled keeps its
// journal entry and is retried before its next deploy.
func (r *Recreate) Reconcile(ctx context.Context, jr strategy.Journal, settle func(context.Context, deploy.Step, deploy.Status) error) error {
	steps, err := jr.Steps(ctx)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	byName := map[string]deploy.Step{}
	for _, st := range steps {
		byName[st.Target] = st
	}
	list, err := r.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: r.labelFilters()})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range list {
		for _, n := range c.Names {
			n = strings.TrimPrefix(n, "/")
			for _, suffix := range []string{deploy.SuffixNew, deploy.SuffixOld} {
				if base, ok := strings.CutSuffix(n, suffix); ok {
					if _, seen := byName[base]; !seen {
						byName[base] = deploy.Step{Target: base}
					}
				}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		st := byName[name]
		if st.Strategy != "" {
			continue // another strategy's entry: it reconciles its own (StartFirst.Reconcile)
		}
		log := r.log.With("target", name, "job_id", st.JobID, "phase", st.Phase)
		dir, err := r.recover(ctx, name, st)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Error("reconcile failed; will retry before the next deploy", "err", err)
			continue
		}
		if err := jr.DeleteStep(ctx, name); err != nil {
			return fmt.Errorf("delete journal step: %w", err)
		}
		log.Info("reconciled half-done swap", "direction", dir.String())
		var status deploy.Status
		switch {
		case st.Phase == PhaseCleanup || dir == dirForward:
			status = deploy.StatusSucceeded
		case st.Phase == PhaseRollback:
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

// labelFilters select the containers that opted in and are in scope.
func (r *Recreate) labelFilters() filters.Args {
	args := filters.NewArgs(filters.Arg("label", deploy.LabelEnable+"=true"))
	if r.cfg.Scope != "" {
		args.Add("label", string(r.cfg.Scope))
	}
	return args
}

func (dir direction) String() string {
	switch dir {
	case dirForward:
		return "forward"
	case dirBack:
		return "back"
	}
	return "none"
}
