package swarmsvc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/swarm"
)

func TestUpdatedSpec(t *testing.T) {
	const image = "ghcr.io/acme/web:latest@sha256:2222222222222222222222222222222222222222222222222222222222222222"
	base := func(ports ...swarm.PortConfig) swarm.ServiceSpec {
		s := swarm.ServiceSpec{
			Annotations:  swarm.Annotations{Name: "web"},
			TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "ghcr.io/acme/web:latest@sha256:1111", Env: []string{"A=1"}}, ForceUpdate: 3},
		}
		if ports != nil {
			s.EndpointSpec = &swarm.EndpointSpec{Ports: ports}
		}
		return s
	}
	own := &swarm.UpdateConfig{Parallelism: 2, FailureAction: swarm.UpdateFailureActionPause, Order: swarm.UpdateOrderStopFirst, Delay: time.Minute}
	withOwn := base()
	withOwn.UpdateConfig = own
	tests := []struct {
		name      string
		spec      swarm.ServiceSpec
		force     bool
		wantOrder string
		wantOwn   bool
		wantForce uint64
	}{
		{"no ports: start first", base(), false, swarm.UpdateOrderStartFirst, false, 3},
		{"ingress port: start first", base(swarm.PortConfig{TargetPort: 80, PublishedPort: 8080, PublishMode: swarm.PortConfigPublishModeIngress}), false, swarm.UpdateOrderStartFirst, false, 3},
		{"host port: stop first", base(swarm.PortConfig{TargetPort: 80, PublishedPort: 8080, PublishMode: swarm.PortConfigPublishModeHost}), false, swarm.UpdateOrderStopFirst, false, 3},
		{"own config kept", withOwn, false, swarm.UpdateOrderStopFirst, true, 3},
		{"force bumps ForceUpdate", base(), true, swarm.UpdateOrderStartFirst, false, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origImage := tt.spec.TaskTemplate.ContainerSpec.Image
			got := updatedSpec(tt.spec, image, tt.force, 7*time.Second)
			if got.TaskTemplate.ContainerSpec.Image != image {
				t.Errorf("image = %q, want %q", got.TaskTemplate.ContainerSpec.Image, image)
			}
			if tt.spec.TaskTemplate.ContainerSpec.Image != origImage {
				t.Errorf("updatedSpec changed the caller's spec: image %q", tt.spec.TaskTemplate.ContainerSpec.Image)
			}
			if fmt.Sprint(got.TaskTemplate.ContainerSpec.Env) != "[A=1]" {
				t.Errorf("env = %v, want the service's own [A=1]", got.TaskTemplate.ContainerSpec.Env)
			}
			if got.TaskTemplate.ForceUpdate != tt.wantForce {
				t.Errorf("ForceUpdate = %d, want %d", got.TaskTemplate.ForceUpdate, tt.wantForce)
			}
			uc := got.UpdateConfig
			switch {
			case tt.wantOwn:
				if uc != own {
					t.Errorf("UpdateConfig = %+v, want the service's own %+v", uc, own)
				}
			case uc == nil:
				t.Errorf("UpdateConfig = nil, want hookd's safe one")
			default:
				if uc.Order != tt.wantOrder || uc.FailureAction != swarm.UpdateFailureActionRollback || uc.Parallelism != 1 || uc.Monitor != 7*time.Second {
					t.Errorf("UpdateConfig = %+v, want order %s, rollback, parallelism 1, monitor 7s", uc, tt.wantOrder)
				}
			}
		})
	}
}

func TestNewUpdate(t *testing.T) {
	t1 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Minute)
	done := &swarm.UpdateStatus{State: swarm.UpdateStateCompleted, StartedAt: &t1}
	tests := []struct {
		name       string
		stale, cur *swarm.UpdateStatus
		want       bool
	}{
		{"not started yet", nil, nil, false},
		{"first update of the service", nil, &swarm.UpdateStatus{State: swarm.UpdateStateUpdating, StartedAt: &t2}, true},
		{"previous update still shown", done, &swarm.UpdateStatus{State: swarm.UpdateStateCompleted, StartedAt: &t1}, false},
		{"ours started", done, &swarm.UpdateStatus{State: swarm.UpdateStateUpdating, StartedAt: &t2}, true},
	}
	for _, tt := range tests {
		if got := newUpdate(tt.stale, tt.cur); got != tt.want {
			t.Errorf("%s: newUpdate() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestTaskFailureFromTaskStatus(t *testing.T) {
	// Tasks that ran on another node: only their status tells.
	tests := []struct {
		name       string
		status     swarm.TaskStatus
		reason     string
		detailWant string
	}{
		{"unhealthy, killed", swarm.TaskStatus{State: swarm.TaskStateFailed, Err: "task: non-zero exit (137): container unhealthy"}, deploy.ReasonUnhealthy, "container unhealthy"},
		{"crashed", swarm.TaskStatus{State: swarm.TaskStateFailed, Err: "task: non-zero exit (3)"}, deploy.ReasonExited, "non-zero exit (3)"},
		{"rejected", swarm.TaskStatus{State: swarm.TaskStateRejected, Err: "No such image: ghcr.io/acme/web:latest@sha256:…"}, deploy.ReasonStartFailed, "No such image"},
		{"completed in the monitor period", swarm.TaskStatus{State: swarm.TaskStateComplete, Message: "finished"}, deploy.ReasonUnhealthy, "complete (finished)"},
	}
	u := New(nil, nil, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, detail := u.taskFailure(context.Background(), swarm.Task{ID: "t1", Status: tt.status})
			if reason != tt.reason || !strings.Contains(detail, tt.detailWant) {
				t.Errorf("taskFailure(%+v) = %q, %q, want %q with %q", tt.status, reason, detail, tt.reason, tt.detailWant)
			}
		})
	}
}
