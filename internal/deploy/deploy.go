// Package deploy is hookd's vocabulary: the deploy requests every door
// produces, the jobs the deployer runs, their statuses and steps, the
// targets, image references and the errors callers branch on. It is the
// leaf of the dependency graph: it imports no Docker SDK and nothing else of
// hookd's, so the doors and the store never compile the engine's client.
package deploy

import (
	"errors"
	"time"
)

// Trigger names the door a request came through. It is used for reporting only.
type Trigger string

// The three doors.
const (
	TriggerWebhook Trigger = "webhook"
	TriggerPoll    Trigger = "poll"
	TriggerManual  Trigger = "manual"
)

// Request says "repository:tag may have a new image". Every door produces one.
type Request struct {
	// Repository is normalised (see ParseRef): "ghcr.io/and3rn3t/app".
	Repository string `json:"repository,omitempty"`
	// Tag is the tag targets must follow, "latest" when empty.
	Tag string `json:"tag,omitempty"`
	// Digest is the manifest (or index) digest the door saw, if it knows one.
	Digest string `json:"digest,omitempty"`
	// Target restricts the request to one target by name (manual deploys).
	// Empty Repository and Target means every target.
	Target string `json:"target,omitempty"`
	// Trigger and ID are for tracing: the GitHub delivery id, a poll tick, an API call id.
	Trigger Trigger `json:"trigger"`
	ID      string  `json:"id,omitempty"`
	// Force recreates even when the target already runs the image.
	Force bool `json:"force,omitempty"`
	// ReceivedAt is when hookd learned of the image; lead time is measured from it.
	ReceivedAt time.Time `json:"received_at"`
	// SourceRepo ("OWNER/REPO") and Commit are what a webhook delivery says
	// the image was built from, when it says so.
	SourceRepo string `json:"source_repo,omitempty"`
	Commit     string `json:"commit,omitempty"`
}

// Status is a job's state. Queued and running are live; the rest are final.
type Status string

// Job states.
const (
	StatusQueued     Status = "queued"
	StatusRunning    Status = "running"
	StatusSucceeded  Status = "succeeded"
	StatusUpToDate   Status = "up_to_date"
	StatusRolledBack Status = "rolled_back"
	StatusFailed     Status = "failed"
	// StatusRefused: a policy said no before anything was touched (an
	// unforced rolled-back digest, a strategy that does not fit the target).
	StatusRefused Status = "refused"
)

// Final reports whether s is a final state.
func (s Status) Final() bool {
	return s != StatusQueued && s != StatusRunning
}

// Job is one deploy of one target.
type Job struct {
	ID      string  `json:"id"`
	Target  string  `json:"target"`
	Kind    string  `json:"kind,omitempty"` // "container" or "service"
	Request Request `json:"request"`
	// Image is the reference deployed, "repo:tag".
	Image        string `json:"image"`
	DigestBefore string `json:"digest_before,omitempty"`
	DigestAfter  string `json:"digest_after,omitempty"`
	Status       Status `json:"status"`
	// Stage is where a running job is; empty once it ended.
	Stage Stage `json:"stage,omitempty"`
	// Phases holds per-phase durations in seconds: "pull", "swap", "health".
	Phases map[string]float64 `json:"phases,omitempty"`
	Error  string             `json:"error,omitempty"`
	// RollbackReason is one of "unhealthy", "exited", "timeout", "start_failed",
	// "dependent_failed".
	RollbackReason string `json:"rollback_reason,omitempty"`
	// RollbackDetail is the exit code or last health-check output.
	RollbackDetail string    `json:"rollback_detail,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	// HealthyAt is when the new version passed its gate.
	HealthyAt  time.Time `json:"healthy_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// ImageCreated is the deployed image's build time, when it is known.
	ImageCreated time.Time `json:"image_created,omitzero"`
	// Revision and Source are the new image's
	// org.opencontainers.image.revision and .source labels, when it has
	// them (docker/metadata-action sets both).
	Revision string `json:"revision,omitempty"`
	Source   string `json:"source,omitempty"`
	// Notes are facts a gate or reporter recorded on the job (a verified
	// signer, a warning, a GitHub deployment), for people to read.
	Notes []string `json:"notes,omitempty"`
	// Verified is what the signature a gate verified says about the new
	// image; zero when none was verified.
	Verified Verification `json:"verified,omitzero"`
	// Rejected says a gate refused the image itself (ErrRejected: unsigned,
	// signed by someone else), not a policy or a gate that could not
	// decide, so that the refusal of DigestAfter is remembered across
	// restarts.
	Rejected bool `json:"rejected,omitempty"`
	// Failed describes the new version that failed its gate, when one did:
	// hookd removes its container (a kept one would confuse Compose), so
	// this is what is left to tell why.
	Failed *FailedVersion `json:"failed,omitempty"`
}

