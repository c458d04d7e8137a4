package deployer

import (
	"context"
	"fmt"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// journal is the deployer's journal as the strategies see it: the state
// file's, noting which targets have a swap in it. While a target's swap is
// unsettled, what runs under its name says nothing about the target (the
// engine may have stopped both containers, or be down), so the target is
// kept, not dropped as gone, until the swap is settled.
type journal struct{ d *Deployer }

var _ strategy.Journal = journal{}

func (j journal) PutStep(ctx context.Context, st deploy.Step) error {
	if err := j.d.state.PutStep(ctx, st); err != nil {
		return err
	}
	j.d.mu.Lock()
	j.d.unsettled[st.Target] = true
	j.d.mu.Unlock()
	return nil
}

func (j journal) Steps(ctx context.Context) ([]deploy.Step, error) {
	return j.d.state.Steps(ctx)
}

func (j journal) DeleteStep(ctx context.Context, target string) error {
	if err := j.d.state.DeleteStep(ctx, target); err != nil {
		return err
	}
	j.d.mu.Lock()
	delete(j.d.unsettled, target)
	j.d.mu.Unlock()
	return nil
}

// loadUnsettled notes the swaps start-up reconciliation left in the
// journal (it could not settle them yet).
func (d *Deployer) loadUnsettled(ctx context.Context) error {
	steps, err := d.state.Steps(ctx)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.unsettled)
	for _, st := range steps {
		d.unsettled[st.Target] = true
	}
	return nil
}

// keepLocked reports whether a target that no source lists any more must
// be kept: it is being deployed, or its swap is unsettled. d.mu must be
// held.
func (d *Deployer) keepLocked(name string) bool {
	_, busy := d.running[name]
	return busy || d.unsettled[name]
}
