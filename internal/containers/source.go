package containers

import (
	"context"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// SourceDocker is the part of the Engine API that finding container targets
// calls. *client.Client satisfies it.
type SourceDocker interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
}

// Source finds the container targets: running containers labelled
// hookd.enable=true (and in scope), not Swarm tasks, not hookd's temporary
// names, following a tag.
type Source struct {
	docker SourceDocker
	cfg    Config
	rc     *Recreate // for the health timeout rule
}

// NewSource returns the container source. cfg is Recreate's: the same
// scope, health timeout and logger.
func NewSource(docker SourceDocker, cfg Config) *Source {
	return &Source{docker: docker, rc: NewRecreate(nil, cfg)}
}

// Kind returns deploy.KindContainer.
func (s *Source) Kind() string { return deploy.KindContainer }

// List returns every container target.
func (s *Source) List(ctx context.Context) ([]deploy.Target, error) {
	list, err := s.docker.ContainerList(ctx, container.ListOptions{
		Filters: withFilters(s.rc.labelFilters(), filters.Arg("status", "running")),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]deploy.Target, 0, len(list))
	for _, c := range list {
		t, ok, err := s.Inspect(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// Inspect reports whether the container idOrName is a target; one that is
// gone is none.
func (s *Source) Inspect(ctx context.Context, idOrName string) (deploy.Target, bool, error) {
	c, err := s.docker.ContainerInspect(ctx, idOrName)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return deploy.Target{ID: idOrName, Kind: deploy.KindContainer}, false, nil
		}
		return deploy.Target{}, false, fmt.Errorf("inspect container %s: %w", idOrName, err)
	}
	t := deploy.Target{ID: c.ID, Kind: deploy.KindContainer, Strategy: Name}
	if c.ContainerJSONBase == nil || c.Config == nil || c.State == nil {
		return t, false, nil
	}
	t.Name = strings.TrimPrefix(c.Name, "/")
	if !c.State.Running || !deploy.Eligible(t.Name, c.Config.Labels) || !s.rc.cfg.Scope.Contains(c.Config.Labels) {
		return t, false, nil
	}
	ref, err := deploy.ParseRef(c.Config.Image)
	if err != nil || ref.Digest != "" || strings.HasPrefix(c.Config.Image, "sha256:") {
		return t, false, nil
	}
	if v := c.Config.Labels[deploy.LabelStrategy]; v != "" {
		t.Strategy = v
	}
	t.Ref, t.Image, t.Tag, t.ImageID = ref, ref.Repository(), ref.Tag, c.Image
	t.HealthTimeout = s.rc.healthTimeout(c.Config.Labels)
	t.Labels = deploy.HookdLabels(c.Config.Labels)
	if img, err := s.docker.ImageInspect(ctx, c.Image); err == nil {
		t.Digest = deploy.RepoDigest(img.RepoDigests, ref, "")
	}
	return t, true, nil
}

// Watch streams the ids of labelled containers that started, died, were
// destroyed or renamed, until ctx is done or the stream fails.
func (s *Source) Watch(ctx context.Context) (<-chan string, <-chan error) {
	msgs, errs := s.docker.Events(ctx, events.ListOptions{Filters: withFilters(s.rc.labelFilters(),
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("event", string(events.ActionStart)),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionDestroy)),
		filters.Arg("event", string(events.ActionRename)),
	)})
	return ActorIDs(ctx, msgs), errs
}

// ActorIDs turns an engine event stream into the ids of the objects it
// names, until ctx is done or the stream closes.
func ActorIDs(ctx context.Context, msgs <-chan events.Message) <-chan string {
	ids := make(chan string)
	go func() {
		defer close(ids)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case ids <- m.Actor.ID:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return ids
}

func withFilters(args filters.Args, more ...filters.KeyValuePair) filters.Args {
	for _, kv := range more {
		args.Add(kv.Key, kv.Value)
	}
	return args
}
