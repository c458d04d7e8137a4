package containers

import (
	"reflect"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/strslice"
	"github.com/docker/go-connections/nat"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const oldID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// oldImage is the image the inspected containers below were created from.
func oldImage() *dockerspec.DockerOCIImageConfig {
	return &dockerspec.DockerOCIImageConfig{
		ImageConfig: ocispec.ImageConfig{
			User:         "app",
			ExposedPorts: map[string]struct{}{"8080/tcp": {}},
			Env:          []string{"PATH=/usr/bin", "APP_MODE=v1"},
			Entrypoint:   []string{"/app"},
			Cmd:          []string{"serve"},
			Volumes:      map[string]struct{}{"/data": {}},
			WorkingDir:   "/srv",
			Labels:       map[string]string{"org.opencontainers.image.version": "1", "maintainer": "x"},
			StopSignal:   "SIGINT",
		},
		DockerOCIImageConfigExt: dockerspec.DockerOCIImageConfigExt{
			Healthcheck: &dockerspec.HealthcheckConfig{
				Test: []string{"CMD", "/app", "health"}, Interval: time.Second, Retries: 3,
			},
		},
	}
}

// inspected returns a container as the engine reports it after
// `docker run --name web -l hookd.enable=true -p 80:8080 img`: the image's
// defaults merged in.
func inspected() container.InspectResponse {
	img := oldImage()
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID:    oldID,
			Name:  "/web",
			State: &container.State{Running: true},
			HostConfig: &container.HostConfig{
				NetworkMode:   "appnet",
				PortBindings:  nat.PortMap{"8080/tcp": {{HostIP: "", HostPort: "80"}}},
				RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
				Binds:         []string{"/srv/conf:/conf:ro", "named:/named"},
				Tmpfs:         map[string]string{"/run": "size=1m"},
				CapAdd:        strslice.StrSlice{"NET_ADMIN"},
				Resources:     container.Resources{Memory: 64 << 20},
			},
		},
		Config: &container.Config{
			Hostname:     oldID[:12],
			User:         img.User,
			ExposedPorts: nat.PortSet{"8080/tcp": {}},
			Env:          []string{"PATH=/usr/bin", "APP_MODE=v1", "TOKEN=abc"},
			Entrypoint:   strslice.StrSlice{"/app"},
			Cmd:          strslice.StrSlice{"serve"},
			Image:        "registry.local/web:latest",
			Volumes:      map[string]struct{}{"/data": {}},
			WorkingDir:   img.WorkingDir,
			Labels:       map[string]string{"org.opencontainers.image.version": "1", "maintainer": "x", deploy.LabelEnable: "true"},
			StopSignal:   "SIGINT",
			Healthcheck:  &container.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: time.Second, Retries: 3},
		},
		Mounts: []container.MountPoint{
			{Type: mount.TypeBind, Source: "/srv/conf", Destination: "/conf"},
			{Type: mount.TypeVolume, Name: "named", Destination: "/named", RW: true},
			{Type: mount.TypeVolume, Name: "3f2e1d", Destination: "/data", RW: true},
		},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"appnet": {NetworkID: "n1", Aliases: []string{"web", "api", oldID[:12]}, IPAddress: "172.20.0.5", MacAddress: "02:42:ac:14:00:05"},
			"backnet": {NetworkID: "n2", Aliases: []string{oldID[:12], "web-back"},
				IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: "10.9.0.7"}},
		}},
	}
}

func TestBuildSpecImageDefaultsFollowNewImage(t *testing.T) {
	s, err := buildSpec(inspected(), oldImage())
	if err != nil {
		t.Fatalf("buildSpec() error = %v", err)
	}
	c := s.Config
	checks := []struct {
		field     string
		got, want any
	}{
		{"Hostname", c.Hostname, ""},
		{"User", c.User, ""},
		{"WorkingDir", c.WorkingDir, ""},
		{"StopSignal", c.StopSignal, ""},
		{"Entrypoint", c.Entrypoint, strslice.StrSlice(nil)},
		{"Cmd", c.Cmd, strslice.StrSlice(nil)},
		{"Env", c.Env, []string{"TOKEN=abc"}},
		{"Labels", c.Labels, map[string]string{deploy.LabelEnable: "true"}},
		{"Healthcheck", c.Healthcheck, (*container.HealthConfig)(nil)},
		{"Volumes", c.Volumes, map[string]struct{}(nil)},
		{"ExposedPorts", c.ExposedPorts, nat.PortSet{"8080/tcp": {}}}, // published, so kept
		{"Image", c.Image, "registry.local/web:latest"},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("Config.%s = %#v, want %#v", ch.field, ch.got, ch.want)
		}
	}
}

