// Package containers deploys container targets. Recreate, the default
// strategy, replaces a running container with one built faithfully from it
// on the new image, gates the replacement on its health and rolls back when
// it fails; every step is journalled first, and Reconcile settles at
// start-up whatever a crash left half done, so that exactly one container
// runs under each target's name. StartFirst, opt-in, gates the new version
// next to the old one instead, for apps behind a reverse proxy. Both gates
// can also probe the container (hookd.probe, probe.go).
package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// Docker is the part of the Engine API the recreate strategy calls.
// *client.Client satisfies it.
type Docker interface {
	Ping(ctx context.Context) (types.Ping, error)
	deployDocker
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRename(ctx context.Context, containerID, newContainerName string) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerUpdate(ctx context.Context, containerID string, updateConfig container.UpdateConfig) (container.UpdateResponse, error)
	NetworkConnect(ctx context.Context, networkID, containerID string, config *network.EndpointSettings) error
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageList(ctx context.Context, options image.ListOptions) ([]image.Summary, error)
	ImageRemove(ctx context.Context, imageID string, options image.RemoveOptions) ([]image.DeleteResponse, error)
}

var _ Docker = (*client.Client)(nil)

// Name is the strategy's name in the hookd.strategy label.
const Name = "recreate"

// Config tunes Recreate. Zero values select the defaults.
type Config struct {
	// HealthTimeout bounds the wait for a healthcheck to pass (default 60s);
	// the container label hookd.health-timeout (a Go duration) overrides it.
	HealthTimeout time.Duration
	// SettleTime is how long a new container must stay running, unrestarted,
	// before it is trusted (default 5s); one with a healthcheck must also
	// report healthy. The window catches a container that passes its first
	// check and dies right after.
	SettleTime time.Duration
	// Keychain finds registry credentials; nil means authn.DefaultKeychain.
	Keychain authn.Keychain
	// PruneImages removes images of a target's repository other than the
	// new and the previous one after a successful deploy, never one in use.
	PruneImages bool
	// SelfID is the id of hookd's own container, if it runs in one.
	SelfID string
	// Scope limits the containers Reconcile and the swap touch.
	Scope deploy.Scope
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Recreate is the default strategy for container targets.
type Recreate struct {
	docker Docker
	cfg    Config
	log    *slog.Logger

	// Set by another strategy that shares the recreate's preparation
	// (start-first): fit says why the target does not suit it (the job is
	// refused before anything is pulled), replace swaps in its own way.
	fit     func(ctx context.Context, cur containerInspect) error
	replace func(ctx context.Context, run *strategy.Run, cur containerInspect, sp spec, rel relations, log *slog.Logger) strategy.Outcome
}

// NewRecreate returns the recreate strategy.
func NewRecreate(docker Docker, cfg Config) *Recreate {
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 60 * time.Second
	}
	if cfg.SettleTime <= 0 {
		cfg.SettleTime = 5 * time.Second
	}
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Recreate{docker: docker, cfg: cfg, log: cfg.Logger}
}

