package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// TestImageProbeNetworks runs the hookd image in a container, as the
// shipped docker-compose.yml does, and deploys a start-first target whose
// hookd.probe hookd must reach. hookd in a container reaches only the
// networks its own container is attached to: with the target on a network
// of its own, the job fails before anything is touched, naming the fix;
// once hookd's container joins that network (compose: the network listed
// under hookd's networks:), the deploy goes through, gated by the probe.
func TestImageProbeNetworks(t *testing.T) {
	img := e2eImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)

	const repo, tag = "e2e-owner/probed", "latest"
	reg.PushApp(ctx, t, repo, tag, dockertest.App{Version: "v1", NoHealthcheck: true})
	appNet := dockertest.CreateNetwork(ctx, t, cli)
	oldID, target := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, tag), Name: "e2e-probed", Network: appNet, Aliases: []string{"app"},
		Labels: map[string]string{"hookd.enable": "true", "hookd.strategy": "start-first", "hookd.probe": "http://:8080/healthz"},
	})

	secret, token := e2eRandomHex(t, 16), e2eRandomHex(t, 16)
	h := e2eRunHookd(ctx, t, cli, img, secret, reg.Host, "HOOKD_POLL_INTERVAL=0", "HOOKD_API_TOKEN="+token)
	deliver := func(version string) map[string]any {
		t.Helper()
		digest := reg.PushApp(ctx, t, repo, tag, dockertest.App{Version: version, NoHealthcheck: true})
		before := len(apiJobs(t, "http://"+h.addr, token))
		if status, answer := e2ePost(ctx, t, "http://"+h.addr+"/hooks/github", secret, e2ePackageDelivery(t, repo, tag, digest)); status != http.StatusAccepted {
			t.Fatalf("POST /hooks/github = %d %s, want 202", status, answer)
		}
		var job map[string]any
		dockertest.WaitFor(t, 90*time.Second, "the job of "+version, func() (bool, string) {
			jobs := apiJobs(t, "http://"+h.addr, token) // newest first
			if len(jobs) == before {
				return false, "no new job"
			}
			job = jobs[0]
			return job["status"] != "queued" && job["status"] != "running", fmt.Sprint(job)
		})
		return job
	}

	// hookd's container is on the default bridge; the target is not.
	job := deliver("v2")
	errText, _ := job["error"].(string)
	for _, want := range []string{"shares no network with it (it is on " + appNet + ")", "docker network connect " + appNet, "nothing was changed"} {
		if job["status"] != "failed" || !strings.Contains(errText, want) {
			t.Errorf("job = %v %q, want failed naming %q", job["status"], errText, want)
		}
	}
	c, err := cli.ContainerInspect(ctx, target)
	if err != nil || c.ID != oldID || !c.State.Running {
		t.Fatalf("after the failed job, %s = %v (err %v), want the old container running", target, c.ID, err)
	}

	if err := cli.NetworkConnect(ctx, appNet, h.id, &network.EndpointSettings{}); err != nil {
		t.Fatal(err)
	}
	if job := deliver("v3"); job["status"] != "succeeded" {
		t.Fatalf("once hookd shares the network: job = %v %q, want succeeded", job["status"], job["error"])
	}
	c, err = cli.ContainerInspect(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.NetworkSettings.Networks[appNet].IPAddress + ":8080"
	dockertest.WaitFor(t, 10*time.Second, "v3 answering", func() (bool, string) {
		v, err := dockertest.Version(ctx, addr)
		return v == "v3", fmt.Sprint(v, err)
	})
}
