package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// imageUID is the user the image runs as (Dockerfile: USER 65532:65532).
const imageUID = "65532:65532"

// TestImageEndToEnd runs the hookd container image the way the README's
// compose file does — Docker socket mounted, the socket's group added, a
// fresh named volume for state, the webhook port published — and deploys a
// labelled container through it: a signed package delivery for a new image
// makes the target answer with the new version.
//
// It needs the image: HOOKD_E2E_IMAGE names it (scripts/test.sh builds it
// with scripts/build-image.sh). Unset, the test is skipped.
func TestImageEndToEnd(t *testing.T) {
	img := e2eImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	// The app, v1, in a container that opted in. The registry is on the
	// host's 127.0.0.1: dockerd pulls from it, hookd (in its container)
	// never talks to it, only to the engine.
	const repo, tag = "e2e-owner/app", "latest"
	reg.PushApp(ctx, t, repo, tag, dockertest.App{Version: "v1"})
	_, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image:  reg.Ref(repo, tag),
		Name:   "e2e-app",
		Labels: map[string]string{"hookd.enable": "true"},
		Ports:  map[string]string{dockertest.AppPort: ""},
	})
	e2eWaitVersion(ctx, t, cli, target, "v1")

	secret := e2eRandomHex(t, 16)
	h := e2eRunHookd(ctx, t, cli, img, secret, reg.Host, "HOOKD_POLL_INTERVAL=0", "HOOKD_LOG_LEVEL=debug")

	info, err := cli.ContainerInspect(ctx, h.id)
	if err != nil {
		t.Fatalf("inspect hookd container: %v", err)
	}
	if got := info.Config.User; got != imageUID {
		t.Errorf("hookd container user = %q, want %q (the image's USER)", got, imageUID)
	}
	if got, want := info.Config.Healthcheck.Test, []string{"CMD", "/hookd", "healthcheck"}; !slices.Equal(got, want) {
		t.Errorf("hookd healthcheck = %q, want the image's %q", got, want)
	}
	// /healthz answered (e2eRunHookd), so hookd opened its state file in
	// the fresh named volume as uid 65532; now the engine's own healthcheck
	// must pass: it runs the "hookd healthcheck" verb in the image, which
	// has no shell and no curl.
	e2eWaitHealthy(ctx, t, cli, h.id)

	digest := reg.PushApp(ctx, t, repo, tag, dockertest.App{Version: "v2"})
	body := e2ePackageDelivery(t, repo, tag, digest)
	status, answer := e2ePost(ctx, t, "http://"+h.addr+"/hooks/github", secret, body)
	if status != http.StatusAccepted {
		t.Fatalf("POST /hooks/github = %d %s, want 202", status, answer)
	}
	e2eWaitVersion(ctx, t, cli, target, "v2")
}

