package dockertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 100ms until it returns true or timeout passes;
// it returns the last description cond gave.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, desc := cond()
		last = desc
		if ok {
			return true, last
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false, last
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func healthStatus(ctx context.Context, cli *client.Client, id string) (string, error) {
	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		return "", err
	}
	if info.State == nil || info.State.Health == nil {
		return "none", nil
	}
	return info.State.Health.Status, nil
}

func TestPushAppRunsAndAnswers(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)

	digest := reg.PushApp(ctx, t, "hookd/app", "v1", App{
		Version: "v1",
		Env:     []string{"GREETING=hello"},
		Labels:  map[string]string{"org.opencontainers.image.version": "v1"},
		Volumes: []string{"/data"},
	})
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("PushApp digest = %q, want sha256:…", digest)
	}

	id, name := RunContainer(ctx, t, cli, ContainerOptions{
		Image: reg.Ref("hookd/app", "v1"),
		Name:  "app",
		Ports: map[string]string{AppPort: ""},
	})
	addr := HostPort(ctx, t, cli, name)

	ok, last := waitFor(ctx, 10*time.Second, func() (bool, string) {
		v, err := Version(ctx, addr)
		if err != nil {
			return false, err.Error()
		}
		return v == "v1", v
	})
	if !ok {
		t.Fatalf("Version(%s) = %q, want v1", addr, last)
	}

	if got := get(t, "http://"+addr+"/env?name=GREETING"); got != "hello" {
		t.Errorf("GET /env?name=GREETING = %q, want hello", got)
	}
	put(t, "http://"+addr+"/file?path=/data/x", "kept")
	if got := get(t, "http://"+addr+"/file?path=/data/x"); got != "kept" {
		t.Errorf("GET /file?path=/data/x = %q, want kept", got)
	}

	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Config.Labels[LabelKey], LabelValue(t); got != want {
		t.Errorf("container label %s = %q, want %q", LabelKey, got, want)
	}
	if got := info.Config.Labels["org.opencontainers.image.version"]; got != "v1" {
		t.Errorf("image label inherited = %q, want v1", got)
	}
	var anon bool
	for _, m := range info.Mounts {
		if m.Destination == "/data" && m.Type == "volume" {
			anon = true
		}
	}
	if !anon {
		t.Errorf("mounts = %+v, want an anonymous volume at /data", info.Mounts)
	}
	img, err := cli.ImageInspect(ctx, info.Image)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg.Host + "/hookd/app@" + digest; !contains(img.RepoDigests, want) {
		t.Errorf("RepoDigests = %v, want %s", img.RepoDigests, want)
	}

	ok, last = waitFor(ctx, 10*time.Second, func() (bool, string) {
		s, err := healthStatus(ctx, cli, id)
		if err != nil {
			return false, err.Error()
		}
		return s == "healthy", s
	})
	if !ok {
		t.Errorf("health status = %q, want healthy", last)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return strings.TrimSpace(string(b))
}

func put(t *testing.T, url, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT %s: status %d, want 204", url, resp.StatusCode)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestUnhealthyAppTurnsUnhealthy(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/app", "sick", App{Version: "sick", Unhealthy: true})
	id, _ := RunContainer(ctx, t, cli, ContainerOptions{Image: reg.Ref("hookd/app", "sick")})

	ok, last := waitFor(ctx, 10*time.Second, func() (bool, string) {
		s, err := healthStatus(ctx, cli, id)
		if err != nil {
			return false, err.Error()
		}
		return s == "unhealthy", s
	})
	if !ok {
		t.Fatalf("health status = %q, want unhealthy", last)
	}
}

func TestSlowStartStaysStartingThenHealthy(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)
	const slow = 2 * time.Second
	reg.PushApp(ctx, t, "hookd/app", "slow", App{Version: "slow", SlowStart: slow})
	started := time.Now()
	id, _ := RunContainer(ctx, t, cli, ContainerOptions{Image: reg.Ref("hookd/app", "slow")})

	var seen []string
	ok, last := waitFor(ctx, 15*time.Second, func() (bool, string) {
		s, err := healthStatus(ctx, cli, id)
		if err != nil {
			return false, err.Error()
		}
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
		return s == "healthy", s
	})
	if !ok {
		t.Fatalf("health status = %q, want healthy (statuses seen: %v)", last, seen)
	}
	if d := time.Since(started); d < slow {
		t.Errorf("healthy after %v, want not before %v", d, slow)
	}
	if contains(seen, "unhealthy") {
		t.Errorf("statuses seen %v, want no unhealthy while starting", seen)
	}
}

