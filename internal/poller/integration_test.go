package poller

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/deployer"
	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/store"
)

// Integration: a real engine, the rig's registry behind a GHCR-style bearer
// token challenge, the real registry client and the real deployer.

type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// recordingSubmitter forwards to the deployer and records what it was given.
type recordingSubmitter struct {
	next Submitter
	mu   sync.Mutex
	reqs []deploy.Request
	at   []time.Time
}

func (s *recordingSubmitter) Submit(ctx context.Context, req deploy.Request) ([]deploy.Job, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	return s.next.Submit(ctx, req)
}

func (s *recordingSubmitter) WaitJob(ctx context.Context, id string) (deploy.Job, error) {
	return s.next.WaitJob(ctx, id)
}

func (s *recordingSubmitter) requests() ([]deploy.Request, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]deploy.Request(nil), s.reqs...), append([]time.Time(nil), s.at...)
}

// start runs f(ctx) in a goroutine; the returned stop cancels it and waits.
func start(t *testing.T, what string, f func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s Run() = %v, want nil after cancel", what, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// containerDeployer wires a deployer for container targets, as hookd does,
// with its state on disk.
func containerDeployer(t *testing.T, cli *client.Client, cfg containers.Config) *deployer.Deployer {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "hookd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d, err := deployer.New(deployer.Config{
		State:      st,
		Ping:       func(ctx context.Context) error { _, err := cli.Ping(ctx); return err },
		Sources:    []deployer.Source{containers.NewSource(cli, cfg)},
		Strategies: map[string]deployer.Strategy{containers.Name: containers.NewRecreate(cli, cfg)},
		Logger:     cfg.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestIntegrationPollDeploysAndStaysQuiet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t, dockertest.WithBearerAuth("bot", "right"))
	kc := staticKeychain{"bot", "right"}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	const repo = "hookd/app"

	reg.PushIndex(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "polled",
		Labels:       map[string]string{deploy.LabelEnable: "true"},
		RegistryAuth: reg.RegistryAuth("bot", "right"),
		Ports:        map[string]string{dockertest.AppPort: ""},
	})

	d := containerDeployer(t, cli, containers.Config{
		Scope:         deploy.Scope(dockertest.LabelKey + "=" + dockertest.LabelValue(t)),
		HealthTimeout: 15 * time.Second,
		SettleTime:    time.Second,
		Keychain:      kc,
		Logger:        log.With("component", "deployer"),
	})
	start(t, "deployer", d.Run)
	dockertest.WaitFor(t, 30*time.Second, "target "+name, func() (bool, string) {
		tg, _ := findTarget(d, name)
		return tg.Digest != "", fmt.Sprintf("targets = %+v", d.Targets())
	})

	rc := registry.New(registry.Config{
		Keychain: kc,
		Platform: v1.Platform{OS: "linux", Architecture: dockertest.EngineArch()},
		Logger:   log.With("component", "registry"),
	})

	// Part 1: a new image, no webhook: the poll finds and deploys it.
	const interval = 2 * time.Second
	m1 := metrics.Discard()
	sub := &recordingSubmitter{next: d}
	p := New(Config{Interval: interval, Metrics: m1, Logger: log.With("component", "poller")}, d, sub, rc)
	stop := start(t, "poller", p.Run)
	dockertest.WaitFor(t, 10*time.Second, "the catch-up check", func() (bool, string) {
		n := testutil.ToFloat64(m1.PollChecks.WithLabelValues(metrics.PollUnchanged))
		return n >= 1, fmt.Sprintf("unchanged checks = %v", n)
	})

	pushed := time.Now()
	v2 := reg.PushIndex(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	unchangedAtPush := testutil.ToFloat64(m1.PollChecks.WithLabelValues(metrics.PollUnchanged))
	dockertest.WaitFor(t, 3*interval, "a poll request", func() (bool, string) {
		reqs, _ := sub.requests()
		return len(reqs) > 0, "none yet"
	})
	reqs, at := sub.requests()
	if len(reqs) != 1 || reqs[0].Trigger != deploy.TriggerPoll || reqs[0].Digest != v2 || reqs[0].Target != name {
		t.Fatalf("requests = %+v, want one poll request for %s with %s", reqs, name, v2)
	}
	// Counted in poll rounds, not seconds (this machine is shared and
	// noisy): the first check after the push finds the new digest. One
	// check may have been under way while the push finished.
	if missed := testutil.ToFloat64(m1.PollChecks.WithLabelValues(metrics.PollUnchanged)) - unchangedAtPush; missed > 1 {
		t.Errorf("%v checks after the push saw the old digest, want the first one to find the new (found %v after the push)", missed, at[0].Sub(pushed))
	}
	dockertest.WaitFor(t, 60*time.Second, "the container to answer v2", func() (bool, string) {
		v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name))
		return err == nil && v == "v2", fmt.Sprintf("answers %q, %v", v, err)
	})
	t.Logf("v2 answered %v after the push (poll interval %v)", time.Since(pushed).Round(time.Millisecond), interval)
	jobs, err := d.Jobs(ctx, deploy.JobFilter{Target: name})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs = %+v, %v, want one", jobs, err)
	}
	j, err := d.WaitJob(ctx, jobs[0].ID)
	if err != nil || j.Status != deploy.StatusSucceeded || j.Request.Trigger != deploy.TriggerPoll {
		t.Fatalf("job = %+v, %v, want a succeeded poll job", j, err)
	}
	if got := testutil.ToFloat64(m1.PollChecks.WithLabelValues(metrics.PollChanged)); got != 1 {
		t.Errorf("changed checks = %v, want 1", got)
	}
	stop()

	// Part 2: 1,000 checks of the unchanged multi-arch tag: HEADs only, no
	// pull, no deploy.
	var newID string
	dockertest.WaitFor(t, 30*time.Second, "the target to report the new digest", func() (bool, string) {
		tg, ok := findTarget(d, name)
		newID = tg.ID
		return ok && tg.Digest == v2, fmt.Sprintf("digest %s (found %v)", tg.Digest, ok)
	})
	if newID == id {
		t.Fatalf("container id unchanged after the deploy")
	}
	reg.ResetRequests()
	m2 := metrics.Discard()
	sub2 := &recordingSubmitter{next: d}
	p2 := New(Config{Interval: 5 * time.Millisecond, Jitter: -1, Metrics: m2, Logger: log.With("component", "poller")}, d, sub2, rc)
	stop2 := start(t, "poller", p2.Run)
	began := time.Now()
	checks := func() float64 {
		return testutil.ToFloat64(m2.PollChecks.WithLabelValues(metrics.PollUnchanged))
	}
	dockertest.WaitFor(t, 90*time.Second, "1,000 checks", func() (bool, string) {
		return checks() >= 1000, fmt.Sprintf("%v checks", checks())
	})
	stop2()
	n := int(checks())
	for _, o := range []string{metrics.PollChanged, metrics.PollError, metrics.PollRateLimited} {
		if got := testutil.ToFloat64(m2.PollChecks.WithLabelValues(o)); got != 0 {
			t.Errorf("%s checks = %v, want 0", o, got)
		}
	}
	if reqs, _ := sub2.requests(); len(reqs) != 0 {
		t.Errorf("requests during %d unchanged checks = %+v, want none", n, reqs)
	}

	heads, other := 0, map[string]int{}
	for _, r := range reg.Requests() {
		switch {
		case r.Method == "HEAD" && r.Path == "/v2/"+repo+"/manifests/latest" && r.Status == 200:
			heads++
		case r.Path == "/token", r.Path == "/v2/" && r.Method == "GET":
			other[r.Method+" "+r.Path]++ // the token flow
		default:
			other[fmt.Sprintf("%s %s -> %d", r.Method, r.Path, r.Status)]++
		}
	}
	t.Logf("%d checks in %v: %d HEAD requests, other requests %v", n, time.Since(began).Round(time.Millisecond), heads, other)
	// A HEAD that completes as the poller stops gets no verdict (check
	// drops it at shutdown), so the one look-up in flight at stop2 may add
	// a request without adding a check.
	if heads < n || heads > n+1 {
		t.Errorf("HEAD manifest requests = %d, want one per check (%d, plus at most the one in flight at stop)", heads, n)
	}
	for k := range other {
		if !strings.HasSuffix(k, " /token") && k != "GET /v2/" {
			t.Errorf("registry saw %q (%d times) during unchanged checks, want only HEADs of the manifest and token requests", k, other[k])
		}
	}
	if got, err := d.Jobs(ctx, deploy.JobFilter{Target: name}); err != nil || len(got) != 1 {
		t.Errorf("jobs after the unchanged checks = %d (%v), want still 1", len(got), err)
	}
	if tg, ok := findTarget(d, name); ok && tg.ID != newID {
		t.Errorf("container replaced during unchanged checks: %s, want %s", tg.ID, newID)
	}
}