// Deploy does the work of one job: checks, the containers related to the
// target (a cycle or a missing dependency is refused), the tag resolved
// and its digest pulled, up-to-date check, the deployer's policy,
// pre-update hooks, swap, health gate, the dependents, and rollback or
// clean-up (the local tag moved, post-update hooks).
func (r *Recreate) Deploy(ctx context.Context, run *strategy.Run) strategy.Outcome {
	j := run.Job
	log := run.Log
	cur, err := r.docker.ContainerInspect(ctx, j.Target)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return strategy.Failed(fmt.Errorf("target %q not found", j.Target))
		}
		return run.Interrupted(strategy.Failed(fmt.Errorf("inspect %s: %w", j.Target, err)))
	}
	if cur.ContainerJSONBase == nil || cur.Config == nil || cur.State == nil || cur.HostConfig == nil ||
		strings.TrimPrefix(cur.Name, "/") != j.Target {
		return strategy.Failed(fmt.Errorf("target %q not found", j.Target))
	}
	if !deploy.Eligible(j.Target, cur.Config.Labels) || !r.cfg.Scope.Contains(cur.Config.Labels) {
		return strategy.Failed(fmt.Errorf("container %q is not labelled %s=true", j.Target, deploy.LabelEnable))
	}
	if !cur.State.Running {
		return strategy.Failed(fmt.Errorf("container %q is not running", j.Target))
	}
	ref, err := deploy.ParseRef(cur.Config.Image)
	if err != nil || ref.Digest != "" {
		return strategy.Failed(fmt.Errorf("container %q does not follow a tag (image %q)", j.Target, cur.Config.Image))
	}
	j.Image = ref.Repository() + ":" + ref.Tag
	log = log.With("image", j.Image)
	if err := r.refuse(cur); err != nil {
		return strategy.Failed(err)
	}

	var oldImg *image.InspectResponse
	if img, err := r.docker.ImageInspect(ctx, cur.Image); err == nil {
		oldImg = &img
		j.DigestBefore = deploy.RepoDigest(img.RepoDigests, ref, j.Request.Digest)
	} else {
		log.Warn("old image not inspectable; treating all config as user-set", "err", err)
	}
	if !j.Request.Force && oldImg != nil && deploy.HasDigest(oldImg.RepoDigests, ref, j.Request.Digest) {
		j.DigestAfter = j.DigestBefore
		return strategy.Outcome{Status: deploy.StatusUpToDate}
	}
	if out, stop := r.precheck(ctx, cur); stop {
		return run.Interrupted(out)
	}

	// Finding the containers related to cur lists every container, which
	// takes tens of milliseconds on a busy engine: ask while the tag is
	// resolved rather than before.
	type relResult struct {
		rel relations
		err error
	}
	relc := make(chan relResult, 1)
	go func() {
		rel, err := r.related(ctx, cur)
		relc <- relResult{rel, err}
	}()
	run.Stage(deploy.StagePulling)
	t0 := time.Now()
	digest, err := r.resolve(ctx, ref)
	rr := <-relc
	if err != nil {
		return run.Interrupted(strategy.Failed(err))
	}
	if !j.Request.Force && oldImg != nil && deploy.HasDigest(oldImg.RepoDigests, ref, digest) {
		j.DigestAfter = digest
		return strategy.Outcome{Status: deploy.StatusUpToDate}
	}
	if rr.err != nil {
		if _, ok := errors.AsType[*dependencyError](rr.err); ok {
			return strategy.Refused(rr.err)
		}
		return run.Interrupted(strategy.Failed(rr.err))
	}
	rel := rr.rel
	j.Notes = append(j.Notes, rel.notes...)
	err = r.pull(ctx, ref, digest, log)
	run.Phase("pull", t0)
	if err != nil {
		return run.Interrupted(strategy.Failed(err))
	}
	newImg, err := r.docker.ImageInspect(ctx, ref.Repository()+"@"+digest)
	if err != nil {
		return run.Interrupted(strategy.Failed(fmt.Errorf("inspect pulled image %s: %w", j.Image, err)))
	}
	j.DigestAfter = digest
	if created, err := time.Parse(time.RFC3339Nano, newImg.Created); err == nil {
		j.ImageCreated = created.UTC()
	}
	if c := newImg.Config; c != nil {
		j.Revision, j.Source = c.Labels[deploy.LabelImageRevision], c.Labels[deploy.LabelImageSource]
	}
	if !j.Request.Force && newImg.ID == cur.Image {
		return strategy.Outcome{Status: deploy.StatusUpToDate}
	}
	if err := run.Admit(ctx, j.DigestAfter); err != nil {
		return strategy.Refused(err)
	}

	var oldCfg *dockerspec.DockerOCIImageConfig
	if oldImg != nil {
		oldCfg = oldImg.Config
	}
	sp, err := buildSpec(cur, oldCfg)
	if err != nil {
		return strategy.Failed(err)
	}
	sp.Tag, sp.ImageID, sp.PrevImageID = ref.Repository()+":"+ref.Tag, newImg.ID, cur.Image
	keepComposeTrue(sp.Config.Labels, r.composeImageID(ctx, cur.Config.Labels[composeImage], cur.Image, newImg))

	if err := preUpdate(ctx, r.docker, run, append([]containerInspect{cur}, rel.joiners...)...); err != nil {
		return run.Interrupted(strategy.Failed(err))
	}
	var out strategy.Outcome
	if r.replace != nil {
		// Start-first: it refuses shared namespaces (fit), so it has no
		// joiners; it restarts the dependents that asked for it.
		out = r.replace(ctx, run, cur, sp, rel, log)
	} else {
		out = r.swap(ctx, run, cur, sp, rel, log)
	}
	// Services are not pruned, nor anything after a failure: the previous
	// image is the way back.
	if out.Status == deploy.StatusSucceeded && r.cfg.PruneImages {
		r.prune(context.WithoutCancel(ctx), *j, newImg.ID, cur.Image, log)
	}
	return out
}

// healthTimeout is the container's health gate.
func (r *Recreate) healthTimeout(labels map[string]string) time.Duration {
	d, ok := deploy.LabelDuration(labels, deploy.LabelHealthTimeout, r.cfg.HealthTimeout)
	if !ok {
		r.log.Warn("invalid health timeout label ignored", "label", deploy.LabelHealthTimeout, "value", labels[deploy.LabelHealthTimeout])
	}
	return d
}

// refuse returns why cur must not be recreated, or nil; it does no I/O.
func (r *Recreate) refuse(cur containerInspect) error {
	name := strings.TrimPrefix(cur.Name, "/")
	if self := r.cfg.SelfID; self != "" && (cur.ID == self || len(self) >= 12 && strings.HasPrefix(cur.ID, self)) {
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

type containerInspect = container.InspectResponse
