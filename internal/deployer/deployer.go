// Package deployer turns deploy requests into deployed targets. It keeps
// the targets (found by its Sources and kept current from their events), a
// serial, coalescing queue per target, the workers, the job state machine
// and the journal, and it publishes every job transition as an event. How
// one kind of target is deployed, gated and rolled back is a Strategy's
// business (package containers for containers, swarmsvc for Swarm
// services), chosen per target; the deployer never calls the Engine API
// itself beyond a ping.
//
// A request travels: Submit (match targets, apply the policy, persist,
// queue) → a worker takes the target's job → runJob → the target's
// Strategy.Deploy → final status saved and published.
package deployer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// State persists what the deployer must not lose: jobs (a queued job is a
// pending request) and the journal. The bbolt store implements it.
type State interface {
	PutJob(ctx context.Context, j deploy.Job) error
	// Jobs returns matching jobs, newest first.
	Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error)
	// Job returns deploy.ErrJobNotFound when id is unknown.
	Job(ctx context.Context, id string) (deploy.Job, error)
	strategy.Journal
}

// Source finds the targets of one kind (containers, services).
type Source interface {
	Kind() string
	// List returns every target of this kind.
	List(ctx context.Context) ([]deploy.Target, error)
	// Inspect reports whether idOrName is a target; one that is gone is not
	// an error but no target.
	Inspect(ctx context.Context, idOrName string) (deploy.Target, bool, error)
	// Watch streams the ids of objects that may have changed until ctx is
	// done or the stream fails (an error on the second channel).
	Watch(ctx context.Context) (<-chan string, <-chan error)
}

// Strategy deploys, gates and rolls back one target (see package strategy).
type Strategy interface {
	Deploy(ctx context.Context, run *strategy.Run) strategy.Outcome
}

// Reconciler is a Strategy that settles at start-up what a crash left half
// done. settle records what became of an interrupted job.
type Reconciler interface {
	Reconcile(ctx context.Context, j strategy.Journal, settle func(context.Context, deploy.Step, deploy.Status) error) error
}

// Gate is a policy a deploy must pass once the strategy knows the digest
// (and the image's revision and source, where it can tell) and before
// anything is touched: a verified signature, green checks on the commit.
// An error refuses the deploy with its message. A gate may record facts
// on the job (Notes) for people to read.
type Gate interface {
	Admit(ctx context.Context, j *deploy.Job) error
}