func TestCrashingAppExitsWithCode3(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/app", "crash", App{Version: "crash", Crash: true})
	id, _ := RunContainer(ctx, t, cli, ContainerOptions{Image: reg.Ref("hookd/app", "crash")})

	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	okc, errc := cli.ContainerWait(waitCtx, id, container.WaitConditionNotRunning)
	select {
	case res := <-okc:
		if res.StatusCode != 3 {
			t.Errorf("exit code = %d, want 3", res.StatusCode)
		}
	case err := <-errc:
		t.Fatalf("wait for crash: %v", err)
	}
}

func TestStopIsPrompt(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/app", "v1", App{Version: "v1"})
	id, _ := RunContainer(ctx, t, cli, ContainerOptions{Image: reg.Ref("hookd/app", "v1")})
	// Stop it once it serves: a SIGTERM that lands before the app's handler
	// is installed ends PID 1 through the Go runtime's fallback, exit 2.
	if ok, last := waitFor(ctx, 15*time.Second, func() (bool, string) {
		s, err := healthStatus(ctx, cli, id)
		if err != nil {
			return false, err.Error()
		}
		return s == "healthy", s
	}); !ok {
		t.Fatalf("health status = %q, want healthy before the stop", last)
	}

	start := time.Now()
	if err := cli.ContainerStop(ctx, id, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v, want the app to exit on SIGTERM at once", d)
	}
	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.ExitCode != 0 {
		t.Errorf("exit code after stop = %d, want 0", info.State.ExitCode)
	}
}

func TestBearerRegistryAnonymousPull(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t, WithBearerAuth("", ""))
	digest := reg.PushApp(ctx, t, "and3rn3t/app", "latest", App{Version: "pub"})
	reg.ResetRequests()

	ref, err := name.ParseReference(reg.Ref("and3rn3t/app", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("anonymous remote.Head: %v", err)
	}
	if got := desc.Digest.String(); got != digest {
		t.Errorf("remote.Head digest = %s, want %s", got, digest)
	}
	if !sawRequest(reg.Requests(), "/token", http.StatusOK, "") {
		t.Errorf("requests %v, want an anonymous GET /token", reg.Requests())
	}
	if !sawRequest(reg.Requests(), "/v2/and3rn3t/app/manifests/latest", http.StatusOK, "bearer") {
		t.Errorf("requests %v, want a manifest request with a bearer token", reg.Requests())
	}

	// Anonymous tokens are pull-only: a push must be refused.
	got, err := remote.Get(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("anonymous remote.Get: %v", err)
	}
	if err := remote.Tag(ref.Context().Tag("other"), got, remote.WithContext(ctx)); !isStatus(err, http.StatusUnauthorized) {
		t.Errorf("anonymous push error = %v, want 401", err)
	}

	reg.ResetRequests()
	Pull(ctx, t, cli, reg.Ref("and3rn3t/app", "latest"), "")
	if !sawRequest(reg.Requests(), "/token", http.StatusOK, "") {
		t.Errorf("docker pull requests %v, want the token flow", reg.Requests())
	}
	if !sawRequest(reg.Requests(), "/v2/and3rn3t/app/manifests/latest", http.StatusOK, "bearer") {
		t.Errorf("docker pull requests %v, want a manifest request with a bearer token", reg.Requests())
	}
}

func TestBearerRegistryWithCredentials(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t, WithBearerAuth("bot", "s3cret"))
	digest := reg.PushApp(ctx, t, "and3rn3t/private", "v1", App{Version: "v1"})
	ref, err := name.ParseReference(reg.Ref("and3rn3t/private", "v1"))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := remote.Head(ref, remote.WithContext(ctx)); !isStatus(err, http.StatusUnauthorized) {
		t.Errorf("anonymous remote.Head error = %v, want 401", err)
	}
	wrong := &authn.Basic{Username: "bot", Password: "wrong"}
	if _, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuth(wrong)); !isStatus(err, http.StatusUnauthorized) {
		t.Errorf("remote.Head with a wrong password error = %v, want 401", err)
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: "bot", Password: "s3cret"}))
	if err != nil {
		t.Fatalf("remote.Head with credentials: %v", err)
	}
	if got := desc.Digest.String(); got != digest {
		t.Errorf("remote.Head digest = %s, want %s", got, digest)
	}

	rc, err := cli.ImagePull(ctx, reg.Ref("and3rn3t/private", "v1"), image.PullOptions{})
	if err == nil {
		var b []byte
		b, err = io.ReadAll(rc)
		rc.Close()
		if err == nil && !strings.Contains(string(b), `"error"`) {
			t.Errorf("anonymous docker pull of a private image succeeded: %s", b)
		}
	}
	Pull(ctx, t, cli, reg.Ref("and3rn3t/private", "v1"), reg.RegistryAuth("bot", "s3cret"))
}

