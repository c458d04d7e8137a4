package poller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/deployer"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/store"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	imageA  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	imageB  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

type fakeTargets struct {
	mu   sync.Mutex
	list []deploy.Target
}

func (f *fakeTargets) Targets() []deploy.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]deploy.Target(nil), f.list...)
}

func (f *fakeTargets) set(ts ...deploy.Target) {
	f.mu.Lock()
	f.list = ts
	f.mu.Unlock()
}

// update changes the target called name.
func (f *fakeTargets) update(name string, change func(*deploy.Target)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.list {
		if f.list[i].Name == name {
			change(&f.list[i])
		}
	}
}

// fakeSubmitter stands in for the deployer: it records requests, answers
// with one job per named target (or per target following the request's
// repository and tag) and ends each job with status (default succeeded), at
// once or when hold is closed. Like the deployer's, a succeeded deploy makes the target run
// the digest; a rolled-back one leaves it and reports the digest as
// RolledBack.
type fakeSubmitter struct {
	targets *fakeTargets
	mu      sync.Mutex
	reqs    []deploy.Request
	jobs    map[string]deploy.Job
	err     error
	status  deploy.Status
	hold    chan struct{} // when set, jobs run until it is closed
}

func (f *fakeSubmitter) Submit(_ context.Context, req deploy.Request) ([]deploy.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	if f.err != nil {
		return nil, f.err
	}
	status := f.status
	if status == "" {
		status = deploy.StatusSucceeded
	}
	if f.jobs == nil {
		f.jobs = map[string]deploy.Job{}
	}
	var jobs []deploy.Job
	for _, t := range f.targets.Targets() {
		if req.Target != "" && t.Name != req.Target {
			continue
		}
		if req.Repository != "" && (t.Image != req.Repository || t.Tag != req.Tag) {
			continue
		}
		j := deploy.Job{ID: fmt.Sprintf("job-%d-%s", len(f.reqs), t.Name), Target: t.Name, Request: req, Status: status}
		f.jobs[j.ID] = j
		jobs = append(jobs, j)
		if req.Digest == "" {
			continue
		}
		f.targets.update(t.Name, func(t *deploy.Target) {
			switch status {
			case deploy.StatusSucceeded:
				t.Digest, t.RolledBack = req.Digest, ""
			case deploy.StatusRolledBack:
				t.RolledBack = req.Digest
			}
		})
	}
	return jobs, nil
}

func (f *fakeSubmitter) WaitJob(ctx context.Context, id string) (deploy.Job, error) {
	f.mu.Lock()
	j, ok := f.jobs[id]
	hold := f.hold
	f.mu.Unlock()
	if !ok {
		return deploy.Job{}, fmt.Errorf("job %q: %w", id, deploy.ErrJobNotFound)
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return j, ctx.Err()
		}
	}
	return j, nil
}

func (f *fakeSubmitter) requests() []deploy.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]deploy.Request(nil), f.reqs...)
}

// fakeRegistry serves digests per "repo:tag" and config digests per
// "repo:tag@digest", and counts the calls.
type fakeRegistry struct {
	mu          sync.Mutex
	tags        map[string]string
	configs     map[string]string
	headErr     error
	platformErr error
	heads       map[string]int
	platforms   int
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{tags: map[string]string{}, configs: map[string]string{}, heads: map[string]int{}}
}

func (f *fakeRegistry) Head(_ context.Context, ref string) (registry.Descriptor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heads[ref]++
	if f.headErr != nil {
		return registry.Descriptor{}, f.headErr
	}
	d, ok := f.tags[ref]
	if !ok {
		return registry.Descriptor{}, fmt.Errorf("head %s: %w", ref, registry.ErrNotFound)
	}
	return registry.Descriptor{Digest: d}, nil
}

func (f *fakeRegistry) Platform(_ context.Context, ref string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.platforms++
	if f.platformErr != nil {
		return "", "", f.platformErr
	}
	c, ok := f.configs[ref]
	if !ok {
		return "", "", fmt.Errorf("resolve %s: %w", ref, registry.ErrNotFound)
	}
	return "sha256:manifest", c, nil
}

func (f *fakeRegistry) set(ref, digest, config string) {
	f.mu.Lock()
	f.tags[ref] = digest
	f.configs[ref+"@"+digest] = config
	f.mu.Unlock()
}

