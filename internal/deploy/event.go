package deploy

import "time"

// Stage is where a running job is: the steps every strategy reports.
type Stage string

// Stages of a running job, in the order a deploy takes them. A strategy
// reports the ones it takes.
const (
	StagePulling   Stage = "pulling"
	StageVerifying Stage = "verifying"
	StageHooks     Stage = "running_hooks"
	StageSwapping  Stage = "swapping"
	StageGating    Stage = "gating"
	StageRollback  Stage = "rolling_back"
)

// Event is one transition of a job: it was queued, started, moved to a
// stage, or ended. Job is the job as it stands after the transition (its
// Status, Stage, digests, error and rollback reason).
type Event struct {
	// Kind is the job's status for queued, running and final transitions,
	// or the stage ("pulling", "gating", …) while it runs.
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
	Job  Job       `json:"job"`
}

// Final reports whether the event ends its job.
func (e Event) Final() bool {
	return Status(e.Kind).Final() && !isStage(e.Kind)
}

func isStage(kind string) bool {
	switch Stage(kind) {
	case StagePulling, StageVerifying, StageHooks, StageSwapping, StageGating, StageRollback:
		return true
	}
	return false
}
