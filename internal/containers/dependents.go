package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"

	"github.com/and3rn3t/hookd/internal/composehash"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// Once the target's replacement passed its gate, the containers that
// depend on it follow, in dependency order, each gated like the target:
// those sharing its namespace (joiners) are recreated to join the
// replacement, then those that asked for it (Compose's restart: true,
// hookd.depends-on) are restarted. When one of them fails its gate, the
// target is rolled back, and they follow it back.

// joinedDep is a joiner recreated to join the replacement.
type joinedDep struct {
	st   deploy.Step // its journal entry
	newC containerInspect
}

// dependentsDone is what afterGate did.
type dependentsDone struct {
	v                    verdict // ReasonDependent when a dependent failed
	failedID, failedName string  // the dependent's container that failed
	failedVerdict        verdict // its own gate's verdict
	joined               []joinedDep
	restarted            []containerInspect
}

// stopGrace is how long stopping c may take.
func stopGrace(c containerInspect) time.Duration {
	if c.Config != nil && c.Config.StopTimeout != nil && *c.Config.StopTimeout > 0 {
		return time.Duration(*c.Config.StopTimeout) * time.Second
	}
	return 10 * time.Second
}

// dependentsBudget is the time the dependents' stops and gates may take.
func (r *Recreate) dependentsBudget(rel relations) time.Duration {
	var d time.Duration
	for _, c := range append(append([]containerInspect(nil), rel.joiners...), rel.restart...) {
		d += 2*stopGrace(c) + max(r.healthTimeout(c.Config.Labels), r.cfg.SettleTime) + 30*time.Second
	}
	return d
}

// journalJoiners records, before the target's swap begins, the containers
// that share its namespace: whatever becomes of the swap, a restarted hookd
// knows them.
func (r *Recreate) journalJoiners(ctx context.Context, run *strategy.Run, rel relations) error {
	for _, c := range rel.joiners {
		name := strings.TrimPrefix(c.Name, "/")
		if err := r.settleEarlier(ctx, run.Journal, name); err != nil {
			return err
		}
		st := deploy.Step{Target: name, JobID: run.Job.ID, Parent: run.Job.Target, OldID: c.ID}
		if err := journal(ctx, run.Journal, &st, PhaseJoin); err != nil {
			return err
		}
	}
	return nil
}

// afterGate takes the dependents along once newT passed its gate: the
// joiners recreated to join it, then the restart dependents restarted,
// each gated. Docker steps run under sctx; gates end early with ctx.
func (r *Recreate) afterGate(ctx, sctx context.Context, run *strategy.Run, oldT, newT containerInspect, rel relations, log *slog.Logger) dependentsDone {
	var done dependentsDone
	fail := func(name, id string, v verdict) dependentsDone {
		done.v = verdict{reason: deploy.ReasonDependent, detail: fmt.Sprintf("%s: %s: %s", name, v.reason, v.detail)}
		done.failedID, done.failedName, done.failedVerdict = id, name, v
		return done
	}
	for _, d := range rel.joiners {
		name := strings.TrimPrefix(d.Name, "/")
		jd, v := r.rejoinOne(ctx, sctx, run, oldT, newT, d, rel.graph, true, log)
		if jd.st.Target != "" {
			done.joined = append(done.joined, jd)
		}
		if v.reason != "" {
			id := d.ID
			if jd.st.NewID != "" {
				id = jd.st.NewID
			}
			return fail(name, id, v)
		}
		log.Info("container sharing the target's namespace recreated to join the new one", "container", name)
	}
	for _, d := range rel.restart {
		name := strings.TrimPrefix(d.Name, "/")
		if followsSameTag(d, run.Job) {
			run.Job.Notes = append(run.Job.Notes, name+" follows the same image: its own job of this push deploys it, after "+run.Job.Target)
			continue
		}
		done.restarted = append(done.restarted, d)
		if v := r.restartGated(ctx, sctx, d, true); v.reason != "" {
			return fail(name, d.ID, v)
		}
		log.Info("dependent restarted", "container", name)
		run.Job.Notes = append(run.Job.Notes, "restarted "+name+", which depends on "+run.Job.Target)
	}
	return done
}