// TestImageIdleFootprint measures what issue 6 asks to report: hookd's
// memory in its container while it idles with 10 targets, and that it
// writes nothing to disk meanwhile. It reads memory every 10 s for 180 s
// (past the runtime's forced collection at two minutes) and holds the
// largest private memory (RssAnon: heap, stacks, runtime metadata) to a
// limit; VmRSS also counts pages of the binary, which the page cache holds
// whether hookd maps them or not, so it is reported, not held. It takes
// three minutes, so it runs only with HOOKD_E2E_IDLE=1 (and
// HOOKD_E2E_IMAGE), as root: it reads /proc/<pid>/status, smaps_rollup and
// io of the container's process.
func TestImageIdleFootprint(t *testing.T) {
	img := e2eImage(t)
	if os.Getenv("HOOKD_E2E_IDLE") != "1" {
		t.Skip("set HOOKD_E2E_IDLE=1 to measure the idle footprint (three minutes)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	const targets = 10
	for i := range targets {
		repo := fmt.Sprintf("idle-owner/app%d", i)
		reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
		dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
			Image:  reg.Ref(repo, "latest"),
			Name:   fmt.Sprintf("idle-app%d", i),
			Labels: map[string]string{"hookd.enable": "true"},
		})
	}
	// Defaults otherwise (info logs, polling after 5m of silence).
	h := e2eRunHookd(ctx, t, cli, img, e2eRandomHex(t, 16), reg.Host)
	info, err := cli.ContainerInspect(ctx, h.id)
	if err != nil {
		t.Fatalf("inspect hookd container: %v", err)
	}
	pid := info.State.Pid

	const window, step = 180 * time.Second, 10 * time.Second
	time.Sleep(5 * time.Second) // start-up: reconcile, first listing
	writesBefore := e2eProcField(t, pid, "io", "write_bytes")
	var peak, last procMemory // peak: the reading with the most private memory
	var series []string
	for at := 5 * time.Second; at < window; {
		time.Sleep(step)
		at += step
		m := e2eProcMemory(t, pid)
		series = append(series, fmt.Sprintf("%.1f/%.1f", float64(m.RssAnon)/1024, float64(m.VmRSS)/1024))
		last = m
		if m.RssAnon > peak.RssAnon {
			peak = m
		}
	}
	writesAfter := e2eProcField(t, pid, "io", "write_bytes")
	hwmKiB := e2eProcField(t, pid, "status", "VmHWM")
	heap := e2eMetric(ctx, t, h.addr, "go_memstats_heap_inuse_bytes")

	size, err := cli.ImageInspect(ctx, img)
	if err != nil {
		t.Fatalf("inspect image %s: %v", img, err)
	}
	t.Logf("image %s: %d bytes (%.1f MiB)", img, size.Size, float64(size.Size)/(1<<20))
	t.Logf("hookd idle with %d targets, RssAnon/VmRSS every %v from 15 s (MiB): %s", targets, step, strings.Join(series, " "))
	t.Logf("largest private memory: %v; last: %v; Go heap in use %.1f MiB; start-up peak (VmHWM) %d KiB; disk writes while idle %d bytes",
		peak, last, heap/(1<<20), hwmKiB, writesAfter-writesBefore)
	if writesAfter != writesBefore {
		t.Errorf("hookd wrote %d bytes to disk while idle, want 0", writesAfter-writesBefore)
	}
	// Measured (amd64): at most 5.7 MiB here, where hookd's polls cannot
	// reach the registry on the host's loopback; 7.3 MiB for the same
	// binary outside a container, polling 10 targets over TLS
	// (docs/memory.md). The limit leaves room for the runtime's timing.
	if peak.RssAnon > 10*1024 {
		t.Errorf("hookd idle private memory (RssAnon) reached %d KiB, want at most 10 MiB", peak.RssAnon)
	}
}

// TestImageUnhealthyWithoutSocketGroup: started without the socket's group
// (what a wrong DOCKER_GID amounts to), hookd cannot reach Docker. /healthz
// says so, and the engine marks the container unhealthy with the reason in
// its health log, where `docker ps` and `docker inspect` show it.
func TestImageUnhealthyWithoutSocketGroup(t *testing.T) {
	img := e2eImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	e2eRequireLabelFilter(ctx, t, cli, img)
	socket, _ := e2eDockerSocket(t)
	if fi, err := os.Stat(socket); err == nil && fi.Mode().Perm()&0o006 != 0 {
		t.Skipf("docker socket %s is open to every user (%v): no group can be missing", socket, fi.Mode().Perm())
	}
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: img,
		Name:  "e2e-hookd-nogroup",
		Env: []string{
			"HOOKD_WEBHOOK_SECRET=" + e2eRandomHex(t, 16),
			"HOOKD_LABEL_FILTER=" + dockertest.LabelKey + "=" + dockertest.LabelValue(t),
		},
		Ports:   map[string]string{dockertest.AppPort: ""},
		Volumes: []string{socket + ":/var/run/docker.sock", dockertest.CreateVolume(ctx, t, cli) + ":/var/lib/hookd"},
		Customize: func(cfg *container.Config, _ *container.HostConfig, _ *network.NetworkingConfig) {
			// No group_add: the image's user is not in the socket's group.
			cfg.Healthcheck = &container.HealthConfig{Interval: time.Second, Retries: 2}
		},
	})
	addr := dockertest.HostPort(ctx, t, cli, name)

	hc := &http.Client{Timeout: 2 * time.Second}
	dockertest.WaitFor(t, 30*time.Second, "/healthz answers 503 naming the socket's group", func() (bool, string) {
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body struct{ Status, Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body.Reason, "DOCKER_GID"),
			fmt.Sprintf("%s %+v", resp.Status, body)
	})
	dockertest.WaitFor(t, 30*time.Second, "the engine marks hookd unhealthy with the reason", func() (bool, string) {
		info, err := cli.ContainerInspect(ctx, name)
		if err != nil || info.State == nil || info.State.Health == nil {
			return false, fmt.Sprint(err)
		}
		h := info.State.Health
		last := ""
		if n := len(h.Log); n > 0 {
			last = h.Log[n-1].Output
		}
		return h.Status == container.Unhealthy && strings.Contains(last, "permission denied on the Docker socket"),
			fmt.Sprintf("health %s, last check %q", h.Status, last)
	})
	if logs := e2eLogs(cli, name); !strings.Contains(logs, "permission denied on the Docker socket") {
		t.Errorf("hookd's log does not explain the refused socket:\n%s", logs)
	}
}

