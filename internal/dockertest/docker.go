// Package dockertest is hookd's test rig: a real Docker Engine, an in-process
// OCI registry on 127.0.0.1 and test images built in-process from a small
// static program (./testapp), so that everything touching Docker or a registry
// is tested against real parts.
//
// Everything created through this package carries the label
// hookd.test=<value unique to the test> and is removed by id and by that label
// in t.Cleanup, even when the test fails. Images pushed by the rig carry the
// same label in their config, so containers the code under test creates from
// them inherit it and are swept too.
//
// The Docker engine is shared with other test binaries running at the same
// time: tests only ever clean up what they created. CleanupAll is for CI only.
//
// A typical test:
//
//	cli := dockertest.Docker(t)        // skips when no engine answers
//	reg := dockertest.NewRegistry(t)   // or NewRegistry(t, WithBearerAuth("", ""))
//	reg.PushApp(ctx, t, "hookd/app", "latest", dockertest.App{Version: "v1"})
//	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
//		Image:  reg.Ref("hookd/app", "latest"),
//		Labels: map[string]string{"hookd.enable": "true"},
//		Ports:  map[string]string{dockertest.AppPort: ""},
//	})
//	reg.PushApp(ctx, t, "hookd/app", "latest", dockertest.App{Version: "v2"})
//	// … deploy …
//	v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name))
package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
)

// LabelKey is the label every object created by the rig carries; its value
// is unique per test (see LabelValue).
const LabelKey = "hookd.test"

const (
	pingTimeout    = 3 * time.Second
	cleanupTimeout = 90 * time.Second
)

// state is what the rig knows about one test. It lives in a package-level
// map because helpers are plain functions taking testing.TB: the rig is test
// infrastructure, the one place where such state is the lesser evil.
type state struct {
	label string

	mu         sync.Mutex
	cli        *client.Client
	containers []string // ids or names
	images     []string
	networks   []string
	volumes    []string
}

var (
	statesMu sync.Mutex
	states   = map[testing.TB]*state{}

	// processNonce tells apart tests of the same name in different test
	// binaries running at the same time against one daemon.
	processNonce = randomHex(4)
)

// testState returns the rig state of t, creating it (and its sweeping
// cleanup) on first use. cli, when not nil, is remembered for the sweep.
func testState(t testing.TB, cli *client.Client) *state {
	t.Helper()
	statesMu.Lock()
	st, ok := states[t]
	if !ok {
		st = &state{label: labelValue(t)}
		states[t] = st
	}
	statesMu.Unlock()
	if cli != nil {
		st.mu.Lock()
		if st.cli == nil {
			st.cli = cli
		}
		st.mu.Unlock()
	}
	if !ok {
		t.Cleanup(func() {
			st.sweep(t)
			statesMu.Lock()
			delete(states, t)
			statesMu.Unlock()
		})
	}
	return st
}

var unsafeLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

func labelValue(t testing.TB) string {
	name := unsafeLabelChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 80 {
		name = name[:80]
	}
	return processNonce + "-" + name + "-" + randomHex(3)
}

// LabelValue returns the value of the hookd.test label that this test's
// objects carry, e.g. to narrow a listing to what the test created.
func LabelValue(t testing.TB) string {
	t.Helper()
	return testState(t, nil).label
}

// Labels returns labels carrying the per-test hookd.test value plus extra.
func Labels(t testing.TB, extra map[string]string) map[string]string {
	t.Helper()
	l := map[string]string{LabelKey: LabelValue(t)}
	for k, v := range extra {
		if k == LabelKey {
			continue
		}
		l[k] = v
	}
	return l
}

func (st *state) track(kind *[]string, id string) {
	st.mu.Lock()
	*kind = append(*kind, id)
	st.mu.Unlock()
}

// Docker connects to the engine named by the environment (DOCKER_HOST, else
// the local socket) and pings it. When none answers the test is skipped, or
// fails when HOOKD_INTEGRATION=1. A cleanup removes every container, image,
// network and volume created through this package for the test.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		noDocker(t, fmt.Errorf("docker client: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		_ = cli.Close()
		noDocker(t, fmt.Errorf("ping docker engine: %w", err))
	}
	t.Cleanup(func() { _ = cli.Close() }) // runs after the sweep registered below
	testState(t, cli)
	return cli
}