// Verification is what a verified signature says about an image: who
// signed it and, for a CI workflow, from which commit it was built.
type Verification struct {
	// Identity is the signing certificate's subject; for GitHub Actions the
	// workflow, "https://github.com/OWNER/REPO/.github/workflows/build.yml@refs/heads/main".
	Identity string `json:"identity"`
	// Issuer is the OIDC issuer that vouched for it.
	Issuer string `json:"issuer"`
	// Commit and Ref are the source repository digest and ref the
	// certificate names, when it names them.
	Commit string `json:"commit,omitempty"`
	Ref    string `json:"ref,omitempty"`
}

// FailedVersion is what a user needs from a new version that failed its
// gate: its exit code, its last health check and its last log lines.
type FailedVersion struct {
	// Container is the name the failed container ran under.
	Container string `json:"container,omitempty"`
	// ExitCode is set when the container exited or could not start; nil
	// when it was still running (unhealthy) and hookd stopped it.
	ExitCode *int `json:"exit_code,omitempty"`
	// Health is the output of its last health check, trimmed.
	Health string `json:"health_output,omitempty"`
	// Logs are its last log lines (stdout and stderr), oldest first.
	Logs []string `json:"logs,omitempty"`
}

// OCI image labels hookd reads.
const (
	LabelImageRevision = "org.opencontainers.image.revision"
	LabelImageSource   = "org.opencontainers.image.source"
)

// Rollback reasons recorded on jobs and in the rollbacks metric.
const (
	ReasonUnhealthy   = "unhealthy"
	ReasonExited      = "exited"
	ReasonTimeout     = "timeout"
	ReasonStartFailed = "start_failed"
	// ReasonDependent: the new version passed its gate, but a container
	// that depends on it (restarted or recreated to join it) did not.
	ReasonDependent = "dependent_failed"
)

// JobFilter selects jobs; zero values select everything.
type JobFilter struct {
	Target string
	Limit  int
}

// Step is one entry of the recreate journal. It is written before the step
// is taken so that a restarted hookd can finish or undo a half-done swap.
type Step struct {
	Target string    `json:"target"`
	JobID  string    `json:"job_id"`
	Phase  string    `json:"phase"`
	OldID  string    `json:"old_id,omitempty"`
	NewID  string    `json:"new_id,omitempty"`
	At     time.Time `json:"at"`
	// Strategy names the strategy that wrote the entry and settles it
	// after a crash; empty for the recreate strategy.
	Strategy string `json:"strategy,omitempty"`
	// Tag is the local tag ("repo:tag") the target follows, OldImage and
	// NewImage the ids of the image it ran and the one being deployed. The
	// tag names the new image only once it passed its gate; a restarted
	// hookd puts it back on OldImage when it undoes the swap.
	Tag      string `json:"tag,omitempty"`
	OldImage string `json:"old_image,omitempty"`
	NewImage string `json:"new_image,omitempty"`
	// Parent, on the step of a container recreated to join another's
	// network namespace, names the target whose swap it is part of: a
	// restarted hookd settles it the way the parent's swap went.
	Parent string `json:"parent,omitempty"`
}

// Errors returned by Submit and the job look-ups.
var (
	ErrQueueFull     = errors.New("deploy queue is full")
	ErrUnknownTarget = errors.New("unknown target")
	ErrJobNotFound   = errors.New("job not found")
	// ErrRejected marks a gate's verdict on the image itself (unsigned,
	// signed by someone else), as opposed to a failure to decide (a
	// registry that did not answer). The deployer remembers a rejected
	// digest per target and refuses unforced requests for it at once.
	ErrRejected = errors.New("rejected")
)

// Clone returns a copy of j that shares no map or slice with it.
func (j Job) Clone() Job {
	j.Notes = append([]string(nil), j.Notes...)
	if j.Failed != nil {
		f := *j.Failed
		f.Logs = append([]string(nil), f.Logs...)
		if f.ExitCode != nil {
			c := *f.ExitCode
			f.ExitCode = &c
		}
		j.Failed = &f
	}
	if j.Phases != nil {
		p := make(map[string]float64, len(j.Phases))
		for k, v := range j.Phases {
			p[k] = v
		}
		j.Phases = p
	}
	return j
}