// e2eImage returns the image under test, or skips.
func e2eImage(t *testing.T) string {
	t.Helper()
	img := os.Getenv("HOOKD_E2E_IMAGE")
	if img == "" {
		t.Skip("HOOKD_E2E_IMAGE is not set (build it with scripts/build-image.sh)")
	}
	return img
}

// e2eHookd is a running hookd container.
type e2eHookd struct {
	id, name string
	addr     string // published webhook port on 127.0.0.1
}

// e2eRunHookd starts the image as compose does (socket mounted, its group
// added, a fresh named volume on /var/lib/hookd, port 8080 published) and
// waits for /healthz. hookd's targets are narrowed to this test's
// containers: the engine is shared with other tests whose targets may be
// mid-deploy, and hookd reconciles half-done deploys it sees at start.
func e2eRunHookd(ctx context.Context, t *testing.T, cli *client.Client, img, secret, registryHost string, env ...string) e2eHookd {
	t.Helper()
	e2eRequireLabelFilter(ctx, t, cli, img)
	socket, gid := e2eDockerSocket(t)
	state := dockertest.CreateVolume(ctx, t, cli)
	id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: img,
		Name:  "e2e-hookd",
		Env: append([]string{
			"HOOKD_WEBHOOK_SECRET=" + secret,
			"HOOKD_REGISTRY_HOST=" + registryHost,
			"HOOKD_LABEL_FILTER=" + dockertest.LabelKey + "=" + dockertest.LabelValue(t),
		}, env...),
		// hookd serves on :8080, which is also the port HostPort looks up.
		Ports:   map[string]string{dockertest.AppPort: ""},
		Volumes: []string{socket + ":/var/run/docker.sock", state + ":/var/lib/hookd"},
		Customize: func(cfg *container.Config, hc *container.HostConfig, _ *network.NetworkingConfig) {
			// Not root: the image's user joins the socket's group, like
			// compose's group_add: ["${DOCKER_GID}"].
			hc.GroupAdd = []string{strconv.FormatUint(uint64(gid), 10)}
			// Keep the image's healthcheck command; check every second
			// instead of every 30s (the engine takes unset fields from the
			// image).
			cfg.Healthcheck = &container.HealthConfig{Interval: time.Second, StartPeriod: 10 * time.Second}
		},
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hookd container log:\n%s", e2eLogs(cli, id))
		}
	})
	addr := dockertest.HostPort(ctx, t, cli, name)
	e2eWaitHealthz(ctx, t, addr)
	return e2eHookd{id: id, name: name, addr: addr}
}

// e2eRequireLabelFilter fails the test when the image's hookd does not know
// HOOKD_LABEL_FILTER: it would then act on every labelled container of the
// shared engine, including other tests' ones.
func e2eRequireLabelFilter(ctx context.Context, t *testing.T, cli *client.Client, img string) {
	t.Helper()
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: img,
		Name:  "e2e-hookd-help",
		Cmd:   []string{"--help"},
	})
	statusCh, errCh := cli.ContainerWait(ctx, name, container.WaitConditionNotRunning)
	select {
	case <-statusCh:
	case err := <-errCh:
		t.Fatalf("wait for hookd --help: %v", err)
	}
	if help := e2eLogs(cli, name); !strings.Contains(help, "HOOKD_LABEL_FILTER") {
		t.Fatalf("the image's hookd --help does not list HOOKD_LABEL_FILTER; without it hookd would touch other tests' containers on the shared engine:\n%s", help)
	}
}

