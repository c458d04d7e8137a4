package deployer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// rank is a kind's precedence: the index of its source. When two kinds have
// a target of the same name, the lower rank keeps it.
func (d *Deployer) rank(kind string) int {
	for i, s := range d.cfg.Sources {
		if s.Kind() == kind {
			return i
		}
	}
	return len(d.cfg.Sources)
}

func (d *Deployer) source(kind string) Source {
	for _, s := range d.cfg.Sources {
		if s.Kind() == kind {
			return s
		}
	}
	return nil
}

// relist rebuilds the target set from every source.
func (d *Deployer) relist(ctx context.Context) error {
	fresh := make(map[string]deploy.Target)
	for _, src := range d.cfg.Sources {
		list, err := src.List(ctx)
		if err != nil {
			return err
		}
		for _, t := range list {
			if old, taken := fresh[t.Name]; taken {
				d.log.Warn("target ignored: another kind of target has the same name",
					"target", t.Name, "kind", t.Kind, "kept", old.Kind)
				continue
			}
			fresh[t.Name] = t
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, old := range d.targets {
		if _, ok := fresh[name]; ok {
			continue
		}
		if d.keepLocked(name) {
			fresh[name] = old // mid-swap: the name is briefly on no running container
			continue
		}
		d.dropTargetLocked(old)
	}
	for _, t := range fresh {
		d.putTargetLocked(t)
	}
	d.targets = fresh
	d.discovered = true
	return nil
}

// refresh updates the target set for one object of kind after an event or
// a deploy.
func (d *Deployer) refresh(ctx context.Context, kind, idOrName string) {
	src := d.source(kind)
	if src == nil {
		return
	}
	t, ok, err := src.Inspect(ctx, idOrName)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("refresh target failed", "kind", kind, "id", idOrName, "err", err)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, old := range d.targets {
		if old.Kind != kind || old.ID != idOrName && old.ID != t.ID && name != idOrName {
			continue
		}
		if ok && name == t.Name {
			continue
		}
		if d.keepLocked(name) {
			continue
		}
		d.dropTargetLocked(old)
		delete(d.targets, name)
	}
	if !ok {
		return
	}
	if old, taken := d.targets[t.Name]; taken && old.Kind != kind {
		if d.rank(old.Kind) < d.rank(kind) {
			d.log.Warn("target ignored: another kind of target has the same name", "target", t.Name, "kind", kind, "kept", old.Kind)
			return
		}
		d.log.Warn("target ignored: another kind of target has the same name", "target", t.Name, "kind", old.Kind, "kept", kind)
	}
	d.putTargetLocked(t)
	d.targets[t.Name] = t
}

func (d *Deployer) putTargetLocked(t deploy.Target) {
	if old, ok := d.targets[t.Name]; ok && (old.Image != t.Image || old.Tag != t.Tag) {
		d.metrics.TargetInfo.DeleteLabelValues(old.Name, old.Image, old.Tag)
	}
	d.metrics.TargetInfo.WithLabelValues(t.Name, t.Image, t.Tag).Set(1)
}

func (d *Deployer) dropTargetLocked(t deploy.Target) {
	d.metrics.TargetInfo.DeleteLabelValues(t.Name, t.Image, t.Tag)
	d.log.Info("target gone", "target", t.Name)
}

// follow keeps the target set current from the sources' event streams until
// ctx is done, re-subscribing with backoff and relisting after every gap.
func (d *Deployer) follow(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		evCtx, cancel := context.WithCancel(ctx)
		changes, errs, wait := d.watch(evCtx)
		// Relist after subscribing so nothing falls between list and stream.
		err := d.relist(ctx)
		if err == nil {
			err = d.stream(ctx, changes, errs, &failures)
		}
		cancel()
		wait()
		if ctx.Err() != nil {
			return
		}
		failures++
		delay := retry.Delay(failures, 0)
		d.log.Warn("docker event stream lost, retrying", "err", err, "retry_in_seconds", delay.Seconds())
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// change names an object of a kind that may have changed.
type change struct{ kind, id string }

// watch merges the sources' event streams until ctx is done or one of them
// fails; wait returns once its goroutines have ended (after ctx is done).
func (d *Deployer) watch(ctx context.Context) (changes <-chan change, errs <-chan error, wait func()) {
	out := make(chan change)
	errc := make(chan error, len(d.cfg.Sources))
	var wg sync.WaitGroup
	for _, src := range d.cfg.Sources {
		ids, srcErrs := src.Watch(ctx)
		kind := src.Kind()
		wg.Go(func() {
			for {
				select {
				case id, ok := <-ids:
					if !ok {
						errc <- fmt.Errorf("%s event stream closed", kind)
						return
					}
					select {
					case out <- change{kind, id}:
					case <-ctx.Done():
						return
					}
				case err := <-srcErrs:
					if err == nil {
						err = errors.New("closed")
					}
					errc <- fmt.Errorf("%s event stream: %w", kind, err)
					return
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return out, errc, wg.Wait
}

// stream applies changes until a stream fails or ctx is done.
func (d *Deployer) stream(ctx context.Context, changes <-chan change, errs <-chan error, failures *int) error {
	for {
		select {
		case c := <-changes:
			*failures = 0
			d.refresh(ctx, c.kind, c.id)
		case err := <-errs:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}
