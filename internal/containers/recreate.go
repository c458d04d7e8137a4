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
	replace func(ctx context.Context, run *strategy.Run, cur containerInspect, sp spec, log *slog.Logger) strategy.Outcome
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

// Deploy does the work of one job: checks, pull, up-to-date check, the
// deployer's policy, swap, health gate, and rollback or clean-up.
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

	// Finding containers that share cur's network namespace lists every
	// container, which takes tens of milliseconds on a busy engine: ask
	// while the pull runs rather than before it.
	shared := make(chan error, 1)
	go func() { shared <- r.sharedNamespace(ctx, cur) }()
	run.Stage(deploy.StagePulling)
	t0 := time.Now()
	err = r.pull(ctx, ref, log)
	run.Phase("pull", t0)
	sharedErr := <-shared
	if err != nil {
		return run.Interrupted(strategy.Failed(err))
	}
	if sharedErr != nil {
		return run.Interrupted(strategy.Failed(sharedErr))
	}
	newImg, err := r.docker.ImageInspect(ctx, ref.Repository()+":"+ref.Tag)
	if err != nil {
		return run.Interrupted(strategy.Failed(fmt.Errorf("inspect pulled image %s: %w", j.Image, err)))
	}
	j.DigestAfter = deploy.RepoDigest(newImg.RepoDigests, ref, j.Request.Digest)
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
	swap := r.swap
	if r.replace != nil {
		swap = r.replace
	}
	out := swap(ctx, run, cur, sp, log)
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

// sharedNamespace returns an error naming a container that uses cur's
// network namespace (network_mode container:NAME): recreating cur would cut
// it off.
func (r *Recreate) sharedNamespace(ctx context.Context, cur containerInspect) error {
	name := strings.TrimPrefix(cur.Name, "/")
	all, err := r.docker.ContainerList(ctx, container.ListOptions{All: true})
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