func TestFailAnswersStatusWithRetryAfter(t *testing.T) {
	ctx := testContext(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/app", "v1", App{Version: "v1"})
	url := "http://" + reg.Host + "/v2/hookd/app/manifests/v1"

	tests := []struct {
		status     int
		retryAfter string
	}{
		{http.StatusTooManyRequests, "2"},
		{http.StatusInternalServerError, ""},
		{0, ""},
	}
	for _, tt := range tests {
		reg.Fail(tt.status, tt.retryAfter)
		reg.ResetRequests()
		resp, err := http.Head(url)
		if err != nil {
			t.Fatalf("HEAD %s: %v", url, err)
		}
		resp.Body.Close()
		want := tt.status
		if want == 0 {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Errorf("after Fail(%d, %q): status %d, want %d", tt.status, tt.retryAfter, resp.StatusCode, want)
		}
		if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
			t.Errorf("after Fail(%d, %q): Retry-After %q, want %q", tt.status, tt.retryAfter, got, tt.retryAfter)
		}
		recs := reg.Requests()
		if len(recs) != 1 || recs[0].Status != want || recs[0].Method != http.MethodHead {
			t.Errorf("after Fail(%d, %q): requests %+v, want one HEAD answered %d", tt.status, tt.retryAfter, recs, want)
		}
	}
}

func TestTagPointsAtSameDigest(t *testing.T) {
	ctx := testContext(t)
	reg := NewRegistry(t, WithBearerAuth("bot", "pw"))
	pushed := reg.PushIndex(ctx, t, "hookd/app", "sha-1a2b3c", App{Version: "v1"})
	if got := reg.Tag(ctx, t, "hookd/app", "sha-1a2b3c", "latest"); got != pushed {
		t.Errorf("Tag digest = %s, want %s", got, pushed)
	}
	ref, err := name.ParseReference(reg.Ref("hookd/app", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: "bot", Password: "pw"}))
	if err != nil {
		t.Fatalf("remote.Head: %v", err)
	}
	if got := desc.Digest.String(); got != pushed {
		t.Errorf("latest digest = %s, want %s", got, pushed)
	}
}

