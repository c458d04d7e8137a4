package containers

import (
	"context"
	"fmt"
	"log/slog"
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
//     not trusted. The new container is stopped and removed (what the job
//     needs of it was recorded before the rollback began: a kept container
//     would carry the service's Compose labels, and Compose would take it
//     for the service's), the old one renamed back and started. The job,
//     if any, runs again after a restart.
//
// The local tag follows: it names the new image forward, the old one back.
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
		if err := r.moveTag(ctx, st.Tag, st.NewImage, st.OldImage); err != nil {
			return dirForward, err
		}
		return dirForward, r.bringUp(ctx, newC, name)
	}

	if newC != nil {
		if err := r.discardFailed(ctx, newC); err != nil {
			return dirBack, err
		}
	}
	if err := r.moveTag(ctx, st.Tag, st.OldImage, st.NewImage); err != nil {
		return dirBack, err
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

// discardFailed stops a replacement that did not pass its gate (with its
// grace, so that it can shut down cleanly) and removes it: nothing is left
// that Compose would take for the service. Its volumes stay: the old
// container's are passed to it by name.
func (r *Recreate) discardFailed(ctx context.Context, c *containerInspect) error {
	if err := r.docker.ContainerStop(ctx, c.ID, container.StopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop new container: %w", err)
	}
	if err := r.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove new container: %w", err)
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
			if strings.HasSuffix(n, deploy.SuffixFailed) && c.Labels[composeProject] != "" && c.State != container.StateRunning {
				// Kept by an earlier hookd: Compose takes it for the service's.
				if err := r.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err == nil {
					r.log.Info("removed a failed version kept by an earlier hookd", "container", n)
				}
			}
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
	// Targets first, then the containers joined to them, which follow
	// their target's way.
	sort.Slice(names, func(a, b int) bool {
		pa, pb := byName[names[a]].Parent != "", byName[names[b]].Parent != ""
		if pa != pb {
			return !pa
		}
		return names[a] < names[b]
	})
	dirs := map[string]direction{}
	for _, name := range names {
		st := byName[name]
		if st.Strategy != "" {
			continue // another strategy's entry: it reconciles its own (StartFirst.Reconcile)
		}
		log := r.log.With("target", name, "job_id", st.JobID, "phase", st.Phase)
		var dir direction
		var err error
		if st.Parent != "" {
			dir, err = r.recoverJoiner(ctx, jr, st, byName[st.Parent], dirs[st.Parent], log)
		} else {
			dir, err = r.recover(ctx, name, st)
		}
		dirs[name] = dir
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
		if st.JobID != "" && status != "" && st.Parent == "" {
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

// recoverJoiner settles a container that shares the namespace of the
// target st.Parent, whose swap (parentStep) went parent: forward, a
// recreated joiner is kept, one not recreated yet is recreated now; back,
// it is swapped back, and one still in the namespace the old container had
// before it was stopped is restarted to join its new one.
func (r *Recreate) recoverJoiner(ctx context.Context, jr strategy.Journal, st, parentStep deploy.Step, parent direction, log *slog.Logger) (direction, error) {
	name := st.Target
	switch parent {
	case dirForward:
		if st.NewID == "" {
			return r.rejoinAtStartup(ctx, jr, st, parentStep, log)
		}
		st.Phase = PhaseCleanup
		return r.recover(ctx, name, st)
	case dirBack:
		stopped := st.Phase != PhaseJoin && st.Phase != PhaseCreate
		st.Phase = PhaseRollback
		dir, err := r.recover(ctx, name, st)
		if err != nil || stopped {
			return dir, err
		}
		c, err := r.findNamed(ctx, name)
		if err != nil || c == nil {
			return dir, err
		}
		if v := r.restartGated(ctx, ctx, *c, false); v.reason != "" {
			return dir, fmt.Errorf("restart %s to join %s again: %s", name, st.Parent, v.detail)
		}
		return dirBack, nil
	}
	if st.Phase == PhaseJoin {
		return dirNone, nil // never touched
	}
	return r.recover(ctx, name, st)
}

// rejoinAtStartup recreates a joiner that a crash left in the namespace of
// a container the parent's finished swap removed, to join the parent's
// new container, ungated.
func (r *Recreate) rejoinAtStartup(ctx context.Context, jr strategy.Journal, st, parentStep deploy.Step, log *slog.Logger) (direction, error) {
	newT, err := r.findNamed(ctx, st.Parent)
	if err != nil || newT == nil {
		return dirNone, err
	}
	d, err := r.findID(ctx, st.OldID)
	if err != nil || d == nil {
		return dirNone, err
	}
	if d.HostConfig == nil || !joinsNamespace(d.HostConfig, parentStep.OldID, st.Parent) || joinsNamespace(d.HostConfig, newT.ID, "") {
		return dirNone, nil // not joined to the old container (any more)
	}
	list, err := r.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return dirNone, fmt.Errorf("list containers: %w", err)
	}
	// The old container is gone; what rejoinOne reads of it is its id
	// and what it shares with its replacement (name, labels).
	base := *newT.ContainerJSONBase // ID lives behind this pointer
	oldT := *newT
	oldT.ContainerJSONBase = &base
	oldT.ID = parentStep.OldID
	run := &strategy.Run{Job: &deploy.Job{ID: st.JobID, Target: st.Parent}, Log: log, Life: ctx, Journal: jr}
	jd, v := r.rejoinOne(ctx, ctx, run, oldT, *newT, *d, newGraph(list), false, log)
	if v.reason != "" {
		return dirNone, fmt.Errorf("recreate %s to join %s: %s", st.Target, st.Parent, v.detail)
	}
	r.finishJoiners(ctx, run, []joinedDep{jd}, log)
	return dirForward, nil
}
