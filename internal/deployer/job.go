package deployer

import (
	"context"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

// errCrashed stops a worker dead when a test injects a crash.
var errCrashed = errors.New("injected crash")

// outcome is how deploy ended; the job's status follows from it.
type outcome struct {
	status deploy.Status
	err    error
	// abandoned is set when shutdown interrupted the job and its target was
	// put back as it was: the job goes back to the queue.
	abandoned bool
	newImage  *image.InspectResponse
	oldImage  string
	healthyAt time.Time // when the replacement passed its gate
}

// runJob runs one job and records its result.
func (d *Deployer) runJob(runCtx context.Context, j deploy.Job) {
	start := time.Now()
	log := d.log.With("job_id", j.ID, "target", j.Target)
	j.Status = deploy.StatusRunning
	j.StartedAt = start.UTC()
	j.Phases = map[string]float64{}
	j.Error, j.RollbackReason, j.RollbackDetail = "", "", ""
	d.saveJob(runCtx, j)
	inProgress := d.metrics.DeployInProgress.WithLabelValues(j.Target)
	inProgress.Set(1)
	log.Info("deploy started", "trigger", string(j.Request.Trigger), "request_id", j.Request.ID)

	ctx, cancel := context.WithTimeout(runCtx, d.cfg.DeployTimeout)
	defer cancel()
	var out outcome
	if j.Kind == deploy.KindService {
		out = d.deployService(ctx, runCtx, &j, log)
	} else {
		out = d.deploy(ctx, runCtx, &j, log)
	}
	if errors.Is(out.err, errCrashed) {
		log.Warn("injected crash: worker stops here")
		return
	}
	inProgress.Set(0)
	if out.abandoned {
		j.Status = deploy.StatusQueued
		j.StartedAt = time.Time{}
		d.saveJob(runCtx, j)
		log.Info("deploy abandoned for shutdown; job stays queued")
		return
	}
	j.Status = out.status
	if out.err != nil {
		j.Error = out.err.Error()
	}
	// Services are not pruned: the previous image is Swarm's rollback, and
	// it lives on other nodes too.
	if j.Status == deploy.StatusSucceeded && d.cfg.PruneImages && out.newImage != nil && j.Kind != deploy.KindService {
		d.prune(context.WithoutCancel(runCtx), j, out.newImage.ID, out.oldImage, log)
	}
	j.FinishedAt = time.Now().UTC()
	total := j.FinishedAt.Sub(start)
	d.saveJob(runCtx, j)
	d.noteRollback(j)

	m := d.metrics
	m.Deploys.WithLabelValues(j.Target, string(j.Request.Trigger), string(j.Status)).Inc()
	m.DeployDuration.WithLabelValues("total").Observe(total.Seconds())
	attrs := []any{"status", string(j.Status), "image", j.Image, "digest", j.DigestAfter, "duration_seconds", total.Seconds()}
	switch j.Status {
	case deploy.StatusSucceeded:
		now := time.Now()
		m.LastSuccessfulDeploy.WithLabelValues(j.Target).Set(float64(now.Unix()))
		healthy := out.healthyAt
		if healthy.IsZero() {
			healthy = now
		}
		if !j.Request.ReceivedAt.IsZero() && healthy.After(j.Request.ReceivedAt) {
			m.DeployLeadTime.WithLabelValues(string(j.Request.Trigger)).Observe(healthy.Sub(j.Request.ReceivedAt).Seconds())
		}
		if out.newImage != nil {
			if age, ok := imageAge(out.newImage.Created, healthy); ok {
				m.ImageAgeAtDeploy.Observe(age.Seconds())
			}
		}
		log.Info("deploy finished", attrs...)
	case deploy.StatusRolledBack:
		m.Rollbacks.WithLabelValues(j.Target, j.RollbackReason).Inc()
		log.Warn("deploy rolled back", append(attrs, "reason", j.RollbackReason, "detail", j.RollbackDetail)...)
	case deploy.StatusFailed:
		log.Error("deploy failed", append(attrs, "err", j.Error)...)
	default:
		log.Info("deploy finished", attrs...)
	}
	if j.Kind == deploy.KindService {
		d.refreshService(context.WithoutCancel(runCtx), j.Target)
	} else {
		d.refresh(context.WithoutCancel(runCtx), j.Target)
	}
}

// noteRollback remembers the digest a rolled-back job tried, and forgets it
// once a deploy of the target succeeds or finds it up to date.
func (d *Deployer) noteRollback(j deploy.Job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noteRollbackLocked(j)
}

// noteRollbackLocked is noteRollback with d.mu held.
func (d *Deployer) noteRollbackLocked(j deploy.Job) {
	switch j.Status {
	case deploy.StatusRolledBack:
		if j.DigestAfter != "" {
			d.rolledBack[j.Target] = j.DigestAfter
		}
	case deploy.StatusSucceeded, deploy.StatusUpToDate:
		delete(d.rolledBack, j.Target)
	}
}

// imageAge is now minus the image's created time, when that is plausible:
// set, not in the future, and under a year (reproducible builds stamp 1970).
func imageAge(created string, now time.Time) (time.Duration, bool) {
	t, err := time.Parse(time.RFC3339Nano, created)
	if err != nil || t.IsZero() || t.Unix() <= 0 {
		return 0, false
	}
	age := now.Sub(t)
	if age < 0 || age > 365*24*time.Hour {
		return 0, false
	}
	return age, true
}

// deploy does the work of one job: checks, pull, up-to-date check, swap,
// health gate, and rollback or clean-up. runCtx is the deployer's lifetime;
// ctx adds the job's timeout.
func (d *Deployer) deploy(ctx, runCtx context.Context, j *deploy.Job, log *slog.Logger) outcome {
	fail := func(err error) outcome { return outcome{status: deploy.StatusFailed, err: err} }

	cur, err := d.docker.ContainerInspect(ctx, j.Target)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return fail(fmt.Errorf("target %q not found", j.Target))
		}
		return d.interrupted(runCtx, fail(fmt.Errorf("inspect %s: %w", j.Target, err)))
	}
	if cur.ContainerJSONBase == nil || cur.Config == nil || cur.State == nil || cur.HostConfig == nil ||
		strings.TrimPrefix(cur.Name, "/") != j.Target {
		return fail(fmt.Errorf("target %q not found", j.Target))
	}
	if !eligible(j.Target, cur.Config.Labels) || !d.inScope(cur.Config.Labels) {
		return fail(fmt.Errorf("container %q is not labelled %s=true", j.Target, deploy.LabelEnable))
	}
	if !cur.State.Running {
		return fail(fmt.Errorf("container %q is not running", j.Target))
	}
	ref, err := deploy.ParseRef(cur.Config.Image)
	if err != nil || ref.Digest != "" {
		return fail(fmt.Errorf("container %q does not follow a tag (image %q)", j.Target, cur.Config.Image))
	}
	j.Image = ref.Repository() + ":" + ref.Tag
	log = log.With("image", j.Image)
	if err := d.refuse(cur); err != nil {
		return fail(err)
	}

	var oldImg *image.InspectResponse
	if img, err := d.docker.ImageInspect(ctx, cur.Image); err == nil {
		oldImg = &img
		j.DigestBefore = repoDigest(img.RepoDigests, ref, j.Request.Digest)
	} else {
		log.Warn("old image not inspectable; treating all config as user-set", "err", err)
	}
	if !j.Request.Force && oldImg != nil && hasDigest(oldImg.RepoDigests, ref, j.Request.Digest) {
		j.DigestAfter = j.DigestBefore
		return outcome{status: deploy.StatusUpToDate}
	}

	// Finding containers that share cur's network namespace lists every
	// container, which takes tens of milliseconds on a busy engine: ask
	// while the pull runs rather than before it.
	shared := make(chan error, 1)
	go func() { shared <- d.sharedNamespace(ctx, cur) }()
	t0 := time.Now()
	err = d.pull(ctx, ref, log)
	d.phase(j, "pull", t0)
	sharedErr := <-shared
	if err != nil {
		return d.interrupted(runCtx, fail(err))
	}
	if sharedErr != nil {
		return d.interrupted(runCtx, fail(sharedErr))
	}
	newImg, err := d.docker.ImageInspect(ctx, ref.Repository()+":"+ref.Tag)
	if err != nil {
		return d.interrupted(runCtx, fail(fmt.Errorf("inspect pulled image %s: %w", j.Image, err)))
	}
	j.DigestAfter = repoDigest(newImg.RepoDigests, ref, j.Request.Digest)
	if !j.Request.Force && newImg.ID == cur.Image {
		return outcome{status: deploy.StatusUpToDate}
	}

	var oldCfg *dockerspec.DockerOCIImageConfig
	if oldImg != nil {
		oldCfg = oldImg.Config
	}
	sp, err := buildSpec(cur, oldCfg)
	if err != nil {
		return fail(err)
	}
	out := d.swap(ctx, runCtx, j, cur, sp, log)
	out.newImage = &newImg
	out.oldImage = cur.Image
	return out
}