// followsSameTag reports whether the dependent c follows the image the
// job deploys, and the job's request named that image (a push, a poll,
// `hookd deploy --image`), not one target: then c is a target of the same
// request, queued after the job, and its own deploy restarts it;
// restarting it first would be a restart for nothing.
func followsSameTag(c containerInspect, j *deploy.Job) bool {
	if j.Request.Repository == "" || !deploy.Eligible(strings.TrimPrefix(c.Name, "/"), c.Config.Labels) {
		return false
	}
	ref, err := deploy.ParseRef(c.Config.Image)
	return err == nil && ref.Digest == "" && ref.Repository()+":"+ref.Tag == j.Image
}

// containerEvents returns a function that subscribes to id's container
// events from since on (again, after a lost stream: since replays what was
// missed).
func (r *Recreate) containerEvents(ctx context.Context, id string, since time.Time) func() (<-chan events.Message, <-chan error) {
	s := since.UTC().Format(time.RFC3339Nano)
	return func() (<-chan events.Message, <-chan error) {
		return r.docker.Events(ctx, events.ListOptions{Since: s, Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("container", id),
		)})
	}
}

// gateDependent runs the gate of a dependent started at since. A gate cut
// short by shutdown counts as passed (the container was started; the
// deploy that passed its own gate is finished, not undone, at shutdown).
func (r *Recreate) gateDependent(ctx context.Context, c containerInspect, subscribe func() (<-chan events.Message, <-chan error)) verdict {
	msgs, errs := subscribe()
	v, err := r.gate(ctx, c.ID, msgs, errs, subscribe, hasHealthcheck(c.Config), r.healthTimeout(c.Config.Labels), r.cfg.SettleTime)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return verdict{reason: deploy.ReasonTimeout, detail: "deploy timeout reached during its gate"}
		}
		return verdict{}
	}
	return v
}

// restartGated stops and starts c (a restart would report the stop's die
// event to the gate) and, with gate, waits for its gate.
func (r *Recreate) restartGated(ctx, sctx context.Context, c containerInspect, gate bool) verdict {
	if err := r.docker.ContainerStop(sctx, c.ID, container.StopOptions{}); err != nil {
		return verdict{reason: deploy.ReasonExited, detail: "stop: " + err.Error()}
	}
	evCtx, cancel := context.WithCancel(sctx)
	defer cancel()
	subscribe := r.containerEvents(evCtx, c.ID, time.Now())
	if err := r.docker.ContainerStart(sctx, c.ID, container.StartOptions{}); err != nil {
		return verdict{reason: deploy.ReasonStartFailed, detail: err.Error()}
	}
	if !gate {
		return verdict{}
	}
	return r.gateDependent(ctx, c, subscribe)
}