func (f *fakeRegistry) fail(err error) {
	f.mu.Lock()
	f.headErr = err
	f.mu.Unlock()
}

func (f *fakeRegistry) headCount(ref string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.heads[ref]
}

func (f *fakeRegistry) platformCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.platforms
}

// memStore is a DigestStore in memory.
type memStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *memStore) PutDigest(_ context.Context, key, digest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[key] = digest
	return nil
}

func (s *memStore) Digest(_ context.Context, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key], nil
}

type rig struct {
	p       *Poller
	targets *fakeTargets
	submit  *fakeSubmitter
	reg     *fakeRegistry
	m       *metrics.Metrics
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newRig returns a poller over fakes. cfg's Interval defaults to a minute.
// Tests run in a synctest bubble, whose clock moves only when every
// goroutine in it waits: time.Sleep is how a test lets time pass.
func newRig(t *testing.T, cfg Config, targets ...deploy.Target) *rig {
	t.Helper()
	r := &rig{targets: &fakeTargets{}, reg: newFakeRegistry(), m: metrics.Discard(), logs: &syncBuffer{}}
	r.targets.set(targets...)
	r.submit = &fakeSubmitter{targets: r.targets}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	cfg.Metrics = r.m
	cfg.Logger = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.p = New(cfg, r.targets, r.submit, r.reg)
	return r
}

// round runs one scheduling step now and waits for the checks it started.
func (r *rig) round() {
	r.p.tick(context.Background())
	r.p.wg.Wait()
}

// advance lets d pass in steps of at most step, running a round after each
// step.
func (r *rig) advance(d, step time.Duration) {
	for d > 0 {
		s := min(d, step)
		time.Sleep(s)
		r.round()
		d -= s
	}
}

func (r *rig) checks(outcome string) int {
	return int(testutil.ToFloat64(r.m.PollChecks.WithLabelValues(outcome)))
}

func target(name, image, digest, imageID string) deploy.Target {
	return deploy.Target{Name: name, Image: image, Tag: "latest", Digest: digest, ImageID: imageID}
}

const (
	repoApp = "ghcr.io/o/app"
	refApp  = repoApp + ":latest"
	repoDB  = "ghcr.io/o/db"
	refDB   = repoDB + ":latest"
)

func TestCatchUpAtStartUnchanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{},
			target("app", repoApp, digestA, imageA),
			target("db", repoDB, digestB, imageB))
		r.reg.set(refApp, digestA, imageA)
		r.reg.set(refDB, digestB, imageB)

		// The first ref is checked at once, the second a little later, both
		// well before the interval.
		r.advance(6*time.Second, time.Second)
		if got, want := r.reg.headCount(refApp), 1; got != want {
			t.Errorf("HEADs of %s after start = %d, want %d", refApp, got, want)
		}
		if got, want := r.reg.headCount(refDB), 1; got != want {
			t.Errorf("HEADs of %s after start = %d, want %d", refDB, got, want)
		}
		if got := r.submit.requests(); len(got) != 0 {
			t.Errorf("requests = %v, want none for unchanged digests", got)
		}
		if got := r.reg.platformCount(); got != 0 {
			t.Errorf("platform look-ups = %d, want 0 when the running digest matches", got)
		}
		if got, want := r.checks(metrics.PollUnchanged), 2; got != want {
			t.Errorf("unchanged checks = %d, want %d", got, want)
		}
	})
}

func TestStartChecksAreSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ts []deploy.Target
		for i := range 10 {
			repo := fmt.Sprintf("ghcr.io/o/app%d", i)
			ts = append(ts, target(fmt.Sprintf("t%d", i), repo, digestA, imageA))
		}
		r := newRig(t, Config{Interval: 5 * time.Minute}, ts...)
		r.round()
		if got := r.reg.headCount("ghcr.io/o/app0:latest"); got != 1 {
			t.Errorf("HEADs of the first target at start = %d, want 1", got)
		}
		// The first ran at once (and is now an interval away); the other nine
		// each have their own slot within the next 10s.
		seen := map[time.Time]bool{}
		for _, tg := range ts[1:] {
			next, ok := r.p.NextPoll(tg.Name)
			if !ok {
				t.Fatalf("NextPoll(%q) unknown after the first round", tg.Name)
			}
			if d := next.Sub(time.Now()); d <= 0 || d >= 10*time.Second {
				t.Errorf("first check of %s in %v, want within 10s of start", tg.Name, d)
			}
			seen[next] = true
		}
		if len(seen) != 9 {
			t.Errorf("first checks of 9 targets fall on %d distinct instants, want 9", len(seen))
		}
		r.advance(10*time.Second, 500*time.Millisecond)
		for _, tg := range ts {
			if got := r.reg.headCount(tg.Image + ":latest"); got != 1 {
				t.Errorf("HEADs of %s within 10s of start = %d, want 1", tg.Name, got)
			}
		}
	})
}

