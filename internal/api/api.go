// Package api serves hookd's authenticated manual-deploy and status API
// under /api/v1 — POST /deploy, GET /targets, GET /jobs and GET /jobs/{id}
// — and is the client the CLI verbs call it with. The handlers turn an
// operator's request into a deploy.Request with trigger "manual" and report
// what the deployer knows; they never talk to Docker.
//
// The package provides handler makers (HandleDeploy, HandleTargets,
// HandleJobs, HandleJob) and the RequireBearer middleware; which path
// serves which handler is decided by hookd's routes, in one place. The
// handlers read path parameters with r.PathValue, which chi and
// net/http's ServeMux both set.
package api

import (
	"context"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// Prefix is the path every route of the API lives under.
const Prefix = "/api/v1"

// Defaults for the zero values of DeployConfig.
const (
	DefaultMaxBodyBytes = 64 << 10
	DefaultWaitTimeout  = 10 * time.Minute
	// defaultWait is how long "wait": true holds the answer when the request
	// names no timeout.
	defaultWait = 5 * time.Minute
)

// DeployConfig configures HandleDeploy. The zero value of every field has a
// usable default.
type DeployConfig struct {
	// MaxBodyBytes caps a request body (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// WaitTimeout is the longest "timeout" a deploy with "wait": true may
	// ask for (default DefaultWaitTimeout).
	WaitTimeout time.Duration
	// Stopping is closed when hookd begins to shut down. A deploy waiting
	// for its jobs then answers at once, 503 with the jobs as they stand,
	// instead of holding the HTTP shutdown for a deploy the workers are
	// about to interrupt. Nil never closes.
	Stopping <-chan struct{}
}

// Deployments is what the API needs from the deployer.
type Deployments interface {
	// Submit queues req and returns the jobs it created or joined. It
	// returns deploy.ErrUnknownTarget and deploy.ErrQueueFull.
	Submit(ctx context.Context, req deploy.Request) ([]deploy.Job, error)
	Targets() []deploy.Target
	// Jobs returns matching jobs, newest first.
	Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error)
	// Job returns deploy.ErrJobNotFound for an unknown id.
	Job(ctx context.Context, id string) (deploy.Job, error)
	// WaitJob blocks until the job is final or ctx is done.
	WaitJob(ctx context.Context, id string) (deploy.Job, error)
}

// Poller knows when a target's registry is polled next.
type Poller interface {
	NextPoll(target string) (time.Time, bool)
}
