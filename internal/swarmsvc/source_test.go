package swarmsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/and3rn3t/hookd/internal/deploy"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/swarm"
)

func TestServiceTarget(t *testing.T) {
	const dg = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	one := uint64(1)
	svc := func(image string, labels map[string]string, mode swarm.ServiceMode) swarm.Service {
		return swarm.Service{ID: "svc-id", Spec: swarm.ServiceSpec{
			Annotations:  swarm.Annotations{Name: "web", Labels: labels},
			TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: image}},
			Mode:         mode,
		}}
	}
	on := map[string]string{deploy.LabelEnable: "true", "scope": "a"}
	replicated := swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}}
	tests := []struct {
		name       string
		svc        swarm.Service
		ok         bool
		image, tag string
		digest     string
	}{
		{"pinned by the CLI", svc("ghcr.io/acme/web:1.2@"+dg, on, replicated), true, "ghcr.io/acme/web", "1.2", dg},
		{"tag only", svc("ghcr.io/acme/web:latest", on, replicated), true, "ghcr.io/acme/web", "latest", ""},
		{"familiar name", svc("nginx:latest@"+dg, on, swarm.ServiceMode{Global: &swarm.GlobalService{}}), true, "docker.io/library/nginx", "latest", dg},
		{"registry with port", svc("127.0.0.1:5000/acme/web:v1@"+dg, on, replicated), true, "127.0.0.1:5000/acme/web", "v1", dg},
		{"digest only follows nothing", svc("ghcr.io/acme/web@"+dg, on, replicated), false, "", "", ""},
		{"registry port, digest only", svc("127.0.0.1:5000/acme/web@"+dg, on, replicated), false, "", "", ""},
		{"not labelled", svc("ghcr.io/acme/web:latest", map[string]string{"scope": "a"}, replicated), false, "", "", ""},
		{"label false", svc("ghcr.io/acme/web:latest", map[string]string{deploy.LabelEnable: "false", "scope": "a"}, replicated), false, "", "", ""},
		{"out of scope", svc("ghcr.io/acme/web:latest", map[string]string{deploy.LabelEnable: "true", "scope": "b"}, replicated), false, "", "", ""},
		{"job mode", svc("ghcr.io/acme/web:latest", on, swarm.ServiceMode{ReplicatedJob: &swarm.ReplicatedJob{}}), false, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := target(tt.svc, "scope=a")
			if ok != tt.ok {
				t.Fatalf("target(%q) ok = %v, want %v", tt.svc.Spec.TaskTemplate.ContainerSpec.Image, ok, tt.ok)
			}
			if !ok {
				return
			}
			if got.Kind != deploy.KindService || got.Name != "web" || got.ID != "svc-id" || got.Image != tt.image || got.Tag != tt.tag ||
				got.Digest != tt.digest || got.ImageID != "" || got.Ref.Digest != "" {
				t.Errorf("target() = %+v, want service web %s:%s pinned %q, no image id", got, tt.image, tt.tag, tt.digest)
			}
		})
	}
	t.Run("plugin", func(t *testing.T) {
		s := svc("x", on, replicated)
		s.Spec.TaskTemplate.ContainerSpec = nil
		if _, ok := target(s, "scope=a"); ok {
			t.Errorf("target(plugin service) ok = true, want false")
		}
	})
}

func TestNotManager(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("list: %w", cerrdefs.ErrUnavailable), true},
		{errors.New(`Error response from daemon: This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.`), true},
		{errors.New("connection refused"), false},
		{cerrdefs.ErrNotFound, false},
	}
	for _, tt := range tests {
		if got := notManager(tt.err); got != tt.want {
			t.Errorf("notManager(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// serviceListErr is an engine whose service list always fails with err.
type serviceListErr struct {
	SourceDocker
	err error
}

func (s serviceListErr) ServiceList(context.Context, swarm.ServiceListOptions) ([]swarm.Service, error) {
	return nil, s.err
}

func TestListServicesSaysWhyThereAreNone(t *testing.T) {
	tests := []struct {
		name, err, want string
	}{
		{"worker", "Error response from daemon: This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. " +
			"Please run this command on a manager node or promote the current node to a manager.", "swarm worker"},
		{"manager not ready", "Error response from daemon: This node is not a swarm manager. Manager is being prepared or has trouble connecting to the cluster.",
			"cannot reach its cluster"},
		{"no swarm", `Error response from daemon: This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			src := NewSource(serviceListErr{err: errors.New(tt.err)}, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			for range 3 {
				got, err := src.List(context.Background())
				if err != nil || len(got) != 0 {
					t.Fatalf("List() = %v, %v, want no services and no error", got, err)
				}
			}
			if tt.want == "" {
				if logs.Len() != 0 {
					t.Errorf("logged %q for an engine outside any swarm, want nothing", logs.String())
				}
				return
			}
			if n := strings.Count(logs.String(), tt.want); n != 1 {
				t.Errorf("log mentions %q %d times over three listings, want once:\n%s", tt.want, n, logs.String())
			}
		})
	}
}
