package dockertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/go-connections/nat"
)

// AppPort is the port the test program listens on inside its container.
const AppPort = "8080/tcp"

// Suffixes the recreate protocol gives to a target's temporary containers;
// RunContainer's cleanup removes leftovers with these names too.
var recreateSuffixes = []string{".hookd-old", ".hookd-new", ".hookd-failed"}

// ContainerOptions describes a container for RunContainer. Zero values mean
// the engine's or image's default.
type ContainerOptions struct {
	Image  string
	Name   string // base name; RunContainer appends a random suffix
	Labels map[string]string
	Env    []string
	Cmd    []string
	// Ports maps a container port ("8080/tcp") to a host port on 127.0.0.1;
	// "" or "0" picks a free one.
	Ports map[string]string
	// Volumes are binds ("/host/path:/dst[:ro]") or named volumes
	// ("name:/dst[:ro]"). Named volumes that do not exist yet are created
	// with the test label and removed in cleanup; use CreateVolume for a
	// name unique to the test.
	Volumes       []string
	Network       string   // user-defined network to attach to (with Aliases)
	Aliases       []string // network aliases on Network
	RestartPolicy string   // "no", "always", "unless-stopped", "on-failure[:N]"
	AutoRemove    bool
	Healthcheck   *container.HealthConfig
	NetworkMode   string // defaults to Network when that is set
	// RegistryAuth is the X-Registry-Auth value (see Registry.RegistryAuth)
	// used when Image has to be pulled first.
	RegistryAuth string
	// Customize, when set, may change anything else (stop signal,
	// resources, hostname, further endpoints, …) just before the create.
	Customize func(*container.Config, *container.HostConfig, *network.NetworkingConfig)
}

var unsafeNameChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// RunContainer creates and starts a container and waits until it runs. The
// returned name is o.Name (or the test name) plus a random suffix; the
// container carries the label hookd.test=<per-test value>. A cleanup removes
// it, its anonymous volumes and leftovers named <name>.hookd-old/-new/-failed.
// Failures to create or start it fail the test.
func RunContainer(ctx context.Context, t testing.TB, cli *client.Client, o ContainerOptions) (id, name string) {
	t.Helper()
	st := testState(t, cli)

	base := o.Name
	if base == "" {
		base = t.Name()
	}
	base = strings.TrimLeft(unsafeNameChars.ReplaceAllString(base, "_"), "_.-")
	if len(base) > 60 {
		base = base[:60]
	}
	if base == "" {
		base = "hookd"
	}
	name = base + "-" + randomHex(4)

	cfg := &container.Config{
		Image:       o.Image,
		Labels:      Labels(t, o.Labels),
		Env:         o.Env,
		Cmd:         o.Cmd,
		Healthcheck: o.Healthcheck,
	}
	hc := &container.HostConfig{
		AutoRemove:  o.AutoRemove,
		NetworkMode: container.NetworkMode(o.NetworkMode),
	}
	if hc.NetworkMode == "" && o.Network != "" {
		hc.NetworkMode = container.NetworkMode(o.Network)
	}
	rp, err := parseRestartPolicy(o.RestartPolicy)
	if err != nil {
		t.Fatalf("RunContainer %s: %v", name, err)
	}
	hc.RestartPolicy = rp

	if len(o.Ports) > 0 {
		cfg.ExposedPorts = nat.PortSet{}
		hc.PortBindings = nat.PortMap{}
		for cport, hport := range o.Ports {
			p, err := nat.NewPort(protoOf(cport), strings.Split(cport, "/")[0])
			if err != nil {
				t.Fatalf("RunContainer %s: port %q: %v", name, cport, err)
			}
			if hport == "0" {
				hport = ""
			}
			cfg.ExposedPorts[p] = struct{}{}
			hc.PortBindings[p] = append(hc.PortBindings[p], nat.PortBinding{HostIP: "127.0.0.1", HostPort: hport})
		}
	}

	for _, v := range o.Volumes {
		src, _, ok := strings.Cut(v, ":")
		if !ok {
			t.Fatalf("RunContainer %s: volume %q: want src:/dst", name, v)
		}
		if !strings.HasPrefix(src, "/") {
			ensureVolume(ctx, t, cli, st, src)
		}
		hc.Binds = append(hc.Binds, v)
	}

	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{}}
	if o.Network != "" && len(o.Aliases) > 0 {
		nc.EndpointsConfig[o.Network] = &network.EndpointSettings{Aliases: o.Aliases}
	}
	if o.Customize != nil {
		o.Customize(cfg, hc, nc)
	}
	// The test label stays whatever Customize did: cleanup relies on it.
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels[LabelKey] = st.label

	// Cleanup first, so that it also runs when create or start fails halfway.
	st.track(&st.containers, name)
	for _, s := range recreateSuffixes {
		st.track(&st.containers, name+s)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		names := []string{name}
		for _, s := range recreateSuffixes {
			names = append(names, name+s)
		}
		for _, errr := range removeAll(ctx, cli, filters.Args{}, names, nil, nil, nil) {
			t.Logf("dockertest cleanup: %v", errr)
		}
	})

	created, err := cli.ContainerCreate(ctx, cfg, hc, nc, nil, name)
	if errdefs.IsNotFound(err) {
		Pull(ctx, t, cli, o.Image, o.RegistryAuth)
		created, err = cli.ContainerCreate(ctx, cfg, hc, nc, nil, name)
	}
	if err != nil {
		t.Fatalf("create container %s from %s: %v", name, o.Image, err)
	}
	st.track(&st.containers, created.ID)
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container %s: %v", name, err)
	}
	waitStarted(ctx, t, cli, created.ID, name)
	return created.ID, name
}

