package dockertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
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

var (
	_ = errors.New
	_ = fmt.Sprint
	_ container.Config
	_ image.PullOptions
	_ = errdefs.IsNotFound
	_ authn.Authenticator
	_ name.Reference
	_ = remote.Head
	_ = transport.NewWithContext
)
