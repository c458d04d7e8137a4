// Package swarmsvc deploys Docker Swarm services. A service labelled
// hookd.enable=true (a service label, not a container label) is a target;
// Update pins the new digest into its spec with one ServiceUpdate and Swarm
// rolls it out to every node with its own update and rollback machinery.
// hookd follows the update to its end and records the outcome like a
// container deploy. There is no journal: Swarm owns the rollout, and
// re-issuing the same update is harmless (the spec already pins the digest:
// up to date, or the update in progress is followed).
package swarmsvc

import (
	"context"
	"fmt"
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
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// Docker is the part of the Engine API the service update calls.
// *client.Client satisfies it.
type Docker interface {
	ServiceInspectWithRaw(ctx context.Context, serviceID string, options swarm.ServiceInspectOptions) (swarm.Service, []byte, error)
	ServiceUpdate(ctx context.Context, serviceID string, version swarm.Version, service swarm.ServiceSpec, options swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error)
	TaskList(ctx context.Context, options swarm.TaskListOptions) ([]swarm.Task, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
}

var _ Docker = (*client.Client)(nil)

// Registry resolves a tag to its digest. *registry.Client satisfies it:
// the look-up shares hookd's one limiter and its metrics.
type Registry interface {
	Head(ctx context.Context, ref string) (registry.Descriptor, error)
}

// Name is the strategy's name.
const Name = "service-update"

// Config tunes Update and Source.
type Config struct {
	// SettleTime is the Monitor period hookd sets on a service that has no
	// update config of its own (default 5s).
	SettleTime time.Duration
	// Keychain finds the registry credentials sent to the nodes; nil means
	// authn.DefaultKeychain.
	Keychain authn.Keychain
	// Scope limits the services that are targets.
	Scope deploy.Scope
	// Logger defaults to discarding.
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.SettleTime <= 0 {
		c.SettleTime = 5 * time.Second
	}
	if c.Keychain == nil {
		c.Keychain = authn.DefaultKeychain
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Update is the strategy for service targets.
type Update struct {
	docker   Docker
	registry Registry
	cfg      Config
}

// New returns the service update strategy.
func New(docker Docker, reg Registry, cfg Config) *Update {
	cfg.defaults()
	return &Update{docker: docker, registry: reg, cfg: cfg}
}

// servicePollInterval is how often a running service update is inspected.
const servicePollInterval = 500 * time.Millisecond

// Deploy does the work of one service job: resolve the tag's digest,
// up-to-date check, the deployer's policy, one ServiceUpdate pinning
// repo:tag@digest (with registry credentials for the nodes), then follow
// Swarm's update to its end.
func (u *Update) Deploy(ctx context.Context, run *strategy.Run) strategy.Outcome {
	j := run.Job
	svc, err := u.inspectService(ctx, j.Target)
	if err != nil {
		return run.Interrupted(strategy.Failed(err))
	}
	t, ok := target(svc, u.cfg.Scope)
	if !ok {
		return strategy.Failed(fmt.Errorf("service %q is not a target: it needs the service label %s=true, "+
			"an image that follows a tag (it has %q) and a non-job mode", j.Target, deploy.LabelEnable, svc.Spec.TaskTemplate.ContainerSpec.Image))
	}
	ref := t.Ref
	j.Image = ref.Repository() + ":" + ref.Tag
	j.DigestBefore = t.Digest
	log := run.Log.With("image", j.Image)

	if !j.Request.Force && j.Request.Digest != "" && j.Request.Digest == t.Digest {
		return u.upToDateService(ctx, run, svc, t.Digest, log)
	}

	run.Stage(deploy.StagePulling)
	t0 := time.Now()
	desc, err := u.registry.Head(ctx, ref.Repository()+":"+ref.Tag)
	run.Phase("pull", t0)
	if err != nil {
		return run.Interrupted(strategy.Failed(fmt.Errorf("resolve %s: %w", j.Image, err)))
	}
	digest := desc.Digest
	j.DigestAfter = digest
	if !j.Request.Force && digest == t.Digest {
		return u.upToDateService(ctx, run, svc, digest, log)
	}
	if err := run.Admit(ctx, digest); err != nil {
		return strategy.Refused(err)
	}

	auth, err := registry.EncodedAuth(ctx, u.cfg.Keychain, ref.Registry)
	if err != nil {
		return strategy.Failed(fmt.Errorf("update service %s: %w", j.Target, err))
	}
	image := ref.Repository() + ":" + ref.Tag + "@" + digest
	run.Stage(deploy.StageSwapping)
	t1 := time.Now()
	var before *swarm.UpdateStatus
	for attempt := 1; ; attempt++ {
		before = svc.UpdateStatus
		spec := updatedSpec(svc.Spec, image, j.Request.Force, u.cfg.SettleTime)
		resp, err := u.docker.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{
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
			if svc, err = u.inspectService(ctx, j.Target); err == nil {
				continue
			}
		}
		return run.Interrupted(strategy.Failed(fmt.Errorf("update service %s: %w", j.Target, err)))
	}
	run.Phase("swap", t1)
	log.Info("service update issued; following swarm's rollout", "digest", digest)
	if r := svc.Spec.Mode.Replicated; r != nil && r.Replicas != nil && *r.Replicas == 0 {
		return strategy.Outcome{Status: deploy.StatusSucceeded} // no task to roll out: Swarm starts no update
	}
	return u.followService(ctx, run, svc, before, time.Now(), log)
}

// upToDateService answers a request for the digest the spec already pins:
// up to date, unless Swarm is still rolling that digest out (a job resumed
// after a restart), which is followed to its end instead.
func (u *Update) upToDateService(ctx context.Context, run *strategy.Run, svc swarm.Service, digest string, log *slog.Logger) strategy.Outcome {
	j := run.Job
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
			return u.followService(ctx, run, svc, nil, time.Now(), log)
		case swarm.UpdateStatePaused:
			return strategy.Failed(fmt.Errorf("the update of service %s to this digest is paused by swarm: %s; "+
				"resume it with docker service update or deploy with force", j.Target, us.Message))
		}
	}
	return strategy.Outcome{Status: deploy.StatusUpToDate}
}

func (u *Update) inspectService(ctx context.Context, name string) (swarm.Service, error) {
	svc, _, err := u.docker.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
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
func (u *Update) followService(ctx context.Context, run *strategy.Run, svc swarm.Service, stale *swarm.UpdateStatus, since time.Time, log *slog.Logger) strategy.Outcome {
	j := run.Job
	run.Stage(deploy.StageGating)
	image := svc.Spec.TaskTemplate.ContainerSpec.Image
	if j.DigestAfter != "" {
		image = j.Image + "@" + j.DigestAfter
	}
	var rollbackMsg, state string
	tick := time.NewTicker(servicePollInterval)
	defer tick.Stop()
	defer run.Phase("health", since)
	for {
		cur, _, err := u.docker.ServiceInspectWithRaw(ctx, svc.ID, swarm.ServiceInspectOptions{})
		switch {
		case err != nil && ctx.Err() == nil && (cerrdefs.IsNotFound(err) || notManager(err)):
			return strategy.Failed(fmt.Errorf("service %s disappeared during its update", j.Target))
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
				j.HealthyAt = time.Now().UTC()
				j.ImageCreated = u.imageCreated(ctx, image)
				return strategy.Outcome{Status: deploy.StatusSucceeded}
			case swarm.UpdateStateRollbackStarted:
				rollbackMsg = us.Message
			case swarm.UpdateStateRollbackCompleted:
				msg := us.Message
				if rollbackMsg != "" {
					msg = rollbackMsg + "; " + msg
				}
				j.RollbackReason, j.RollbackDetail = u.rollbackCause(ctx, cur.ID, image, msg)
				return strategy.Outcome{Status: deploy.StatusRolledBack,
					Err: fmt.Errorf("swarm rolled service %s back: %s", j.Target, j.RollbackDetail)}
			case swarm.UpdateStatePaused, swarm.UpdateStateRollbackPaused:
				return strategy.Failed(fmt.Errorf("swarm update of service %s %s: %s", j.Target, us.State, us.Message))
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if run.Stopping() {
				log.Info("shutting down while swarm updates the service; the job resumes after restart")
				return strategy.Outcome{Abandoned: true}
			}
			if state == "" {
				state = "not started"
			}
			return strategy.Failed(fmt.Errorf("deploy timeout reached while swarm's update of service %s was %s; "+
				"the rollout is left to swarm", j.Target, state))
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

// imageCreated is the deployed image's build time as this engine knows
// it, if a task ran here (zero otherwise).
func (u *Update) imageCreated(ctx context.Context, ref string) time.Time {
	img, err := u.docker.ImageInspect(ctx, ref)
	if err != nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, img.Created)
	return t.UTC()
}

var taskInMessage = regexp.MustCompile(`task ([a-z0-9]{25})\b`)

// rollbackCause infers why Swarm rolled the update back from the task of
// the new image that failed: its container when it ran on this node (the
// health log or the exit code), else the task's own status. Swarm's message
// leads the detail. Unknown causes count as unhealthy.
func (u *Update) rollbackCause(ctx context.Context, serviceID, image, swarmMsg string) (reason, detail string) {
	reason, detail = deploy.ReasonUnhealthy, swarmMsg
	tasks, err := u.docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", serviceID))})
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
	r, why := u.taskFailure(ctx, *failed)
	return r, swarmMsg + "; task " + containers.ShortID(failed.ID) + ": " + why
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
func (u *Update) taskFailure(ctx context.Context, tk swarm.Task) (reason, detail string) {
	st := tk.Status
	if cs := st.ContainerStatus; cs != nil && cs.ContainerID != "" {
		if c, err := u.docker.ContainerInspect(ctx, cs.ContainerID); err == nil && c.ContainerJSONBase != nil && c.State != nil {
			if h := c.State.Health; h != nil && h.Status == container.Unhealthy {
				out := containers.HealthOutput(c)
				if out == "" {
					out = "health check failed"
				}
				return deploy.ReasonUnhealthy, out
			}
			if !c.State.Running {
				return deploy.ReasonExited, fmt.Sprintf("exit code %d", c.State.ExitCode)
			}
		}
	}
	msg := strings.TrimSpace(st.Err)
	if msg == "" {
		msg = strings.TrimSpace(st.Message)
	}
	switch {
	case strings.Contains(msg, "unhealthy"):
		return deploy.ReasonUnhealthy, msg
	case st.State == swarm.TaskStateRejected:
		return deploy.ReasonStartFailed, msg
	case st.State == swarm.TaskStateFailed:
		return deploy.ReasonExited, msg
	}
	// A task that completed within the monitor period was most likely
	// stopped by Swarm for failing its healthcheck (a process that exits 0
	// on SIGTERM looks like this); on another node hookd cannot tell.
	return deploy.ReasonUnhealthy, fmt.Sprintf("task %s (%s)", st.State, msg)
}
