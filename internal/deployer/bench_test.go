package deployer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// probe GETs a URL every 10ms and records when it answered 200.
type probe struct {
	mu   sync.Mutex
	ok   []time.Time
	stop chan struct{}
	done chan struct{}
}

func startProbe(url string) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	// A request that hangs (a proxy whose backend went away) is a failed
	// answer; the short timeout keeps the probe polling.
	hc := &http.Client{Timeout: 250 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(p.done)
		for {
			start := time.Now()
			if resp, err := hc.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					p.mu.Lock()
					p.ok = append(p.ok, time.Now())
					p.mu.Unlock()
				}
			}
			select {
			case <-p.stop:
				return
			case <-time.After(time.Until(start.Add(10 * time.Millisecond))):
			}
		}
	}()
	return p
}

// finish waits until the probe has an answer after since (a request that
// hung through the swap may still be out), stops it and returns the longest
// gap between answers.
func (p *probe) finish(since time.Time) time.Duration {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		n := len(p.ok)
		last := time.Time{}
		if n > 0 {
			last = p.ok[n-1]
		}
		p.mu.Unlock()
		if last.After(since) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	for i := 1; i < len(p.ok); i++ {
		longest = max(longest, p.ok[i].Sub(p.ok[i-1]))
	}
	return longest
}

