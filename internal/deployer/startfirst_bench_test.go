package deployer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// BenchmarkStartFirstThroughCaddy deploys, then rolls back, two copies of
// one app behind one Caddy in the same run, one with start-first and one
// with recreate, while a client sends 60 requests a second to each through
// Caddy. Per deploy it reports the requests sent from the job's submission
// to its end: how many failed, the slowest answer, and how many the broken
// version answered during the rollback; and, as the machine's own noise,
// the slowest answer of 3 seconds of the same load while nothing deploys.
//
//	go test ./internal/deployer -run '^$' -bench StartFirstThroughCaddy -benchtime 5x
func BenchmarkStartFirstThroughCaddy(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cli := dockertest.Docker(b)
	reg := dockertest.NewRegistry(b)
	net := dockertest.CreateNetwork(ctx, b, cli)
	// The image's check (1s timeout, 2 retries) flakes on a loaded
	// machine; both sides get the same, more patient check.
	hc := &container.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: dockertest.HealthInterval, Timeout: 5 * time.Second, Retries: 10}
	type side struct {
		strategy, repo, alias, name     string
		load                            *dockertest.Load
		idle, deploys, swaps, rollbacks []dockertest.LoadSummary
		broken                          int
	}
	sides := []*side{
		{strategy: "start-first", repo: "bench/startfirst", alias: "sfapp"},
		{strategy: "recreate", repo: "bench/recreate", alias: "rcapp"},
	}
	for _, s := range sides {
		reg.PushApp(ctx, b, s.repo, "latest", dockertest.App{Version: "v0"})
		labels := enabled(nil)
		if s.strategy == "start-first" {
			labels = enabled(startFirst)
		}
		_, s.name = dockertest.RunContainer(ctx, b, cli, dockertest.ContainerOptions{
			Image: reg.Ref(s.repo, "latest"), Name: "bench-" + s.alias, Labels: labels,
			Network: net, Aliases: []string{s.alias}, Healthcheck: hc, RestartPolicy: "unless-stopped",
		})
	}
	caddy := reg.RunCaddy(ctx, b, cli, net, caddyfile(map[string]string{
		":8080": sides[0].alias + ":8080", ":8081": sides[1].alias + ":8080",
	}), "8080/tcp", "8081/tcp")
	d := rig{
		LabelFilter: dockertest.LabelKey + "=" + dockertest.LabelValue(b),
		Keychain:    staticKeychain{}, SettleTime: time.Second, HealthTimeout: 10 * time.Second,
	}.deployer(b, cli)
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx) }()
	defer func() { stopRun(); <-ran }()
	for d.Ready(ctx) != nil || len(d.Targets()) < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	for i, s := range sides {
		waitVersion(ctx, b, caddy.Addrs[i], "v0")
		s.load = dockertest.StartLoad("http://"+caddy.Addrs[i]+"/", 60)
		defer s.load.Stop()
	}
	time.Sleep(time.Second)

	// run deploys s's target and describes the requests sent meanwhile.
	run := func(s *side, want deploy.Status) (deploy.Job, dockertest.LoadSummary) {
		from := time.Now()
		jobs, err := d.Submit(ctx, deploy.Request{Target: s.name, Trigger: deploy.TriggerManual})
		if err != nil {
			b.Fatal(err)
		}
		j, err := d.WaitJob(ctx, jobs[0].ID)
		if err != nil || j.Status != want {
			b.Fatalf("%s job = %s %q, %v; want %s", s.strategy, j.Status, j.Error, err, want)
		}
		time.Sleep(200 * time.Millisecond) // the requests sent last come back
		return j, dockertest.Summarize(s.load.Answers(), from, time.Now())
	}

	b.ResetTimer()
	for i := range b.N {
		// The machine's own noise: the same load while nothing deploys.
		from := time.Now()
		time.Sleep(3 * time.Second)
		for _, s := range sides {
			idle := dockertest.Summarize(s.load.Answers(), from, time.Now())
			s.idle = append(s.idle, idle)
			b.Logf("run %d %-11s idle     (3.0s): %s", i+1, s.strategy, idle)
		}
		good, broken := fmt.Sprintf("v%d", i+1), fmt.Sprintf("v%d-broken", i+1)
		order := sides
		if i%2 == 1 {
			order = []*side{sides[1], sides[0]}
		}
		for _, s := range order {
			reg.PushApp(ctx, b, s.repo, "latest", dockertest.App{Version: good})
			j, sum := run(s, deploy.StatusSucceeded)
			s.deploys = append(s.deploys, sum)
			// start-first touches the traffic only once the gate passed.
			s.swaps = append(s.swaps, dockertest.Summarize(s.load.Answers(), j.HealthyAt, j.FinishedAt.Add(200*time.Millisecond)))
			b.Logf("run %d %-11s deploy   (%4.1fs): %s; slowest sent at +%.2fs, gate passed at +%.2fs", i+1, s.strategy,
				j.FinishedAt.Sub(j.StartedAt).Seconds(), sum, sum.SlowestAt.Sub(j.StartedAt).Seconds(), j.HealthyAt.Sub(j.StartedAt).Seconds())
		}
		for _, s := range order {
			reg.PushApp(ctx, b, s.repo, "latest", dockertest.App{Version: broken, Unhealthy: true})
			j, sum := run(s, deploy.StatusRolledBack)
			s.rollbacks = append(s.rollbacks, sum)
			s.broken += sum.Bodies[broken]
			b.Logf("run %d %-11s rollback (%4.1fs): %s", i+1, s.strategy, j.FinishedAt.Sub(j.StartedAt).Seconds(), sum)
		}
	}
	b.StopTimer()
	for _, s := range sides {
		short := map[string]string{"start-first": "sf", "recreate": "rc"}[s.strategy]
		for _, kind := range []struct {
			name string
			sums []dockertest.LoadSummary
		}{{"idle", s.idle}, {"deploy", s.deploys}, {"swap", s.swaps}, {"rollback", s.rollbacks}} {
			var slowest time.Duration
			failed, minRate := 0, 1e9
			for _, sum := range kind.sums {
				slowest = max(slowest, sum.Slowest)
				failed += sum.Failed
				minRate = min(minRate, sum.PerSec)
			}
			if kind.name == "swap" && short == "rc" {
				continue // recreate's swap is its whole deploy: the stall starts with the stop
			}
			b.ReportMetric(float64(slowest)/float64(time.Millisecond), short+"-"+kind.name+"-slowest-ms")
			if kind.name == "idle" || kind.name == "swap" {
				continue
			}
			b.ReportMetric(float64(failed), short+"-"+kind.name+"-failed")
			b.ReportMetric(minRate, short+"-"+kind.name+"-min-req/s")
		}
		b.ReportMetric(float64(s.broken), short+"-broken-answers")
	}
}

