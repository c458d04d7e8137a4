package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// queueDeployer returns a Deployer whose target set is given directly; the
// queue never calls Docker, so no engine is needed.
func queueDeployer(t *testing.T, cfg Config, targets ...string) *Deployer {
	t.Helper()
	if cfg.State == nil {
		cfg.State = newMemState(0)
	}
	cfg.Ping = func(context.Context) error { return errors.New("no engine in this test") }
	cfg.Sources = []Source{noSource{}}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range targets {
		ref, err := deploy.ParseRef("ghcr.io/acme/" + n + ":latest")
		if err != nil {
			t.Fatalf("ParseRef: %v", err)
		}
		d.targets[n] = deploy.Target{Name: n, ID: n + "-id", Kind: deploy.KindContainer, Image: ref.Repository(), Tag: ref.Tag, Ref: ref}
	}
	return d
}

// noSource finds no targets; queue tests set them directly.
type noSource struct{}

func (noSource) Kind() string                                  { return deploy.KindContainer }
func (noSource) List(context.Context) ([]deploy.Target, error) { return nil, nil }
func (noSource) Inspect(context.Context, string) (deploy.Target, bool, error) {
	return deploy.Target{}, false, nil
}
func (noSource) Watch(ctx context.Context) (<-chan string, <-chan error) { return nil, nil }

func TestSubmitMatchesRepositoryAndTag(t *testing.T) {
	d := queueDeployer(t, Config{}, "api", "web")
	d.targets["web-canary"] = deploy.Target{Name: "web-canary", Image: "ghcr.io/acme/web", Tag: "canary"}
	ctx := context.Background()

	tests := []struct {
		name string
		req  deploy.Request
		want []string
	}{
		{"repository and default tag", deploy.Request{Repository: "GHCR.io/Acme/web"}, []string{"web"}},
		{"other tag", deploy.Request{Repository: "ghcr.io/acme/web", Tag: "canary"}, []string{"web-canary"}},
		{"tag nobody follows", deploy.Request{Repository: "ghcr.io/acme/web", Tag: "sha-1a2b"}, nil},
		{"everything", deploy.Request{}, []string{"api", "web", "web-canary"}},
		{"by name", deploy.Request{Target: "api"}, []string{"api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs, err := d.Submit(ctx, tt.req)
			if err != nil {
				t.Fatalf("Submit(%+v) error = %v", tt.req, err)
			}
			var got []string
			for _, j := range jobs {
				got = append(got, j.Target)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Submit(%+v) targets = %v, want %v", tt.req, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("Submit(%+v) targets = %v, want %v", tt.req, got, tt.want)
				}
			}
		})
	}
}

func TestSubmitUnknownTarget(t *testing.T) {
	d := queueDeployer(t, Config{}, "web")
	_, err := d.Submit(context.Background(), deploy.Request{Target: "nope"})
	if !errors.Is(err, deploy.ErrUnknownTarget) {
		t.Errorf("Submit(target nope) error = %v, want ErrUnknownTarget", err)
	}
}

func TestSubmitCoalescesNewestWins(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.BuildInfo{})
	d := queueDeployer(t, Config{Metrics: m}, "web")
	ctx := context.Background()

	first, err := d.Submit(ctx, deploy.Request{Repository: "ghcr.io/acme/web", ID: "d1", Force: true, Trigger: deploy.TriggerWebhook})
	if err != nil || len(first) != 1 {
		t.Fatalf("Submit #1 = %v, %v, want one job", first, err)
	}
	for i := 2; i <= 20; i++ {
		jobs, err := d.Submit(ctx, deploy.Request{Repository: "ghcr.io/acme/web", ID: "d" + string(rune('0'+i%10)), Trigger: deploy.TriggerPoll})
		if err != nil || len(jobs) != 1 {
			t.Fatalf("Submit #%d = %v, %v, want one job", i, jobs, err)
		}
		if jobs[0].ID != first[0].ID {
			t.Errorf("Submit #%d job id = %s, want the queued job %s", i, jobs[0].ID, first[0].ID)
		}
	}
	stored, err := d.Job(ctx, first[0].ID)
	if err != nil {
		t.Fatalf("Job() error = %v", err)
	}
	if stored.Request.Trigger != deploy.TriggerPoll || stored.Status != deploy.StatusQueued {
		t.Errorf("stored job trigger, status = %s, %s, want poll (newest request), queued", stored.Request.Trigger, stored.Status)
	}
	if !stored.Request.Force {
		t.Errorf("stored job force = false, want true (a coalesced force is kept)")
	}
	if got := testutil.ToFloat64(m.QueuePending); got != 1 {
		t.Errorf("queue pending = %v, want 1", got)
	}

	// Once the worker takes it, one new job may wait behind it, and no more.
	taken, ok := d.next(ctx)
	if !ok || taken.ID != first[0].ID {
		t.Fatalf("next() = %v, %v, want job %s", taken.ID, ok, first[0].ID)
	}
	a, _ := d.Submit(ctx, deploy.Request{Target: "web"})
	b, _ := d.Submit(ctx, deploy.Request{Target: "web"})
	if len(a) != 1 || len(b) != 1 || a[0].ID == first[0].ID || a[0].ID != b[0].ID {
		t.Errorf("submits during a deploy = %v, %v, want one new job, shared", a, b)
	}
}