// e2eMetric reads one unlabelled sample from hookd's /metrics.
func e2eMetric(ctx context.Context, t *testing.T, addr, name string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("/metrics %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// e2eProcField reads a numeric field ("VmRSS", "write_bytes") of
// /proc/<pid>/<file>; sizes in status are in KiB.
func e2eProcField(t *testing.T, pid int, file, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatalf("read /proc/%d/%s (needs root): %v", pid, file, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/%s %s: %v", pid, file, field, err)
		}
		return n
	}
	t.Fatalf("/proc/%d/%s has no %s", pid, file, field)
	return 0
}

// e2eProcMemory reads the memory of process pid (see procMemory).
func e2eProcMemory(t *testing.T, pid int) procMemory {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/status (needs root): %v", pid, err)
	}
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/smaps_rollup (needs root): %v", pid, err)
	}
	m, err := parseProcMemory(status, rollup)
	if err != nil {
		t.Fatalf("/proc/%d: %v", pid, err)
	}
	return m
}

// e2eDockerSocket returns the engine's unix socket (DOCKER_HOST or the
// default) and its group id.
func e2eDockerSocket(t *testing.T) (string, uint32) {
	t.Helper()
	path := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		p, ok := strings.CutPrefix(h, "unix://")
		if !ok {
			t.Skipf("DOCKER_HOST=%s: the image test mounts the engine's unix socket into the container", h)
		}
		path = p
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("docker socket: %v", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("docker socket %s: no owner information", path)
	}
	return path, st.Gid
}

// e2ePackageDelivery builds a "package published" delivery for
// <registry>/<repo>:<tag> from the real capture in the webhook package's
// testdata, rewriting the package and version fields that name the image.
func e2ePackageDelivery(t *testing.T, repo, tag, digest string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "internal", "webhook", "testdata", "package.published.container.real.json"))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	owner, name, _ := strings.Cut(repo, "/")
	pkg := e2eObject(t, payload, "package")
	pkg["namespace"] = owner
	pkg["name"] = name
	pv := e2eObject(t, pkg, "package_version")
	pv["name"], pv["version"] = digest, digest
	// GitHub writes ghcr.io here whatever the registry: hookd compares
	// owner, name and tag only and maps to HOOKD_REGISTRY_HOST.
	pv["package_url"] = "ghcr.io/" + repo + ":" + tag
	meta := e2eObject(t, pv, "container_metadata")
	tagObj := e2eObject(t, meta, "tag")
	tagObj["name"], tagObj["digest"] = tag, digest
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatalf("marshal delivery: %v", err)
	}
	return body
}

func e2eObject(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	o, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("fixture: %s is not an object", key)
	}
	return o
}

// e2ePost sends a delivery signed as GitHub does (HMAC-SHA256 of the body).
func e2ePost(ctx context.Context, t *testing.T, url, secret string, body []byte) (int, string) {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/e2e")
	req.Header.Set("X-GitHub-Event", "package")
	req.Header.Set("X-GitHub-Delivery", e2eRandomHex(t, 16))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(answer))
}

func e2eWaitHealthz(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = resp.Status
	}
	t.Fatalf("hookd's /healthz on %s did not answer 200 within 30s: %s", addr, last)
}

func e2eWaitHealthy(ctx context.Context, t *testing.T, cli *client.Client, id string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		info, err := cli.ContainerInspect(ctx, id)
		if err != nil {
			t.Fatalf("inspect hookd container: %v", err)
		}
		if info.State.Health == nil {
			t.Fatal("hookd container has no health state: the image has no HEALTHCHECK")
		}
		if info.State.Health.Status == container.Healthy {
			return
		}
		last = info.State.Health.Status
		if n := len(info.State.Health.Log); n > 0 {
			r := info.State.Health.Log[n-1]
			last += fmt.Sprintf(" (last check exit %d: %s)", r.ExitCode, strings.TrimSpace(r.Output))
		}
	}
	t.Fatalf("hookd container not healthy within 45s: %s", last)
}

// e2eWaitVersion waits until the container named name answers want.
func e2eWaitVersion(ctx context.Context, t *testing.T, cli *client.Client, name, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name))
		if err == nil && v == want {
			return
		}
		got = v
		if err != nil {
			got = err.Error()
		}
	}
	t.Fatalf("container %s answers %q, want %q", name, got, want)
}

func e2eLogs(cli *client.Client, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "200"})
	if err != nil {
		return "(logs: " + err.Error() + ")"
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		out.WriteString("(logs: " + err.Error() + ")")
	}
	return out.String()
}

func e2eRandomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