// healthyAt returns a channel that receives when a container called name,
// other than notID, reports healthy.
func healthyAt(ctx context.Context, b *testing.B, cli *client.Client, name, notID string) <-chan time.Time {
	b.Helper()
	out := make(chan time.Time, 1)
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("event", string(events.ActionHealthStatus)),
		filters.Arg("label", dockertest.LabelKey+"="+dockertest.LabelValue(b)),
	)})
	go func() {
		for {
			select {
			case m := <-msgs:
				if m.Action == events.ActionHealthStatusHealthy && m.Actor.Attributes["name"] == name && m.Actor.ID != notID {
					out <- time.Unix(0, m.TimeNano)
					return
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// waitVersion polls addr until it answers want: a container that was just
// (re)started needs a moment to listen.
func waitVersion(ctx context.Context, t testing.TB, addr, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err := dockertest.Version(ctx, addr)
		if err == nil && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answers %q, %v; want %s", addr, v, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// plainRecreate is `docker pull && docker stop && docker rm && docker run`
// through the API, with the options the container was first run with.
func plainRecreate(ctx context.Context, b *testing.B, cli *client.Client, ref, name, hostPort string, hc *container.HealthConfig) {
	b.Helper()
	rc, err := cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		b.Fatalf("pull: %v", err)
	}
	_, _ = io.Copy(io.Discard, rc)
	rc.Close()
	if err := cli.ContainerStop(ctx, name, container.StopOptions{}); err != nil {
		b.Fatalf("stop: %v", err)
	}
	if err := cli.ContainerRemove(ctx, name, container.RemoveOptions{}); err != nil {
		b.Fatalf("rm: %v", err)
	}
	port := nat.Port(dockertest.AppPort)
	created, err := cli.ContainerCreate(ctx,
		&container.Config{Image: ref, Labels: dockertest.Labels(b, nil), ExposedPorts: nat.PortSet{port: {}}, Healthcheck: hc},
		&container.HostConfig{PortBindings: nat.PortMap{port: {{HostIP: "127.0.0.1", HostPort: hostPort}}}},
		nil, nil, name)
	if err != nil {
		b.Fatalf("create: %v", err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		b.Fatalf("start: %v", err)
	}
}

// BenchmarkRecreate compares hookd's recreate with the plain
// pull/stop/rm/run sequence on the same engine in the same run:
// request-to-healthy (until the new container reports healthy) and downtime
// (longest gap between answers of a probe polling every 10ms).
//
//	go test ./internal/deployer -run '^$' -bench Recreate -benchtime 16x
func BenchmarkRecreate(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cli := dockertest.Docker(b)
	reg := dockertest.NewRegistry(b)
	reg.PushApp(ctx, b, "bench/hookd", "latest", dockertest.App{Version: "v0"})
	reg.PushApp(ctx, b, "bench/plain", "latest", dockertest.App{Version: "v0"})

	// The image's check (1s timeout, 2 retries) flakes on a loaded machine;
	// both sides get the same, more patient check.
	hc := &container.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: dockertest.HealthInterval, Timeout: 5 * time.Second, Retries: 10}
	hookPort, plainPort := freePort(b), freePort(b)
	_, hookName := dockertest.RunContainer(ctx, b, cli, dockertest.ContainerOptions{
		Image: reg.Ref("bench/hookd", "latest"), Name: "bench-hookd", Labels: enabled(nil),
		Ports: map[string]string{dockertest.AppPort: hookPort}, Healthcheck: hc,
	})
	_, plainName := dockertest.RunContainer(ctx, b, cli, dockertest.ContainerOptions{
		Image: reg.Ref("bench/plain", "latest"), Name: "bench-plain",
		Ports: map[string]string{dockertest.AppPort: plainPort}, Healthcheck: hc,
	})
	settle := time.Second
	d := rig{
		LabelFilter: dockertest.LabelKey + "=" + dockertest.LabelValue(b),
		Keychain:    staticKeychain{}, SettleTime: settle,
	}.deployer(b, cli)
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx) }()
	defer func() { stopRun(); <-ran }()
	for d.Ready(ctx) != nil || len(d.Targets()) == 0 {
		time.Sleep(20 * time.Millisecond)
	}

	hookAddr, plainAddr := "127.0.0.1:"+hookPort, "127.0.0.1:"+plainPort
	var hookDown, plainDown, hookHealthy, plainHealthy, hookDone []time.Duration

	// Each side's image gets a layer of its own (its version file): were
	// the versions equal, whichever side pulled second would find the layer
	// already extracted and look some 70ms faster.
	runHookd := func(version string) (j deploy.Job) {
		old, err := cli.ContainerInspect(ctx, hookName)
		if err != nil {
			b.Fatal(err)
		}
		healthy := healthyAt(ctx, b, cli, hookName, old.ID)
		p := startProbe("http://" + hookAddr + "/")
		time.Sleep(100 * time.Millisecond) // a baseline of answers
		t0 := time.Now()
		jobs, err := d.Submit(ctx, deploy.Request{Target: hookName, Trigger: deploy.TriggerManual, ReceivedAt: t0})
		if err != nil {
			b.Fatal(err)
		}
		j, err = d.WaitJob(ctx, jobs[0].ID)
		if err != nil || j.Status != deploy.StatusSucceeded {
			b.Fatalf("hookd job = %s %q, %v", j.Status, j.Error, err)
		}
		hookDone = append(hookDone, time.Since(t0))
		waitVersion(ctx, b, hookAddr, version)
		hookDown = append(hookDown, p.finish(time.Now()))
		hookHealthy = append(hookHealthy, (<-healthy).Sub(t0))
		return j
	}
	runPlain := func(version string) {
		old, err := cli.ContainerInspect(ctx, plainName)
		if err != nil {
			b.Fatal(err)
		}
		healthy := healthyAt(ctx, b, cli, plainName, old.ID)
		p := startProbe("http://" + plainAddr + "/")
		time.Sleep(100 * time.Millisecond)
		t0 := time.Now()
		plainRecreate(ctx, b, cli, reg.Ref("bench/plain", "latest"), plainName, plainPort, hc)
		var healthyTime time.Time
		select {
		case healthyTime = <-healthy:
		case <-time.After(30 * time.Second):
			b.Fatal("plain container never healthy")
		}
		waitVersion(ctx, b, plainAddr, version)
		plainDown = append(plainDown, p.finish(time.Now()))
		plainHealthy = append(plainHealthy, healthyTime.Sub(t0))
	}

	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		hookVersion, plainVersion := fmt.Sprintf("hookd-v%d", i+1), fmt.Sprintf("plain-v%d", i+1)
		reg.PushApp(ctx, b, "bench/hookd", "latest", dockertest.App{Version: hookVersion})
		reg.PushApp(ctx, b, "bench/plain", "latest", dockertest.App{Version: plainVersion})
		b.StartTimer()

		// Alternate who goes first, so that neither always runs right
		// after the other's clean-up.
		var j deploy.Job
		if i%2 == 0 {
			j = runHookd(hookVersion)
			runPlain(plainVersion)
		} else {
			runPlain(plainVersion)
			j = runHookd(hookVersion)
		}
		b.Logf("hookd phases %v", j.Phases)
		b.Logf("run %d: downtime hookd %v plain %v; request-to-healthy hookd %v plain %v; hookd job done %v (settle %v)",
			i+1, hookDown[i].Round(time.Millisecond), plainDown[i].Round(time.Millisecond),
			hookHealthy[i].Round(time.Millisecond), plainHealthy[i].Round(time.Millisecond), hookDone[i].Round(time.Millisecond), settle)
	}
	b.StopTimer()
	ms := func(ds []time.Duration) float64 { return float64(median(ds)) / float64(time.Millisecond) }
	b.ReportMetric(ms(hookDown), "hookd-downtime-ms")
	b.ReportMetric(ms(plainDown), "plain-downtime-ms")
	b.ReportMetric(ms(hookHealthy), "hookd-to-healthy-ms")
	b.ReportMetric(ms(plainHealthy), "plain-to-healthy-ms")
	b.ReportMetric(ms(hookDone), "hookd-job-done-ms")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return s[len(s)/2]
}
