package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

const testSecret = "run-test-secret-0123456789"

// noDocker points hookd at an engine that is not there: the HTTP surface
// serves all the same.
const noDocker = "unix:///nonexistent/docker.sock"

// daemon is a hookd started through run() in this process.
type daemon struct {
	url  string
	logs *lockedBuffer
	stop context.CancelFunc
	done chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startDaemon runs hookd with env (plus a listen address, a state dir and
// the test secret unless env sets them) and waits for /healthz.
func startDaemon(ctx context.Context, t *testing.T, env map[string]string) *daemon {
	t.Helper()
	full := map[string]string{
		"HOOKD_LISTEN":         freeAddr(t),
		"HOOKD_STATE_DIR":      t.TempDir(),
		"HOOKD_WEBHOOK_SECRET": testSecret,
		"HOOKD_POLL_INTERVAL":  "0",
		// Other tests share the engine: see only this test's containers.
		"HOOKD_LABEL_FILTER": dockertest.LabelKey + "=" + dockertest.LabelValue(t),
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &daemon{url: "http://" + full["HOOKD_LISTEN"], logs: &lockedBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() {
		d.done <- run(ctx, nil, func(k string) string { return full[k] }, strings.NewReader(""), io.Discard, d.logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Errorf("run() did not return within 30s of cancel")
		}
		if t.Failed() {
			t.Logf("hookd log:\n%s", d.logs.String())
		}
	})
	dockertest.WaitFor(t, 20*time.Second, "/healthz", func() (bool, string) {
		select {
		case err := <-d.done:
			t.Fatalf("run() returned before serving: %v\n%s", err, d.logs.String())
		default:
		}
		return answers(d.url+"/healthz", http.StatusOK)
	})
	return d
}

// deliver POSTs a signed GitHub delivery and decodes the JSON answer.
func (d *daemon) deliver(t *testing.T, event, id string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, d.url+"/hooks/github", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /hooks/github: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST /hooks/github: status %d, undecodable answer: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// packageEvent returns the real captured container package delivery,
// rewritten to name owner/name:tag.
func packageEvent(t *testing.T, host, owner, name, tag, digest string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "internal", "webhook", "testdata", "package.published.container.real.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	// The package's own repository built it, as in a real delivery.
	doc["repository"].(map[string]any)["full_name"] = owner + "/" + name
	pkg := doc["package"].(map[string]any)
	pkg["namespace"] = owner
	pkg["name"] = name
	pkg["owner"].(map[string]any)["login"] = owner
	pv := pkg["package_version"].(map[string]any)
	pv["version"] = digest
	pv["name"] = digest
	pv["package_url"] = fmt.Sprintf("%s/%s/%s:%s", host, owner, name, tag)
	cm := pv["container_metadata"].(map[string]any)
	cm["tag"].(map[string]any)["name"] = tag
	cm["tag"].(map[string]any)["digest"] = digest
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRunServesAndShutsDownCleanly(t *testing.T) {
	ctx := context.Background()
	d := startDaemon(ctx, t, map[string]string{"DOCKER_HOST": "unix:///nonexistent/docker.sock"})

	ping, err := os.ReadFile(filepath.Join("..", "..", "internal", "webhook", "testdata", "ping.json"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out := d.deliver(t, "ping", "ping-1", ping); code != http.StatusOK {
		t.Errorf("ping answered %d %v, want 200", code, out)
	}
	body := packageEvent(t, "ghcr.io", "nobody", "nothing", "latest", "sha256:"+strings.Repeat("a", 64))
	code, out := d.deliver(t, "package", "delivery-1", body)
	if code != http.StatusAccepted {
		t.Errorf("package delivery answered %d %v, want 202", code, out)
	}
	// It queued nothing, so nothing was remembered: a redelivery is
	// looked at afresh (a redelivery of one that queued a deploy is a
	// duplicate: TestKilledAfterAcceptDeploysExactlyOnce).
	if code, out := d.deliver(t, "package", "delivery-1", body); code != http.StatusAccepted || out["status"] != "ignored" {
		t.Errorf("redelivery answered %d %v, want 202 ignored", code, out)
	}

	// Docker cannot be reached: alive, but not ready.
	resp, err := http.Get(d.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz without Docker = %d, want 503", resp.StatusCode)
	}
	resp, err = http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The client asked for gzip, as Prometheus does; hookd answers plain
	// text, which costs it less memory than compressing would save.
	if resp.Uncompressed || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("/metrics answered gzip (Content-Encoding %q), want uncompressed", resp.Header.Get("Content-Encoding"))
	}
	if !strings.Contains(string(metricsText), `hookd_webhook_deliveries_total{event="package",outcome="ignored"} 2`) {
		t.Errorf("/metrics lacks the two ignored deliveries:\n%s", metricsText)
	}

	d.stop()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("run() = %v after cancel, want nil", err)
		}
		d.done <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("run() did not return within 30s of cancel")
	}
	if _, err := http.Get(d.url + "/healthz"); err == nil {
		t.Error("hookd still answers after run() returned")
	}
}

func TestRunRefusesToStartWithoutSecret(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), nil, func(string) string { return "" }, strings.NewReader(""), io.Discard, &stderr)
	var cfgErr *configError
	if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), "webhook_secret") {
		t.Fatalf("run() without secret = %v, want a configuration error naming webhook_secret", err)
	}
}