// Config wires and tunes a Deployer. State, Ping and at least one Source
// are required; zero values of the rest select the defaults.
type Config struct {
	State State
	// Ping asks the engine whether it answers.
	Ping func(context.Context) error
	// Sources find the targets, in order of precedence: when two kinds
	// have a target of the same name, the earlier source's keeps it.
	Sources []Source
	// Strategies by name (deploy.Target.Strategy).
	Strategies map[string]Strategy
	// Gates every deploy passes after the deployer's own rule (a
	// rolled-back digest is refused unless forced), in order.
	Gates []Gate
	// Concurrency is how many targets deploy at once (default 1).
	Concurrency int
	// QueueSize bounds the queued jobs across targets (default 64).
	QueueSize int
	// DeployTimeout bounds one job, pull included (default 15m).
	DeployTimeout time.Duration
	// Metrics defaults to metrics.Discard().
	Metrics *metrics.Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// retry is how the deployer waits for an engine that does not answer, or
// whose event stream broke.
var retry = backoff.Policy{Base: 500 * time.Millisecond, Max: 30 * time.Second}

// Deployer owns the targets, the queue and the workers. Create it with New
// and start it with Run.
type Deployer struct {
	cfg     Config
	state   State
	metrics *metrics.Metrics
	log     *slog.Logger
	events  bus

	// submitMu orders the changes of the pending set that are persisted
	// (Submit, resume, a worker taking a job), so that a job's record on
	// disk and in the queue never disagree. It is held across disk writes;
	// mu never is, so target look-ups and health answers never wait on the
	// disk. Lock order: submitMu, then mu.
	submitMu sync.Mutex

	mu          sync.Mutex
	targets     map[string]deploy.Target // by name
	rolledBack  map[string]string        // target → digest its last rollback left
	rejected    map[string]rejection     // target → digest a gate last rejected
	lastWebhook map[string]time.Time     // target → when a delivery last asked for it
	discovered  bool
	started     bool
	pending     map[string]*deploy.Job // target → its one queued job
	order       []string               // targets with a pending job, oldest first
	running     map[string]string
	changed     chan struct{} // closed and replaced on every change
	lastID      uint64

	// denied is set while the engine's socket refuses hookd's user.
	denied atomic.Bool
	// working is set once start-up (reconcile, discovery, resume) is done
	// and the workers run: before, a request is accepted but not deployed.
	working atomic.Bool
	// startErr is why the last start-up attempt failed; d.mu guards it.
	startErr error
	// coalesced holds, per target, the jobs a restart found live behind
	// a newer one (see resume): they end as the target's next job ends.
	coalesced map[string][]deploy.Job
	// unsettled holds the targets whose swap has a journal entry: hookd
	// may not know what runs under the name until it is settled.
	unsettled map[string]bool
}

// New returns a Deployer. It does nothing until Run.
func New(cfg Config) (*Deployer, error) {
	switch {
	case cfg.State == nil:
		return nil, errors.New("deployer: no state")
	case cfg.Ping == nil:
		return nil, errors.New("deployer: no engine ping")
	case len(cfg.Sources) == 0:
		return nil, errors.New("deployer: no target sources")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 64
	}
	if cfg.DeployTimeout <= 0 {
		cfg.DeployTimeout = 15 * time.Minute
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Deployer{
		cfg:         cfg,
		state:       cfg.State,
		metrics:     cfg.Metrics,
		log:         cfg.Logger,
		targets:     make(map[string]deploy.Target),
		rolledBack:  make(map[string]string),
		rejected:    make(map[string]rejection),
		lastWebhook: make(map[string]time.Time),
		pending:     make(map[string]*deploy.Job),
		running:     make(map[string]string),
		changed:     make(chan struct{}),
		coalesced:   make(map[string][]deploy.Job),
		unsettled:   make(map[string]bool),
	}
	d.events.dropped = cfg.Metrics.EventsDropped
	d.events.observe(d.record)
	return d, nil
}

// Targets returns the known targets sorted by name. It does not call Docker.
func (d *Deployer) Targets() []deploy.Target {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]deploy.Target, 0, len(d.targets))
	for _, t := range d.targets {
		t.RolledBack = d.rolledBack[t.Name]
		t.Refused = d.rejected[t.Name].digest
		t.LastWebhook = d.lastWebhook[t.Name]
		out = append(out, t)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Submit queues a job for every target the request matches and returns them.
// It never waits for Docker: it matches against the known targets. A target
// that already has a queued job gets no second one; the queued job takes the
// newest request and is returned again. A request with neither Repository nor
// Target matches every target. An unforced request for the digest whose
// deploy a target rolled back gets a job that is refused at once.
//
// Submit returns deploy.ErrUnknownTarget when req.Target names no target,
// deploy.ErrQueueFull when the queue has no room for the new jobs (none is
// queued then), and an error when the jobs cannot be persisted. Returned
// jobs are persisted before Submit returns.
func (d *Deployer) Submit(ctx context.Context, req deploy.Request) ([]deploy.Job, error) {
	var want deploy.ImageRef
	if req.Repository != "" {
		r, err := deploy.ParseRef(req.Repository)
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		want = r
		want.Tag = deploy.DefaultTag
		if req.Tag != "" {
			want.Tag = req.Tag
		}
		req.Repository = want.Repository()
		req.Tag = want.Tag
	}
	if req.ReceivedAt.IsZero() {
		req.ReceivedAt = time.Now()
	}

	d.submitMu.Lock()
	defer d.submitMu.Unlock()

	d.mu.Lock()
	var matched []deploy.Target
	if req.Target != "" {
		t, ok := d.targets[req.Target]
		if !ok {
			d.mu.Unlock()
			return nil, fmt.Errorf("submit %q: %w", req.Target, deploy.ErrUnknownTarget)
		}
		if req.Repository == "" || t.Matches(want) {
			matched = append(matched, t)
		}
	} else {
		for _, t := range d.targets {
			if req.Repository == "" || t.Matches(want) {
				matched = append(matched, t)
			}
		}
	}
	sort.Slice(matched, func(a, b int) bool { return matched[a].Name < matched[b].Name })

	jobs := make([]deploy.Job, 0, len(matched))
	fresh := 0
	now := time.Now().UTC()
	for _, t := range matched {
		r := req
		r.Target = t.Name
		if why := d.refusalLocked(t.Name, req.Digest, req.Force); why != nil {
			j := d.newJobLocked(t, r, now)
			j.Status, j.Error, j.FinishedAt = deploy.StatusRefused, why.Error(), now
			jobs = append(jobs, j)
			continue
		}
		if p := d.pending[t.Name]; p != nil {
			// Coalesce: the newest request wins, but a force is never lost.
			j := p.Clone()
			r.Force = r.Force || j.Request.Force
			j.Request = r
			jobs = append(jobs, j)
			continue
		}
		fresh++
		jobs = append(jobs, d.newJobLocked(t, r, now))
	}
	if len(d.pending)+fresh > d.cfg.QueueSize {
		d.mu.Unlock()
		return nil, deploy.ErrQueueFull
	}
	d.mu.Unlock()

	// Persist outside d.mu: the disk may be slow (an SD card). submitMu
	// keeps any other change of the pending set out meanwhile.
	saved := jobs[:0:0]
	var err error
	for _, j := range jobs {
		if err = d.state.PutJob(ctx, j); err != nil {
			// Jobs persisted before this one stay queued; a retried
			// request coalesces into them.
			err = fmt.Errorf("submit %q: persist job: %w", j.Target, err)
			break
		}
		saved = append(saved, j)
	}

	d.mu.Lock()
	for _, j := range saved {
		if j.Status == deploy.StatusQueued {
			if d.pending[j.Target] == nil {
				d.order = append(d.order, j.Target)
			}
			jc := j.Clone()
			d.pending[j.Target] = &jc
		}
		if err == nil && req.Trigger == deploy.TriggerWebhook {
			d.lastWebhook[j.Target] = req.ReceivedAt
		}
	}
	d.metrics.QueuePending.Set(float64(len(d.pending)))
	d.notifyLocked()
	d.mu.Unlock()

	for _, j := range saved {
		d.events.publish(string(j.Status), j)
	}
	if err != nil {
		return nil, err
	}
	return jobs, nil
}

// newJobLocked returns a queued job of t for r. d.mu must be held.
func (d *Deployer) newJobLocked(t deploy.Target, r deploy.Request, now time.Time) deploy.Job {
	return deploy.Job{
		ID:        d.newIDLocked(),
		Target:    t.Name,
		Kind:      t.Kind,
		Request:   r,
		Image:     t.Ref.Repository() + ":" + t.Ref.Tag,
		Status:    deploy.StatusQueued,
		CreatedAt: now,
	}
}

// Jobs returns matching jobs, newest first.
func (d *Deployer) Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error) {
	jobs, err := d.state.Jobs(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// Job returns one job, or an error wrapping deploy.ErrJobNotFound.
func (d *Deployer) Job(ctx context.Context, id string) (deploy.Job, error) {
	j, err := d.state.Job(ctx, id)
	if err != nil {
		return deploy.Job{}, fmt.Errorf("job %q: %w", id, err)
	}
	return j, nil
}

// WaitJob blocks until the job is final and returns it, or returns ctx's
// error (with the job as last seen) when ctx is done first.
func (d *Deployer) WaitJob(ctx context.Context, id string) (deploy.Job, error) {
	for {
		d.mu.Lock()
		ch := d.changed
		d.mu.Unlock()
		j, err := d.Job(ctx, id)
		if err != nil {
			return deploy.Job{}, err
		}
		if j.Status.Final() {
			return j, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return j, ctx.Err()
		}
	}
}

// Subscribe returns a channel of job events with room for buf of them, and
// a function that ends the subscription. A subscriber that falls behind
// loses events, counted under name in hookd_job_events_dropped_total; it
// never slows a deploy.
func (d *Deployer) Subscribe(name string, buf int) (<-chan deploy.Event, func()) {
	return d.events.subscribe(name, buf)
}

// Ready returns nil when the engine answers a ping and start-up is done
// (interrupted swaps settled, targets discovered, queued jobs resumed):
// only then is a request deployed. While start-up keeps failing (a state
// file it cannot read), the error says why.
func (d *Deployer) Ready(ctx context.Context) error {
	if err := d.ping(ctx); err != nil {
		return fmt.Errorf("docker unreachable: %w", err)
	}
	if d.working.Load() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.startErr != nil {
		return fmt.Errorf("start-up failed: %w", d.startErr)
	}
	if !d.discovered {
		return errors.New("targets not discovered yet")
	}
	return errors.New("start-up not finished")
}

// ErrSocketDenied is Healthy's answer while the engine's socket refuses
// hookd's user: a set-up mistake that waiting does not fix.
var ErrSocketDenied = errors.New("permission denied on the Docker socket: hookd's user is not in the socket's group " +
	"(compose: group_add with DOCKER_GID, the socket's group id from stat -c %g /var/run/docker.sock; systemd: SupplementaryGroups=docker)")

// Healthy reports whether hookd can work once the engine answers: it fails
// only on what waiting does not fix, which is the socket refusing hookd's
// user (a wrong group). An engine that is down or restarting is a matter
// for Ready, not a reason to call hookd broken.
func (d *Deployer) Healthy() error {
	if d.denied.Load() {
		return ErrSocketDenied
	}
	return nil
}

// ping asks the engine whether it answers and notes whether its socket
// refused hookd's user.
func (d *Deployer) ping(ctx context.Context) error {
	err := d.cfg.Ping(ctx)
	denied := err != nil && errors.Is(err, fs.ErrPermission)
	if d.denied.Swap(denied) != denied && denied {
		d.log.Error(ErrSocketDenied.Error(), "err", err)
	}
	return err
}

// notifyLocked wakes everyone waiting for a change. d.mu must be held.
func (d *Deployer) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Deployer) notify() {
	d.mu.Lock()
	d.notifyLocked()
	d.mu.Unlock()
}

// newIDLocked returns a 16 hex digit id that sorts by creation time: 48
// bits of Unix milliseconds and 16 random bits, bumped past the last id so
// ids made in one process are unique. d.mu must be held.
func (d *Deployer) newIDLocked() string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	id := uint64(time.Now().UnixMilli())<<16 | uint64(binary.BigEndian.Uint16(b[:]))
	if id <= d.lastID {
		id = d.lastID + 1
	}
	d.lastID = id
	return fmt.Sprintf("%016x", id)
}

// saveJob persists j and wakes WaitJob callers. It is only called by the
// worker that owns j, after j left the pending set, so no Submit can race it.
func (d *Deployer) saveJob(ctx context.Context, j deploy.Job) {
	if err := d.state.PutJob(context.WithoutCancel(ctx), j); err != nil {
		d.log.Error("persist job failed", "job_id", j.ID, "target", j.Target, "err", err)
	}
	d.notify()
}

// next blocks until a job for a target that is not being deployed is
// pending, and marks the target running. It returns false when ctx is done.
func (d *Deployer) next(ctx context.Context) (deploy.Job, bool) {
	for {
		d.submitMu.Lock()
		d.mu.Lock()
		for i, n := range d.order {
			if _, busy := d.running[n]; busy {
				continue
			}
			j := *d.pending[n]
			delete(d.pending, n)
			d.order = slices.Delete(d.order, i, i+1)
			d.running[n] = j.ID
			d.metrics.QueuePending.Set(float64(len(d.pending)))
			d.mu.Unlock()
			d.submitMu.Unlock()
			return j, true
		}
		ch := d.changed
		d.mu.Unlock()
		d.submitMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return deploy.Job{}, false
		}
	}
}

