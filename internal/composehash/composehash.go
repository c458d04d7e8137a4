// Package composehash recomputes the configuration hash Docker Compose
// stamps on the containers of a service (the label
// com.docker.compose.config-hash), which `docker compose up` compares to
// decide whether a container must be recreated.
//
// Compose hashes a service's configuration with its references to other
// services resolved to container ids: `network_mode: service:vpn` is hashed
// as `container:<id of vpn's container>`. When hookd replaces the vpn
// container, the containers joined to it are recreated with the new id and
// need the hash Compose would compute now, or the next `docker compose up
// -d` recreates them once more. The project is loaded the way Compose
// loads it (with compose-go, from the files and directory its labels
// name), and every hash is checked against the one Compose stamped before
// it is trusted: Load's caller hashes with the old ids first.
package composehash

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/opencontainers/go-digest"
)

// Project names a Compose project as its containers' labels record it.
type Project struct {
	Name        string   // com.docker.compose.project
	WorkingDir  string   // com.docker.compose.project.working_dir
	ConfigFiles []string // com.docker.compose.project.config_files
	EnvFiles    []string // com.docker.compose.project.environment_file
}

// Loaded is a loaded Compose project.
type Loaded struct {
	project *types.Project
}

// ErrUnreadable wraps every reason the project could not be loaded (files
// not mounted into hookd's container, a variable only the user's shell
// sets, a syntax newer than hookd's loader).
var ErrUnreadable = errors.New("compose project not readable")

// Load reads the project's files the way `docker compose` does: the
// configuration files, the working directory, its .env file or the given
// environment files, and hookd's own environment for variables.
func Load(ctx context.Context, p Project) (*Loaded, error) {
	if p.Name == "" || p.WorkingDir == "" || len(p.ConfigFiles) == 0 {
		return nil, fmt.Errorf("%w: project %q: its containers do not name its files", ErrUnreadable, p.Name)
	}
	for _, f := range p.ConfigFiles {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
		}
	}
	opts, err := cli.NewProjectOptions(p.ConfigFiles,
		cli.WithWorkingDirectory(p.WorkingDir),
		cli.WithOsEnv,
		cli.WithEnv([]string{"PWD=" + p.WorkingDir}),
		cli.WithEnvFiles(p.EnvFiles...),
		cli.WithDotEnv,
		cli.WithName(p.Name),
		// Every profile: a service is hashed the same whichever profiles
		// were active, and only enabled services are fully resolved.
		cli.WithProfiles([]string{"*"}),
		// As Compose: environment resolved after loading, env_file merged
		// into environment.
		cli.WithoutEnvironmentResolution,
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	proj, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	if proj, err = proj.WithServicesEnvironmentResolved(true); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	// Compose's applyPlatforms: a service it builds runs on the default
	// platform unless it names one.
	if def := proj.Environment["DOCKER_DEFAULT_PLATFORM"]; def != "" {
		for name, s := range proj.Services {
			if s.Build != nil && s.Platform == "" {
				s.Platform = def
				proj.Services[name] = s
			}
		}
	}
	return &Loaded{project: proj}, nil
}

// Hash returns the hash Compose computes for service, with each service
// it references by namespace (network_mode, ipc, pid) or volumes_from
// resolved to the container id containerOf returns for it ("" when the
// service has no container, which Compose would refuse too).
func (l *Loaded) Hash(service string, containerOf func(service string) string) (string, error) {
	s, ok := l.project.Services[service]
	if !ok {
		return "", fmt.Errorf("project %q has no service %q", l.project.Name, service)
	}
	if err := resolve(&s, containerOf); err != nil {
		return "", err
	}
	return ServiceHash(s)
}