func TestChangedSubmitsOncePerDigest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.submit.status = deploy.StatusRolledBack

		r.round()
		reqs := r.submit.requests()
		if len(reqs) != 1 {
			t.Fatalf("requests after a changed digest = %d, want 1", len(reqs))
		}
		now := time.Now()
		want := deploy.Request{
			Repository: repoApp,
			Tag:        "latest",
			Digest:     digestB,
			Target:     "app",
			Trigger:    deploy.TriggerPoll,
			ID:         fmt.Sprintf("poll-%d-app", now.Unix()),
			ReceivedAt: now,
		}
		if reqs[0] != want {
			t.Errorf("request = %+v, want %+v", reqs[0], want)
		}
		if got := r.checks(metrics.PollChanged); got != 1 {
			t.Errorf("changed checks = %d, want 1", got)
		}

		// The deploy was rolled back: the target still runs A, and the
		// deployer reports B as rolled back. The same digest is not submitted
		// by poll again, however often it is checked.
		r.advance(10*time.Minute, 10*time.Second)
		if got := r.reg.headCount(refApp); got < 9 {
			t.Fatalf("HEADs over 10 intervals = %d, want about 10", got)
		}
		if got := len(r.submit.requests()); got != 1 {
			t.Errorf("requests after the digest was rolled back = %d, want still 1", got)
		}
		if !strings.Contains(r.logs.String(), "rolled back") {
			t.Errorf("log does not say why the digest was not retried:\n%s", r.logs)
		}

		// A new digest is tried.
		r.reg.set(refApp, digestC, imageB)
		r.advance(70*time.Second, 10*time.Second)
		reqs = r.submit.requests()
		if len(reqs) != 2 || reqs[1].Digest != digestC {
			t.Errorf("requests after a new digest = %+v, want a second one for %s", reqs, digestC)
		}
	})
}

// TestFailedDeployIsRetried: a deploy that failed without rolling back
// (a pull that failed, say) is the deployer's to judge: the next check
// submits the digest again.
func TestFailedDeployIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Jitter: -1}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.submit.status = deploy.StatusFailed
		r.round()
		r.advance(time.Minute, 10*time.Second)
		reqs := r.submit.requests()
		if len(reqs) != 2 || reqs[1].Digest != digestB {
			t.Errorf("requests = %+v, want the failed digest submitted again after an interval", reqs)
		}
	})
}