func TestBuildFlags(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"-race", ""},
		{"-mod=mod -race -v", "-mod=mod -v"},
	}
	for _, tt := range tests {
		if got := buildFlags(tt.in); got != tt.want {
			t.Errorf("buildFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDownRefusesConnectionsUntilUp(t *testing.T) {
	ctx := testContext(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/app", "v1", App{Version: "v1"})
	ref, err := name.ParseReference(reg.Ref("hookd/app", "v1"))
	if err != nil {
		t.Fatal(err)
	}

	reg.Down()
	if _, err := remote.Head(ref, remote.WithContext(ctx)); err == nil {
		t.Fatal("remote.Head after Down succeeded, want a connection error")
	}
	reg.Up()
	if _, err := remote.Head(ref, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.Head after Up: %v", err)
	}
}

func TestPushIndexEnginePlatformRuns(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)
	digest := reg.PushIndex(ctx, t, "hookd/multi", "latest", App{Version: "multi", Attestation: true})

	ref, err := name.ParseReference(reg.Ref("hookd/multi", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("remote.Index: %v", err)
	}
	if d, _ := idx.Digest(); d.String() != digest {
		t.Errorf("index digest = %s, want %s", d, digest)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	var attestations int
	for _, m := range im.Manifests {
		platforms = append(platforms, m.Platform.String())
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			attestations++
		}
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "unknown/unknown"} {
		if !contains(platforms, want) {
			t.Errorf("index platforms = %v, want %s among them", platforms, want)
		}
	}
	if attestations != 2 {
		t.Errorf("attestation manifests = %d, want 2", attestations)
	}

	id, name := RunContainer(ctx, t, cli, ContainerOptions{
		Image: reg.Ref("hookd/multi", "latest"),
		Ports: map[string]string{AppPort: "0"},
	})
	addr := HostPort(ctx, t, cli, name)
	ok, last := waitFor(ctx, 10*time.Second, func() (bool, string) {
		v, err := Version(ctx, addr)
		if err != nil {
			return false, err.Error()
		}
		return v == "multi", v
	})
	if !ok {
		t.Fatalf("Version(%s) = %q, want multi", addr, last)
	}
	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	img, err := cli.ImageInspect(ctx, info.Image)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg.Host + "/hookd/multi@" + digest; !contains(img.RepoDigests, want) {
		t.Errorf("RepoDigests = %v, want %s (the index digest)", img.RepoDigests, want)
	}
	if img.Architecture != EngineArch() {
		t.Errorf("pulled image architecture = %s, want %s", img.Architecture, EngineArch())
	}
}

// TestCleanupRemovesWhatTheTestCreated checks that a finished test leaves
// nothing behind, including a container created outside RunContainer (as
// the deployer does) from a rig image, its anonymous volume, a network and
// leftovers named like the recreate protocol's.
func TestCleanupRemovesWhatTheTestCreated(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	var ids, networks, volumes []string
	var imageID string

	t.Run("inner", func(t *testing.T) {
		reg := NewRegistry(t)
		reg.PushApp(ctx, t, "hookd/app", "v1", App{Version: "v1", Volumes: []string{"/data"}})
		id, name := RunContainer(ctx, t, cli, ContainerOptions{Image: reg.Ref("hookd/app", "v1")})
		ids = append(ids, id)

		// As the deployer would: a replacement named <name>.hookd-new,
		// created straight through the client.
		created, err := cli.ContainerCreate(ctx, &container.Config{Image: reg.Ref("hookd/app", "v1")}, nil, nil, nil, name+".hookd-new")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, created.ID)
		// And one under an unrelated name, found by the inherited label only.
		other, err := cli.ContainerCreate(ctx, &container.Config{Image: reg.Ref("hookd/app", "v1")}, nil, nil, nil, "hookd-deployer-made-"+randomHex(4))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, other.ID)

		info, err := cli.ContainerInspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		imageID = info.Image
		for _, m := range info.Mounts {
			volumes = append(volumes, m.Name)
		}
		networks = append(networks, CreateNetwork(ctx, t, cli))
		volumes = append(volumes, CreateVolume(ctx, t, cli))
	})

	for _, id := range ids {
		if _, err := cli.ContainerInspect(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("container %s after cleanup: inspect error %v, want not found", id, err)
		}
	}
	if _, err := cli.ImageInspect(ctx, imageID); !errdefs.IsNotFound(err) {
		t.Errorf("image %s after cleanup: inspect error %v, want not found", imageID, err)
	}
	for _, n := range networks {
		if _, err := cli.NetworkInspect(ctx, n, network.InspectOptions{}); !errdefs.IsNotFound(err) {
			t.Errorf("network %s after cleanup: inspect error %v, want not found", n, err)
		}
	}
	if len(volumes) != 2 {
		t.Fatalf("volumes = %v, want the anonymous one and the named one", volumes)
	}
	for _, v := range volumes {
		if _, err := cli.VolumeInspect(ctx, v); !errdefs.IsNotFound(err) {
			t.Errorf("volume %s after cleanup: inspect error %v, want not found", v, err)
		}
	}
}

func sawRequest(recs []RequestRecord, path string, status int, auth string) bool {
	for _, r := range recs {
		if r.Path == path && r.Status == status && r.Auth == auth {
			return true
		}
	}
	return false
}

func isStatus(err error, status int) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == status
}