func TestRunStateFileLocked(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(context.Background(), t, map[string]string{"HOOKD_STATE_DIR": dir, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
	_ = d
	env := map[string]string{
		"HOOKD_LISTEN": freeAddr(t), "HOOKD_STATE_DIR": dir, "HOOKD_WEBHOOK_SECRET": testSecret,
	}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "hookd.db")) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("second hookd on one state dir: run() = %v, want an error naming the locked file", err)
	}
}

// TestRunDeploysOnSignedDelivery is the whole path with real parts: a signed
// package delivery reaches the real deployer, which pulls v2 from a real
// registry and replaces the labelled container on a real engine.
func TestRunDeploysOnSignedDelivery(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const owner, name = "octo", "web"
	repo := owner + "/" + name
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-run")
	d := startDaemon(ctx, t, map[string]string{
		"HOOKD_REGISTRY_HOST":  reg.Host,
		"HOOKD_HEALTH_TIMEOUT": "30s",
		"HOOKD_SETTLE_TIME":    "1s",
	})
	waitReady(t, d)

	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	code, out := d.deliver(t, "package", "deploy-1", packageEvent(t, reg.Host, owner, name, "latest", digest))
	if code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v, want 202", code, out)
	}
	if !strings.Contains(fmt.Sprint(out["targets"]), cname) {
		t.Errorf("delivery answer %v does not name target %s", out, cname)
	}

	waitVersion(ctx, t, cli, cname, "v2")
}

func waitReady(t *testing.T, d *daemon) {
	t.Helper()
	dockertest.WaitFor(t, 30*time.Second, "/readyz", func() (bool, string) { return answers(d.url+"/readyz", http.StatusOK) })
}

// answers reports whether GET url answers with status.
func answers(url string, status int) (bool, string) {
	resp, err := http.Get(url)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode == status, resp.Status
}

// runTarget pushes v1 of repo and runs it as a labelled target with a
// published port; it returns the container's name.
func runTarget(ctx context.Context, t *testing.T, cli *client.Client, reg *dockertest.Registry, repo, base string) string {
	t.Helper()
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	_, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image:  reg.Ref(repo, "latest"),
		Name:   base,
		Labels: map[string]string{"hookd.enable": "true"},
		Ports:  map[string]string{"8080/tcp": ""},
	})
	return name
}

// waitVersion waits until the container's published port answers want.
func waitVersion(ctx context.Context, t *testing.T, cli *client.Client, name, want string) {
	t.Helper()
	dockertest.WaitFor(t, 60*time.Second, name+" answering "+want, func() (bool, string) {
		v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name))
		return err == nil && v == want, fmt.Sprintf("answers %q (%v)", v, err)
	})
}

// TestRunCatchesUpAtStart: an image pushed while hookd was down (the
// webhook lost) is found by the start-up registry check and deployed.
func TestRunCatchesUpAtStart(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t, dockertest.WithBearerAuth("", ""))
	repo := "octo/catchup"
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-catchup")
	reg.PushIndex(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	startDaemon(ctx, t, map[string]string{
		"HOOKD_POLL_INTERVAL": "1h",
		"HOOKD_SETTLE_TIME":   "1s",
	})
	waitVersion(ctx, t, cli, cname, "v2")
}

// TestRunClientVerbs runs the client verbs through run() against a hookd
// started through run().
func TestRunClientVerbs(t *testing.T) {
	const token = "verbs-test-token-0123456789"
	d := startDaemon(context.Background(), t, map[string]string{"DOCKER_HOST": noDocker, "HOOKD_API_TOKEN": token})
	client := func(token string, args ...string) (string, error) {
		t.Helper()
		env := map[string]string{"HOOKD_URL": d.url, "HOOKD_API_TOKEN": token}
		var stdout bytes.Buffer
		err := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, io.Discard)
		return stdout.String(), err
	}

	out, err := client(token, "status")
	if err != nil || !strings.Contains(out, "no targets") || !strings.Contains(out, "no jobs yet") {
		t.Errorf("hookd status = %q, %v, want no targets and no jobs", out, err)
	}
	_, err = client(token, "deploy", "nope")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), `unknown target "nope"`) {
		t.Errorf("hookd deploy nope = %v, want a 404 naming the unknown target", err)
	}
	for _, verb := range []string{"status", "deploy"} {
		_, err = client("not-the-token", verb)
		if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "not-the-token") {
			t.Errorf("hookd %s with a wrong token = %v, want a 401 without the token", verb, err)
		}
	}
}