// resolve rewrites the service references as Compose does before it
// hashes (see compose's resolveServiceReferences).
func resolve(s *types.ServiceConfig, containerOf func(string) string) error {
	s.VolumesFrom = append([]string(nil), s.VolumesFrom...)
	for i, vol := range s.VolumesFrom {
		spec := strings.Split(vol, ":")
		if spec[0] == "container" {
			if len(spec) > 1 {
				s.VolumesFrom[i] = spec[1]
			}
			continue
		}
		id := containerOf(spec[0])
		if id == "" {
			return fmt.Errorf("service %q shares the volumes of %q, which has no container", s.Name, spec[0])
		}
		s.VolumesFrom[i] = id
	}
	for _, mode := range []*string{&s.NetworkMode, &s.Ipc, &s.Pid} {
		name, ok := strings.CutPrefix(*mode, types.ServicePrefix)
		if !ok {
			continue
		}
		id := containerOf(name)
		if id == "" {
			return fmt.Errorf("service %q shares a namespace of %q, which has no container", s.Name, name)
		}
		*mode = types.ContainerPrefix + id
	}
	return nil
}

// ServiceHash is Compose's hash of a service configuration: the
// configuration without what Compose leaves out (build, pull policy,
// scale, replicas, depends_on, profiles), marshalled to JSON with its
// top-level keys in Compose's frozen order, then SHA-256.
//
// This mirrors ServiceHash in github.com/docker/compose/v5/pkg/compose
// (hash.go, Apache License 2.0); the key order below is Compose's.
func ServiceHash(o types.ServiceConfig) (string, error) {
	o.Build = nil
	o.PullPolicy = ""
	o.Scale = nil
	if o.Deploy != nil {
		d := *o.Deploy
		d.Replicas = nil
		o.Deploy = &d
	}
	o.DependsOn = nil
	o.Profiles = nil
	raw, err := json.Marshal(o)
	if err != nil {
		return "", fmt.Errorf("marshal service %q: %w", o.Name, err)
	}
	var root map[string]json.RawMessage
	if err := json.Unmarshal(raw, &root); err != nil {
		return "", fmt.Errorf("marshal service %q: %w", o.Name, err)
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	write := func(key string, val json.RawMessage) {
		if !first {
			buf.WriteByte(',')
		}
		first = false
		name, _ := json.Marshal(key)
		buf.Write(name)
		buf.WriteByte(':')
		buf.Write(val)
	}
	for _, key := range keyOrder {
		if val, ok := root[key]; ok {
			write(key, val)
			delete(root, key)
		}
	}
	rest := make([]string, 0, len(root))
	for k := range root {
		rest = append(rest, k)
	}
	sort.Strings(rest)
	for _, k := range rest {
		write(k, root[k])
	}
	buf.WriteByte('}')
	return digest.SHA256.FromBytes(buf.Bytes()).Encoded(), nil
}

// keyOrder is the order of a service's top-level keys in Compose's hash
// (compose's serviceHashKeyOrder); keys not listed follow, sorted.
var keyOrder = []string{
	"profiles", "annotations", "attach", "build", "develop", "blkio_config", "cap_add", "cap_drop",
	"cgroup_parent", "cgroup", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period",
	"cpu_rt_runtime", "cpus", "cpuset", "cpu_shares", "command", "configs", "container_name",
	"credential_spec", "depends_on", "deploy", "device_cgroup_rules", "devices", "dns", "dns_opt",
	"dns_search", "dockerfile", "domainname", "entrypoint", "provider", "environment", "env_file",
	"expose", "extends", "external_links", "extra_hosts", "group_add", "gpus", "hostname",
	"healthcheck", "image", "init", "ipc", "isolation", "labels", "label_file", "links", "logging",
	"log_driver", "log_opt", "mem_limit", "mem_reservation", "memswap_limit", "mem_swappiness",
	"mac_address", "models", "net", "network_mode", "networks", "oom_kill_disable", "oom_score_adj",
	"pid", "pids_limit", "platform", "ports", "privileged", "pull_policy", "read_only", "restart",
	"runtime", "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
	"stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket", "user",
	"userns_mode", "uts", "volume_driver", "volumes", "volumes_from", "working_dir", "pre_start",
	"post_start", "pre_stop", "pull_refresh_after",
}
