package deployer

import (
	"context"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/swarm"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Swarm services are targets too: the service is labelled
// hookd.enable=true (service labels, not container labels), hookd pins the
// new digest into its spec with one ServiceUpdate and Swarm rolls it out to
// every node with its own update and rollback machinery. hookd follows the
// update to its end and records the outcome like a container deploy. There
// is no journal: Swarm owns the rollout, and re-issuing the same update is
// harmless (the spec already pins the digest: up to date, or the update in
// progress is followed).

// servicePollInterval is how often a running service update is inspected.
const servicePollInterval = 500 * time.Millisecond

// listServices returns the services that are targets. An engine that is not
// a swarm manager (no swarm, or a worker) has none.
func (d *Deployer) listServices(ctx context.Context) ([]deploy.Target, error) {
	list, err := d.docker.ServiceList(ctx, swarm.ServiceListOptions{Filters: d.labelFilters()})
	if err != nil {
		if notManager(err) {
			d.noteSwarmRole(err)
			return nil, nil
		}
		return nil, fmt.Errorf("list services: %w", err)
	}
	out := make([]deploy.Target, 0, len(list))
	for _, s := range list {
		if t, ok := d.serviceTarget(s); ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// noteSwarmRole logs, once per kind, why an engine in a swarm answers no
// services: a worker's labelled services are invisible here and are
// deployed by a hookd on a manager, which a user would otherwise have to
// guess. An engine outside any swarm needs no word.
func (d *Deployer) noteSwarmRole(err error) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Worker nodes"):
		if !d.saidWorker.Swap(true) {
			d.log.Info("this engine is a swarm worker: hookd here deploys labelled containers only; " +
				"labelled services are updated by a hookd on a manager node (see docs/swarm.md)")
		}
	case strings.Contains(msg, "Manager is being prepared"):
		if !d.saidManagerDown.Swap(true) {
			d.log.Warn("this swarm manager cannot reach its cluster yet: services are skipped until it can", "err", msg)
		}
	}
}

// notManager reports whether err says the engine cannot answer service
// calls because it is not a swarm manager ("This node is not a swarm
// manager…", HTTP 503).
func notManager(err error) bool {
	return cerrdefs.IsUnavailable(err) ||
		strings.Contains(err.Error(), "not a swarm manager") || strings.Contains(err.Error(), "not part of a swarm")
}

// serviceTarget reports whether s is a target: opted in with a service
// label, in scope, running containers (not a plugin, not a job) and
// following a tag.
func (d *Deployer) serviceTarget(s swarm.Service) (deploy.Target, bool) {
	t := deploy.Target{Name: s.Spec.Name, ID: s.ID, Kind: deploy.KindService}
	if s.Spec.Labels[deploy.LabelEnable] != "true" || !d.inScope(s.Spec.Labels) {
		return t, false
	}
	cs := s.Spec.TaskTemplate.ContainerSpec
	if cs == nil || s.Spec.Mode.ReplicatedJob != nil || s.Spec.Mode.GlobalJob != nil {
		return t, false
	}
	ref, ok := followedRef(cs.Image)
	if !ok {
		return t, false
	}
	t.Digest = ref.Digest
	ref.Digest = ""
	t.Ref, t.Image, t.Tag = ref, ref.Repository(), ref.Tag
	return t, true // no HealthTimeout: the health gate is Swarm's
}

// followedRef parses a service image, usually "repo:tag@sha256:…" (Docker
// pins the digest when the service is created or updated). It reports false
// for an image that names no tag ("repo@sha256:…" has nothing to follow).
func followedRef(image string) (deploy.ImageRef, bool) {
	ref, err := deploy.ParseRef(image)
	if err != nil {
		return deploy.ImageRef{}, false
	}
	repo, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(repo, ":"); i <= strings.LastIndex(repo, "/") {
		return deploy.ImageRef{}, false // the tag "latest" was only defaulted
	}
	return ref, true
}

// refreshService updates the target set for one service after an event or
// a deploy.
func (d *Deployer) refreshService(ctx context.Context, idOrName string) {
	s, _, err := d.docker.ServiceInspectWithRaw(ctx, idOrName, swarm.ServiceInspectOptions{})
	var (
		t  deploy.Target
		ok bool
	)
	switch {
	case err == nil:
		t, ok = d.serviceTarget(s)
	case cerrdefs.IsNotFound(err) || notManager(err):
	default:
		if ctx.Err() == nil {
			d.log.Warn("refresh target failed", "service", idOrName, "err", err)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, old := range d.targets {
		if old.Kind != deploy.KindService || old.ID != idOrName && old.ID != s.ID && name != idOrName {
			continue
		}
		if ok && name == t.Name {
			continue
		}
		d.dropTargetLocked(old)
		delete(d.targets, name)
	}
	if !ok {
		return
	}
	if old, taken := d.targets[t.Name]; taken && old.Kind != deploy.KindService {
		d.log.Warn("service ignored: a container target has the same name", "target", t.Name)
		return
	}
	d.putTargetLocked(t)
	d.targets[t.Name] = t
}

// deployService does the work of one service job: resolve the tag's digest,
// up-to-date check, one ServiceUpdate pinning repo:tag@digest (with registry
// credentials for the nodes), then follow Swarm's update to its end.
func (d *Deployer) deployService(ctx, runCtx context.Context, j *deploy.Job, log *slog.Logger) outcome {
	fail := func(err error) outcome { return outcome{status: deploy.StatusFailed, err: err} }

	svc, err := d.inspectService(ctx, j.Target)
	if err != nil {
		return d.interrupted(runCtx, fail(err))
	}
	t, ok := d.serviceTarget(svc)
	if !ok {
		return fail(fmt.Errorf("service %q is not a target: it needs the service label %s=true, "+
			"an image that follows a tag (it has %q) and a non-job mode", j.Target, deploy.LabelEnable, svc.Spec.TaskTemplate.ContainerSpec.Image))
	}
	ref := t.Ref
	j.Image = ref.Repository() + ":" + ref.Tag
	j.DigestBefore = t.Digest
	log = log.With("image", j.Image)

	if !j.Request.Force && j.Request.Digest != "" && j.Request.Digest == t.Digest {
		return d.upToDateService(ctx, runCtx, j, svc, t.Digest, log)
	}

	t0 := time.Now()
	digest, err := d.resolve(ctx, ref)
	d.phase(j, "pull", t0)
	if err != nil {
		return d.interrupted(runCtx, fail(err))
	}
	j.DigestAfter = digest
	if !j.Request.Force && digest == t.Digest {
		return d.upToDateService(ctx, runCtx, j, svc, digest, log)
	}

	auth, err := registryAuth(ctx, d.cfg.Keychain, ref)
	if err != nil {
		return fail(fmt.Errorf("update service %s: %w", j.Target, err))
	}
	image := ref.Repository() + ":" + ref.Tag + "@" + digest
	t1 := time.Now()
	var before *swarm.UpdateStatus
	for attempt := 1; ; attempt++ {
		before = svc.UpdateStatus
		spec := updatedSpec(svc.Spec, image, j.Request.Force, d.cfg.SettleTime)
		resp, err := d.docker.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{
			EncodedRegistryAuth: auth, // "" keeps the credentials the service already has
			QueryRegistry:       false,
		})
		if err == nil {
			for _, w := range resp.Warnings {
				log.Warn("swarm warning", "warning", strings.TrimSpace(w))
			}
			break
		}
		// Someone else changed the service between inspect and update:
		// take the fresh spec and try again.
		if attempt < 3 && strings.Contains(err.Error(), "out of sequence") {
			if svc, err = d.inspectService(ctx, j.Target); err == nil {
				continue
			}
		}
		return d.interrupted(runCtx, fail(fmt.Errorf("update service %s: %w", j.Target, err)))
	}
	d.phase(j, "swap", t1)
	log.Info("service update issued; following swarm's rollout", "digest", digest)
	if r := svc.Spec.Mode.Replicated; r != nil && r.Replicas != nil && *r.Replicas == 0 {
		return outcome{status: deploy.StatusSucceeded} // no task to roll out: Swarm starts no update
	}
	return d.followService(ctx, runCtx, j, svc, before, time.Now(), log)
}

// upToDateService answers a request for the digest the spec already pins:
// up to date, unless Swarm is still rolling that digest out (a job resumed
// after a restart), which is followed to its end instead.
func (d *Deployer) upToDateService(ctx, runCtx context.Context, j *deploy.Job, svc swarm.Service, digest string, log *slog.Logger) outcome {
	j.DigestAfter = digest
	if us := svc.UpdateStatus; us != nil {
		switch us.State {
		case swarm.UpdateStateUpdating:
			log.Info("swarm is still rolling this digest out; following it")
			// While Swarm updates, PreviousSpec is what it updates from.
			if p := svc.PreviousSpec; p != nil && p.TaskTemplate.ContainerSpec != nil {
				if r, err := deploy.ParseRef(p.TaskTemplate.ContainerSpec.Image); err == nil {
					j.DigestBefore = r.Digest
				}
			}
			return d.followService(ctx, runCtx, j, svc, nil, time.Now(), log)
		case swarm.UpdateStatePaused:
			return outcome{status: deploy.StatusFailed, err: fmt.Errorf("the update of service %s to this digest is paused by swarm: %s; "+
				"resume it with docker service update or deploy with force", j.Target, us.Message)}
		}
	}
	return outcome{status: deploy.StatusUpToDate}
}

func (d *Deployer) inspectService(ctx context.Context, name string) (swarm.Service, error) {
	svc, _, err := d.docker.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) || notManager(err) {
			return swarm.Service{}, fmt.Errorf("service %q not found", name)
		}
		return swarm.Service{}, fmt.Errorf("inspect service %s: %w", name, err)
	}
	if svc.Spec.Name != name || svc.Spec.TaskTemplate.ContainerSpec == nil {
		return swarm.Service{}, fmt.Errorf("service %q not found", name)
	}
	return svc, nil
}

