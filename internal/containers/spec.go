package containers

import (
	"errors"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/strslice"
	"github.com/docker/go-connections/nat"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

// spec is everything needed to create a container's replacement.
type spec struct {
	Config     *container.Config
	HostConfig *container.HostConfig
	Networking *network.NetworkingConfig
	// Connect lists further networks to join after create and before start:
	// engines before API 1.44 accept only one network at create.
	Connect []netJoin
	// Tag is the local tag Config.Image names ("repo:tag"), ImageID the
	// image the replacement must run and PrevImageID the one the tag
	// names until the replacement passed its gate (see createTagged).
	// An empty Tag creates from Config.Image as it stands.
	Tag, ImageID, PrevImageID string
}

type netJoin struct {
	Network  string // network id, or name when the id is unknown
	Endpoint *network.EndpointSettings
}

// buildSpec derives the replacement's configuration from the inspected old
// container and the config of the image it was created from.
//
// The engine merges an image's defaults into a container's config at create,
// so ContainerInspect shows both mixed. A value equal to the old image's
// default is taken to have come from the image and is left empty, so that the
// engine fills it from the new image when the replacement is created; every
// other value was set by the user and is carried over as is. oldImg may be nil
// when the old image is gone: then every value counts as user-set.
func buildSpec(old container.InspectResponse, oldImg *dockerspec.DockerOCIImageConfig) (spec, error) {
	if old.ContainerJSONBase == nil || old.Config == nil || old.HostConfig == nil {
		return spec{}, errors.New("incomplete container inspect data")
	}
	img := dockerspec.DockerOCIImageConfig{}
	if oldImg != nil {
		img = *oldImg
	}
	oc := old.Config
	mode := old.HostConfig.NetworkMode
	sharedNet := mode.IsHost() || mode.IsContainer()

	c := &container.Config{
		Hostname:        oc.Hostname,
		Domainname:      oc.Domainname,
		AttachStdin:     oc.AttachStdin,
		AttachStdout:    oc.AttachStdout,
		AttachStderr:    oc.AttachStderr,
		Tty:             oc.Tty,
		OpenStdin:       oc.OpenStdin,
		StdinOnce:       oc.StdinOnce,
		Image:           oc.Image,
		NetworkDisabled: oc.NetworkDisabled,
		StopTimeout:     oc.StopTimeout,
		//nolint:staticcheck // set only when the user gave --mac-address on engines before API 1.44
		MacAddress: oc.MacAddress,
	}
	// The engine sets the hostname to the short id unless the user chose one;
	// a copied id would name the new container after the old one.
	if c.Hostname == ShortID(old.ID) || sharedNet {
		c.Hostname = ""
	}
	if sharedNet {
		c.Domainname = ""
		c.MacAddress = "" //nolint:staticcheck // see above
	}
	if oc.User != img.User {
		c.User = oc.User
	}
	if oc.WorkingDir != img.WorkingDir {
		c.WorkingDir = oc.WorkingDir
	}
	if oc.StopSignal != img.StopSignal {
		c.StopSignal = oc.StopSignal
	}
	c.Entrypoint, c.Cmd = userCommand(oc.Entrypoint, oc.Cmd, img.Entrypoint, img.Cmd)
	c.Env = userEnv(oc.Env, img.Env)
	c.Labels = userLabels(oc.Labels, img.Labels)
	c.Healthcheck = userHealthcheck(oc.Healthcheck, img.Healthcheck)
	c.Volumes = userSet(oc.Volumes, img.Volumes)

	hc := *old.HostConfig
	hc.ContainerIDFile = "" // the engine refuses to create over an existing file
	hc.Links = createLinks(old.HostConfig.Links)
	hc.Mounts = carryMounts(old.HostConfig, old.Mounts)
	switch {
	case mode.IsContainer():
		// The engine rejects all of these with a shared network namespace.
		hc.PortBindings, hc.PublishAllPorts = nil, false
		hc.DNS, hc.DNSOptions, hc.DNSSearch, hc.ExtraHosts, hc.Links = nil, nil, nil, nil, nil
	case mode.IsHost():
		hc.PortBindings, hc.PublishAllPorts, hc.Links = nil, false, nil
	case mode.IsNone():
		hc.PortBindings, hc.PublishAllPorts = nil, false
	}

	if !mode.IsContainer() {
		exposed := nat.PortSet{}
		for p := range oc.ExposedPorts {
			if _, fromImage := img.ExposedPorts[string(p)]; !fromImage {
				exposed[p] = struct{}{}
			}
		}
		// A published port must stay exposed even if the new image drops it.
		for p := range hc.PortBindings {
			exposed[p] = struct{}{}
		}
		if len(exposed) > 0 {
			c.ExposedPorts = exposed
		}
	}

	s := spec{Config: c, HostConfig: &hc}
	if !sharedNet && !mode.IsNone() {
		s.Networking, s.Connect = networks(mode, old.NetworkSettings, ShortID(old.ID))
	}
	return s, nil
}

// userCommand returns the entrypoint and cmd to pass at create. The engine
// fills an empty Cmd from the image only when no entrypoint is given, and a
// nil (not empty) entrypoint from the image.
func userCommand(ep, cmd strslice.StrSlice, imgEP, imgCmd []string) (strslice.StrSlice, strslice.StrSlice) {
	if slices.Equal(ep, imgEP) {
		if slices.Equal(cmd, imgCmd) {
			return nil, nil
		}
		if len(cmd) == 0 {
			// The user cleared the cmd; only an explicit entrypoint stops the
			// engine from filling it in again.
			return nonNil(ep), nil
		}
		return nil, cmd
	}
	// A user-chosen entrypoint (possibly none at all): the engine used cmd as
	// given, so it is passed as given.
	return nonNil(ep), cmd
}

func nonNil(s strslice.StrSlice) strslice.StrSlice {
	if s == nil {
		return strslice.StrSlice{}
	}
	return s
}

// userEnv keeps every variable that is not exactly the old image's default.
func userEnv(env, imgEnv []string) []string {
	img := make(map[string]bool, len(imgEnv))
	for _, e := range imgEnv {
		img[e] = true
	}
	var out []string
	for _, e := range env {
		if !img[e] {
			out = append(out, e)
		}
	}
	return out
}

// userLabels keeps every label whose value differs from the old image's.
func userLabels(labels, imgLabels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		if iv, ok := imgLabels[k]; ok && iv == v {
			continue
		}
		out[k] = v
	}
	return out
}