// BenchmarkTakeOldOut measures the ways to take the old container out of
// service once the new one carries the alias, behind Caddy, while 20 slow
// requests a second (each takes 500ms, so about ten are in flight) and 60
// quick ones a second go through it: taking it off the network, or
// stopping it with its own stop signal, for an app that drains (finishes
// the requests in flight, as Go's http.Server.Shutdown does) and one that
// exits at once.
//
//	go test ./internal/deployer -run '^$' -bench TakeOldOut -benchtime 3x
func BenchmarkTakeOldOut(b *testing.B) {
	ways := []struct {
		name    string
		noDrain bool
		takeOut func(ctx context.Context, cli *client.Client, net, id string) error
	}{
		{"disconnect/draining-app", false, func(ctx context.Context, cli *client.Client, net, id string) error {
			return cli.NetworkDisconnect(ctx, net, id, false)
		}},
		{"stop/draining-app", false, func(ctx context.Context, cli *client.Client, net, id string) error {
			return cli.ContainerStop(ctx, id, container.StopOptions{})
		}},
		{"stop/app-without-drain", true, func(ctx context.Context, cli *client.Client, net, id string) error {
			return cli.ContainerStop(ctx, id, container.StopOptions{})
		}},
	}
	for _, w := range ways {
		b.Run(w.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			cli := dockertest.Docker(b)
			reg := dockertest.NewRegistry(b)
			net := dockertest.CreateNetwork(ctx, b, cli)
			reg.PushApp(ctx, b, "bench/takeout", "latest", dockertest.App{Version: "v1", NoDrain: w.noDrain})
			caddy := reg.RunCaddy(ctx, b, cli, net, caddyfile(map[string]string{":8080": "app:8080"}), dockertest.AppPort)
			var quickFailed, slowFailed int
			var quickSlowest, slowSlowest time.Duration
			for i := range b.N {
				oldID, _ := dockertest.RunContainer(ctx, b, cli, dockertest.ContainerOptions{
					Image: reg.Ref("bench/takeout", "latest"), Name: "takeout-old", Network: net, Aliases: []string{"app"},
				})
				waitVersion(ctx, b, caddy.Addrs[0], "v1")
				quick := dockertest.StartLoad("http://"+caddy.Addrs[0]+"/", 60)
				slow := dockertest.StartLoad("http://"+caddy.Addrs[0]+"/sleep?d=500ms", 20)
				time.Sleep(time.Second)
				dockertest.RunContainer(ctx, b, cli, dockertest.ContainerOptions{
					Image: reg.Ref("bench/takeout", "latest"), Name: "takeout-new", Network: net,
					Customize: func(_ *container.Config, _ *container.HostConfig, nc *network.NetworkingConfig) {
						nc.EndpointsConfig[net] = &network.EndpointSettings{Aliases: []string{"app"}}
					},
				})
				time.Sleep(time.Second) // the new one listens
				from := time.Now()
				if err := w.takeOut(ctx, cli, net, oldID); err != nil {
					b.Fatal(err)
				}
				time.Sleep(2 * time.Second)
				q := dockertest.Summarize(quick.Stop(), from.Add(-time.Second), time.Now())
				s := dockertest.Summarize(slow.Stop(), from.Add(-time.Second), time.Now())
				b.Logf("run %d: quick %s; slow %s", i+1, q, s)
				if s.FirstFailure != "" {
					b.Logf("run %d: first slow failure %s", i+1, s.FirstFailure)
				}
				quickFailed += q.Failed
				slowFailed += s.Failed
				quickSlowest, slowSlowest = max(quickSlowest, q.Slowest), max(slowSlowest, s.Slowest)
				_ = cli.ContainerRemove(ctx, oldID, container.RemoveOptions{Force: true})
			}
			b.ReportMetric(float64(quickFailed), "quick-failed")
			b.ReportMetric(float64(slowFailed), "slow-failed")
			b.ReportMetric(float64(quickSlowest)/float64(time.Millisecond), "quick-slowest-ms")
			b.ReportMetric(float64(slowSlowest)/float64(time.Millisecond), "slow-slowest-ms")
		})
	}
}