func TestRepoOf(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/v2/", ""},
		{"/v2/hookd/app/manifests/v1", "hookd/app"},
		{"/v2/a/b/c/blobs/sha256:abc", "a/b/c"},
		{"/v2/a/blobs/uploads/123", "a"},
		{"/v2/a/tags/list", "a"},
		{"/token", ""},
	}
	for _, tt := range tests {
		if got := repoOf(tt.path); got != tt.want {
			t.Errorf("repoOf(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestParseRestartPolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    container.RestartPolicy
		wantErr bool
	}{
		{"", container.RestartPolicy{}, false},
		{"always", container.RestartPolicy{Name: "always"}, false},
		{"on-failure:3", container.RestartPolicy{Name: "on-failure", MaximumRetryCount: 3}, false},
		{"on-failure:x", container.RestartPolicy{}, true},
		{"always:2", container.RestartPolicy{}, true},
		{"sometimes", container.RestartPolicy{}, true},
	}
	for _, tt := range tests {
		got, err := parseRestartPolicy(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseRestartPolicy(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && got != tt.want {
			t.Errorf("parseRestartPolicy(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// recordingTB stands in for a test so that Docker's skip or failure can be
// observed without ending the real test.
type recordingTB struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	failed  string
}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func TestDockerWithoutEngine(t *testing.T) {
	tests := []struct {
		integration string
		wantSkip    bool
	}{
		{"", true},
		{"1", false},
	}
	for _, tt := range tests {
		t.Run("HOOKD_INTEGRATION="+tt.integration, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
			t.Setenv("HOOKD_INTEGRATION", tt.integration)
			rec := &recordingTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Docker(rec)
			}()
			<-done
			if gotSkip := rec.skipped != ""; gotSkip != tt.wantSkip {
				t.Errorf("skipped = %q, want skip %v", rec.skipped, tt.wantSkip)
			}
			if gotFail := rec.failed != ""; gotFail == tt.wantSkip {
				t.Errorf("failed = %q, want failure %v", rec.failed, !tt.wantSkip)
			}
		})
	}
}

func TestRunContainerOptions(t *testing.T) {
	ctx := testContext(t)
	cli := Docker(t)
	reg := NewRegistry(t)
	reg.PushApp(ctx, t, "hookd/app", "v1", App{Version: "v1"})
	netName := CreateNetwork(ctx, t, cli)
	vol := CreateVolume(ctx, t, cli)

	id, name := RunContainer(ctx, t, cli, ContainerOptions{
		Image:         reg.Ref("hookd/app", "v1"),
		Name:          "opts",
		Labels:        map[string]string{"hookd.enable": "true"},
		Env:           []string{"GREETING=hi"},
		Ports:         map[string]string{AppPort: ""},
		Volumes:       []string{vol + ":/data"},
		Network:       netName,
		Aliases:       []string{"web"},
		RestartPolicy: "on-failure:2",
		Customize: func(c *container.Config, hc *container.HostConfig, _ *network.NetworkingConfig) {
			c.StopSignal = "SIGINT"
			c.Labels = map[string]string{"replaced": "yes"}
		},
	})
	if !strings.HasPrefix(name, "opts-") {
		t.Errorf("name = %q, want opts-<suffix>", name)
	}
	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Config.Labels[LabelKey]; got != LabelValue(t) {
		t.Errorf("label %s = %q, want %q even after Customize", LabelKey, got, LabelValue(t))
	}
	if got := info.Config.StopSignal; got != "SIGINT" {
		t.Errorf("stop signal = %q, want SIGINT from Customize", got)
	}
	if got := info.HostConfig.RestartPolicy; got.Name != "on-failure" || got.MaximumRetryCount != 2 {
		t.Errorf("restart policy = %+v, want on-failure:2", got)
	}
	ep := info.NetworkSettings.Networks[netName]
	if ep == nil || !contains(ep.Aliases, "web") {
		t.Errorf("endpoint on %s = %+v, want alias web", netName, ep)
	}
	addr := HostPort(ctx, t, cli, name)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("HostPort = %q, want 127.0.0.1:PORT", addr)
	}
	ok, last := waitFor(ctx, 10*time.Second, func() (bool, string) {
		v, err := Version(ctx, addr)
		if err != nil {
			return false, err.Error()
		}
		return v == "v1", v
	})
	if !ok {
		t.Fatalf("Version(%s) = %q, want v1", addr, last)
	}
	if got := get(t, "http://"+addr+"/env?name=GREETING"); got != "hi" {
		t.Errorf("GET /env?name=GREETING = %q, want hi", got)
	}
	put(t, "http://"+addr+"/file?path=/data/x", "in-volume")

	// The named volume outlives the container: a second one sees the file.
	_, name2 := RunContainer(ctx, t, cli, ContainerOptions{
		Image:   reg.Ref("hookd/app", "v1"),
		Ports:   map[string]string{AppPort: ""},
		Volumes: []string{vol + ":/data"},
	})
	addr2 := HostPort(ctx, t, cli, name2)
	ok, last = waitFor(ctx, 10*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + addr2 + "/file?path=/data/x")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b) == "in-volume", string(b)
	})
	if !ok {
		t.Errorf("file in shared volume = %q, want in-volume", last)
	}
}
