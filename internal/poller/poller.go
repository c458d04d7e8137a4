// Package poller is hookd's fallback for lost webhooks. When a target has
// heard no webhook for the poll interval (the deployer stamps
// Target.LastWebhook when it accepts a delivery's request), and once at
// start-up to catch up on what happened while hookd was down, it asks the
// registry for the tag's current digest with a HEAD request and submits a
// deploy request with trigger "poll" when the target does not run it.
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
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
	// Now defaults to time.Now. Timers run on real time, so a replacement
	// must advance with it.
	Now func() time.Time
	// Digests, when set, keeps the digests each target last accepted as
	// unchanged across restarts.
	Digests DigestStore
}

const (
	// maxShare is the longest a HEAD result is reused for other targets
	// following the same repo:tag (half the interval when that is shorter).
	maxShare = 5 * time.Second
	// maxSpread bounds the window over which the first checks of newly seen
	// targets are spread (a tenth of the interval when that is shorter).
	maxSpread = 10 * time.Second
	// maxRefresh is how often the target list is re-read at least.
	maxRefresh = 10 * time.Second
	// checkTimeout bounds one registry check.
	checkTimeout = time.Minute
	// platformCacheSize bounds the remembered ref@digest → config digest
	// resolutions (they never change, so any entry stays valid).
	platformCacheSize = 128
)

// Poller schedules the registry checks. Create it with New, start it with
// Run.
type Poller struct {
	interval time.Duration
	jitter   float64
	metrics  *metrics.Metrics
	log      *slog.Logger
	now      func() time.Time
	digests  DigestStore
	targets  TargetSource
	submit   Submitter
	reg      Registry

	running atomic.Bool
	wake    chan struct{} // a check finished: recompute the schedule
	wg      sync.WaitGroup

	mu          sync.Mutex
	entries     map[string]*entry    // by target name
	memory      map[string]*memory   // by target name + "|" + repo:tag; survives a target vanishing
	refs        map[string]*refState // by repo:tag
	platforms   map[string]platform  // by repo:tag@digest
	lastRefresh time.Time            // zero until the first refresh
}

// entry is the schedule of one target.
type entry struct {
	target   deploy.Target
	ref      string // repo:tag
	next     time.Time
	heard    time.Time // the LastWebhook next was last pushed back for
	inFlight bool
	mem      *memory
}

// memory is what the poller knows about one target following one ref.
type memory struct {
	key    string
	loaded bool
	good   string // digest last judged to be what the target runs
}

// platform is what a digest resolved to for this host. Both outcomes are
// permanent: a digest's content never changes.
type platform struct {
	config string
	err    error // wraps registry.ErrNoPlatform
}

// refState is shared by the targets following one repo:tag.
type refState struct {
	inFlight bool
	desc     registry.Descriptor
	at       time.Time // when desc was fetched; zero when none
	fails    int       // consecutive failed look-ups
}

// New returns a Poller that reads targets from targets, submits to submit and
// looks digests up in reg. It does nothing until Run.
func New(cfg Config, targets TargetSource, submit Submitter, reg Registry) *Poller {
	jitter := cfg.Jitter
	switch {
	case jitter == 0:
		jitter = 0.1
	case jitter < 0:
		jitter = 0
	case jitter > 0.5:
		jitter = 0.5
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Poller{
		interval:  max(cfg.Interval, 0),
		jitter:    jitter,
		metrics:   cfg.Metrics,
		log:       cfg.Logger,
		now:       cfg.Now,
		digests:   cfg.Digests,
		targets:   targets,
		submit:    submit,
		reg:       reg,
		wake:      make(chan struct{}, 1),
		entries:   make(map[string]*entry),
		memory:    make(map[string]*memory),
		refs:      make(map[string]*refState),
		platforms: make(map[string]platform),
	}
}

// Run checks every target once soon after start-up (spread over a few
// seconds), then whenever a target has been silent for the interval. It
// returns nil once ctx is done and every check has finished, at once when
// polling is off, and an error when called twice.
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
		timer.Reset(max(wakeAt.Sub(p.now()), time.Millisecond))
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
	e, ok := p.entries[target]
	if !ok {
		return time.Time{}, false
	}
	return e.next, true
}