// Pull pulls ref into the engine (registryAuth as for ImagePull, "" for
// anonymous) and fails the test when that fails. Images pushed by the rig
// carry the test label and are removed in cleanup.
func Pull(ctx context.Context, t testing.TB, cli *client.Client, ref, registryAuth string) {
	t.Helper()
	testState(t, cli)
	rc, err := cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: registryAuth})
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	defer rc.Close()
	// The pull runs as long as the stream is read; errors arrive in it.
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return
		} else if err != nil {
			t.Fatalf("pull %s: read progress: %v", ref, err)
		}
		if msg.Error != "" {
			t.Fatalf("pull %s: %s", ref, msg.Error)
		}
	}
}

// waitStarted waits until the container runs or has run (a crashing variant
// may already have exited again by the time it is inspected).
func waitStarted(ctx context.Context, t testing.TB, cli *client.Client, id, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := cli.ContainerInspect(ctx, id)
		if err != nil {
			if errdefs.IsNotFound(err) { // AutoRemove and already gone
				return
			}
			t.Fatalf("inspect container %s: %v", name, err)
		}
		if info.State != nil && (info.State.Running || info.State.StartedAt != "" && !strings.HasPrefix(info.State.StartedAt, "0001-")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not running after 30s: status %s", name, info.State.Status)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("container %s: %v", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func protoOf(port string) string {
	if _, proto, ok := strings.Cut(port, "/"); ok {
		return proto
	}
	return "tcp"
}

func parseRestartPolicy(s string) (container.RestartPolicy, error) {
	name, count, hasCount := strings.Cut(s, ":")
	rp := container.RestartPolicy{Name: container.RestartPolicyMode(name)}
	switch rp.Name {
	case "", container.RestartPolicyDisabled, container.RestartPolicyAlways, container.RestartPolicyUnlessStopped:
		if hasCount {
			return rp, fmt.Errorf("restart policy %q takes no count", s)
		}
	case container.RestartPolicyOnFailure:
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 0 {
				return rp, fmt.Errorf("restart policy %q: bad count", s)
			}
			rp.MaximumRetryCount = n
		}
	default:
		return rp, fmt.Errorf("unknown restart policy %q", s)
	}
	return rp, nil
}

func ensureVolume(ctx context.Context, t testing.TB, cli *client.Client, st *state, name string) {
	t.Helper()
	if _, err := cli.VolumeInspect(ctx, name); err == nil {
		return // not ours: used, never removed
	} else if !errdefs.IsNotFound(err) {
		t.Fatalf("inspect volume %s: %v", name, err)
	}
	v, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: Labels(t, nil)})
	if err != nil {
		t.Fatalf("create volume %s: %v", name, err)
	}
	st.track(&st.volumes, v.Name)
}

// CreateVolume creates a named volume unique to the test and returns its
// name; it is removed in cleanup.
func CreateVolume(ctx context.Context, t testing.TB, cli *client.Client) string {
	t.Helper()
	st := testState(t, cli)
	name := "hookd-test-vol-" + randomHex(6)
	v, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: Labels(t, nil)})
	if err != nil {
		t.Fatalf("create volume: %v", err)
	}
	st.track(&st.volumes, v.Name)
	return v.Name
}

// CreateNetwork creates a bridge network with a name unique to the test and
// returns its name; it is removed in cleanup (after the test's containers).
func CreateNetwork(ctx context.Context, t testing.TB, cli *client.Client) string {
	t.Helper()
	st := testState(t, cli)
	name := "hookd-test-net-" + randomHex(6)
	resp, err := cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: Labels(t, nil)})
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	st.track(&st.networks, resp.ID)
	return name
}

// HostPort returns "127.0.0.1:PORT", the host address published for 8080/tcp
// of the named container. It waits a few seconds for the binding to appear
// (a container being recreated has none) and fails the test otherwise.
func HostPort(ctx context.Context, t testing.TB, cli *client.Client, nameOrID string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for {
		info, err := cli.ContainerInspect(ctx, nameOrID)
		switch {
		case err != nil:
			last = err.Error()
		case info.NetworkSettings == nil:
			last = "no network settings"
		default:
			for _, b := range info.NetworkSettings.Ports[nat.Port(AppPort)] {
				if b.HostPort == "" {
					continue
				}
				ip := b.HostIP
				if ip == "" || ip == "0.0.0.0" || ip == "::" {
					ip = "127.0.0.1"
				}
				return net.JoinHostPort(ip, b.HostPort)
			}
			last = fmt.Sprintf("no host port for %s (status %s)", AppPort, info.State.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("HostPort(%s): %s", nameOrID, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Version GETs http://addr/ and returns the body, trimmed. It returns an
// error when the request fails or does not answer 200, so that it can be
// polled until a deployment has taken effect.
func Version(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", fmt.Errorf("version request: %w", err)
	}
	// A fresh connection each time: the container behind addr may have
	// been replaced since the last call.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("get version: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read version: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get version: status %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), nil
}