// TestCheckWaitsForItsDeploys: a check ends when the jobs it created end, so
// no second request is made while a deploy runs, however long it takes; the
// next check is an interval after it ended.
func TestCheckWaitsForItsDeploys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Jitter: -1}, target("a1", repoApp, digestA, imageA), target("a2", repoApp, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.submit.status = deploy.StatusFailed // the targets keep running A
		r.submit.hold = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.p.Run(ctx) }()

		time.Sleep(5 * time.Minute) // deploys that take five intervals
		synctest.Wait()
		if got := len(r.submit.requests()); got != 2 {
			t.Errorf("requests while the deploys run = %d, want 2 (one per target)", got)
		}
		if got := r.reg.headCount(refApp); got != 1 {
			t.Errorf("HEADs while the deploys run = %d, want 1", got)
		}

		close(r.submit.hold)
		synctest.Wait()
		if got := len(r.submit.requests()); got != 2 {
			t.Errorf("requests as the deploys end = %d, want still 2", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := len(r.submit.requests()); got != 4 {
			t.Errorf("requests an interval after the failed deploys ended = %d, want 4 (both again)", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

// TestTargetJoiningDuringACheck: a target that begins following a ref while
// its check waits for a deploy is judged once that check ends.
func TestTargetJoiningDuringACheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("a1", repoApp, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.submit.hold = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.p.Run(ctx) }()
		synctest.Wait()

		r.targets.set(append(r.targets.Targets(), target("a3", repoApp, digestA, imageA))...)
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if reqs := r.submit.requests(); len(reqs) != 1 {
			t.Errorf("requests while a1's deploy runs = %+v, want only a1's", reqs)
		}

		close(r.submit.hold)
		synctest.Wait()
		reqs := r.submit.requests()
		if len(reqs) != 2 || reqs[1].Target != "a3" || reqs[1].Digest != digestB {
			t.Errorf("requests after a1's deploy = %+v, want a second one for a3 with %s", reqs, digestB)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

func TestSubmitFailureIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.submit.err = deploy.ErrQueueFull

		r.round()
		r.submit.mu.Lock()
		r.submit.err = nil
		r.submit.mu.Unlock()
		r.advance(70*time.Second, 10*time.Second)
		reqs := r.submit.requests()
		if len(reqs) != 2 || reqs[1].Digest != digestB {
			t.Errorf("requests = %+v, want the refused digest submitted again", reqs)
		}
	})
}

func TestAttestationOnlyRebuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &memStore{}
		r := newRig(t, Config{Digests: store}, target("app", repoApp, digestA, imageA))
		// The index changed, this host's image (config digest) did not.
		r.reg.set(refApp, digestB, imageA)

		r.round()
		if got := r.submit.requests(); len(got) != 0 {
			t.Errorf("requests = %v, want none for an attestation-only rebuild", got)
		}
		if got, want := r.reg.platformCount(), 1; got != want {
			t.Errorf("platform look-ups = %d, want %d", got, want)
		}
		if got := r.checks(metrics.PollUnchanged); got != 1 {
			t.Errorf("unchanged checks = %d, want 1", got)
		}

		// Later checks are a single HEAD each.
		r.advance(5*time.Minute, 10*time.Second)
		if got := r.reg.headCount(refApp); got < 5 {
			t.Fatalf("HEADs = %d, want about 5", got)
		}
		if got, want := r.reg.platformCount(), 1; got != want {
			t.Errorf("platform look-ups after more checks = %d, want still %d", got, want)
		}

		// A restarted hookd remembers it through the store.
		r2 := newRig(t, Config{Digests: store}, target("app", repoApp, digestA, imageA))
		r2.reg.set(refApp, digestB, imageA)
		r2.round()
		if got := r2.reg.platformCount(); got != 0 {
			t.Errorf("platform look-ups after a restart = %d, want 0", got)
		}
	})
}

// TestRolledBackDigestIsNotPolled: a webhook's deploy of digest B was rolled
// back (the deployer reports it on the target, and keeps reporting it
// across restarts). Polling does not submit B; a new digest is submitted as
// usual.
func TestRolledBackDigestIsNotPolled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rolledBack := target("app", repoApp, digestA, imageA)
		rolledBack.RolledBack = digestB
		r := newRig(t, Config{}, rolledBack)
		r.reg.set(refApp, digestB, imageB)
		r.advance(5*time.Minute, 10*time.Second)
		if got := r.submit.requests(); len(got) != 0 {
			t.Fatalf("requests for the rolled-back digest = %+v, want none", got)
		}
		if n := strings.Count(r.logs.String(), "rolled back"); n == 0 {
			t.Errorf("log does not explain the skipped digest:\n%s", r.logs)
		}
		if n := strings.Count(r.logs.String(), "level=INFO"); n != 0 {
			t.Errorf("log has %d info lines for a skipped digest, want it at debug (the deployer warned of the rollback):\n%s", n, r.logs)
		}

		r.reg.set(refApp, digestC, imageB)
		r.advance(70*time.Second, 10*time.Second)
		if got := r.submit.requests(); len(got) != 1 || got[0].Digest != digestC {
			t.Errorf("requests after a new digest = %+v, want one for %s", got, digestC)
		}
	})
}

// TestRefusedDigestIsNotPolled: a gate rejected digest B for the target
// (unsigned; the deployer reports it on the target). Polling does not
// submit B every interval; a new digest is submitted as usual.
func TestRefusedDigestIsNotPolled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := target("app", repoApp, digestA, imageA)
		refused.Refused = digestB
		r := newRig(t, Config{}, refused)
		r.reg.set(refApp, digestB, imageB)
		r.advance(5*time.Minute, 10*time.Second)
		if got := r.submit.requests(); len(got) != 0 {
			t.Fatalf("requests for the refused digest = %+v, want none", got)
		}
		r.reg.set(refApp, digestC, imageB)
		r.advance(70*time.Second, 10*time.Second)
		if got := r.submit.requests(); len(got) != 1 || got[0].Digest != digestC {
			t.Errorf("requests after a new digest = %+v, want one for %s", got, digestC)
		}
	})
}

func TestTargetsSharingARefShareTheLookUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{},
			target("a1", repoApp, digestA, imageA),
			target("a2", repoApp, digestA, imageA),
			target("a3", repoApp, digestB, imageB), // already runs the new one
			target("db", repoDB, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.reg.set(refDB, digestA, imageA)

		r.advance(10*time.Minute, 5*time.Second)
		heads, dbHeads := r.reg.headCount(refApp), r.reg.headCount(refDB)
		if heads < 9 || heads > 12 {
			t.Errorf("HEADs of %s over 10 intervals for 3 targets = %d, want one per round (about 10)", refApp, heads)
		}
		if dbHeads < 9 || dbHeads > 12 {
			t.Errorf("HEADs of %s over 10 intervals = %d, want about 10", refDB, dbHeads)
		}
		var got []string
		for _, req := range r.submit.requests() {
			got = append(got, req.Target+"@"+req.Digest[:8])
		}
		if want := []string{"a1@sha256:b", "a2@sha256:b"}; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("requests = %v, want %v", got, want)
		}
	})
}

func TestLookUpIsReusedForAFewSeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("a1", repoApp, digestA, imageA))
		r.reg.set(refApp, digestA, imageA)
		r.round()

		// A second target following the same tag appears two seconds later:
		// its first check reuses the look-up.
		time.Sleep(2 * time.Second)
		r.targets.set(target("a1", repoApp, digestA, imageA), target("a2", repoApp, digestB, imageB))
		r.round()
		if got := r.reg.headCount(refApp); got != 1 {
			t.Errorf("HEADs of %s for two targets 2s apart = %d, want 1", refApp, got)
		}
		if got := r.checks(metrics.PollUnchanged) + r.checks(metrics.PollChanged); got != 2 {
			t.Errorf("checks = %d, want 2 (one per target)", got)
		}
		// a2 runs B while the tag points at A: that is a change for a2.
		if reqs := r.submit.requests(); len(reqs) != 1 || reqs[0].Target != "a2" || reqs[0].Digest != digestA {
			t.Errorf("requests = %+v, want one for a2 with %s", reqs, digestA)
		}

		// Later than that, the registry is asked again.
		time.Sleep(10 * time.Second)
		r.targets.set(target("a1", repoApp, digestA, imageA), target("a2", repoApp, digestB, imageB), target("a3", repoApp, digestA, imageA))
		r.round()
		if got := r.reg.headCount(refApp); got != 2 {
			t.Errorf("HEADs of %s for a target 12s later = %d, want 2", refApp, got)
		}
	})
}

func TestTargetsOnOneRefAlign(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Jitter: -1}, target("a1", repoApp, digestA, imageA))
		r.reg.set(refApp, digestA, imageA)
		r.round() // a1: checked at 0s, next at 60s
		time.Sleep(3 * time.Second)
		r.targets.set(target("a1", repoApp, digestA, imageA), target("a2", repoApp, digestA, imageA))
		r.round() // a2: first check at 3s, next at 63s
		time.Sleep(57 * time.Second)
		r.round() // 60s: a1 is due, a2 joins it
		if got := r.reg.headCount(refApp); got != 2 {
			t.Errorf("HEADs of %s = %d, want 2 (start, then one for both)", refApp, got)
		}
		n1, _ := r.p.NextPoll("a1")
		n2, _ := r.p.NextPoll("a2")
		if !n1.Equal(n2) {
			t.Errorf("NextPoll(a1) = %v, NextPoll(a2) = %v, want one schedule", n1, n2)
		}
	})
}

// webhook stamps the targets called names as the deployer does when it
// accepts a delivery's request.
func (r *rig) webhook(names ...string) {
	now := time.Now()
	for _, n := range names {
		r.targets.update(n, func(t *deploy.Target) { t.LastWebhook = now })
	}
}

func TestWebhooksPushBackPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("app", repoApp, digestA, imageA), target("db", repoDB, digestA, imageA))
		r.reg.set(refApp, digestA, imageA)
		r.reg.set(refDB, digestA, imageA)
		r.advance(10*time.Second, time.Second) // catch-up checks
		if got := r.reg.headCount(refApp); got != 1 {
			t.Fatalf("HEADs after catch-up = %d, want 1", got)
		}

		// A delivery every 40s for 10 minutes: app is never polled; db, which
		// no delivery asks for, is.
		for range 15 {
			r.advance(40*time.Second, 10*time.Second)
			r.webhook("app")
		}
		if got := r.reg.headCount(refApp); got != 1 {
			t.Errorf("HEADs of %s during steady deliveries = %d, want 1 (the catch-up)", refApp, got)
		}
		if got := r.reg.headCount(refDB); got < 8 {
			t.Errorf("HEADs of %s (no deliveries) = %d, want about 10", refDB, got)
		}

		// Deliveries stop: the poll resumes within an interval (+10%).
		r.advance(67*time.Second, time.Second)
		if got := r.reg.headCount(refApp); got != 2 {
			t.Errorf("HEADs of %s after an interval of silence = %d, want 2", refApp, got)
		}
	})
}

// TestWebhookSilence: a ref's next check is an interval after the last
// webhook that asked for all of its targets, when that is later than its
// schedule.
func TestWebhookSilence(t *testing.T) {
	tests := []struct {
		name    string
		heard   time.Duration // LastWebhook relative to now
		stamped []string
		pushed  bool
	}{
		{"just now", -time.Nanosecond, []string{"a1", "a2"}, true},
		{"20s ago", -20 * time.Second, []string{"a1", "a2"}, true},
		{"before the last check", -40 * time.Second, []string{"a1", "a2"}, false},
		{"never", 0, nil, false},
		{"not for every target", -time.Nanosecond, []string{"a1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, Config{Jitter: -1}, target("a1", repoApp, digestA, imageA), target("a2", repoApp, digestA, imageA))
				r.reg.set(refApp, digestA, imageA)
				r.round()
				before, _ := r.p.NextPoll("a1")
				time.Sleep(30 * time.Second)
				for _, n := range tt.stamped {
					r.targets.update(n, func(t *deploy.Target) { t.LastWebhook = time.Now().Add(tt.heard) })
				}
				r.round()
				want := before
				if tt.pushed {
					want = time.Now().Add(tt.heard + time.Minute)
				}
				for _, n := range []string{"a1", "a2"} {
					if got, _ := r.p.NextPoll(n); !got.Equal(want) {
						t.Errorf("NextPoll(%s) = %v, want %v", n, got, want)
					}
				}
				if got := r.reg.headCount(refApp); got != 1 {
					t.Errorf("HEADs = %d, want 1", got)
				}
			})
		})
	}
}

func TestLookUpErrors(t *testing.T) {
	notFound := fmt.Errorf("head x: %w", registry.ErrNotFound)
	refused := fmt.Errorf("head x: %w", &registry.WaitError{Registry: "ghcr.io", Until: time.Now().Add(time.Hour), Err: registry.ErrBackoff})
	tooMany := fmt.Errorf("head x: %w", &registry.WaitError{Registry: "ghcr.io", Until: time.Now().Add(time.Hour), Err: registry.ErrRateLimited, Cause: errors.New("429")})
	limited := fmt.Errorf("head x: %w", &registry.WaitError{Registry: "ghcr.io", Until: time.Now().Add(time.Hour), Err: registry.ErrRateLimited})
	serverErr := fmt.Errorf("head x: %w", &registry.WaitError{Registry: "ghcr.io", Until: time.Now().Add(time.Hour), Err: registry.ErrBackoff, Cause: errors.New("503")})
	tests := []struct {
		name    string
		err     error
		outcome string
	}{
		{"not found", notFound, metrics.PollError},
		{"server error", serverErr, metrics.PollError},
		{"refused during backoff", refused, metrics.PollRateLimited},
		{"answered 429", tooMany, metrics.PollRateLimited},
		{"refused by rate-limit pacing", limited, metrics.PollRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
				r.reg.fail(tt.err)
				r.round()
				if got := r.checks(tt.outcome); got != 1 {
					t.Errorf("%s checks = %d, want 1", tt.outcome, got)
				}
				if got := r.checks(metrics.PollUnchanged) + r.checks(metrics.PollChanged); got != 0 {
					t.Errorf("unchanged+changed checks = %d, want 0", got)
				}
				if got := r.submit.requests(); len(got) != 0 {
					t.Errorf("requests = %v, want none", got)
				}
				next, _ := r.p.NextPoll("app")
				if d := next.Sub(time.Now()); d < 54*time.Second {
					t.Errorf("next check after an error in %v, want no sooner than about an interval", d)
				}
			})
		})
	}
}

