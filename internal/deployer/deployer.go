// Package deployer turns deploy requests into running containers. It finds
// the targets (running containers labelled hookd.enable=true and, on a Swarm
// manager, services labelled so), queues requests per target, pulls the
// image, recreates the container faithfully, gates the replacement on its
// health, rolls back when it is not healthy, and after a crash reconciles any
// half-done swap so that exactly one container runs under each target's
// name. A service is deployed by pinning the new digest into its spec and
// following Swarm's own rolling update and rollback (see service.go).
package deployer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// Docker is the part of the Engine API the deployer uses. *client.Client
// satisfies it. The service and task calls are only made on a swarm
// manager; elsewhere they fail with "not a swarm manager", which the
// deployer takes as "no services".
type Docker interface {
	Ping(ctx context.Context) (types.Ping, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRename(ctx context.Context, containerID, newContainerName string) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerUpdate(ctx context.Context, containerID string, updateConfig container.UpdateConfig) (container.UpdateResponse, error)
	NetworkConnect(ctx context.Context, networkID, containerID string, config *network.EndpointSettings) error
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageList(ctx context.Context, options image.ListOptions) ([]image.Summary, error)
	ImageRemove(ctx context.Context, imageID string, options image.RemoveOptions) ([]image.DeleteResponse, error)
	ServiceList(ctx context.Context, options swarm.ServiceListOptions) ([]swarm.Service, error)
	ServiceInspectWithRaw(ctx context.Context, serviceID string, options swarm.ServiceInspectOptions) (swarm.Service, []byte, error)
	ServiceUpdate(ctx context.Context, serviceID string, version swarm.Version, service swarm.ServiceSpec, options swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error)
	TaskList(ctx context.Context, options swarm.TaskListOptions) ([]swarm.Task, error)
}

var _ Docker = (*client.Client)(nil)

// Suffixes of the names hookd gives containers during a swap.
const (
	suffixNew    = ".hookd-new"
	suffixOld    = ".hookd-old"
	suffixFailed = ".hookd-failed"
)

// State persists what the deployer must not lose: jobs (a queued job is a
// pending request) and the recreate journal. The bbolt store implements it;
// New uses an in-memory one when none is given.
type State interface {
	PutJob(ctx context.Context, j deploy.Job) error
	// Jobs returns matching jobs, newest first.
	Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error)
	// Job returns ErrJobNotFound when id is unknown.
	Job(ctx context.Context, id string) (deploy.Job, error)
	PutStep(ctx context.Context, s deploy.Step) error
	Steps(ctx context.Context) ([]deploy.Step, error)
	DeleteStep(ctx context.Context, target string) error
}

// Config tunes a Deployer. Zero values select the defaults.
type Config struct {
	// HealthTimeout bounds the wait for a healthcheck to pass (default 60s);
	// the container label hookd.health-timeout (a Go duration) overrides it.
	HealthTimeout time.Duration
	// SettleTime is how long a new container must stay running, unrestarted,
	// before it is trusted (default 5s); one with a healthcheck must also
	// report healthy. The window catches a container that passes its first
	// check and dies right after. It is also the Monitor period hookd sets
	// on a Swarm service that has no update config of its own.
	SettleTime time.Duration
	// Concurrency is how many targets deploy at once (default 1).
	Concurrency int
	// QueueSize bounds the queued jobs across targets (default 64).
	QueueSize int
	// DeployTimeout bounds one job, pull included (default 15m).
	DeployTimeout time.Duration
	// Keychain finds registry credentials; nil means authn.DefaultKeychain
	// (DOCKER_CONFIG or ~/.docker/config.json and credential helpers).
	Keychain authn.Keychain
	// PruneImages removes images of a target's repository other than the
	// new and the previous one after a successful deploy, never one in use.
	PruneImages bool
	// State persists jobs and the swap journal; nil keeps them in memory.
	State State
	// Metrics defaults to metrics.Discard().
	Metrics *metrics.Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
	// SelfID is the id of hookd's own container, if it runs in one.
	SelfID string
	// LabelFilter, "key=value" or "key", narrows the targets to containers
	// and services that also carry that label: several hookd (or test runs) can share one
	// engine without touching each other's containers. Empty: no narrowing.
	LabelFilter string

	labelKey, labelValue string // LabelFilter split
	labelHasValue        bool
}

