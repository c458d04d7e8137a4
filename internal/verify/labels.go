package verify

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// Docker is the part of the Engine API the gate calls to read a target's
// labels. *client.Client satisfies it.
type Docker interface {
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ServiceInspectWithRaw(ctx context.Context, serviceID string, options swarm.ServiceInspectOptions) (swarm.Service, []byte, error)
}

var _ Docker = (*client.Client)(nil)

// EngineLabels reads targets' labels from the engine: a container's
// labels, or a Swarm service's (not its tasks').
type EngineLabels struct{ Docker Docker }

// Labels returns the labels of the target. The target is read when its
// deploy is verified, so a label changed since hookd found the target
// counts.
func (e EngineLabels) Labels(ctx context.Context, kind, target string) (map[string]string, error) {
	if kind == deploy.KindService {
		svc, _, err := e.Docker.ServiceInspectWithRaw(ctx, target, swarm.ServiceInspectOptions{})
		if err != nil {
			return nil, fmt.Errorf("inspect service %s: %w", target, err)
		}
		return svc.Spec.Labels, nil
	}
	c, err := e.Docker.ContainerInspect(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("inspect container %s: %w", target, err)
	}
	if c.Config == nil {
		return nil, nil
	}
	return c.Config.Labels, nil
}