// TestFailedLookUpWaitsForTheRegistry: after a failed look-up the next check
// is an interval away, or when the registry client said it will ask the
// registry again (a Retry-After, its backoff, rate-limit pacing), capped at
// a day.
func TestFailedLookUpWaitsForTheRegistry(t *testing.T) {
	tests := []struct {
		name  string
		until time.Duration // WaitError.Until from now; 0 for another error
		want  time.Duration
	}{
		{"not found", 0, time.Minute},
		{"retry after two hours", 2 * time.Hour, 2 * time.Hour},
		{"backoff shorter than the interval", 30 * time.Second, 30 * time.Second},
		{"retry after two days", 48 * time.Hour, 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, Config{Jitter: -1}, target("app", repoApp, digestA, imageA))
				err := fmt.Errorf("head x: %w", registry.ErrNotFound)
				if tt.until != 0 {
					err = &registry.WaitError{Registry: "ghcr.io", Until: time.Now().Add(tt.until), Err: registry.ErrRateLimited}
				}
				r.reg.fail(err)
				r.round()
				if next, _ := r.p.NextPoll("app"); next.Sub(time.Now()) != tt.want {
					t.Errorf("next check in %v, want %v", next.Sub(time.Now()), tt.want)
				}
			})
		})
	}
}

func TestErrorsWarnOncePerStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
		r.reg.fail(fmt.Errorf("head x: %w", registry.ErrNotFound))
		r.advance(16*time.Minute, 10*time.Second) // 16 or so failed checks
		warns := strings.Count(r.logs.String(), "level=WARN")
		if warns < 4 || warns > 5 {
			t.Errorf("warnings for ~16 identical failures = %d, want 4 or 5 (at 1, 2, 4, 8, 16)\n%s", warns, r.logs)
		}

		// While the client refuses (backoff), nothing warns.
		r2 := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
		r2.reg.fail(&registry.WaitError{Registry: "ghcr.io", Until: time.Now().Add(time.Hour), Err: registry.ErrBackoff})
		r2.advance(16*time.Minute, 10*time.Second)
		if got := strings.Count(r2.logs.String(), "level=WARN"); got != 0 {
			t.Errorf("warnings while refused = %d, want 0\n%s", got, r2.logs)
		}

		// Recovery is reported.
		r.reg.fail(nil)
		r.reg.set(refApp, digestA, imageA)
		r.advance(70*time.Second, 10*time.Second)
		if !strings.Contains(r.logs.String(), "works again") {
			t.Errorf("log does not report the recovery:\n%s", r.logs)
		}
	})
}

func TestNoPlatformWarnsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestB, imageB)
		r.reg.mu.Lock()
		delete(r.reg.configs, refApp+"@"+digestB)
		r.reg.platformErr = fmt.Errorf("resolve: %w", registry.ErrNoPlatform)
		r.reg.mu.Unlock()

		r.advance(10*time.Minute, 10*time.Second)
		if got := r.checks(metrics.PollError); got < 9 {
			t.Errorf("error checks = %d, want one per check (about 10)", got)
		}
		if got := r.reg.platformCount(); got != 1 {
			t.Errorf("platform look-ups = %d, want 1: the answer for a digest cannot change", got)
		}
		if got := strings.Count(r.logs.String(), "level=WARN"); got != 1 {
			t.Errorf("warnings = %d, want 1\n%s", got, r.logs)
		}
		if got := r.submit.requests(); len(got) != 0 {
			t.Errorf("requests = %v, want none for an image without this platform", got)
		}
	})
}

func TestJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Interval: 100 * time.Second}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestA, imageA)
		r.round()
		seen := map[time.Duration]bool{}
		for range 200 {
			time.Sleep(time.Second)
			r.webhook("app")
			r.round()
			next, _ := r.p.NextPoll("app")
			d := next.Sub(time.Now())
			if d < 90*time.Second || d > 110*time.Second {
				t.Fatalf("next poll in %v, want within 100s ±10%%", d)
			}
			seen[d.Round(time.Second)] = true
		}
		if len(seen) < 10 {
			t.Errorf("200 push-backs gave %d distinct delays (to the second), want them spread", len(seen))
		}

		r = newRig(t, Config{Interval: 100 * time.Second, Jitter: -1}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestA, imageA)
		r.round()
		if next, _ := r.p.NextPoll("app"); !next.Equal(time.Now().Add(100 * time.Second)) {
			t.Errorf("NextPoll without jitter = %v, want exactly an interval from now", next)
		}
	})
}

