package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// scripted is a strategy that reports the stages it is given and ends
// with out; admit, when set, is the digest it asks the policy about.
type scripted struct {
	stages []deploy.Stage
	admit  string
	out    strategy.Outcome
	block  chan struct{} // when set, Deploy waits for it before ending
}

func (s *scripted) Deploy(ctx context.Context, run *strategy.Run) strategy.Outcome {
	for _, st := range s.stages {
		run.Stage(st)
	}
	if s.admit != "" {
		run.Job.DigestAfter = s.admit
		if err := run.Admit(ctx, s.admit); err != nil {
			return strategy.Refused(err)
		}
	}
	if s.block != nil {
		<-s.block
	}
	return s.out
}

// runWorkers starts d's workers (without discovery) until the test ends.
func runWorkers(t *testing.T, d *Deployer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.work(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func strategyDeployer(t *testing.T, s Strategy, m *metrics.Metrics) *Deployer {
	t.Helper()
	d := queueDeployer(t, Config{Metrics: m, Strategies: map[string]Strategy{"scripted": s}}, "web")
	tg := d.targets["web"]
	tg.Strategy = "scripted"
	d.targets["web"] = tg
	return d
}

func TestEventsFollowTheJob(t *testing.T) {
	s := &scripted{
		stages: []deploy.Stage{deploy.StagePulling, deploy.StageSwapping, deploy.StageGating},
		out:    strategy.Outcome{Status: deploy.StatusSucceeded},
	}
	d := strategyDeployer(t, s, nil)
	events, cancel := d.Subscribe("test", 16)
	defer cancel()
	runWorkers(t, d)
	jobs, err := d.Submit(context.Background(), deploy.Request{Target: "web", Trigger: deploy.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for e := range events {
		if e.Job.ID != jobs[0].ID {
			t.Fatalf("event for job %s, want %s", e.Job.ID, jobs[0].ID)
		}
		kinds = append(kinds, e.Kind)
		if e.Final() {
			if e.Job.Status != deploy.StatusSucceeded || e.Job.FinishedAt.IsZero() {
				t.Errorf("final event job = %s finished %v, want succeeded with a finish time", e.Job.Status, e.Job.FinishedAt)
			}
			break
		}
		if e.Kind == string(deploy.StageGating) && e.Job.Stage != deploy.StageGating {
			t.Errorf("gating event carries stage %q", e.Job.Stage)
		}
	}
	want := []string{"queued", "running", "pulling", "swapping", "gating", "succeeded"}
	if !slices.Equal(kinds, want) {
		t.Errorf("events = %v, want %v", kinds, want)
	}
}

// TestSlowSubscriberLosesEventsNotTime: a subscriber that never reads
// neither blocks nor slows the deploy; what it missed is counted.
func TestSlowSubscriberLosesEventsNotTime(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	s := &scripted{stages: []deploy.Stage{deploy.StagePulling, deploy.StageSwapping, deploy.StageGating}, out: strategy.Outcome{Status: deploy.StatusSucceeded}}
	d := strategyDeployer(t, s, m)
	_, cancel := d.Subscribe("stuck", 1) // never read
	defer cancel()
	runWorkers(t, d)
	jobs, err := d.Submit(context.Background(), deploy.Request{Target: "web"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelWait()
	j, err := d.WaitJob(ctx, jobs[0].ID)
	if err != nil || j.Status != deploy.StatusSucceeded {
		t.Fatalf("job = %s, %v, want succeeded despite a stuck subscriber", j.Status, err)
	}
	// Six events, room for one: five lost. The final event may still be
	// on its way when WaitJob returns (it is saved first).
	waitFor(t, func() bool { return testutil.ToFloat64(m.EventsDropped.WithLabelValues("stuck")) == 5 })
}

func TestUnknownStrategyRefused(t *testing.T) {
	d := strategyDeployer(t, &scripted{}, nil)
	tg := d.targets["web"]
	tg.Strategy = "blue-green"
	d.targets["web"] = tg
	runWorkers(t, d)
	jobs, _ := d.Submit(context.Background(), deploy.Request{Target: "web"})
	j := waitJob(t, d, jobs[0].ID)
	if j.Status != deploy.StatusRefused || j.Error == "" {
		t.Errorf("job = %s %q, want refused, naming the strategy", j.Status, j.Error)
	}
}

// TestRolledBackDigestRefusedOnEveryPath: the deployer alone owns "do not
// deploy a rolled-back digest again": a request naming it is refused at
// Submit, one that does not is refused once the strategy resolved it, and
// force goes through.
func TestRolledBackDigestRefusedOnEveryPath(t *testing.T) {
	const bad = "sha256:bad"
	s := &scripted{admit: bad, out: strategy.Outcome{Status: deploy.StatusRolledBack}}
	d := strategyDeployer(t, s, nil)
	runWorkers(t, d)
	ctx := context.Background()
	jobs, _ := d.Submit(ctx, deploy.Request{Target: "web", Digest: bad, Trigger: deploy.TriggerWebhook})
	if j := waitJob(t, d, jobs[0].ID); j.Status != deploy.StatusRolledBack {
		t.Fatalf("first job = %s, want rolled_back", j.Status)
	}

	jobs, err := d.Submit(ctx, deploy.Request{Target: "web", Digest: bad, Trigger: deploy.TriggerWebhook})
	if err != nil || len(jobs) != 1 || jobs[0].Status != deploy.StatusRefused {
		t.Fatalf("Submit(rolled-back digest) = %+v, %v, want one refused job", jobs, err)
	}
	if len(d.pending) != 0 {
		t.Errorf("a refused request was queued: %v", d.pending)
	}
	jobs, _ = d.Submit(ctx, deploy.Request{Target: "web", Trigger: deploy.TriggerPoll})
	if j := waitJob(t, d, jobs[0].ID); j.Status != deploy.StatusRefused {
		t.Errorf("request without digest = %s, want refused once the digest was known", j.Status)
	}
	jobs, _ = d.Submit(ctx, deploy.Request{Target: "web", Digest: bad, Force: true})
	if j := waitJob(t, d, jobs[0].ID); j.Status != deploy.StatusRolledBack {
		t.Errorf("forced request = %s, want it deployed (and rolled back again)", j.Status)
	}
}

// slowState is a State whose job writes wait until released, like an SD
// card under load.
type slowState struct {
	*memState
	entered chan struct{}
	release chan struct{}
}

func (s *slowState) PutJob(ctx context.Context, j deploy.Job) error {
	s.entered <- struct{}{}
	<-s.release
	return s.memState.PutJob(ctx, j)
}

// TestNoLockAcrossDiskWrites: while Submit waits for the disk, the target
// list and the target refresh after an event still answer.
func TestNoLockAcrossDiskWrites(t *testing.T) {
	st := &slowState{memState: newMemState(0), entered: make(chan struct{}), release: make(chan struct{})}
	d := queueDeployer(t, Config{State: st}, "web")
	submitted := make(chan error, 1)
	go func() {
		_, err := d.Submit(context.Background(), deploy.Request{Target: "web"})
		submitted <- err
	}()
	<-st.entered // Submit is in its disk write now
	answered := make(chan int, 1)
	go func() {
		d.refresh(context.Background(), deploy.KindContainer, "web-id")
		answered <- len(d.Targets())
	}()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("Targets() waited for Submit's disk write")
	}
	close(st.release)
	if err := <-submitted; err != nil {
		t.Fatal(err)
	}
}

func waitJob(t *testing.T, d *Deployer, id string) deploy.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := d.WaitJob(ctx, id)
	if err != nil {
		t.Fatalf("WaitJob(%s) = %+v, %v", id, j, err)
	}
	return j
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}

// gateFunc is a Gate from a function.
type gateFunc func(context.Context, *deploy.Job) error

func (f gateFunc) Admit(ctx context.Context, j *deploy.Job) error { return f(ctx, j) }

// TestGates: every gate sees the digest, may note facts on the job, and
// refuses the deploy with its reason; the verifying stage is published.
func TestGates(t *testing.T) {
	s := &scripted{admit: "sha256:new", out: strategy.Outcome{Status: deploy.StatusSucceeded}}
	d := strategyDeployer(t, s, nil)
	var seen []string
	d.cfg.Gates = []Gate{
		gateFunc(func(_ context.Context, j *deploy.Job) error {
			seen = append(seen, j.DigestAfter)
			j.Notes = append(j.Notes, "signed by the app's workflow")
			return nil
		}),
		gateFunc(func(_ context.Context, j *deploy.Job) error {
			if j.Request.ID == "red" {
				return errors.New("checks on the commit are failing")
			}
			return nil
		}),
	}
	events, cancel := d.Subscribe("test", 32)
	defer cancel()
	runWorkers(t, d)
	ctx := context.Background()

	jobs, _ := d.Submit(ctx, deploy.Request{Target: "web", ID: "green"})
	if j := waitJob(t, d, jobs[0].ID); j.Status != deploy.StatusSucceeded || !slices.Equal(j.Notes, []string{"signed by the app's workflow"}) {
		t.Errorf("job through the gates = %s %v, want succeeded with the gate's note", j.Status, j.Notes)
	}
	jobs, _ = d.Submit(ctx, deploy.Request{Target: "web", ID: "red"})
	if j := waitJob(t, d, jobs[0].ID); j.Status != deploy.StatusRefused || j.Error != "checks on the commit are failing" {
		t.Errorf("job refused by a gate = %s %q, want refused with the gate's reason", j.Status, j.Error)
	}
	if !slices.Equal(seen, []string{"sha256:new", "sha256:new"}) {
		t.Errorf("gate saw digests %v, want the strategy's digest each time", seen)
	}
	verifying := 0
	for len(events) > 0 {
		if e := <-events; e.Kind == string(deploy.StageVerifying) {
			verifying++
		}
	}
	if verifying != 2 {
		t.Errorf("verifying events = %d, want 2", verifying)
	}
}

// TestRejectedDigestRemembered: a digest a gate rejected (deploy.ErrRejected)
// is refused at Submit afterwards, without the strategy pulling it or the
// gate looking again, and the target shows it; a forced request asks the
// gate again (force never skips a gate); a gate that could not decide is
// not remembered; a later success forgets the rejection.
func TestRejectedDigestRemembered(t *testing.T) {
	const unsigned = "sha256:unsigned"
	s := &scripted{admit: unsigned, out: strategy.Outcome{Status: deploy.StatusSucceeded}}
	d := strategyDeployer(t, s, nil)
	asked := 0
	verdict := fmt.Errorf("no signature found: %w", deploy.ErrRejected)
	d.cfg.Gates = []Gate{gateFunc(func(_ context.Context, j *deploy.Job) error {
		asked++
		switch j.Request.ID {
		case "registry-down":
			return errors.New("could not verify: registry down")
		case "signed":
			return nil
		}
		return verdict
	})}
	runWorkers(t, d)
	submit := func(req deploy.Request) deploy.Job { t.Helper(); return submitWeb(t, d, req) }

	if j := submit(deploy.Request{ID: "registry-down", Digest: unsigned, Trigger: deploy.TriggerWebhook}); j.Status != deploy.StatusRefused {
		t.Fatalf("job the gate could not decide = %s, want refused", j.Status)
	}
	if got := d.Targets()[0].Refused; got != "" {
		t.Errorf("target refused digest after an undecided gate = %q, want none remembered", got)
	}
	if j := submit(deploy.Request{ID: "first", Digest: unsigned, Trigger: deploy.TriggerWebhook}); j.Status != deploy.StatusRefused || !errors.Is(verdict, deploy.ErrRejected) {
		t.Fatalf("job the gate rejected = %s %q, want refused", j.Status, j.Error)
	}
	if got := d.Targets()[0].Refused; got != unsigned {
		t.Errorf("target refused digest = %q, want %q", got, unsigned)
	}
	before := asked
	for _, req := range []deploy.Request{
		{ID: "poll", Digest: unsigned, Trigger: deploy.TriggerPoll},
		{ID: "redelivery", Digest: unsigned, Trigger: deploy.TriggerWebhook},
		{ID: "manual", Trigger: deploy.TriggerManual}, // the digest is known once resolved
	} {
		j := submit(req)
		if j.Status != deploy.StatusRefused || !strings.Contains(j.Error, "was refused") || !strings.Contains(j.Error, "no signature found") ||
			!strings.Contains(j.Error, "--force web") {
			t.Errorf("%s request for the rejected digest = %s %q, want refused, with the reason and how to ask again", req.ID, j.Status, j.Error)
		}
	}
	if asked != before {
		t.Errorf("the gate was asked %d more times about a remembered rejection, want 0", asked-before)
	}
	if j := submit(deploy.Request{ID: "forced", Digest: unsigned, Force: true}); j.Status != deploy.StatusRefused || asked != before+1 {
		t.Errorf("forced request = %s (gate asked %d times), want the gate asked again and refusing", j.Status, asked-before)
	}
	if j := submit(deploy.Request{ID: "signed", Digest: unsigned, Force: true}); j.Status != deploy.StatusSucceeded {
		t.Fatalf("forced request once signed = %s %q, want succeeded", j.Status, j.Error)
	}
	if got := d.Targets()[0].Refused; got != "" {
		t.Errorf("target refused digest after a success = %q, want forgotten", got)
	}
}

// TestRejectedDigestRememberedAcrossRestart: after a restart over the same
// state, the digest a gate rejected is still refused at Submit, without a
// pull or the gate looking again (the poll after a restart would otherwise
// pull and verify it once more), and the target shows it.
func TestRejectedDigestRememberedAcrossRestart(t *testing.T) {
	const unsigned = "sha256:unsigned"
	ctx := context.Background()
	state := newMemState(0)
	asked := 0
	start := func() *Deployer {
		t.Helper()
		s := &scripted{admit: unsigned, out: strategy.Outcome{Status: deploy.StatusSucceeded}}
		d := queueDeployer(t, Config{State: state, Strategies: map[string]Strategy{"scripted": s}}, "web")
		tg := d.targets["web"]
		tg.Strategy = "scripted"
		d.targets["web"] = tg
		d.cfg.Gates = []Gate{gateFunc(func(context.Context, *deploy.Job) error {
			asked++
			return fmt.Errorf("no signature found: %w", deploy.ErrRejected)
		})}
		if err := d.resume(ctx); err != nil {
			t.Fatalf("resume() error = %v", err)
		}
		runWorkers(t, d)
		return d
	}
	if j := submitWeb(t, start(), deploy.Request{ID: "push", Digest: unsigned, Trigger: deploy.TriggerWebhook}); j.Status != deploy.StatusRefused || asked != 1 {
		t.Fatalf("job the gate rejected = %s %q (gate asked %d times), want refused by the gate", j.Status, j.Error, asked)
	}
	d := start() // hookd restarted
	if got := d.Targets()[0].Refused; got != unsigned {
		t.Errorf("after a restart the target's refused digest = %q, want %q", got, unsigned)
	}
	j := submitWeb(t, d, deploy.Request{ID: "poll", Digest: unsigned, Trigger: deploy.TriggerPoll})
	if j.Status != deploy.StatusRefused || !strings.Contains(j.Error, "was refused") || !strings.Contains(j.Error, "no signature found") {
		t.Errorf("poll of the rejected digest after a restart = %s %q, want refused with the gate's reason", j.Status, j.Error)
	}
	if asked != 1 {
		t.Errorf("the gate was asked %d times, want once: the rejection is remembered across the restart", asked)
	}
}

// submitWeb submits req for the target "web" and waits for its one job.
func submitWeb(t *testing.T, d *Deployer, req deploy.Request) deploy.Job {
	t.Helper()
	req.Target = "web"
	jobs, err := d.Submit(context.Background(), req)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Submit(%+v) = %v, %v, want one job", req, jobs, err)
	}
	return waitJob(t, d, jobs[0].ID)
}
