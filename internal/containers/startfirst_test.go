package containers

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
)

// TestStartFirstFit: the targets start-first refuses are the ones whose
// ports, network namespace or addresses two containers cannot hold at once.
func TestStartFirstFit(t *testing.T) {
	base := func() containerInspect {
		c := containerInspect{ContainerJSONBase: &container.ContainerJSONBase{ID: oldID, Name: "/web",
			HostConfig: &container.HostConfig{NetworkMode: "proxy"}},
			Config: &container.Config{}, NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
				"proxy": {Aliases: []string{"web"}},
			}}}
		return c
	}
	tests := []struct {
		name   string
		change func(*containerInspect)
		want   string
	}{
		{"published port", func(c *containerInspect) {
			c.HostConfig.PortBindings = nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: "80"}}}
		}, "it publishes host ports (8080/tcp → 127.0.0.1:80)"},
		{"random host port", func(c *containerInspect) {
			c.HostConfig.PortBindings = nat.PortMap{"53/udp": {{}}}
		}, "(53/udp → a random host port)"},
		{"publish all", func(c *containerInspect) { c.HostConfig.PublishAllPorts = true }, "every exposed port (--publish-all)"},
		{"host network", func(c *containerInspect) { c.HostConfig.NetworkMode = "host" }, "network_mode: host"},
		{"shared namespace", func(c *containerInspect) { c.HostConfig.NetworkMode = "container:db" }, "namespace of db (network_mode: container: or service:)"},
		{"fixed address", func(c *containerInspect) {
			c.NetworkSettings.Networks["proxy"].IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: "172.30.0.9"}
		}, "a fixed address on the network proxy"},
		{"fixed MAC", func(c *containerInspect) { c.Config.MacAddress = "02:42:ac:11:00:02" }, "fixed MAC address"}, //nolint:staticcheck // the field under test
	}
	s := NewStartFirst(nil, Config{})
	for _, tt := range tests {
		c := base()
		tt.change(&c)
		err := s.fit(context.Background(), c)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "remove the label hookd.strategy=start-first") {
			t.Errorf("%s: fit() = %v, want a refusal naming %q and the way back to recreate", tt.name, err, tt.want)
		}
	}
}

// TestWithoutAliases: the new container joins its networks without the
// aliases a proxy looks up; promote gives them back from the same spec.
func TestWithoutAliases(t *testing.T) {
	sp := spec{
		Networking: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			"proxy": {Aliases: []string{"app"}, Links: []string{"db:db"}},
		}},
		Connect: []netJoin{{Network: "backend-id", Endpoint: &network.EndpointSettings{Aliases: []string{"app", "api"}}}},
	}
	q := withoutAliases(sp)
	if ep := q.Networking.EndpointsConfig["proxy"]; ep.Aliases != nil || len(ep.Links) != 1 {
		t.Errorf("primary endpoint = %+v, want no aliases and the links kept", ep)
	}
	if ep := q.Connect[0].Endpoint; ep.Aliases != nil {
		t.Errorf("further endpoint aliases = %v, want none", ep.Aliases)
	}
	if got := sp.Networking.EndpointsConfig["proxy"].Aliases; len(got) != 1 || got[0] != "app" {
		t.Errorf("the spec's own aliases = %v, want them untouched for promote", got)
	}
}