func TestTargetsComeAndGo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, target("app", repoApp, digestA, imageA))
		r.reg.set(refApp, digestA, imageA)
		r.reg.set(refDB, digestA, imageA)
		r.round()
		if _, ok := r.p.NextPoll("db"); ok {
			t.Errorf("NextPoll(db) known before db exists")
		}

		r.targets.set(target("db", repoDB, digestA, imageA))
		r.advance(20*time.Second, 10*time.Second)
		if got := r.reg.headCount(refDB); got != 1 {
			t.Errorf("HEADs of a new target's ref = %d, want 1 soon after it appears", got)
		}
		if _, ok := r.p.NextPoll("app"); ok {
			t.Errorf("NextPoll(app) still known after app vanished")
		}
		appHeads := r.reg.headCount(refApp)
		r.advance(5*time.Minute, 10*time.Second)
		if got := r.reg.headCount(refApp); got != appHeads {
			t.Errorf("HEADs of a vanished target's ref went from %d to %d, want no more", appHeads, got)
		}
	})
}

func TestNextPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{Jitter: -1}, target("app", repoApp, digestA, imageA))
		if _, ok := r.p.NextPoll("app"); ok {
			t.Errorf("NextPoll before the first round reports a time")
		}
		r.reg.set(refApp, digestA, imageA)
		r.round()
		got, ok := r.p.NextPoll("app")
		if want := time.Now().Add(time.Minute); !ok || !got.Equal(want) {
			t.Errorf("NextPoll(app) = %v, %v, want %v, true", got, ok, want)
		}
		if _, ok := r.p.NextPoll("nope"); ok {
			t.Errorf("NextPoll(nope) reports a time for an unknown target")
		}
	})
}

func TestIntervalZeroIsOff(t *testing.T) {
	targets := &fakeTargets{}
	targets.set(target("app", repoApp, digestA, imageA))
	sub := &fakeSubmitter{targets: targets}
	reg := newFakeRegistry()
	p := New(Config{}, targets, sub, reg)

	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run with polling off = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run with polling off did not return")
	}
	if got := reg.headCount(refApp); got != 0 {
		t.Errorf("HEADs with polling off = %d, want 0", got)
	}
	if _, ok := p.NextPoll("app"); ok {
		t.Errorf("NextPoll with polling off reports a time")
	}
}

// TestRun drives the real loop, on the bubble's clock, with a short interval.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		targets := &fakeTargets{}
		targets.set(target("app", repoApp, digestA, imageA))
		sub := &fakeSubmitter{targets: targets}
		reg := newFakeRegistry()
		reg.set(refApp, digestA, imageA)
		const interval = 50 * time.Millisecond
		p := New(Config{Interval: interval}, targets, sub, reg)

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		waitFor(t, "the catch-up check", func() bool { return reg.headCount(refApp) >= 1 })
		start := time.Now()
		waitFor(t, "five more checks", func() bool { return reg.headCount(refApp) >= 6 })
		if el := time.Since(start); el < 4*45*time.Millisecond {
			t.Errorf("five checks took %v, want no fewer than ~4 intervals of %v between them", el, interval)
		}

		// A new digest is submitted within an interval.
		reg.set(refApp, digestB, imageB)
		waitFor(t, "the poll request", func() bool { return len(sub.requests()) == 1 })

		ctx2, cancel2 := context.WithTimeout(ctx, time.Second)
		defer cancel2()
		if err := p.Run(ctx2); err == nil {
			t.Errorf("second Run = nil, want an error")
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		n := reg.headCount(refApp)
		time.Sleep(3 * interval)
		if got := reg.headCount(refApp); got != n {
			t.Errorf("HEADs after Run returned went from %d to %d, want none", n, got)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The real parts satisfy the interfaces declared here.
var (
	_ TargetSource = (*deployer.Deployer)(nil)
	_ Submitter    = (*deployer.Deployer)(nil)
	_ Registry     = (*registry.Client)(nil)
	_ DigestStore  = (*store.Store)(nil)
)