// done marks target idle again.
func (d *Deployer) done(target string) {
	d.mu.Lock()
	delete(d.running, target)
	d.notifyLocked()
	d.mu.Unlock()
}

// Run reconciles what an earlier run left half done, resumes the jobs that
// were queued or running, discovers the targets, follows their events to
// keep them current and works the queue. While the engine cannot be reached
// it retries with backoff. Run returns nil once ctx is done and the workers
// have finished or safely abandoned their current step.
func (d *Deployer) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.started {
		d.mu.Unlock()
		return errors.New("deployer already running")
	}
	d.started = true
	d.mu.Unlock()

	for failures := 1; ; failures++ {
		err := d.startup(ctx)
		d.mu.Lock()
		d.startErr = err
		d.mu.Unlock()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		delay := retry.Delay(failures, 0)
		if errors.Is(err, errNoPing) {
			d.log.Warn("docker not ready, retrying", "err", err, "retry_in_seconds", delay.Seconds())
		} else {
			// The engine answers, so this is not a matter of waiting for
			// it: nothing is deployed until it is fixed.
			d.log.Error("start-up failed; nothing is deployed until it succeeds, retrying", "err", err, "retry_in_seconds", delay.Seconds())
		}
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
	d.working.Store(true)

	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Go(func() { d.work(ctx) })
	}
	d.follow(ctx)
	wg.Wait()
	return nil
}

