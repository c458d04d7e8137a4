package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestKilledDuringStartFirstKeepsServing: hookd is killed with SIGKILL
// while a start-first deploy gates the new version next to the old one
// (after the new one started, before the old one is stopped), behind
// Caddy, with 60 requests a second going through it. The old version
// serves on; the next hookd on the same state dir removes the new one,
// runs the job again and deploys it; no request fails, and afterwards
// exactly one container carries the name.
func TestKilledDuringStartFirstKeepsServing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const owner, name = "octo", "sfkilled"
	repo := owner + "/" + name
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	net := dockertest.CreateNetwork(ctx, t, cli)
	oldID, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "sf-killed", Network: net, Aliases: []string{"app"},
		Labels: map[string]string{"hookd.enable": "true", "hookd.strategy": "start-first"}, RestartPolicy: "unless-stopped",
	})
	caddy := reg.RunCaddy(ctx, t, cli, net,
		"{\n\tadmin off\n\tauto_https off\n}\n:8080 {\n\treverse_proxy app:8080 {\n\t\tlb_try_duration 5s\n\t}\n}\n", dockertest.AppPort)
	const token = "kill-test-token-0123456789"
	env := map[string]string{
		"HOOKD_LISTEN":         freeAddr(t),
		"HOOKD_STATE_DIR":      t.TempDir(),
		"HOOKD_WEBHOOK_SECRET": testSecret,
		"HOOKD_API_TOKEN":      token,
		"HOOKD_POLL_INTERVAL":  "0",
		"HOOKD_REGISTRY_HOST":  reg.Host,
		"HOOKD_SETTLE_TIME":    "1s",
		"HOOKD_HEALTH_TIMEOUT": "30s",
		"HOOKD_LABEL_FILTER":   dockertest.LabelKey + "=" + dockertest.LabelValue(t),
	}
	first, _ := startChild(t, env)
	from := time.Now()
	load := dockertest.StartLoad("http://"+caddy.Addrs[0]+"/", 60)
	defer load.Stop()

	// v2 needs 3s before it is healthy: hookd is killed while it waits.
	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", SlowStart: 3 * time.Second})
	d := &daemon{url: "http://" + env["HOOKD_LISTEN"]}
	if code, out := d.deliver(t, "package", "sfkilled-1", packageEvent(t, reg.Host, owner, name, "latest", digest)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v, want 202", code, out)
	}
	dockertest.WaitFor(t, time.Minute, target+".hookd-new running", func() (bool, string) {
		c, err := cli.ContainerInspect(ctx, target+".hookd-new")
		return err == nil && c.State.Running, fmt.Sprint(err)
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	if c, err := cli.ContainerInspect(ctx, target); err != nil || c.ID != oldID || !c.State.Running {
		t.Fatalf("after the kill, %s = %v running %v (%v), want the old one, running", target, c.ID, c.State != nil && c.State.Running, err)
	}

	startChild(t, env)
	var jobs []map[string]any
	dockertest.WaitFor(t, time.Minute, "job final", func() (bool, string) {
		jobs = apiJobs(t, d.url, token)
		return len(jobs) > 0 && jobs[0]["status"] != "queued" && jobs[0]["status"] != "running", fmt.Sprint(jobs)
	})
	if len(jobs) != 1 || jobs[0]["status"] != "succeeded" {
		t.Fatalf("jobs = %v, want one, succeeded", jobs)
	}
	dockertest.WaitFor(t, 10*time.Second, "v2 through caddy", func() (bool, string) {
		v, err := dockertest.Version(ctx, caddy.Addrs[0])
		return v == "v2", fmt.Sprint(v, err)
	})
	s := dockertest.Summarize(load.Stop(), from, time.Now())
	t.Logf("through Caddy from the first delivery to the end: %s", s)
	if s.Failed != 0 {
		t.Errorf("%d of %d requests failed; first: %s", s.Failed, s.Requests, s.FirstFailure)
	}
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", dockertest.LabelKey+"="+dockertest.LabelValue(t)), filters.Arg("name", target))})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range list {
		names = append(names, strings.TrimPrefix(c.Names[0], "/"))
	}
	if len(names) != 1 || names[0] != target {
		t.Errorf("containers named %s* = %v, want %s alone", target, names, target)
	}
}