// resolve returns the digest ref's tag points at in the registry (an index
// digest for a multi-platform image): pinning it makes every node run the
// same bytes, whatever the tag does meanwhile.
func (d *Deployer) resolve(ctx context.Context, ref deploy.ImageRef) (string, error) {
	s := ref.Repository() + ":" + ref.Tag
	tag, err := name.NewTag(s)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", s, err)
	}
	desc, err := remote.Head(tag, remote.WithContext(ctx), remote.WithAuthFromKeychain(d.cfg.Keychain))
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", s, err)
	}
	return desc.Digest.String(), nil
}

// updatedSpec is spec with image pinned and, when the service has no update
// config of its own, a safe one: one task at a time, roll back on failure,
// start the new task first unless host-mode ports forbid two at once, and
// watch each new task for monitor. Force bumps ForceUpdate so that the
// tasks are replaced even when nothing else changed.
func updatedSpec(spec swarm.ServiceSpec, image string, force bool, monitor time.Duration) swarm.ServiceSpec {
	cs := *spec.TaskTemplate.ContainerSpec
	cs.Image = image
	spec.TaskTemplate.ContainerSpec = &cs
	if force {
		spec.TaskTemplate.ForceUpdate++
	}
	if spec.UpdateConfig == nil {
		order := swarm.UpdateOrderStartFirst
		if hostPorts(spec) {
			order = swarm.UpdateOrderStopFirst
		}
		spec.UpdateConfig = &swarm.UpdateConfig{
			Parallelism:   1,
			FailureAction: swarm.UpdateFailureActionRollback,
			Monitor:       monitor,
			Order:         order,
		}
	}
	return spec
}

