// Package poller is hookd's fallback for lost webhooks. It keeps one
// schedule per image reference (repo:tag) that targets follow. When the
// targets following a reference have heard no webhook for the poll
// interval (the deployer stamps Target.LastWebhook when it accepts a
// delivery's request), and once at start-up to catch up on what happened
// while hookd was down, it asks the registry for the tag's current digest
// with one HEAD request and submits a deploy request with trigger "poll"
// for every target following it that does not run that digest. A check
// ends when the deploys it asked for end, so a slow deploy is asked for
// once; after a failed look-up the reference waits as long as the registry
// client says it will refuse to ask.
//
// A check of an unchanged tag costs one HEAD (plus a token request when the
// registry wants one): no manifest body, no layer. When only the index digest
// of a multi-arch tag changed but this host's image did not (an
// attestation-only rebuild), nothing is submitted and the new index digest
// is remembered, so the next check is a single HEAD again. A digest whose
// deploy the target rolled back is left alone: the deployer would refuse it.
package poller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
)

// TargetSource lists the targets to poll for. *deployer.Deployer satisfies it.
type TargetSource interface {
	Targets() []deploy.Target
}

// Submitter queues deploy requests and says when their jobs end.
// *deployer.Deployer satisfies it.
type Submitter interface {
	Submit(ctx context.Context, req deploy.Request) ([]deploy.Job, error)
	// WaitJob blocks until the job is final or ctx is done.
	WaitJob(ctx context.Context, id string) (deploy.Job, error)
}

// Registry looks up digests. *registry.Client satisfies it.
type Registry interface {
	// Head returns the current descriptor of ref ("repo:tag") without
	// fetching the manifest body.
	Head(ctx context.Context, ref string) (registry.Descriptor, error)
	// Platform resolves ref ("repo:tag@digest") to this host's platform
	// manifest digest and its config digest, which is the Docker image id.
	Platform(ctx context.Context, ref string) (manifestDigest, configDigest string, err error)
}

// DigestStore remembers digests across restarts. *store.Store satisfies it.
// Digest returns "" for an unknown key.
type DigestStore interface {
	PutDigest(ctx context.Context, key, digest string) error
	Digest(ctx context.Context, key string) (string, error)
}

// Config tunes a Poller. Zero values select the defaults.
type Config struct {
	// Interval is how long a target must have been silent (no webhook
	// asking for it) before the registry is asked. 0 turns polling off.
	Interval time.Duration
	// Jitter spreads the checks by ±Jitter·Interval (default 0.1, at most
	// 0.5); a negative value turns jitter off.
	Jitter float64
	// Metrics defaults to metrics.Discard().
	Metrics *metrics.Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Digests, when set, keeps the digests each target last accepted as
	// unchanged across restarts.
	Digests DigestStore
}

// Poller schedules the registry checks. Create it with New, start it with
// Run.
type Poller struct {
	interval time.Duration
	// wait is the rule for a ref's wait between checks: the interval,
	// jittered, or after a failed look-up what the registry client said it
	// will refuse for (capped at a day). It does not double per failure:
	// the client's per-registry backoff does, and doubling here as well
	// would compound the two.
	wait    backoff.Policy
	metrics *metrics.Metrics
	log     *slog.Logger
	digests DigestStore
	targets TargetSource
	submit  Submitter
	reg     Registry

	running atomic.Bool
	wake    chan struct{} // a check finished: recompute the schedule
	wg      sync.WaitGroup

	mu        sync.Mutex
	refs      map[string]*ref     // by repo:tag
	platforms map[string]platform // by repo:tag@digest
}

// New returns a Poller that reads targets from targets, submits to submit and
// looks digests up in reg. It does nothing until Run.
func New(cfg Config, targets TargetSource, submit Submitter, reg Registry) *Poller {
	interval := max(cfg.Interval, 0)
	jitter := cfg.Jitter // the policy takes a negative one as none and caps it at 0.5
	if jitter == 0 {
		jitter = 0.1
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Poller{
		interval:  interval,
		wait:      backoff.Policy{Base: interval, Max: interval, Jitter: jitter, MaxRetryAfter: maxRetryAfter},
		metrics:   cfg.Metrics,
		log:       cfg.Logger,
		digests:   cfg.Digests,
		targets:   targets,
		submit:    submit,
		reg:       reg,
		wake:      make(chan struct{}, 1),
		refs:      make(map[string]*ref),
		platforms: make(map[string]platform),
	}
}

// Run checks every image reference once soon after start-up (spread over a
// few seconds), then whenever its targets have been silent for the
// interval. It returns nil once ctx is done and every check has finished, at
// once when polling is off, and an error when called twice.
func (p *Poller) Run(ctx context.Context) error {
	if p.interval <= 0 {
		p.log.Info("registry polling off")
		return nil
	}
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("poller already running")
	}
	defer p.wg.Wait()
	p.log.Info("registry polling on", "interval_seconds", p.interval.Seconds())

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wakeAt := p.tick(ctx)
		timer.Reset(max(time.Until(wakeAt), time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-p.wake:
		}
	}
}

// NextPoll returns when target is due to be checked next; false when polling
// is off or the target is unknown to the poller.
func (p *Poller) NextPoll(target string) (time.Time, bool) {
	if p.interval <= 0 {
		return time.Time{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.refs {
		if r.follows(target) {
			return r.next, true
		}
	}
	return time.Time{}, false
}
