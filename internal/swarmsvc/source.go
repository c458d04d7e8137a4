package swarmsvc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
)

// SourceDocker is the part of the Engine API that finding service targets
// calls. The service calls only answer on a swarm manager; elsewhere they
// fail with "not a swarm manager", which means "no services".
type SourceDocker interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ServiceList(ctx context.Context, options swarm.ServiceListOptions) ([]swarm.Service, error)
	ServiceInspectWithRaw(ctx context.Context, serviceID string, options swarm.ServiceInspectOptions) (swarm.Service, []byte, error)
}

// Source finds the service targets.
type Source struct {
	docker SourceDocker
	scope  deploy.Scope
	log    *slog.Logger

	// Set once the reason this engine lists no services has been logged.
	saidWorker, saidManagerDown atomic.Bool
}

// NewSource returns the service source.
func NewSource(docker SourceDocker, cfg Config) *Source {
	cfg.defaults()
	return &Source{docker: docker, scope: cfg.Scope, log: cfg.Logger}
}

// Kind returns deploy.KindService.
func (s *Source) Kind() string { return deploy.KindService }

// List returns the services that are targets. An engine that is not
// a swarm manager (no swarm, or a worker) has none.
func (s *Source) List(ctx context.Context) ([]deploy.Target, error) {
	args := filters.NewArgs(filters.Arg("label", deploy.LabelEnable+"=true"))
	if s.scope != "" {
		args.Add("label", string(s.scope))
	}
	list, err := s.docker.ServiceList(ctx, swarm.ServiceListOptions{Filters: args})
	if err != nil {
		if notManager(err) {
			s.noteSwarmRole(err)
			return nil, nil
		}
		return nil, fmt.Errorf("list services: %w", err)
	}
	out := make([]deploy.Target, 0, len(list))
	for _, svc := range list {
		if t, ok := target(svc, s.scope); ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// noteSwarmRole logs, once per kind, why an engine in a swarm answers no
// services: a worker's labelled services are invisible here and are
// deployed by a hookd on a manager, which a user would otherwise have to
// guess. An engine outside any swarm needs no word.
func (s *Source) noteSwarmRole(err error) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Worker nodes"):
		if !s.saidWorker.Swap(true) {
			s.log.Info("this engine is a swarm worker: hookd here deploys labelled containers only; " +
				"labelled services are updated by a hookd on a manager node (see docs/swarm.md)")
		}
	case strings.Contains(msg, "Manager is being prepared"):
		if !s.saidManagerDown.Swap(true) {
			s.log.Warn("this swarm manager cannot reach its cluster yet: services are skipped until it can", "err", msg)
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

// target reports whether s is a target: opted in with a service
// label, in scope, running containers (not a plugin, not a job) and
// following a tag.
func target(s swarm.Service, scope deploy.Scope) (deploy.Target, bool) {
	t := deploy.Target{Name: s.Spec.Name, ID: s.ID, Kind: deploy.KindService, Strategy: Name}
	if s.Spec.Labels[deploy.LabelEnable] != "true" || !scope.Contains(s.Spec.Labels) {
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
	t.Labels = deploy.HookdLabels(s.Spec.Labels)
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

// Inspect reports whether the service idOrName is a target; one that is
// gone (or an engine that is no manager) has none.
func (s *Source) Inspect(ctx context.Context, idOrName string) (deploy.Target, bool, error) {
	svc, _, err := s.docker.ServiceInspectWithRaw(ctx, idOrName, swarm.ServiceInspectOptions{})
	switch {
	case err == nil:
		t, ok := target(svc, s.scope)
		return t, ok, nil
	case cerrdefs.IsNotFound(err) || notManager(err):
		return deploy.Target{ID: idOrName, Kind: deploy.KindService}, false, nil
	}
	return deploy.Target{}, false, fmt.Errorf("inspect service %s: %w", idOrName, err)
}

// Watch streams the ids of services that were created, updated or
// removed. Service events carry no labels, so they cannot be filtered by
// label; they are few, and each is checked with Inspect. An engine outside
// a swarm sends none.
func (s *Source) Watch(ctx context.Context) (<-chan string, <-chan error) {
	msgs, errs := s.docker.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ServiceEventType)),
	)})
	return containers.ActorIDs(ctx, msgs), errs
}