// hostPorts reports whether spec publishes a port in host mode: two tasks
// of the service cannot hold it on one node at once.
func hostPorts(spec swarm.ServiceSpec) bool {
	if spec.EndpointSpec == nil {
		return false
	}
	return slices.ContainsFunc(spec.EndpointSpec.Ports, func(p swarm.PortConfig) bool {
		return p.PublishMode == swarm.PortConfigPublishModeHost
	})
}

// followService polls the service until Swarm's update ends (the first one
// whose status is not stale; nil stale follows the update under way): completed → succeeded; rollback_completed → rolled
// back, with the reason inferred from the failed task; paused → failed.
// The job's deadline fails it and leaves the rollout to Swarm; shutdown
// hands the job back to the queue (it follows the same update after the
// restart).
func (d *Deployer) followService(ctx, runCtx context.Context, j *deploy.Job, svc swarm.Service, stale *swarm.UpdateStatus, since time.Time, log *slog.Logger) outcome {
	image := svc.Spec.TaskTemplate.ContainerSpec.Image
	if j.DigestAfter != "" {
		image = j.Image + "@" + j.DigestAfter
	}
	var rollbackMsg, state string
	tick := time.NewTicker(servicePollInterval)
	defer tick.Stop()
	defer func() { d.phase(j, "health", since) }()
	for {
		cur, _, err := d.docker.ServiceInspectWithRaw(ctx, svc.ID, swarm.ServiceInspectOptions{})
		switch {
		case err != nil && ctx.Err() == nil && (cerrdefs.IsNotFound(err) || notManager(err)):
			return outcome{status: deploy.StatusFailed, err: fmt.Errorf("service %s disappeared during its update", j.Target)}
		case err != nil && ctx.Err() == nil:
			log.Warn("inspect service during update failed; retrying", "err", err)
		case err == nil && newUpdate(stale, cur.UpdateStatus):
			us := cur.UpdateStatus
			if string(us.State) != state {
				state = string(us.State)
				log.Info("swarm update state", "state", state, "message", us.Message)
			}
			switch us.State {
			case swarm.UpdateStateCompleted:
				return outcome{status: deploy.StatusSucceeded, healthyAt: time.Now(), newImage: d.localImage(ctx, image)}
			case swarm.UpdateStateRollbackStarted:
				rollbackMsg = us.Message
			case swarm.UpdateStateRollbackCompleted:
				msg := us.Message
				if rollbackMsg != "" {
					msg = rollbackMsg + "; " + msg
				}
				j.RollbackReason, j.RollbackDetail = d.rollbackCause(ctx, cur.ID, image, msg)
				return outcome{status: deploy.StatusRolledBack,
					err: fmt.Errorf("swarm rolled service %s back: %s", j.Target, j.RollbackDetail)}
			case swarm.UpdateStatePaused, swarm.UpdateStateRollbackPaused:
				return outcome{status: deploy.StatusFailed, err: fmt.Errorf("swarm update of service %s %s: %s", j.Target, us.State, us.Message)}
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if runCtx.Err() != nil {
				log.Info("shutting down while swarm updates the service; the job resumes after restart")
				return outcome{abandoned: true}
			}
			if state == "" {
				state = "not started"
			}
			return outcome{status: deploy.StatusFailed, err: fmt.Errorf("deploy timeout reached while swarm's update of service %s was %s; "+
				"the rollout is left to swarm", j.Target, state)}
		}
	}
}

// newUpdate reports whether cur is the status of an update other than the
// stale one: right after ServiceUpdate returns, an inspect may still show
// the previous update's state.
func newUpdate(stale, cur *swarm.UpdateStatus) bool {
	return cur != nil && (stale == nil || !sameTime(stale.StartedAt, cur.StartedAt))
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// localImage is the deployed image as this engine knows it, if a task ran
// here; it only serves the image-age metric.
func (d *Deployer) localImage(ctx context.Context, ref string) *image.InspectResponse {
	img, err := d.docker.ImageInspect(ctx, ref)
	if err != nil {
		return nil
	}
	return &img
}

var taskInMessage = regexp.MustCompile(`task ([a-z0-9]{25})\b`)

// rollbackCause infers why Swarm rolled the update back from the task of
// the new image that failed: its container when it ran on this node (the
// health log or the exit code), else the task's own status. Swarm's message
// leads the detail. Unknown causes count as unhealthy.
func (d *Deployer) rollbackCause(ctx context.Context, serviceID, image, swarmMsg string) (reason, detail string) {
	reason, detail = ReasonUnhealthy, swarmMsg
	tasks, err := d.docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", serviceID))})
	if err != nil {
		return reason, detail
	}
	var failed *swarm.Task
	if m := taskInMessage.FindStringSubmatch(swarmMsg); m != nil {
		for i := range tasks {
			if tasks[i].ID == m[1] {
				failed = &tasks[i]
			}
		}
	}
	if failed == nil {
		for i := range tasks {
			tk := &tasks[i]
			if tk.Spec.ContainerSpec == nil || !sameImage(tk.Spec.ContainerSpec.Image, image) || !ended(tk.Status.State) {
				continue
			}
			if failed == nil || tk.Status.Timestamp.After(failed.Status.Timestamp) {
				failed = tk
			}
		}
	}
	if failed == nil {
		return reason, detail
	}
	r, why := d.taskFailure(ctx, *failed)
	return r, swarmMsg + "; task " + shortID(failed.ID) + ": " + why
}

func ended(s swarm.TaskState) bool {
	return s == swarm.TaskStateFailed || s == swarm.TaskStateRejected || s == swarm.TaskStateComplete
}

// sameImage compares two image references after normalisation.
func sameImage(a, b string) bool {
	ra, err1 := deploy.ParseRef(a)
	rb, err2 := deploy.ParseRef(b)
	return err1 == nil && err2 == nil && ra == rb
}

// taskFailure explains why a task ended.
func (d *Deployer) taskFailure(ctx context.Context, tk swarm.Task) (reason, detail string) {
	st := tk.Status
	if cs := st.ContainerStatus; cs != nil && cs.ContainerID != "" {
		if c, err := d.docker.ContainerInspect(ctx, cs.ContainerID); err == nil && c.ContainerJSONBase != nil && c.State != nil {
			if h := c.State.Health; h != nil && h.Status == container.Unhealthy {
				out := healthOutput(c)
				if out == "" {
					out = "health check failed"
				}
				return ReasonUnhealthy, out
			}
			if !c.State.Running {
				return ReasonExited, fmt.Sprintf("exit code %d", c.State.ExitCode)
			}
		}
	}
	msg := strings.TrimSpace(st.Err)
	if msg == "" {
		msg = strings.TrimSpace(st.Message)
	}
	switch {
	case strings.Contains(msg, "unhealthy"):
		return ReasonUnhealthy, msg
	case st.State == swarm.TaskStateRejected:
		return ReasonStartFailed, msg
	case st.State == swarm.TaskStateFailed:
		return ReasonExited, msg
	}
	// A task that completed within the monitor period was most likely
	// stopped by Swarm for failing its healthcheck (a process that exits 0
	// on SIGTERM looks like this); on another node hookd cannot tell.
	return ReasonUnhealthy, fmt.Sprintf("task %s (%s)", st.State, msg)
}