// rejoinOne recreates the joiner d, which shares oldT's namespace, to
// share newT's instead: the same swap as the target's, journalled under
// d's name with the target as Parent, on the image d runs. With gate it
// waits for d's gate.
func (r *Recreate) rejoinOne(ctx, sctx context.Context, run *strategy.Run, oldT, newT, d containerInspect, g *graph, gate bool, log *slog.Logger) (joinedDep, verdict) {
	name := strings.TrimPrefix(d.Name, "/")
	st := deploy.Step{Target: name, JobID: run.Job.ID, Parent: run.Job.Target, OldID: d.ID}
	failed := func(what string, err error) (joinedDep, verdict) {
		return joinedDep{st: st}, verdict{reason: deploy.ReasonStartFailed, detail: what + ": " + err.Error()}
	}
	sp, note := r.joinSpec(ctx, d, oldT, newT, g)
	if note != "" {
		run.Job.Notes = append(run.Job.Notes, note)
		log.Warn("compose config hash not recomputed", "container", name, "why", note)
	}
	if err := journal(sctx, run.Journal, &st, PhaseCreate); err != nil {
		return failed("journal", err)
	}
	id, err := r.createTagged(sctx, sp, name+deploy.SuffixNew)
	if err != nil {
		return failed("create", err)
	}
	st.NewID = id
	if err := journal(sctx, run.Journal, &st, PhaseCreate); err != nil {
		return failed("journal", err)
	}
	for _, nj := range sp.Connect {
		if err := r.docker.NetworkConnect(sctx, nj.Network, id, nj.Endpoint); err != nil {
			return failed("connect to network "+nj.Network, err)
		}
	}
	steps := []struct {
		phase string
		do    func() error
	}{
		{PhaseStopOld, func() error { return r.docker.ContainerStop(sctx, d.ID, container.StopOptions{}) }},
		{PhaseRenameOld, func() error { return r.docker.ContainerRename(sctx, d.ID, name+deploy.SuffixOld) }},
		{PhaseRenameNew, func() error { return r.docker.ContainerRename(sctx, id, name) }},
	}
	for _, s := range steps {
		if err := journal(sctx, run.Journal, &st, s.phase); err != nil {
			return failed("journal", err)
		}
		if err := s.do(); err != nil {
			return failed(strings.ReplaceAll(s.phase, "_", " "), err)
		}
	}
	if err := journal(sctx, run.Journal, &st, PhaseStartNew); err != nil {
		return failed("journal", err)
	}
	evCtx, cancel := context.WithCancel(sctx)
	defer cancel()
	subscribe := r.containerEvents(evCtx, id, time.Now())
	if err := r.docker.ContainerStart(sctx, id, container.StartOptions{}); err != nil {
		return failed("start", err)
	}
	newC, err := r.docker.ContainerInspect(sctx, id)
	if err != nil {
		return failed("inspect", err)
	}
	jd := joinedDep{st: st, newC: newC}
	if !gate {
		return jd, verdict{}
	}
	if err := journal(sctx, run.Journal, &st, PhaseHealth); err != nil {
		return failed("journal", err)
	}
	jd.st = st
	return jd, r.gateDependent(ctx, newC, subscribe)
}

// joinSpec builds d's replacement, joined to newT where d was joined to
// oldT, on the image d runs (its tag may name a newer one by now), with
// the Compose config hash Compose would compute now. note says why the
// hash could not be recomputed, if it could not.
func (r *Recreate) joinSpec(ctx context.Context, d, oldT, newT containerInspect, g *graph) (sp spec, note string) {
	var cfg *dockerspec.DockerOCIImageConfig
	if img, err := r.docker.ImageInspect(ctx, d.Image); err == nil {
		cfg = img.Config
	}
	sp, err := buildSpec(d, cfg)
	if err != nil {
		sp = spec{Config: d.Config, HostConfig: d.HostConfig}
	}
	tName := strings.TrimPrefix(oldT.Name, "/")
	rejoin(sp.HostConfig, oldT.ID, newT.ID, tName)
	if ref, err := deploy.ParseRef(d.Config.Image); err == nil && ref.Digest == "" && !strings.HasPrefix(d.Config.Image, "sha256:") {
		tag := ref.Repository() + ":" + ref.Tag
		if ti, err := r.docker.ImageInspect(ctx, tag); err == nil && ti.ID != d.Image {
			sp.Tag, sp.ImageID, sp.PrevImageID = tag, d.Image, ti.ID
		}
	}
	if _, ok := sp.Config.Labels[composeConfigHash]; !ok {
		return sp, ""
	}
	h, err := r.rehash(ctx, d, oldT, newT, g)
	if err != nil {
		name := strings.TrimPrefix(d.Name, "/")
		return sp, fmt.Sprintf("Compose config hash of %s not recomputed (%v): the next docker compose up -d recreates it once", name, err)
	}
	sp.Config.Labels[composeConfigHash] = h
	return sp, ""
}