func noDocker(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("HOOKD_INTEGRATION") == "1" {
		t.Fatalf("HOOKD_INTEGRATION=1 but no Docker engine answers: %v", err)
	}
	t.Skipf("no Docker engine answers (set HOOKD_INTEGRATION=1 to make this a failure): %v", err)
}

// sweep removes what the test created: tracked ids first, then anything
// carrying its label (e.g. containers the code under test created from rig
// images), then the anonymous volumes those containers used.
func (st *state) sweep(t testing.TB) {
	st.mu.Lock()
	cli := st.cli
	containers := append([]string(nil), st.containers...)
	images := append([]string(nil), st.images...)
	networks := append([]string(nil), st.networks...)
	volumes := append([]string(nil), st.volumes...)
	st.mu.Unlock()
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	lf := filters.NewArgs(filters.Arg("label", LabelKey+"="+st.label))
	errs := removeAll(ctx, cli, lf, containers, images, networks, volumes)
	for _, err := range errs {
		t.Logf("dockertest cleanup: %v", err)
	}
}

// CleanupAll removes every container, image, network and volume carrying the
// hookd.test label, whatever its value. It is a safety net for CI after all
// tests ran; never call it from a test: tests of other packages share the
// engine and their objects carry the label too.
func CleanupAll(ctx context.Context, cli *client.Client) error {
	lf := filters.NewArgs(filters.Arg("label", LabelKey))
	return errors.Join(removeAll(ctx, cli, lf, nil, nil, nil, nil)...)
}

// removeAll removes the given objects plus, when lf is not empty, everything
// matching lf. An empty filter lists nothing: an unfiltered listing would
// reach objects of other tests.
func removeAll(ctx context.Context, cli *client.Client, lf filters.Args, containers, images, networks, volumes []string) []error {
	var errs []error
	listing := lf.Len() > 0
	add := func(err error) {
		if err != nil && !errdefs.IsNotFound(err) && !isRemovalInProgress(err) {
			errs = append(errs, err)
		}
	}

	if listing {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: lf})
		add(err)
		for _, c := range list {
			containers = append(containers, c.ID)
		}
	}
	seen := map[string]bool{}
	var anon []string
	for _, c := range containers {
		if seen[c] {
			continue
		}
		seen[c] = true
		if info, err := cli.ContainerInspect(ctx, c); err == nil {
			if seen[info.ID] && info.ID != c {
				continue
			}
			seen[info.ID] = true
			for _, m := range info.Mounts {
				if m.Type == "volume" && isAnonymousVolume(m.Name) {
					anon = append(anon, m.Name)
				}
			}
		}
		if err := cli.ContainerRemove(ctx, c, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			add(fmt.Errorf("remove container %s: %w", c, err))
		}
	}

	if listing {
		nl, err := cli.NetworkList(ctx, network.ListOptions{Filters: lf})
		add(err)
		for _, n := range nl {
			networks = append(networks, n.ID)
		}
	}
	for _, n := range uniq(networks) {
		if err := cli.NetworkRemove(ctx, n); err != nil {
			add(fmt.Errorf("remove network %s: %w", n, err))
		}
	}

	if listing {
		vl, err := cli.VolumeList(ctx, volume.ListOptions{Filters: lf})
		add(err)
		for _, v := range vl.Volumes {
			volumes = append(volumes, v.Name)
		}
	}
	for _, v := range uniq(append(volumes, anon...)) {
		if err := cli.VolumeRemove(ctx, v, true); err != nil {
			add(fmt.Errorf("remove volume %s: %w", v, err))
		}
	}

	if listing {
		il, err := cli.ImageList(ctx, image.ListOptions{All: true, Filters: lf})
		add(err)
		for _, im := range il {
			images = append(images, im.ID)
		}
	}
	for _, im := range uniq(images) {
		if _, err := cli.ImageRemove(ctx, im, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			add(fmt.Errorf("remove image %s: %w", im, err))
		}
	}
	return errs
}

func isRemovalInProgress(err error) bool {
	return err != nil && strings.Contains(err.Error(), "already in progress")
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func isAnonymousVolume(name string) bool { return hex64.MatchString(name) }

func uniq(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0:0]
	for _, v := range s {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // cannot happen on supported platforms
	}
	return hex.EncodeToString(b)
}
