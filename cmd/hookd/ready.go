package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
)

// notReady is why hookd cannot accept work, as /readyz tells clients: a
// fixed phrase, never a path or a daemon's error (those go to the log).
type notReady struct {
	reason string
	err    error
}

func (e *notReady) Error() string { return e.reason + ": " + e.err.Error() }
func (e *notReady) Unwrap() error { return e.err }

// readyReason is what /readyz says about err.
func readyReason(err error) string {
	if nr, ok := errors.AsType[*notReady](err); ok {
		return nr.reason
	}
	return "not ready"
}

// readiness is /readyz's question: can hookd accept work now? The deployer
// must be working (the engine answers; interrupted swaps settled, targets
// discovered, queued jobs resumed), and the state file must take writes
// (every accepted request is written first: with a full disk each
// delivery would get a 500). A change of the answer is logged once, with
// the detail, so a probe polling every few seconds does not flood the log.
func readiness(logger *slog.Logger, deployer func(context.Context) error, state func() error) func(context.Context) error {
	var mu sync.Mutex
	last := "ready"
	return func(ctx context.Context) error {
		var err error
		if derr := deployer(ctx); derr != nil {
			err = &notReady{"docker engine not reachable or start-up not finished", derr}
		} else if serr := state(); serr != nil {
			err = &notReady{"state file cannot be written", serr}
		}
		now := "ready"
		if err != nil {
			now = readyReason(err)
		}
		mu.Lock()
		changed := now != last
		last = now
		mu.Unlock()
		switch {
		case changed && err != nil:
			logger.Warn("not ready", "reason", now, "err", err)
		case changed:
			logger.Info("ready")
		}
		return err
	}
}