func TestBuildSpecCarriesHostConfig(t *testing.T) {
	old := inspected()
	s, err := buildSpec(old, oldImage())
	if err != nil {
		t.Fatalf("buildSpec() error = %v", err)
	}
	hc := s.HostConfig
	if !reflect.DeepEqual(hc.PortBindings, old.HostConfig.PortBindings) {
		t.Errorf("PortBindings = %v, want %v", hc.PortBindings, old.HostConfig.PortBindings)
	}
	if hc.RestartPolicy.Name != container.RestartPolicyUnlessStopped || hc.Memory != 64<<20 ||
		!reflect.DeepEqual(hc.CapAdd, strslice.StrSlice{"NET_ADMIN"}) || hc.Tmpfs["/run"] != "size=1m" {
		t.Errorf("HostConfig lost user settings: %+v", hc)
	}
	if !reflect.DeepEqual(hc.Binds, old.HostConfig.Binds) {
		t.Errorf("Binds = %v, want %v", hc.Binds, old.HostConfig.Binds)
	}
	// Only the anonymous volume is added; binds and tmpfs are not doubled.
	want := []mount.Mount{{Type: mount.TypeVolume, Source: "3f2e1d", Target: "/data"}}
	if !reflect.DeepEqual(hc.Mounts, want) {
		t.Errorf("Mounts = %+v, want %+v", hc.Mounts, want)
	}
	if old.HostConfig.Mounts != nil {
		t.Errorf("buildSpec changed the inspected HostConfig.Mounts: %+v", old.HostConfig.Mounts)
	}
}

func TestBuildSpecNetworks(t *testing.T) {
	s, err := buildSpec(inspected(), oldImage())
	if err != nil {
		t.Fatalf("buildSpec() error = %v", err)
	}
	wantPrimary := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		"appnet": {Aliases: []string{"web", "api"}},
	}}
	if !reflect.DeepEqual(s.Networking, wantPrimary) {
		t.Errorf("Networking = %+v, want %+v", s.Networking.EndpointsConfig["appnet"], wantPrimary.EndpointsConfig["appnet"])
	}
	wantJoins := []netJoin{{Network: "n2", Endpoint: &network.EndpointSettings{
		Aliases:    []string{"web-back"},
		IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: "10.9.0.7"},
	}}}
	if !reflect.DeepEqual(s.Connect, wantJoins) {
		t.Errorf("Connect = %+v, want %+v", s.Connect, wantJoins)
	}
}

