package poller

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
)

// checkTimeout bounds one check's registry requests.
const checkTimeout = time.Minute

// errNoDigest: the registry answered a look-up without a digest. It is
// never compared against: "" would match a target whose running digest is
// unknown.
var errNoDigest = errors.New("registry answered without a digest")

// check judges the targets of r called names against reuse, or against a
// new look-up of r when reuse is nil, and submits a deploy for each that
// does not run the digest. It ends when the deploys it asked for end, so
// that no later check asks again while they run.
func (p *Poller) check(ctx context.Context, r *ref, names []string, reuse *registry.Descriptor) {
	var lookErr error
	defer func() { p.finish(r, reuse == nil, lookErr) }()
	lookCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()

	var desc registry.Descriptor
	if reuse != nil {
		desc = *reuse
	} else {
		desc, lookErr = p.lookUp(lookCtx, r)
		if lookCtx.Err() != nil {
			return // shutting down, or the registry hung: no verdict
		}
		if lookErr != nil {
			p.metrics.PollChecks.WithLabelValues(outcome(lookErr)).Add(float64(len(names)))
			return
		}
	}

	p.mu.Lock()
	var ts []deploy.Target
	for _, t := range r.targets {
		if slices.Contains(names, t.Name) {
			ts = append(ts, t)
		}
	}
	p.mu.Unlock()

	var changed []deploy.Target
	for _, t := range ts {
		o := p.judge(lookCtx, r, desc.Digest, t)
		p.metrics.PollChecks.WithLabelValues(o).Inc()
		if o == metrics.PollChanged {
			changed = append(changed, t)
		}
	}
	var jobs []deploy.Job
	for _, t := range changed {
		jobs = append(jobs, p.deploy(ctx, t, desc.Digest)...)
	}
	for _, j := range jobs {
		if _, err := p.submit.WaitJob(ctx, j.ID); err != nil && ctx.Err() == nil {
			p.log.Warn("wait for poll job failed", "target", j.Target, "job_id", j.ID, "err", err)
		}
	}
}

// lookUp asks the registry for r's current descriptor and records the
// answer on r. A registry that stays down is reported once per backoff step,
// not per check: a failure that started a backoff warns, the refusals while
// it lasts are debug, and failures the client does not back off from (not
// found, unauthorised) warn on the first and then at every doubling of the
// count.
func (p *Poller) lookUp(ctx context.Context, r *ref) (registry.Descriptor, error) {
	desc, err := p.reg.Head(ctx, r.name)
	if err == nil && desc.Digest == "" {
		err = errNoDigest
	}
	if ctx.Err() != nil {
		return desc, ctx.Err()
	}
	p.mu.Lock()
	fails := r.failures
	if err != nil {
		r.failures++
		fails = r.failures
		r.at = time.Time{}
	} else {
		r.failures = 0
		r.desc, r.at = desc, time.Now()
	}
	p.mu.Unlock()

	switch {
	case err == nil && fails > 0:
		p.log.Info("registry look-up works again", "image", r.name, "failures", fails)
	case err == nil:
	case isRefused(err):
		p.log.Debug("registry look-up held back", "image", r.name, "err", err)
	case startedBackoff(err), fails&(fails-1) == 0: // a new backoff step, or a power of two
		p.log.Warn("registry look-up failed", "image", r.name, "failures", fails, "err", err)
	default:
		p.log.Debug("registry look-up failed", "image", r.name, "failures", fails, "err", err)
	}
	return desc, err
}

// judge decides whether t must be deployed for digest. It returns
// metrics.PollUnchanged, PollChanged, PollError or PollRateLimited.
func (p *Poller) judge(ctx context.Context, r *ref, digest string, t deploy.Target) string {
	p.mu.Lock()
	good := r.good[t.Name]
	p.mu.Unlock()
	log := p.log.With("target", t.Name, "image", r.name, "digest", digest)
	switch digest {
	case t.Digest, good:
		log.Debug("digest unchanged")
		return metrics.PollUnchanged
	case t.RolledBack:
		// The deployer owns this rule and would refuse the request; reading
		// its word here only spares a refused job every interval.
		log.Debug("digest was rolled back on this target, left to a new digest or a forced deploy")
		return metrics.PollUnchanged
	case t.Refused:
		// Likewise for a digest a gate rejected (unsigned, signed by
		// someone else): asking again would only add a refused job.
		log.Debug("digest was refused for this target, left to a new digest or a forced deploy")
		return metrics.PollUnchanged
	}

	config, cached, err := p.platform(ctx, r.name+"@"+digest)
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
		p.rememberGood(ctx, r, t, digest)
		return metrics.PollUnchanged
	}
	return metrics.PollChanged
}

// deploy submits digest for t and returns the jobs. Nothing is remembered:
// as long as the target does not run the digest (and did not roll it back),
// the next check submits it again.
func (p *Poller) deploy(ctx context.Context, t deploy.Target, digest string) []deploy.Job {
	now := time.Now()
	req := deploy.Request{
		Repository: t.Image,
		Tag:        t.Tag,
		Digest:     digest,
		Target:     t.Name,
		Trigger:    deploy.TriggerPoll,
		ID:         "poll-" + strconv.FormatInt(now.Unix(), 10) + "-" + t.Name,
		ReceivedAt: now,
	}
	log := p.log.With("target", t.Name, "image", refName(t), "digest", digest)
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

// outcome is the metrics outcome of a failed look-up.
func outcome(err error) string {
	if isRateLimited(err) {
		return metrics.PollRateLimited
	}
	return metrics.PollError
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