// TestIntegrationPollSkipsDigestRolledBack: a webhook's deploy of a broken
// image is rolled back; the polls that follow see that digest on the
// registry and leave it alone (a second rollback would be a second outage),
// and the next good push is deployed by poll.
func TestIntegrationPollSkipsDigestRolledBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	const repo = "hookd/rolledback"

	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	oldID, name := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: "rolledback",
		Labels: map[string]string{deploy.LabelEnable: "true"},
		Ports:  map[string]string{dockertest.AppPort: ""},
	})
	d := containerDeployer(t, cli, containers.Config{
		Scope:         deploy.Scope(dockertest.LabelKey + "=" + dockertest.LabelValue(t)),
		HealthTimeout: 10 * time.Second,
		SettleTime:    time.Second,
		Logger:        log.With("component", "deployer"),
	})
	start(t, "deployer", d.Run)
	target := func() deploy.Target {
		tg, _ := findTarget(d, name)
		return tg
	}
	dockertest.WaitFor(t, 30*time.Second, "target "+name, func() (bool, string) {
		return target().Digest != "", fmt.Sprintf("targets = %+v", d.Targets())
	})

	bad := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", Unhealthy: true})
	jobs, err := d.Submit(ctx, deploy.Request{Repository: reg.Host + "/" + repo, Tag: "latest", Digest: bad,
		Trigger: deploy.TriggerWebhook, ID: "delivery-1"})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Submit() = %v, %v, want one job", jobs, err)
	}
	if j, err := d.WaitJob(ctx, jobs[0].ID); err != nil || j.Status != deploy.StatusRolledBack {
		t.Fatalf("webhook job = %s %q, %v, want rolled_back", j.Status, j.Error, err)
	}
	if got := target().RolledBack; got != bad {
		t.Errorf("target's rolled-back digest = %q, want %s", got, bad)
	}

	rc := registry.New(registry.Config{
		Platform: v1.Platform{OS: "linux", Architecture: dockertest.EngineArch()},
		Logger:   log.With("component", "registry"),
	})
	m := metrics.Discard()
	sub := &recordingSubmitter{next: d}
	p := New(Config{Interval: 100 * time.Millisecond, Jitter: -1, Metrics: m, Logger: log.With("component", "poller")}, d, sub, rc)
	start(t, "poller", p.Run)
	unchanged := func() float64 { return testutil.ToFloat64(m.PollChecks.WithLabelValues(metrics.PollUnchanged)) }
	dockertest.WaitFor(t, 30*time.Second, "20 checks", func() (bool, string) {
		return unchanged() >= 20, fmt.Sprintf("%v checks", unchanged())
	})
	if reqs, _ := sub.requests(); len(reqs) != 0 {
		t.Fatalf("poll requests for the rolled-back digest = %+v, want none", reqs)
	}
	if got := target().ID; got != oldID {
		t.Errorf("container under %s = %s, want the old one %s untouched", name, got, oldID)
	}

	good := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3"})
	dockertest.WaitFor(t, 60*time.Second, "the container to answer v3", func() (bool, string) {
		v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name))
		return err == nil && v == "v3", fmt.Sprintf("answers %q, %v", v, err)
	})
	if reqs, _ := sub.requests(); len(reqs) != 1 || reqs[0].Digest != good {
		t.Errorf("poll requests = %+v, want one, for %s", reqs, good)
	}
}

// findTarget is the deployer's target called name.
func findTarget(d *deployer.Deployer, name string) (deploy.Target, bool) {
	for _, tg := range d.Targets() {
		if tg.Name == name {
			return tg, true
		}
	}
	return deploy.Target{}, false
}