func TestNextSkipsBusyTargetsAndKeepsOrder(t *testing.T) {
	d := queueDeployer(t, Config{}, "a", "b")
	ctx := context.Background()
	ja, _ := d.Submit(ctx, deploy.Request{Target: "a"})
	jb, _ := d.Submit(ctx, deploy.Request{Target: "b"})
	got, _ := d.next(ctx)
	if got.ID != ja[0].ID {
		t.Fatalf("next() = job for %s, want the oldest (a)", got.Target)
	}
	ja2, _ := d.Submit(ctx, deploy.Request{Target: "a"}) // waits behind the running a
	got, _ = d.next(ctx)
	if got.ID != jb[0].ID {
		t.Fatalf("next() = job for %s, want b (a is busy)", got.Target)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if j, ok := d.next(short); ok {
		t.Fatalf("next() = job %s for busy target %s, want none until a is done", j.ID, j.Target)
	}
	d.done("a")
	got, ok := d.next(ctx)
	if !ok || got.ID != ja2[0].ID {
		t.Errorf("next() after done = %v, %v, want job %s", got.ID, ok, ja2[0].ID)
	}
}

// TestIdleWhileNothingQueuedOrRunning: hookd trims its memory only when the
// deployer is idle, so a queued or running job must count as busy.
func TestSubmitQueueFull(t *testing.T) {
	d := queueDeployer(t, Config{QueueSize: 2}, "a", "b", "c")
	ctx := context.Background()
	if _, err := d.Submit(ctx, deploy.Request{Target: "a"}); err != nil {
		t.Fatalf("Submit(a) error = %v", err)
	}
	if _, err := d.Submit(ctx, deploy.Request{}); !errors.Is(err, deploy.ErrQueueFull) {
		t.Errorf("Submit(all) with room for 1 of 2 new jobs: error = %v, want ErrQueueFull", err)
	}
	if _, err := d.Submit(ctx, deploy.Request{Target: "b"}); err != nil {
		t.Errorf("Submit(b) error = %v, want nil (room for one)", err)
	}
	if _, err := d.Submit(ctx, deploy.Request{Target: "a"}); err != nil {
		t.Errorf("Submit(a) again error = %v, want nil (coalesces)", err)
	}
	if _, err := d.Submit(ctx, deploy.Request{Target: "c"}); !errors.Is(err, deploy.ErrQueueFull) {
		t.Errorf("Submit(c) error = %v, want ErrQueueFull", err)
	}
}

func TestSubmitPersistsBeforeReturning(t *testing.T) {
	st := newMemState(10)
	d := queueDeployer(t, Config{State: st}, "web")
	jobs, err := d.Submit(context.Background(), deploy.Request{Target: "web", ID: "delivery-1"})
	if err != nil {
		t.Fatalf("Submit() error = %v", err)
	}
	got, err := st.Job(context.Background(), jobs[0].ID)
	if err != nil || got.Status != deploy.StatusQueued || got.Request.ID != "delivery-1" {
		t.Errorf("stored job = %+v, %v, want queued job for delivery-1", got, err)
	}
}

func TestResumeRequeuesLiveJobs(t *testing.T) {
	ctx := context.Background()
	st := newMemState(10)
	now := time.Now()
	for _, j := range []deploy.Job{
		// A forced redeploy a shutdown interrupted, and a request queued behind it.
		{ID: "01", Target: "web", Status: deploy.StatusRunning, Stage: deploy.StageGating, StartedAt: now, Request: deploy.Request{Force: true, Trigger: deploy.TriggerManual}, CreatedAt: now.Add(-3 * time.Second)},
		{ID: "02", Target: "web", Status: deploy.StatusQueued, Request: deploy.Request{Trigger: deploy.TriggerWebhook}, CreatedAt: now.Add(-2 * time.Second)},
		{ID: "03", Target: "api", Status: deploy.StatusSucceeded, CreatedAt: now.Add(-time.Second)},
	} {
		if err := st.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	d := queueDeployer(t, Config{State: st}, "web", "api")
	if err := d.resume(ctx); err != nil {
		t.Fatalf("resume() error = %v", err)
	}
	j, ok := d.next(ctx)
	if !ok || j.ID != "02" || j.Status != deploy.StatusQueued || !j.Request.Force {
		t.Errorf("next() = %s %s force=%v, want the newest live job 02, queued, with the interrupted job's force", j.ID, j.Status, j.Request.Force)
	}
	if saved, _ := st.Job(ctx, "02"); !saved.Request.Force {
		t.Errorf("stored job 02 has force=false, want the merged force persisted (a second restart must not lose it)")
	}
	old, _ := st.Job(ctx, "01")
	if old.Status != deploy.StatusQueued || !old.StartedAt.IsZero() || !strings.Contains(strings.Join(old.Notes, "\n"), "coalesced into job 02") {
		t.Errorf("older live job = %s started %v notes %q, want it queued behind job 02, saying so", old.Status, old.StartedAt, old.Notes)
	}
	if len(d.pending) != 0 {
		t.Errorf("pending after next = %v, want empty (finished jobs are not resumed)", d.pending)
	}

	// When 02 ends, 01 ends the same way: its request was deployed by 02.
	j.Status, j.DigestAfter, j.FinishedAt = deploy.StatusSucceeded, "sha256:new", time.Now().UTC()
	d.finishCoalesced(ctx, j)
	old, _ = st.Job(ctx, "01")
	if old.Status != deploy.StatusSucceeded || old.DigestAfter != "sha256:new" || !strings.Contains(strings.Join(old.Notes, "\n"), "deployed by job 02") {
		t.Errorf("older job after 02 ended = %s %q notes %q, want succeeded with 02's digest, saying job 02 deployed it", old.Status, old.DigestAfter, old.Notes)
	}
}

// TestResumeRemembersRollbacks: after a restart the targets still report
// the digest their last rollback left, unless a later deploy succeeded or
// found the target up to date; a failed deploy (nothing was swapped) does
// not decide either way.
func TestResumeRemembersRollbacks(t *testing.T) {
	ctx := context.Background()
	st := newMemState(10)
	now := time.Now()
	const bad, good = "sha256:bad", "sha256:good"
	for i, j := range []deploy.Job{
		{Target: "web", Status: deploy.StatusRolledBack, DigestAfter: bad},
		{Target: "web", Status: deploy.StatusFailed, Error: "registry down"},
		{Target: "api", Status: deploy.StatusRolledBack, DigestAfter: bad},
		{Target: "api", Status: deploy.StatusSucceeded, DigestAfter: good},
		{Target: "db", Status: deploy.StatusUpToDate},
	} {
		j.ID = fmt.Sprintf("%02d", i+1)
		j.CreatedAt = now.Add(time.Duration(i-10) * time.Second)
		if err := st.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	d := queueDeployer(t, Config{State: st}, "web", "api", "db")
	if err := d.resume(ctx); err != nil {
		t.Fatalf("resume() error = %v", err)
	}
	want := map[string]string{"web": bad, "api": "", "db": ""}
	for _, tg := range d.Targets() {
		if tg.RolledBack != want[tg.Name] {
			t.Errorf("%s rolled-back digest = %q, want %q", tg.Name, tg.RolledBack, want[tg.Name])
		}
	}
}

func TestWaitJob(t *testing.T) {
	ctx := context.Background()
	d := queueDeployer(t, Config{}, "web")
	jobs, _ := d.Submit(ctx, deploy.Request{Target: "web"})
	id := jobs[0].ID

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if j, err := d.WaitJob(short, id); !errors.Is(err, context.DeadlineExceeded) || j.Status != deploy.StatusQueued {
		t.Errorf("WaitJob(queued) = %s, %v, want queued, deadline exceeded", j.Status, err)
	}
	go func() {
		j, _ := d.next(ctx)
		j.Status = deploy.StatusSucceeded
		d.saveJob(ctx, j)
	}()
	long, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	j, err := d.WaitJob(long, id)
	if err != nil || j.Status != deploy.StatusSucceeded {
		t.Errorf("WaitJob() = %s, %v, want succeeded", j.Status, err)
	}
	if _, err := d.WaitJob(ctx, "missing"); !errors.Is(err, deploy.ErrJobNotFound) {
		t.Errorf("WaitJob(missing) error = %v, want ErrJobNotFound", err)
	}
}

func TestJobIDsUniqueAndSorted(t *testing.T) {
	d := queueDeployer(t, Config{})
	prev := ""
	for range 1000 {
		id := d.newIDLocked()
		if len(id) != 16 || id <= prev {
			t.Fatalf("newID() = %q after %q, want 16 hex digits, increasing", id, prev)
		}
		prev = id
	}
}

func TestRunRetriesWhileDockerIsUnreachable(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+t.TempDir()+"/no-docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var logs syncBuffer
	d := rig{Logger: slog.New(slog.NewTextHandler(&logs, nil))}.deployer(t, cli)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	time.Sleep(1200 * time.Millisecond) // two backoff steps: 0.5s, 1s
	if err := d.Ready(context.Background()); err == nil {
		t.Errorf("Ready() = nil with no engine, want an error")
	}
	select {
	case err := <-done:
		t.Fatalf("Run() returned %v while the engine is unreachable, want it to keep retrying", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run() did not return after cancel")
	}
	if n := strings.Count(logs.String(), "docker not ready"); n < 2 || n > 3 {
		t.Errorf("retry log lines in 1.2s = %d, want 2 or 3 (one per backoff step)", n)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSubmitServiceJobKind(t *testing.T) {
	d := queueDeployer(t, Config{}, "web")
	ref, _ := deploy.ParseRef("ghcr.io/acme/api:latest")
	d.targets["api"] = deploy.Target{Name: "api", ID: "svc-id", Kind: deploy.KindService, Image: ref.Repository(), Tag: ref.Tag, Ref: ref}
	jobs, err := d.Submit(context.Background(), deploy.Request{Repository: "ghcr.io/acme/api", Trigger: deploy.TriggerWebhook})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Submit() = %v, %v, want one job", jobs, err)
	}
	if jobs[0].Target != "api" || jobs[0].Kind != deploy.KindService || jobs[0].Image != "ghcr.io/acme/api:latest" {
		t.Errorf("job = %+v, want a service job for api on ghcr.io/acme/api:latest", jobs[0])
	}
}

// brokenJobs is a State whose job listing fails, as a state file that
// cannot be read does.
type brokenJobs struct{ *memState }

func (brokenJobs) Jobs(context.Context, deploy.JobFilter) ([]deploy.Job, error) {
	return nil, errors.New("read error")
}

// TestNotReadyWhileStartupFails: the engine answers and the targets are
// found, but start-up cannot resume the queued jobs. Nothing would be
// deployed, so hookd must not say it is ready, and the log must not blame
// the engine.
func TestNotReadyWhileStartupFails(t *testing.T) {
	var logs syncBuffer
	d, err := New(Config{
		State:   brokenJobs{newMemState(0)},
		Ping:    func(context.Context) error { return nil },
		Sources: []Source{noSource{}},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(700 * time.Millisecond) // the first attempt and its retry delay
	err = d.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "read error") {
		t.Errorf("Ready() = %v while start-up cannot resume the queue, want the reason", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "start-up failed") || strings.Contains(out, "docker not ready") {
		t.Errorf("log = %q, want an error saying start-up failed, not blaming docker", out)
	}
}