func TestBuildSpecUserOverrides(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(c *container.InspectResponse)
		check func(t *testing.T, s spec)
	}{
		{
			name: "user cmd kept, entrypoint from new image",
			edit: func(c *container.InspectResponse) { c.Config.Cmd = strslice.StrSlice{"worker", "-v"} },
			check: func(t *testing.T, s spec) {
				if s.Config.Entrypoint != nil || !reflect.DeepEqual(s.Config.Cmd, strslice.StrSlice{"worker", "-v"}) {
					t.Errorf("Entrypoint, Cmd = %q, %q, want nil, [worker -v]", s.Config.Entrypoint, s.Config.Cmd)
				}
			},
		},
		{
			name: "user entrypoint kept with its cmd as given",
			edit: func(c *container.InspectResponse) {
				c.Config.Entrypoint = strslice.StrSlice{"/bin/sh", "-c"}
				c.Config.Cmd = nil
			},
			check: func(t *testing.T, s spec) {
				if !reflect.DeepEqual(s.Config.Entrypoint, strslice.StrSlice{"/bin/sh", "-c"}) || s.Config.Cmd != nil {
					t.Errorf("Entrypoint, Cmd = %q, %q, want [/bin/sh -c], nil", s.Config.Entrypoint, s.Config.Cmd)
				}
			},
		},
		{
			name: "entrypoint cleared by the user stays cleared",
			edit: func(c *container.InspectResponse) {
				c.Config.Entrypoint = nil
				c.Config.Cmd = strslice.StrSlice{"/bin/true"}
			},
			check: func(t *testing.T, s spec) {
				if s.Config.Entrypoint == nil || len(s.Config.Entrypoint) != 0 {
					t.Errorf("Entrypoint = %#v, want empty non-nil (so the engine does not fill it)", s.Config.Entrypoint)
				}
			},
		},
		{
			name: "overridden env value and user, workdir, stop signal kept",
			edit: func(c *container.InspectResponse) {
				c.Config.Env = []string{"PATH=/usr/bin", "APP_MODE=debug"}
				c.Config.User = "root"
				c.Config.WorkingDir = "/tmp"
				c.Config.StopSignal = "SIGTERM"
			},
			check: func(t *testing.T, s spec) {
				c := s.Config
				if !reflect.DeepEqual(c.Env, []string{"APP_MODE=debug"}) || c.User != "root" || c.WorkingDir != "/tmp" || c.StopSignal != "SIGTERM" {
					t.Errorf("Env, User, WorkingDir, StopSignal = %q, %q, %q, %q, want [APP_MODE=debug], root, /tmp, SIGTERM",
						c.Env, c.User, c.WorkingDir, c.StopSignal)
				}
			},
		},
		{
			name: "overridden label value kept",
			edit: func(c *container.InspectResponse) { c.Config.Labels["maintainer"] = "me" },
			check: func(t *testing.T, s spec) {
				want := map[string]string{"maintainer": "me", deploy.LabelEnable: "true"}
				if !reflect.DeepEqual(s.Config.Labels, want) {
					t.Errorf("Labels = %v, want %v", s.Config.Labels, want)
				}
			},
		},
		{
			name: "healthcheck interval override kept, rest from new image",
			edit: func(c *container.InspectResponse) { c.Config.Healthcheck.Interval = 200 * time.Millisecond },
			check: func(t *testing.T, s spec) {
				want := &container.HealthConfig{Interval: 200 * time.Millisecond}
				if !reflect.DeepEqual(s.Config.Healthcheck, want) {
					t.Errorf("Healthcheck = %+v, want %+v", s.Config.Healthcheck, want)
				}
			},
		},
		{
			name: "disabled healthcheck stays disabled",
			edit: func(c *container.InspectResponse) {
				c.Config.Healthcheck = &container.HealthConfig{Test: []string{"NONE"}}
			},
			check: func(t *testing.T, s spec) {
				if s.Config.Healthcheck == nil || !reflect.DeepEqual(s.Config.Healthcheck.Test, []string{"NONE"}) {
					t.Errorf("Healthcheck = %+v, want Test [NONE]", s.Config.Healthcheck)
				}
			},
		},
		{
			name: "chosen hostname kept",
			edit: func(c *container.InspectResponse) { c.Config.Hostname = "web01" },
			check: func(t *testing.T, s spec) {
				if s.Config.Hostname != "web01" {
					t.Errorf("Hostname = %q, want web01", s.Config.Hostname)
				}
			},
		},
		{
			name: "bare -v volume and expose kept",
			edit: func(c *container.InspectResponse) {
				c.Config.Volumes["/cache"] = struct{}{}
				c.Config.ExposedPorts["9090/tcp"] = struct{}{}
			},
			check: func(t *testing.T, s spec) {
				if !reflect.DeepEqual(s.Config.Volumes, map[string]struct{}{"/cache": {}}) {
					t.Errorf("Volumes = %v, want [/cache]", s.Config.Volumes)
				}
				if _, ok := s.Config.ExposedPorts["9090/tcp"]; !ok {
					t.Errorf("ExposedPorts = %v, want 9090/tcp among them", s.Config.ExposedPorts)
				}
			},
		},
		{
			name: "host network: no ports, no endpoints, no hostname",
			edit: func(c *container.InspectResponse) {
				c.HostConfig.NetworkMode = "host"
				c.Config.Hostname = "myhost"
				c.NetworkSettings.Networks = map[string]*network.EndpointSettings{"host": {NetworkID: "h"}}
			},
			check: func(t *testing.T, s spec) {
				if s.HostConfig.PortBindings != nil || s.Networking != nil || s.Connect != nil || s.Config.Hostname != "" {
					t.Errorf("PortBindings, Networking, Connect, Hostname = %v, %v, %v, %q, want all empty",
						s.HostConfig.PortBindings, s.Networking, s.Connect, s.Config.Hostname)
				}
				if s.HostConfig.NetworkMode != "host" {
					t.Errorf("NetworkMode = %q, want host", s.HostConfig.NetworkMode)
				}
			},
		},
		{
			name: "container network: nothing the engine would reject",
			edit: func(c *container.InspectResponse) {
				c.HostConfig.NetworkMode = "container:abc"
				c.HostConfig.DNS = []string{"1.1.1.1"}
				c.Config.ExposedPorts["9090/tcp"] = struct{}{}
				c.NetworkSettings.Networks = nil
			},
			check: func(t *testing.T, s spec) {
				if s.HostConfig.PortBindings != nil || s.Config.ExposedPorts != nil || s.HostConfig.DNS != nil ||
					s.Config.Hostname != "" || s.Networking != nil {
					t.Errorf("PortBindings, ExposedPorts, DNS, Hostname, Networking = %v, %v, %v, %q, %v, want all empty",
						s.HostConfig.PortBindings, s.Config.ExposedPorts, s.HostConfig.DNS, s.Config.Hostname, s.Networking)
				}
				if s.HostConfig.NetworkMode != "container:abc" {
					t.Errorf("NetworkMode = %q, want container:abc", s.HostConfig.NetworkMode)
				}
			},
		},
		{
			name: "default bridge: primary is bridge, no aliases, links converted",
			edit: func(c *container.InspectResponse) {
				c.HostConfig.NetworkMode = "default"
				c.HostConfig.Links = []string{"/db:/web/database"}
				c.NetworkSettings.Networks = map[string]*network.EndpointSettings{"bridge": {NetworkID: "b", IPAddress: "172.17.0.3"}}
			},
			check: func(t *testing.T, s spec) {
				want := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{"bridge": {}}}
				if !reflect.DeepEqual(s.Networking, want) || s.Connect != nil {
					t.Errorf("Networking, Connect = %+v, %+v, want bridge only", s.Networking, s.Connect)
				}
				if !reflect.DeepEqual(s.HostConfig.Links, []string{"db:database"}) {
					t.Errorf("Links = %q, want [db:database]", s.HostConfig.Links)
				}
			},
		},
		{
			name: "container id file dropped",
			edit: func(c *container.InspectResponse) { c.HostConfig.ContainerIDFile = "/tmp/cid" },
			check: func(t *testing.T, s spec) {
				if s.HostConfig.ContainerIDFile != "" {
					t.Errorf("ContainerIDFile = %q, want empty", s.HostConfig.ContainerIDFile)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := inspected()
			tt.edit(&c)
			s, err := buildSpec(c, oldImage())
			if err != nil {
				t.Fatalf("buildSpec() error = %v", err)
			}
			tt.check(t, s)
		})
	}
}

func TestBuildSpecUnknownOldImageKeepsEverything(t *testing.T) {
	old := inspected()
	s, err := buildSpec(old, nil)
	if err != nil {
		t.Fatalf("buildSpec() error = %v", err)
	}
	if !reflect.DeepEqual(s.Config.Env, old.Config.Env) || !reflect.DeepEqual(s.Config.Cmd, old.Config.Cmd) ||
		s.Config.User != old.Config.User || !reflect.DeepEqual(s.Config.Labels, old.Config.Labels) {
		t.Errorf("Config = %+v, want the inspected values kept", s.Config)
	}
}

func TestBuildSpecIncomplete(t *testing.T) {
	if _, err := buildSpec(container.InspectResponse{}, nil); err == nil {
		t.Errorf("buildSpec(empty) error = nil, want an error")
	}
}
