// Package strategy is the contract between the deployer and the ways it
// deploys a target. The deployer owns the queue, the workers, the job state
// machine and the journal; for each job it hands the target's strategy a
// Run, and the strategy deploys, gates and rolls back that one target,
// reporting its stages through the Run and returning an Outcome.
//
// Strategies live in their own packages (containers, swarmsvc), each with
// the narrow part of the Engine API it calls. None of them knows the queue.
package strategy

import (
	"context"
	"log/slog"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// Journal records the steps of a swap before they are taken, so that a
// restarted hookd can finish or undo a half-done one. The deployer keeps it
// (in the state file) and lends it to the strategies that need it.
type Journal interface {
	PutStep(ctx context.Context, s deploy.Step) error
	// Steps returns every unfinished entry, one per target.
	Steps(ctx context.Context) ([]deploy.Step, error)
	DeleteStep(ctx context.Context, target string) error
}

// Run is one job as a strategy sees it. The strategy fills in the job's
// facts (image, digests, phases, rollback reason) as it learns them.
type Run struct {
	Job *deploy.Job
	Log *slog.Logger
	// Life is the deployer's lifetime: done once shutdown begins. The
	// context passed to Deploy adds the job's own deadline to it.
	Life context.Context
	// Journal is the deployer's journal.
	Journal Journal

	// Set by the deployer.
	OnStage func(deploy.Stage)
	OnSave  func()
	// Policy returns why digest must not be deployed to this target (the
	// deployer's rules), or nil.
	Policy func(ctx context.Context, digest string) error
}

// Stage reports that the job entered stage.
func (r *Run) Stage(s deploy.Stage) {
	r.Job.Stage = s
	if r.OnStage != nil {
		r.OnStage(s)
	}
}

// Save persists the job as it stands, so that a crash during what follows
// cannot lose what is known (a rollback's reason).
func (r *Run) Save() {
	if r.OnSave != nil {
		r.OnSave()
	}
}

// Admit asks the deployer whether digest may replace what runs. Strategies
// call it once the digest is known and before anything is touched; an
// error is a refusal: return Refused(err).
func (r *Run) Admit(ctx context.Context, digest string) error {
	if r.Policy == nil {
		return nil
	}
	return r.Policy(ctx, digest)
}

// Stopping reports whether shutdown has begun.
func (r *Run) Stopping() bool { return r.Life.Err() != nil }

// Phase records how long the named phase ("pull", "swap", "health") took.
func (r *Run) Phase(name string, since time.Time) {
	if r.Job.Phases == nil {
		r.Job.Phases = map[string]float64{}
	}
	r.Job.Phases[name] = time.Since(since).Seconds()
}

// Outcome is how a deploy ended; the job's final status follows from it.
type Outcome struct {
	Status deploy.Status
	Err    error
	// Abandoned is set when shutdown interrupted the job and its target was
	// put back as it was: the job goes back to the queue.
	Abandoned bool
}

// Failed is the outcome of a deploy that did not happen as asked.
func Failed(err error) Outcome { return Outcome{Status: deploy.StatusFailed, Err: err} }

// Refused is the outcome of a deploy a policy said no to, before anything
// was touched.
func Refused(err error) Outcome { return Outcome{Status: deploy.StatusRefused, Err: err} }

// Interrupted turns a failure caused by shutdown into an abandoned job.
func (r *Run) Interrupted(o Outcome) Outcome {
	if r.Stopping() {
		return Outcome{Abandoned: true, Err: o.Err}
	}
	return o
}
