package poller

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
)

const (
	// maxShare is the longest a look-up is reused for a target that starts
	// following its ref (half the interval when that is shorter).
	maxShare = 5 * time.Second
	// maxSpread bounds the window over which the first checks of newly
	// followed refs are spread (a tenth of the interval when that is
	// shorter).
	maxSpread = 10 * time.Second
	// maxRefresh is how often the target list is re-read at least.
	maxRefresh = 10 * time.Second
	// maxRetryAfter caps how long a failed look-up's ref waits for the
	// registry, so that a bogus Retry-After cannot silence it for good.
	maxRetryAfter = 24 * time.Hour
)

// ref is one image reference (repo:tag) that targets follow: one schedule,
// and one look-up per check for all of them.
type ref struct {
	name    string          // repo:tag
	targets []deploy.Target // following it, as last read
	// good holds, by target name, the index digest last judged to be what
	// the target runs although it is not the digest the target reports
	// (an attestation-only rebuild).
	good     map[string]string
	next     time.Time // when every target following it is checked next
	heard    time.Time // the webhook time next was last pushed back for
	waiting  []string  // targets that began following it since its last look-up
	inFlight bool
	failures int                 // consecutive failed look-ups
	desc     registry.Descriptor // what the last look-up found
	at       time.Time           // when; zero when it failed
}

func (r *ref) follows(name string) bool {
	return slices.ContainsFunc(r.targets, func(t deploy.Target) bool { return t.Name == name })
}

func refName(t deploy.Target) string { return t.Image + ":" + t.Tag }

// tick reads the targets, starts the checks that are due and returns when it
// wants to run again. Only Run's goroutine calls it (tests too, in its stead).
func (p *Poller) tick(ctx context.Context) time.Time {
	now := time.Now()
	list := p.targets.Targets()
	good := p.recall(ctx, list)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.follow(list, good, now)

	wakeAt := now.Add(p.refreshEvery())
	for _, r := range p.refs {
		if r.inFlight || len(r.targets) == 0 {
			continue // a running check wakes the loop when it ends
		}
		switch {
		case !now.Before(r.next):
			p.start(ctx, r, nil)
		case len(r.waiting) > 0 && p.fresh(r, now):
			// Targets that began following r are judged on the look-up
			// just made for the others,
			desc := r.desc
			p.start(ctx, r, &desc)
		case len(r.waiting) > 0 && r.failures == 0:
			// or on a new one made for all (a failing ref keeps its wait).
			p.start(ctx, r, nil)
		case r.next.Before(wakeAt):
			wakeAt = r.next
		}
	}
	return wakeAt
}

// follow brings the refs up to date with the target list read at now: refs
// nobody follows go, new ones get a first check soon (spread over a few
// seconds, in list order), targets that begin following a known ref wait
// for tick to judge them, and webhooks push checks back.
func (p *Poller) follow(list []deploy.Target, good map[string]string, now time.Time) {
	byRef := make(map[string][]deploy.Target)
	var order []string
	for _, t := range list {
		name := refName(t)
		if _, ok := byRef[name]; !ok {
			order = append(order, name)
		}
		byRef[name] = append(byRef[name], t)
	}
	for name, r := range p.refs {
		if _, ok := byRef[name]; !ok {
			if !r.inFlight {
				delete(p.refs, name)
				continue
			}
			r.targets = nil // the running check finishes; the next tick drops it
		}
	}

	var first []*ref // new refs, to be looked up soon
	for _, name := range order {
		r, known := p.refs[name]
		if !known {
			r = &ref{name: name, good: make(map[string]string)}
			p.refs[name] = r
			first = append(first, r)
		}
		var joined []string
		for _, t := range byRef[name] {
			if !r.follows(t.Name) {
				joined = append(joined, t.Name)
				r.good[t.Name] = good[memKey(t)]
			}
		}
		r.targets = byRef[name]
		maps.DeleteFunc(r.good, func(n, _ string) bool { return !r.follows(n) })
		if known {
			r.waiting = append(slices.DeleteFunc(r.waiting, func(n string) bool { return !r.follows(n) }), joined...)
		}
	}
	for i, r := range first {
		r.next = now.Add(p.spreadWindow() * time.Duration(i) / time.Duration(len(first)))
	}
	for _, r := range p.refs {
		p.heardLocked(r)
	}
}

// heardLocked pushes r's next check back to an interval after the last
// webhook that asked for all of its targets: while deliveries arrive, the
// registry is not asked. A target no webhook asked for keeps the schedule.
func (p *Poller) heardLocked(r *ref) {
	var heard time.Time
	for i, t := range r.targets {
		if i == 0 || t.LastWebhook.Before(heard) {
			heard = t.LastWebhook
		}
	}
	if !heard.After(r.heard) {
		return
	}
	r.heard = heard
	if next := heard.Add(p.jittered()); r.next.Before(next) {
		r.next = next
	}
}

// start runs a check of r: of every target following it against a new
// look-up, or of the targets waiting for one against reuse.
func (p *Poller) start(ctx context.Context, r *ref, reuse *registry.Descriptor) {
	names := r.waiting
	if reuse == nil {
		names = make([]string, 0, len(r.targets))
		for _, t := range r.targets {
			names = append(names, t.Name)
		}
	}
	r.waiting = nil
	r.inFlight = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.check(ctx, r, names, reuse)
	}()
}

// finish ends a check of r. After a look-up, the next check is an interval
// away, counted from when the deploys the check asked for ended, or, after
// a failed one, as long as the registry client will refuse (see
// Poller.wait); then the loop is woken.
func (p *Poller) finish(r *ref, lookedUp bool, err error) {
	now := time.Now()
	p.mu.Lock()
	r.inFlight = false
	if lookedUp {
		var wait time.Duration
		if err != nil {
			wait = p.wait.Delay(r.failures, retryAfter(err, now))
		} else {
			wait = p.jittered()
		}
		if next := now.Add(wait); r.next.Before(next) {
			r.next = next
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// retryAfter is how long the registry client said it refuses to ask the
// registry again (a Retry-After, its own backoff, rate-limit pacing); 0
// when it did not say.
func retryAfter(err error, now time.Time) time.Duration {
	var we *registry.WaitError
	if !errors.As(err, &we) {
		return 0
	}
	return we.Until.Sub(now)
}

// fresh reports whether r's last look-up may be reused at now.
func (p *Poller) fresh(r *ref, now time.Time) bool {
	return !r.at.IsZero() && now.Sub(r.at) < p.shareWindow()
}

// jittered returns the interval, spread by ±jitter: the wait after no
// failure.
func (p *Poller) jittered() time.Duration { return p.wait.Delay(0, 0) }

func (p *Poller) shareWindow() time.Duration  { return min(maxShare, p.interval/2) }
func (p *Poller) spreadWindow() time.Duration { return min(maxSpread, p.interval/10) }
func (p *Poller) refreshEvery() time.Duration { return min(maxRefresh, p.interval) }
