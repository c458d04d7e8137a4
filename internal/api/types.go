package api

import (
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// The wire types below are the API's contract; Client decodes them.
// They are kept apart from the deployer's own types so that a change there
// does not silently change the API.

// DeployRequest is the body of POST /deploy. Target and Image are mutually
// exclusive; with neither, every target is deployed.
type DeployRequest struct {
	Target string `json:"target,omitempty"`
	Image  string `json:"image,omitempty"`
	Force  bool   `json:"force,omitempty"`
	Wait   bool   `json:"wait,omitempty"`
	// Timeout bounds Wait, as a Go duration ("5m").
	Timeout string `json:"timeout,omitempty"`
}

// JobRef names a job and its status.
type JobRef struct {
	ID     string        `json:"id"`
	Target string        `json:"target"`
	Status deploy.Status `json:"status"`
}

// Job is one deploy of one target with its outcome and timings.
type Job struct {
	ID        string         `json:"id"`
	Target    string         `json:"target"`
	Kind      string         `json:"kind,omitempty"`
	Status    deploy.Status  `json:"status"`
	Trigger   deploy.Trigger `json:"trigger,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
	Force     bool           `json:"force,omitempty"`
	// Image is the reference deployed, "repo:tag".
	Image        string `json:"image,omitempty"`
	DigestBefore string `json:"digest_before,omitempty"`
	DigestAfter  string `json:"digest_after,omitempty"`
	// Phases holds per-phase durations in seconds ("pull", "swap", "health").
	Phases         map[string]float64 `json:"phases,omitempty"`
	Error          string             `json:"error,omitempty"`
	RollbackReason string             `json:"rollback_reason,omitempty"`
	RollbackDetail string             `json:"rollback_detail,omitempty"`
	CreatedAt      time.Time          `json:"created_at,omitzero"`
	StartedAt      time.Time          `json:"started_at,omitzero"`
	FinishedAt     time.Time          `json:"finished_at,omitzero"`
	// DurationSeconds is FinishedAt - StartedAt once both are known.
	DurationSeconds float64 `json:"duration_seconds,omitempty"`
	// Notes are facts gates and reporters recorded on the job: a verified
	// signer, a warning, a restart that coalesced it into another job, the
	// engine restarting during it.
	Notes []string `json:"notes,omitempty"`
	// Verified is the signature checked before the deploy, when one was.
	Verified *Verification `json:"verified,omitempty"`
}

// Verification is who signed a deployed image and, for a CI workflow,
// from which commit and ref.
type Verification struct {
	Identity string `json:"identity"`
	Issuer   string `json:"issuer"`
	Commit   string `json:"commit,omitempty"`
	Ref      string `json:"ref,omitempty"`
}

// Target is a container or service hookd deploys.
type Target struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
	// Image is the normalised repository ("ghcr.io/o/app"), Tag the tag it follows.
	Image   string  `json:"image"`
	Tag     string  `json:"tag"`
	Digest  string  `json:"digest,omitempty"`
	ImageID string  `json:"image_id,omitempty"`
	LastJob *JobRef `json:"last_job,omitempty"`
	// RolledBack is the digest whose deploy the target last rolled back;
	// polling does not try it again.
	RolledBack string `json:"rolled_back_digest,omitempty"`
	// Refused is the digest a check (a signature) last refused for the
	// target; polling does not try it again.
	Refused string `json:"refused_digest,omitempty"`
	// NextPoll is zero when polling is off for the target.
	NextPoll time.Time `json:"next_poll,omitzero"`
}

// DeployResponse answers POST /deploy. Without wait (202) each job carries
// only id, target and status; with wait (200) the full job.
type DeployResponse struct {
	Jobs []Job `json:"jobs"`
}

// TargetsResponse answers GET /targets.
type TargetsResponse struct {
	Targets []Target `json:"targets"`
}

// JobsResponse answers GET /jobs, newest first.
type JobsResponse struct {
	Jobs []Job `json:"jobs"`
}

// ErrorResponse is the body of every error answer. Targets lists the known
// target names and Images the images they follow when a deploy named
// something unknown; Jobs holds the jobs' current states when a wait ended
// before they did (504 on its timeout, 503 when hookd began to shut down).
type ErrorResponse struct {
	Error   string   `json:"error"`
	Targets []string `json:"targets,omitempty"`
	Images  []string `json:"images,omitempty"`
	Jobs    []Job    `json:"jobs,omitempty"`
}

func jobView(j deploy.Job) Job {
	v := Job{
		ID:             j.ID,
		Target:         j.Target,
		Kind:           j.Kind,
		Status:         j.Status,
		Trigger:        j.Request.Trigger,
		RequestID:      j.Request.ID,
		Force:          j.Request.Force,
		Image:          j.Image,
		DigestBefore:   j.DigestBefore,
		DigestAfter:    j.DigestAfter,
		Phases:         j.Phases,
		Error:          j.Error,
		RollbackReason: j.RollbackReason,
		RollbackDetail: j.RollbackDetail,
		CreatedAt:      j.CreatedAt,
		StartedAt:      j.StartedAt,
		FinishedAt:     j.FinishedAt,
	}
	if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		v.DurationSeconds = j.FinishedAt.Sub(j.StartedAt).Seconds()
	}
	v.Notes = j.Notes
	if s := j.Verified; s.Identity != "" {
		v.Verified = &Verification{Identity: s.Identity, Issuer: s.Issuer, Commit: s.Commit, Ref: s.Ref}
	}
	return v
}

func jobViews(jobs []deploy.Job) []Job {
	out := make([]Job, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, jobView(j))
	}
	return out
}

func jobRef(j deploy.Job) JobRef {
	return JobRef{ID: j.ID, Target: j.Target, Status: j.Status}
}

// targetRef returns the normalised image reference a target follows.
func targetRef(t deploy.Target) deploy.ImageRef {
	if t.Ref.Registry != "" {
		return t.Ref
	}
	r, err := deploy.ParseRef(t.Image)
	if err != nil {
		r = deploy.ImageRef{Path: t.Image}
	}
	if t.Tag != "" {
		r.Tag = t.Tag
	}
	return r
}