// userHealthcheck keeps the fields the user overrode; the engine fills the
// empty ones from the new image field by field.
func userHealthcheck(h, img *container.HealthConfig) *container.HealthConfig {
	if h == nil {
		return nil
	}
	if img == nil {
		img = &container.HealthConfig{}
	}
	out := &container.HealthConfig{}
	if !slices.Equal(h.Test, img.Test) {
		out.Test = h.Test
	}
	if h.Interval != img.Interval {
		out.Interval = h.Interval
	}
	if h.Timeout != img.Timeout {
		out.Timeout = h.Timeout
	}
	if h.StartPeriod != img.StartPeriod {
		out.StartPeriod = h.StartPeriod
	}
	if h.StartInterval != img.StartInterval {
		out.StartInterval = h.StartInterval
	}
	if h.Retries != img.Retries {
		out.Retries = h.Retries
	}
	if len(out.Test) == 0 && out.Interval == 0 && out.Timeout == 0 && out.StartPeriod == 0 &&
		out.StartInterval == 0 && out.Retries == 0 {
		return nil
	}
	return out
}

func userSet(set, img map[string]struct{}) map[string]struct{} {
	var out map[string]struct{}
	for k := range set {
		if _, ok := img[k]; ok {
			continue
		}
		if out == nil {
			out = make(map[string]struct{})
		}
		out[k] = struct{}{}
	}
	return out
}

// createLinks turns inspect's "/db:/web/db" into create's "db:db".
func createLinks(links []string) []string {
	var out []string
	for _, l := range links {
		name, alias, ok := strings.Cut(l, ":")
		if !ok {
			out = append(out, strings.TrimPrefix(l, "/"))
			continue
		}
		out = append(out, strings.TrimPrefix(name, "/")+":"+path.Base(alias))
	}
	return out
}

// carryMounts returns hc.Mounts plus every volume the old container had that
// neither Binds, Mounts nor Tmpfs name: the anonymous ones, created by the
// engine for the image's VOLUMEs or a bare "-v /path". Passing them by name
// makes the replacement reuse them, so their data survives.
func carryMounts(hc *container.HostConfig, points []container.MountPoint) []mount.Mount {
	covered := map[string]bool{}
	for _, b := range hc.Binds {
		parts := strings.Split(b, ":")
		if len(parts) >= 2 {
			covered[path.Clean(parts[1])] = true
		}
	}
	for _, m := range hc.Mounts {
		covered[path.Clean(m.Target)] = true
	}
	for dst := range hc.Tmpfs {
		covered[path.Clean(dst)] = true
	}
	out := slices.Clone(hc.Mounts)
	for _, p := range points {
		if p.Type != mount.TypeVolume || p.Name == "" || covered[path.Clean(p.Destination)] {
			continue
		}
		out = append(out, mount.Mount{
			Type:     mount.TypeVolume,
			Source:   p.Name,
			Target:   p.Destination,
			ReadOnly: !p.RW,
		})
	}
	return out
}

// networks returns the endpoint config of the network the container was
// created on (its network mode) and the further networks to connect.
func networks(mode container.NetworkMode, ns *container.NetworkSettings, oldShort string) (*network.NetworkingConfig, []netJoin) {
	if ns == nil || len(ns.Networks) == 0 {
		return nil, nil
	}
	primary := string(mode)
	if mode.IsDefault() || primary == "" {
		primary = network.NetworkBridge
	}
	names := slices.Collect(maps.Keys(ns.Networks))
	sort.Strings(names)
	var nc *network.NetworkingConfig
	var joins []netJoin
	for _, name := range names {
		ep := ns.Networks[name]
		if ep == nil {
			continue
		}
		cfg := endpoint(name, ep, oldShort)
		if nc == nil && (name == primary || ep.NetworkID != "" && strings.HasPrefix(ep.NetworkID, primary)) {
			nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{name: cfg}}
			continue
		}
		id := ep.NetworkID
		if id == "" {
			id = name
		}
		joins = append(joins, netJoin{Network: id, Endpoint: cfg})
	}
	return nc, joins
}

// endpoint copies what the user configured on a network: aliases (without
// the old short id, which the engine added and will add anew), static
// addresses, links and driver options. Addresses and MACs the engine assigned
// are operational data and are not copied.
func endpoint(name string, ep *network.EndpointSettings, oldShort string) *network.EndpointSettings {
	out := &network.EndpointSettings{
		Links:      slices.Clone(ep.Links),
		DriverOpts: ep.DriverOpts,
	}
	if ipam := ep.IPAMConfig; ipam != nil && (ipam.IPv4Address != "" || ipam.IPv6Address != "" || len(ipam.LinkLocalIPs) > 0) {
		c := *ipam
		out.IPAMConfig = &c
	}
	if name != network.NetworkBridge && name != network.NetworkHost && name != network.NetworkNone {
		for _, a := range ep.Aliases {
			if a != oldShort {
				out.Aliases = append(out.Aliases, a)
			}
		}
	}
	return out
}

// ShortID shortens a container or image id as the Docker CLI does.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