// jittered returns the interval, spread by ±jitter.
func (p *Poller) jittered() time.Duration {
	if p.jitter == 0 {
		return p.interval
	}
	f := 1 + p.jitter*(2*rand.Float64()-1)
	return time.Duration(float64(p.interval) * f)
}

func (p *Poller) shareWindow() time.Duration  { return min(maxShare, p.interval/2) }
func (p *Poller) spreadWindow() time.Duration { return min(maxSpread, p.interval/10) }
func (p *Poller) refreshEvery() time.Duration { return min(maxRefresh, p.interval) }

// tick refreshes the target list when due, starts the checks that are due
// and returns when it wants to run again.
func (p *Poller) tick(ctx context.Context) time.Time {
	now := p.now()
	p.mu.Lock()
	refresh := p.lastRefresh.IsZero() || now.Sub(p.lastRefresh) >= p.refreshEvery()
	p.mu.Unlock()
	if refresh {
		p.refresh(ctx, now)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	due := make(map[string][]string) // ref → target names
	for name, e := range p.entries {
		if e.inFlight || e.next.After(now) || p.refs[e.ref] != nil && p.refs[e.ref].inFlight {
			continue
		}
		due[e.ref] = append(due[e.ref], name)
	}
	// Targets following a ref that is checked now join when they would be
	// due shortly anyway: one look-up serves them all, and afterwards they
	// share one schedule.
	for name, e := range p.entries {
		names, ok := due[e.ref]
		if ok && !e.inFlight && e.next.After(now) && e.next.Sub(now) <= p.shareWindow() {
			due[e.ref] = append(names, name)
		}
	}
	for ref, names := range due {
		slices.Sort(names) // deterministic order of requests and logs
		rs := p.refs[ref]
		if rs == nil {
			rs = &refState{}
			p.refs[ref] = rs
		}
		rs.inFlight = true
		for _, n := range names {
			p.entries[n].inFlight = true
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.check(ctx, ref, names)
		}()
	}

	wakeAt := p.lastRefresh.Add(p.refreshEvery())
	for _, e := range p.entries {
		if e.inFlight || p.refs[e.ref] != nil && p.refs[e.ref].inFlight {
			continue // the check's end wakes the loop
		}
		if e.next.Before(wakeAt) {
			wakeAt = e.next
		}
	}
	return wakeAt
}

// refresh re-reads the targets: new ones get a first check soon, spread
// over a few seconds per repo:tag; vanished ones are dropped.
func (p *Poller) refresh(ctx context.Context, now time.Time) {
	list := p.targets.Targets()

	// Load what the store remembers for targets not seen before, outside
	// the lock: it is I/O.
	p.mu.Lock()
	var load []*memory
	for _, t := range list {
		key := memKey(t)
		if m, ok := p.memory[key]; !ok {
			m = &memory{key: key}
			p.memory[key] = m
			load = append(load, m)
		}
	}
	p.mu.Unlock()
	for _, m := range load {
		good := p.loadMemory(ctx, m.key)
		p.mu.Lock()
		if !m.loaded {
			m.good, m.loaded = good, true
		}
		p.mu.Unlock()
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastRefresh = now
	seen := make(map[string]bool, len(list))
	var fresh []*entry
	for _, t := range list {
		seen[t.Name] = true
		ref := t.Image + ":" + t.Tag
		e, ok := p.entries[t.Name]
		if ok && e.ref == ref {
			e.target = t
			p.heardLocked(e)
			continue
		}
		// New, or now following another ref: its own schedule starts over.
		e = &entry{target: t, ref: ref, mem: p.memory[memKey(t)]}
		if ok && p.entries[t.Name].inFlight {
			e.inFlight = true // the running check clears it
		}
		p.entries[t.Name] = e
		fresh = append(fresh, e)
	}
	for name := range p.entries {
		if !seen[name] {
			delete(p.entries, name)
		}
	}
	// Forget memory and look-ups nobody follows any more, so the maps stay
	// as small as the target list. A target that vanishes only for a
	// recreate is kept: the deployer lists it while it swaps it.
	following := make(map[string]bool)
	for _, e := range p.entries {
		following[e.ref] = true
	}
	for ref, rs := range p.refs {
		if !following[ref] && !rs.inFlight {
			delete(p.refs, ref)
		}
	}
	if len(p.memory) > 4*len(p.entries)+16 {
		for key := range p.memory {
			if !p.isFollowedLocked(key) {
				delete(p.memory, key)
			}
		}
	}

	// Spread the first checks: one slot per distinct ref, in list order.
	var order []string
	slot := make(map[string]int)
	for _, e := range fresh {
		if _, ok := slot[e.ref]; !ok {
			slot[e.ref] = len(order)
			order = append(order, e.ref)
		}
	}
	for _, e := range fresh {
		e.next = now.Add(p.spreadWindow() * time.Duration(slot[e.ref]) / time.Duration(len(order)))
		p.heardLocked(e)
	}
}

// heardLocked pushes e's next check back to an interval after the last
// webhook that asked for its target: while deliveries arrive, the registry
// is not asked.
func (p *Poller) heardLocked(e *entry) {
	if !e.target.LastWebhook.After(e.heard) {
		return
	}
	e.heard = e.target.LastWebhook
	if next := e.heard.Add(p.jittered()); e.next.Before(next) {
		e.next = next
	}
}

func (p *Poller) isFollowedLocked(key string) bool {
	for _, e := range p.entries {
		if e.mem != nil && e.mem.key == key {
			return true
		}
	}
	return false
}

func memKey(t deploy.Target) string { return t.Name + "|" + t.Image + ":" + t.Tag }

// storeKey is "poll/<target>|<repo>:<tag>/good".
func storeKey(memKey string) string { return "poll/" + memKey + "/good" }

func (p *Poller) loadMemory(ctx context.Context, key string) (good string) {
	if p.digests == nil {
		return ""
	}
	good, err := p.digests.Digest(ctx, storeKey(key))
	if err != nil {
		p.log.Warn("read remembered digest failed", "key", key, "err", err)
	}
	return good
}

// rememberGood sets mem's unchanged digest and keeps it across restarts.
func (p *Poller) rememberGood(ctx context.Context, mem *memory, digest string) {
	p.mu.Lock()
	mem.good = digest
	p.mu.Unlock()
	if p.digests == nil {
		return
	}
	if err := p.digests.PutDigest(ctx, storeKey(mem.key), digest); err != nil {
		p.log.Warn("remember digest failed", "key", mem.key, "err", err)
	}
}

// verdict is the outcome of one check for one target.
type verdict struct {
	name    string
	target  deploy.Target
	mem     *memory
	outcome string
}

// check looks ref up once and decides for every target in names. It ends
// when the deploys it asked for end, so that no later check asks again
// while they run.
func (p *Poller) check(ctx context.Context, ref string, names []string) {
	defer p.finish(ref, names)
	lookCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()

	desc, err := p.head(lookCtx, ref)
	if lookCtx.Err() != nil {
		return // shutting down: no verdict
	}

	p.mu.Lock()
	vs := make([]verdict, 0, len(names))
	for _, n := range names {
		if e, ok := p.entries[n]; ok && e.ref == ref {
			vs = append(vs, verdict{name: n, target: e.target, mem: e.mem})
		}
	}
	p.mu.Unlock()

	if err != nil {
		outcome := p.lookupFailed(ref, err)
		for range vs {
			p.metrics.PollChecks.WithLabelValues(outcome).Inc()
		}
		return
	}
	if desc.Digest == "" {
		// Never compare against "": it would match a target whose running
		// digest is unknown.
		p.log.Warn("registry answered without a digest", "image", ref)
		for range vs {
			p.metrics.PollChecks.WithLabelValues(metrics.PollError).Inc()
		}
		return
	}
	p.lookupOK(ref)

	for i := range vs {
		vs[i].outcome = p.judge(lookCtx, ref, desc.Digest, vs[i].target, vs[i].mem)
		if vs[i].outcome != metrics.PollChanged {
			p.metrics.PollChecks.WithLabelValues(vs[i].outcome).Inc()
		}
	}
	var jobs []deploy.Job
	for _, v := range vs {
		if v.outcome == metrics.PollChanged {
			p.metrics.PollChecks.WithLabelValues(metrics.PollChanged).Inc()
			jobs = append(jobs, p.deploy(ctx, v, desc.Digest)...)
		}
	}
	for _, j := range jobs {
		if _, err := p.submit.WaitJob(ctx, j.ID); err != nil && ctx.Err() == nil {
			p.log.Warn("wait for poll job failed", "target", j.Target, "job_id", j.ID, "err", err)
		}
	}
}

// finish ends a check: the targets get their next time (one for all of
// them, so that they keep sharing look-ups) and the loop is woken.
func (p *Poller) finish(ref string, names []string) {
	next := p.now().Add(p.jittered())
	p.mu.Lock()
	if rs := p.refs[ref]; rs != nil {
		rs.inFlight = false
	}
	for _, n := range names {
		if e, ok := p.entries[n]; ok {
			e.inFlight = false
			if e.ref == ref && e.next.Before(next) {
				e.next = next
			}
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// head returns ref's current descriptor, reusing a look-up made within the
// share window.
func (p *Poller) head(ctx context.Context, ref string) (registry.Descriptor, error) {
	p.mu.Lock()
	rs := p.refs[ref]
	if rs != nil && !rs.at.IsZero() && p.now().Sub(rs.at) < p.shareWindow() {
		desc := rs.desc
		p.mu.Unlock()
		return desc, nil
	}
	p.mu.Unlock()

	desc, err := p.reg.Head(ctx, ref)
	if err != nil {
		return registry.Descriptor{}, fmt.Errorf("look up %s: %w", ref, err)
	}
	p.mu.Lock()
	if rs := p.refs[ref]; rs != nil {
		rs.desc, rs.at = desc, p.now()
	}
	p.mu.Unlock()
	return desc, nil
}

// judge decides whether target must be deployed for digest. It returns
// metrics.PollUnchanged, PollChanged, PollError or PollRateLimited.
func (p *Poller) judge(ctx context.Context, ref, digest string, t deploy.Target, mem *memory) string {
	p.mu.Lock()
	good := mem.good
	p.mu.Unlock()
	log := p.log.With("target", t.Name, "image", ref, "digest", digest)
	switch digest {
	case t.Digest, good:
		log.Debug("digest unchanged")
		return metrics.PollUnchanged
	case t.RolledBack:
		// The deployer owns this rule and would refuse the request; reading
		// its word here only spares a refused job every interval.
		log.Debug("digest was rolled back on this target, left to a new digest or a forced deploy")
		return metrics.PollUnchanged
	}

	config, cached, err := p.platform(ctx, ref+"@"+digest)
	switch {
	case err == nil:
	case isRateLimited(err):
		log.Debug("platform look-up refused", "err", err)
		return metrics.PollRateLimited
	case cached:
		// Reported when it was first seen; it stays so until the tag moves.
		log.Debug("platform look-up failed", "err", err)
		return metrics.PollError
	default:
		log.Warn("platform look-up failed", "err", err)
		return metrics.PollError
	}
	if t.ImageID != "" && config == t.ImageID {
		// The index changed (attestations, another platform) but not this
		// host's image: nothing to pull. Remembering the digest makes the
		// next check a single HEAD.
		log.Debug("index digest changed, image unchanged")
		p.rememberGood(ctx, mem, digest)
		return metrics.PollUnchanged
	}
	return metrics.PollChanged
}

// platform resolves ref@digest to the config digest of this host's image.
// Answers that cannot change (the digest's content is fixed) are remembered:
// the config digest, or that the index has no manifest for this platform;
// cached reports whether the answer came from memory.
func (p *Poller) platform(ctx context.Context, ref string) (config string, cached bool, err error) {
	p.mu.Lock()
	pl, ok := p.platforms[ref]
	p.mu.Unlock()
	if ok {
		return pl.config, true, pl.err
	}
	_, config, err = p.reg.Platform(ctx, ref)
	if err != nil {
		err = fmt.Errorf("resolve platform of %s: %w", ref, err)
		if !errors.Is(err, registry.ErrNoPlatform) {
			return "", false, err
		}
	}
	p.mu.Lock()
	if len(p.platforms) >= platformCacheSize {
		clear(p.platforms)
	}
	p.platforms[ref] = platform{config: config, err: err}
	p.mu.Unlock()
	return config, false, err
}

// deploy submits the new digest for one target and returns the jobs. Nothing
// is remembered: as long as the target does not run the digest (and did not
// roll it back), the next check submits it again.
func (p *Poller) deploy(ctx context.Context, v verdict, digest string) []deploy.Job {
	now := p.now()
	req := deploy.Request{
		Repository: v.target.Image,
		Tag:        v.target.Tag,
		Digest:     digest,
		Target:     v.name,
		Trigger:    deploy.TriggerPoll,
		ID:         "poll-" + strconv.FormatInt(now.Unix(), 10) + "-" + v.name,
		ReceivedAt: now,
	}
	log := p.log.With("target", v.name, "image", v.target.Image+":"+v.target.Tag, "digest", digest)
	log.Info("new digest found by poll")
	jobs, err := p.submit.Submit(ctx, req)
	if err != nil {
		log.Warn("submit polled digest failed", "err", err)
		return nil
	}
	for _, j := range jobs {
		log.Debug("poll job queued", "job_id", j.ID)
	}
	return jobs
}

// lookupFailed records a failed look-up of ref and returns its outcome. A
// registry that stays down is reported once per backoff step, not per tick:
// a failure that started a backoff warns, the refusals while it lasts are
// debug, and failures the client does not back off from (not found,
// unauthorised) warn on the first and then at every doubling of the count.
func (p *Poller) lookupFailed(ref string, err error) string {
	p.mu.Lock()
	fails := 1
	if rs := p.refs[ref]; rs != nil {
		rs.fails++
		fails = rs.fails
	}
	p.mu.Unlock()
	outcome := metrics.PollError
	if isRateLimited(err) {
		outcome = metrics.PollRateLimited
	}
	switch {
	case isRefused(err):
		p.log.Debug("registry look-up held back", "image", ref, "err", err)
	case startedBackoff(err), fails&(fails-1) == 0: // a new backoff step, or a power of two
		p.log.Warn("registry look-up failed", "image", ref, "failures", fails, "err", err)
	default:
		p.log.Debug("registry look-up failed", "image", ref, "failures", fails, "err", err)
	}
	return outcome
}

func (p *Poller) lookupOK(ref string) {
	p.mu.Lock()
	fails := 0
	if rs := p.refs[ref]; rs != nil {
		fails, rs.fails = rs.fails, 0
	}
	p.mu.Unlock()
	if fails > 0 {
		p.log.Info("registry look-up works again", "image", ref, "failures", fails)
	}
}

// isRefused reports whether err is the registry client declining to send
// anything because it is waiting out a Retry-After, a backoff or a
// rate-limit budget.
func isRefused(err error) bool {
	var we *registry.WaitError
	return errors.As(err, &we) && we.Cause == nil
}

// isRateLimited reports whether err means "slow down": the client refused
// to send, or the registry answered 429 or announced an exhausted budget.
func isRateLimited(err error) bool {
	return isRefused(err) || errors.Is(err, registry.ErrRateLimited)
}

// startedBackoff reports whether err is a failure that made the client
// start (or extend) a backoff: each such failure is one backoff step.
func startedBackoff(err error) bool {
	var we *registry.WaitError
	return errors.As(err, &we) && we.Cause != nil
}