// errNoPing marks a start-up that failed because the engine did not answer.
var errNoPing = errors.New("ping")

// startup runs once the engine answers: reconcile, discover, resume.
func (d *Deployer) startup(ctx context.Context) error {
	if err := d.ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", errNoPing, err)
	}
	if err := d.reconcile(ctx); err != nil {
		return err
	}
	if err := d.loadUnsettled(ctx); err != nil {
		return err
	}
	if err := d.relist(ctx); err != nil {
		return err
	}
	return d.resume(ctx)
}

// reconcile lets every strategy that keeps a journal settle what a crash
// left half done.
func (d *Deployer) reconcile(ctx context.Context) error {
	names := make([]string, 0, len(d.cfg.Strategies))
	for n := range d.cfg.Strategies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if r, ok := d.cfg.Strategies[n].(Reconciler); ok {
			if err := r.Reconcile(ctx, d.state, d.settle); err != nil {
				return fmt.Errorf("reconcile %s: %w", n, err)
			}
		}
	}
	return nil
}

// resume puts the jobs an earlier run left queued or running back in the
// queue, one per target. A restart may find several live jobs of a target:
// one a shutdown interrupted and one queued behind it. They coalesce as
// they would have in the queue: the newest request is deployed, with force
// if any of them asked for it (a force is never lost), and the older jobs
// stay queued until that deploy ends and then end as it did, with a note
// naming it (see finishCoalesced). None of them is reported failed: none
// failed.
func (d *Deployer) resume(ctx context.Context) error {
	jobs, err := d.state.Jobs(ctx, deploy.JobFilter{})
	if err != nil {
		return fmt.Errorf("resume jobs: %w", err)
	}
	d.submitMu.Lock()
	defer d.submitMu.Unlock()
	d.mu.Lock()
	// Replayed oldest first, the finished jobs leave each target's
	// rolled-back digest as the running deployer would have.
	for i := len(jobs) - 1; i >= 0; i-- {
		d.noteRollbackLocked(jobs[i])
	}
	// Jobs are newest first, so the first live job per target wins.
	var changed []deploy.Job
	at := map[string]int{} // target → index in changed of its pending job
	for _, j := range jobs {
		if j.Status.Final() {
			continue
		}
		p := d.pending[j.Target]
		switch {
		case p == nil:
			if j.Status == deploy.StatusRunning {
				j.Status = deploy.StatusQueued
				j.Stage = ""
			}
			jc := j
			d.pending[j.Target] = &jc
			d.order = append(d.order, j.Target)
			at[j.Target] = len(changed)
			changed = append(changed, j)
		case p.ID == j.ID:
			// submitted before Run; already queued
		default:
			if j.Request.Force && !p.Request.Force {
				p.Request.Force = true // a force is never lost
				if i, ok := at[j.Target]; ok {
					changed[i] = p.Clone()
				} else {
					at[j.Target] = len(changed)
					changed = append(changed, p.Clone())
				}
			}
			changed = append(changed, d.coalesceLocked(j, p.ID))
		}
	}
	d.metrics.QueuePending.Set(float64(len(d.pending)))
	d.notifyLocked()
	d.mu.Unlock()

	for _, j := range changed {
		if err := d.state.PutJob(ctx, j); err != nil {
			return fmt.Errorf("resume job %s: %w", j.ID, err)
		}
		d.log.Info("job resumed", "job_id", j.ID, "target", j.Target, "status", string(j.Status), "force", j.Request.Force)
	}
	return nil
}

// work runs jobs until ctx is done.
func (d *Deployer) work(ctx context.Context) {
	for {
		j, ok := d.next(ctx)
		if !ok {
			return
		}
		d.runJob(ctx, j)
		d.done(j.Target)
	}
}

// sleepCtx waits d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