// Deployer owns the queue and the workers. Create it with New and start it
// with Run.
type Deployer struct {
	docker  Docker
	cfg     Config
	state   State
	metrics *metrics.Metrics
	log     *slog.Logger

	mu         sync.Mutex
	targets    map[string]deploy.Target // by name
	rolledBack map[string]string        // target → digest its last rollback left
	discovered bool
	started    bool
	pending    map[string]*deploy.Job // target → its one queued job
	order      []string               // targets with a pending job, oldest first
	running    map[string]string
	changed    chan struct{} // closed and replaced on every change
	lastID     uint64

	// crashAfter, set by tests, makes the worker stop dead after the named
	// step as if hookd had been killed: nothing is cleaned up or recorded.
	crashAfter func(phase string) bool
	crashed    atomic.Bool

	// Set once the reason this engine lists no services has been logged.
	saidWorker, saidManagerDown atomic.Bool

	// denied is set while the engine's socket refuses hookd's user.
	denied atomic.Bool
}

// New returns a Deployer that talks to docker. It does nothing until Run.
func New(docker Docker, cfg Config) *Deployer {
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 60 * time.Second
	}
	if cfg.SettleTime <= 0 {
		cfg.SettleTime = 5 * time.Second
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
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	if cfg.State == nil {
		cfg.State = newMemState(defaultHistory)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.labelKey, cfg.labelValue, cfg.labelHasValue = strings.Cut(cfg.LabelFilter, "=")
	return &Deployer{
		docker:     docker,
		cfg:        cfg,
		state:      cfg.State,
		metrics:    cfg.Metrics,
		log:        cfg.Logger,
		targets:    make(map[string]deploy.Target),
		rolledBack: make(map[string]string),
		pending:    make(map[string]*deploy.Job),
		running:    make(map[string]string),
		changed:    make(chan struct{}),
	}
}

// Targets returns the known targets sorted by name. It does not call Docker.
func (d *Deployer) Targets() []deploy.Target {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]deploy.Target, 0, len(d.targets))
	for _, t := range d.targets {
		t.RolledBack = d.rolledBack[t.Name]
		out = append(out, t)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Submit queues a job for every target the request matches and returns them.
// It never waits for Docker: it matches against the known targets. A target
// that already has a queued job gets no second one; the queued job takes the
// newest request and is returned again. A request with neither Repository nor
// Target matches every target.
//
// Submit returns ErrUnknownTarget when req.Target names no target,
// ErrQueueFull when the queue has no room for the new jobs (none is queued
// then), and an error when the jobs cannot be persisted. Returned jobs are
// persisted before Submit returns.
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

	d.mu.Lock()
	defer d.mu.Unlock()
	var names []string
	if req.Target != "" {
		t, ok := d.targets[req.Target]
		if !ok {
			return nil, fmt.Errorf("submit %q: %w", req.Target, deploy.ErrUnknownTarget)
		}
		if req.Repository == "" || t.Image == want.Repository() && t.Tag == want.Tag {
			names = append(names, t.Name)
		}
	} else {
		for name, t := range d.targets {
			if req.Repository == "" || t.Image == want.Repository() && t.Tag == want.Tag {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)

	fresh := 0
	for _, n := range names {
		if d.pending[n] == nil {
			fresh++
		}
	}
	if len(d.pending)+fresh > d.cfg.QueueSize {
		return nil, deploy.ErrQueueFull
	}

	jobs := make([]deploy.Job, 0, len(names))
	for _, n := range names {
		t := d.targets[n]
		var j deploy.Job
		if p := d.pending[n]; p != nil {
			// Coalesce: the newest request wins, but a force is never lost.
			j = *p
			force := j.Request.Force || req.Force
			j.Request = req
			j.Request.Force = force
			j.Request.Target = n
		} else {
			r := req
			r.Target = n
			j = deploy.Job{
				ID:        d.newID(),
				Target:    n,
				Kind:      t.Kind,
				Request:   r,
				Image:     t.Ref.Repository() + ":" + t.Ref.Tag,
				Status:    deploy.StatusQueued,
				CreatedAt: time.Now().UTC(),
			}
		}
		if err := d.state.PutJob(ctx, j); err != nil {
			// Jobs persisted before this one stay queued; a retried
			// request coalesces into them.
			d.metrics.QueuePending.Set(float64(len(d.pending)))
			d.notifyLocked()
			return nil, fmt.Errorf("submit %q: persist job: %w", n, err)
		}
		if d.pending[n] == nil {
			d.order = append(d.order, n)
		}
		jc := j.Clone()
		d.pending[n] = &jc
		jobs = append(jobs, j)
	}
	d.metrics.QueuePending.Set(float64(len(d.pending)))
	d.notifyLocked()
	return jobs, nil
}

// Jobs returns matching jobs, newest first.
func (d *Deployer) Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error) {
	jobs, err := d.state.Jobs(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// Job returns one job, or an error wrapping ErrJobNotFound.
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

// Ready returns nil when the engine answers a ping and the targets have
// been discovered.
func (d *Deployer) Ready(ctx context.Context) error {
	if err := d.ping(ctx); err != nil {
		return fmt.Errorf("docker unreachable: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.discovered {
		return errors.New("targets not discovered yet")
	}
	return nil
}

// Idle reports whether no deploy is queued or running.
func (d *Deployer) Idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending) == 0 && len(d.running) == 0
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
	_, err := d.docker.Ping(ctx)
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

// newID returns a 16 hex digit id that sorts by creation time: 48 bits of
// Unix milliseconds and 16 random bits, bumped past the last id so ids made
// in one process are unique. d.mu must be held.
func (d *Deployer) newID() string {
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
	d.mu.Lock()
	d.notifyLocked()
	d.mu.Unlock()
}

// next blocks until a job for a target that is not being deployed is
// pending, and marks the target running. It returns false when ctx is done.
func (d *Deployer) next(ctx context.Context) (deploy.Job, bool) {
	for {
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
			return j, true
		}
		ch := d.changed
		d.mu.Unlock()
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
// were queued or running, discovers the targets, follows Docker's event
// stream to keep them current and works the queue. While the engine cannot
// be reached it retries with backoff. Run returns nil once ctx is done and
// the workers have finished or safely abandoned their current step.
func (d *Deployer) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.started {
		d.mu.Unlock()
		return errors.New("deployer already running")
	}
	d.started = true
	d.mu.Unlock()

	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	for {
		err := d.startup(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		delay := bo.next()
		d.log.Warn("docker not ready, retrying", "err", err, "retry_in_seconds", delay.Seconds())
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}

	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(ctx)
		}()
	}
	d.follow(ctx)
	wg.Wait()
	return nil
}

// startup runs once the engine answers: reconcile, discover, resume.
func (d *Deployer) startup(ctx context.Context) error {
	if err := d.ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if err := d.reconcile(ctx); err != nil {
		return err
	}
	if err := d.relist(ctx); err != nil {
		return err
	}
	return d.resume(ctx)
}

// resume puts the jobs an earlier run left queued or running back in the
// queue, one per target (the newest; older ones are marked superseded).
func (d *Deployer) resume(ctx context.Context) error {
	jobs, err := d.state.Jobs(ctx, deploy.JobFilter{})
	if err != nil {
		return fmt.Errorf("resume jobs: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Replayed oldest first, the finished jobs leave each target's
	// rolled-back digest as the running deployer would have.
	for i := len(jobs) - 1; i >= 0; i-- {
		d.noteRollbackLocked(jobs[i])
	}
	// Jobs are newest first, so the first live job per target wins.
	for _, j := range jobs {
		if j.Status.Final() {
			continue
		}
		if p := d.pending[j.Target]; p != nil && p.ID != j.ID {
			j.Status = deploy.StatusFailed
			j.Error = "superseded by job " + p.ID
			j.FinishedAt = time.Now().UTC()
		} else if p == nil {
			if j.Status == deploy.StatusRunning {
				j.Status = deploy.StatusQueued
			}
			jc := j
			d.pending[j.Target] = &jc
			d.order = append(d.order, j.Target)
		} else {
			continue // submitted before Run; already queued
		}
		if err := d.state.PutJob(ctx, j); err != nil {
			return fmt.Errorf("resume job %s: %w", j.ID, err)
		}
		d.log.Info("job resumed", "job_id", j.ID, "target", j.Target, "status", string(j.Status))
	}
	d.metrics.QueuePending.Set(float64(len(d.pending)))
	d.notifyLocked()
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
		if d.crashed.Load() {
			return // "killed": leave everything as it is
		}
		d.done(j.Target)
	}
}

type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

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