// interrupted turns a failure caused by shutdown into an abandoned job.
func (d *Deployer) interrupted(runCtx context.Context, o outcome) outcome {
	if runCtx.Err() != nil {
		return outcome{abandoned: true, err: o.err}
	}
	return o
}

func (d *Deployer) phase(j *deploy.Job, name string, since time.Time) {
	s := time.Since(since).Seconds()
	j.Phases[name] = s
	d.metrics.DeployDuration.WithLabelValues(name).Observe(s)
}

// refuse returns why cur must not be recreated, or nil; it does no I/O.
func (d *Deployer) refuse(cur containerInspect) error {
	name := strings.TrimPrefix(cur.Name, "/")
	if self := d.cfg.SelfID; self != "" && (cur.ID == self || len(self) >= 12 && strings.HasPrefix(cur.ID, self)) {
		return fmt.Errorf("hookd cannot replace its own container %q: stopping it would end the deploy half way; "+
			"update hookd with its own tooling (e.g. docker compose pull && docker compose up -d) or remove the %s label from it",
			name, deploy.LabelEnable)
	}
	if cur.HostConfig.AutoRemove {
		return fmt.Errorf("container %q was started with --rm (AutoRemove): stopping it would delete it and leave no way back; "+
			"recreate it without --rm to let hookd deploy it", name)
	}
	return nil
}

// sharedNamespace returns an error naming a container that uses cur's
// network namespace (network_mode container:NAME): recreating cur would cut
// it off.
func (d *Deployer) sharedNamespace(ctx context.Context, cur containerInspect) error {
	name := strings.TrimPrefix(cur.Name, "/")
	all, err := d.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range all {
		mode := c.HostConfig.NetworkMode
		if mode == "container:"+cur.ID || mode == "container:"+name {
			other := cur.ID
			if len(c.Names) > 0 {
				other = strings.TrimPrefix(c.Names[0], "/")
			}
			return fmt.Errorf("container %q shares the network namespace of %q (network_mode container:%s): "+
				"recreating %q would cut it off; redeploy them together (e.g. docker compose up -d)", other, name, name, name)
		}
	}
	return nil
}

type containerInspect = container.InspectResponse
