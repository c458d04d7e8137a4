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
// the slowest answer the other app (which deploys nothing meanwhile) gave
// in the same window.
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
	// Per kind of window ("deploy", "swap", "rollback"): the side's own
	// answers, and the other side's in the same window, which deploys
	// nothing then: the machine's own noise.
	type side struct {
		strategy, repo, alias, name string
		load                        *dockertest.Load
		own, control                map[string][]dockertest.LoadSummary
		broken                      int
	}
	sides := []*side{
		{strategy: "start-first", repo: "bench/startfirst", alias: "sfapp"},
		{strategy: "recreate", repo: "bench/recreate", alias: "rcapp"},
	}
	for _, s := range sides {
		s.own, s.control = map[string][]dockertest.LoadSummary{}, map[string][]dockertest.LoadSummary{}
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

	// run deploys s's target and records the requests sent meanwhile, to s
	// and to the other side.
	run := func(s, other *side, want deploy.Status) deploy.Job {
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
		to := time.Now()
		record := func(kind string, from, to time.Time) {
			own := dockertest.Summarize(s.load.Answers(), from, to)
			control := dockertest.Summarize(other.load.Answers(), from, to)
			s.own[kind] = append(s.own[kind], own)
			s.control[kind] = append(s.control[kind], control)
			b.Logf("%-11s %-8s (%4.1fs): %s; control: slowest %v", s.strategy, kind, to.Sub(from).Seconds(), own, control.Slowest.Round(time.Millisecond))
		}
		if want == deploy.StatusRolledBack {
			record("rollback", from, to)
			return j
		}
		record("deploy", from, to)
		if s.strategy == "start-first" {
			record("swap", j.HealthyAt, to) // it touches the traffic only once the gate passed
		}
		return j
	}

	b.ResetTimer()
	for i := range b.N {
		good, broken := fmt.Sprintf("v%d", i+1), fmt.Sprintf("v%d-broken", i+1)
		pairs := [][2]*side{{sides[0], sides[1]}, {sides[1], sides[0]}}
		if i%2 == 1 {
			pairs[0], pairs[1] = pairs[1], pairs[0]
		}
		for _, p := range pairs {
			reg.PushApp(ctx, b, p[0].repo, "latest", dockertest.App{Version: good})
			run(p[0], p[1], deploy.StatusSucceeded)
		}
		for _, p := range pairs {
			reg.PushApp(ctx, b, p[0].repo, "latest", dockertest.App{Version: broken, Unhealthy: true})
			run(p[0], p[1], deploy.StatusRolledBack)
			sums := p[0].own["rollback"]
			p[0].broken += sums[len(sums)-1].Bodies[broken]
		}
	}
	b.StopTimer()
	slowest := func(sums []dockertest.LoadSummary) (d time.Duration, failed int, minRate float64) {
		minRate = 1e9
		for _, sum := range sums {
			d, failed, minRate = max(d, sum.Slowest), failed+sum.Failed, min(minRate, sum.PerSec)
		}
		return d, failed, minRate
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, s := range sides {
		short := map[string]string{"start-first": "sf", "recreate": "rc"}[s.strategy]
		for _, kind := range []string{"deploy", "swap", "rollback"} {
			if len(s.own[kind]) == 0 {
				continue // recreate's swap is its whole deploy: the stall starts with the stop
			}
			d, failed, minRate := slowest(s.own[kind])
			noise, _, _ := slowest(s.control[kind])
			b.ReportMetric(ms(d), short+"-"+kind+"-slowest-ms")
			b.ReportMetric(ms(noise), short+"-"+kind+"-control-slowest-ms")
			if kind != "swap" {
				b.ReportMetric(float64(failed), short+"-"+kind+"-failed")
				b.ReportMetric(minRate, short+"-"+kind+"-min-req/s")
			}
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
				newID, _ := dockertest.RunContainer(ctx, b, cli, dockertest.ContainerOptions{
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
				// The next round starts with one container on the alias again.
				for _, id := range []string{oldID, newID} {
					_ = cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
				}
			}
			b.ReportMetric(float64(quickFailed), "quick-failed")
			b.ReportMetric(float64(slowFailed), "slow-failed")
			b.ReportMetric(float64(quickSlowest)/float64(time.Millisecond), "quick-slowest-ms")
			b.ReportMetric(float64(slowSlowest)/float64(time.Millisecond), "slow-slowest-ms")
		})
	}
}