// rehash returns the config hash Compose computes for d's service once
// its service references name newT instead of oldT. The hash computed for
// oldT must equal the one Compose stamped on d: a project hookd cannot
// read as Compose did (files not mounted into hookd's container, a
// variable only the user's shell sets, the file changed since the last
// `docker compose up`) gives an error, not a wrong hash.
func (r *Recreate) rehash(ctx context.Context, d, oldT, newT containerInspect, g *graph) (string, error) {
	labels := d.Config.Labels
	project, service := composeMember(labels)
	p := composehash.Project{
		Name:        project,
		WorkingDir:  labels[composeWorkingDir],
		ConfigFiles: splitNames(labels[composeConfigFiles]),
		EnvFiles:    splitNames(labels[composeEnvFile]),
	}
	l, err := composehash.Load(ctx, p)
	if err != nil {
		return "", err
	}
	tProject, tService := composeMember(oldT.Config.Labels)
	containerOf := func(target string) func(string) string {
		return func(s string) string {
			if tProject == project && s == tService {
				return target
			}
			for _, n := range g.names { // sorted by name, as Compose picks
				if mp, ms := composeMember(g.c[n].Labels); mp == project && ms == s {
					return g.c[n].ID
				}
			}
			return ""
		}
	}
	old, err := l.Hash(service, containerOf(oldT.ID))
	if err != nil {
		return "", err
	}
	if old != labels[composeConfigHash] {
		return "", errors.New("the compose file, as hookd reads it, no longer gives the hash Compose stamped on the container")
	}
	return l.Hash(service, containerOf(newT.ID))
}

// finishJoiners removes the joiners' old containers once everything passed.
func (r *Recreate) finishJoiners(ctx context.Context, run *strategy.Run, joined []joinedDep, log *slog.Logger) {
	for _, jd := range joined {
		st := jd.st
		if err := journal(ctx, run.Journal, &st, PhaseCleanup); err != nil {
			log.Error("journal cleanup failed", "container", st.Target, "err", err)
		}
		if err := r.docker.ContainerRemove(ctx, st.OldID, container.RemoveOptions{Force: true}); err != nil {
			log.Error("remove old container failed", "container", st.Target+deploy.SuffixOld, "err", err)
			continue // the journal entry lets a restart finish it
		}
		r.deleteStep(ctx, run.Journal, st.Target, log)
	}
}

// rejoinOld takes the joiners back to the target's old container once it
// runs again: the recreated ones are swapped back, and those still in the
// namespace the old container had before it was stopped are restarted to
// join its new one. restart is false when the old container was never
// stopped.
func (r *Recreate) rejoinOld(ctx context.Context, run *strategy.Run, rel relations, joined []joinedDep, restart bool, log *slog.Logger) {
	back := map[string]bool{}
	for _, jd := range joined {
		st := jd.st
		reachedStop := st.Phase != PhaseCreate
		st.Phase = PhaseRollback
		if _, err := r.recover(ctx, st.Target, st); err != nil {
			log.Error("restoring a joined container failed; left for reconcile", "container", st.Target, "err", err)
			back[st.Target] = true
			continue
		}
		r.deleteStep(ctx, run.Journal, st.Target, log)
		back[st.Target] = reachedStop // swapped back and started afresh
	}
	for _, c := range rel.joiners {
		name := strings.TrimPrefix(c.Name, "/")
		if back[name] {
			continue
		}
		if restart {
			if v := r.restartGated(ctx, ctx, c, false); v.reason != "" {
				log.Error("restarting a container sharing the target's namespace failed", "container", name, "detail", v.detail)
				run.Job.Notes = append(run.Job.Notes, fmt.Sprintf("%s could not be restarted to join %s again: %s", name, run.Job.Target, v.detail))
			}
		}
		r.deleteStep(ctx, run.Journal, name, log)
	}
}

// restartAgain restarts the dependents that were restarted against the
// new version, once the old one is back.
func (r *Recreate) restartAgain(ctx context.Context, run *strategy.Run, restarted []containerInspect, log *slog.Logger) {
	for _, c := range restarted {
		name := strings.TrimPrefix(c.Name, "/")
		if v := r.restartGated(ctx, ctx, c, false); v.reason != "" {
			log.Error("restarting a dependent after the rollback failed", "container", name, "detail", v.detail)
			run.Job.Notes = append(run.Job.Notes, fmt.Sprintf("%s could not be restarted after the rollback: %s", name, v.detail))
		}
	}
}

// postUpdates runs the post-update hooks of the new target and of the
// joiners recreated with it.
func (r *Recreate) postUpdates(ctx context.Context, run *strategy.Run, newT containerInspect, joined []joinedDep) {
	postUpdate(ctx, r.docker, run, newT, run.Job.Target)
	for _, jd := range joined {
		postUpdate(ctx, r.docker, run, jd.newC, jd.st.Target)
	}
}
