// Package api serves hookd's authenticated manual-deploy and status API
// under /api/v1: POST /deploy, GET /targets, GET /jobs and GET /jobs/{id}.
// It turns an operator's request into a deploy.Request with trigger
// "manual" and reports what the deployer knows; it never talks to Docker.
package api

import (
	"context"
	"crypto/sha256"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"net/http"
	"time"
)

// Prefix is the path every route of the handler lives under. Mount the
// handler for the whole subtree without stripping it (see New).
const Prefix = "/api/v1"

// Defaults for the zero values of Config.
const (
	DefaultMaxBodyBytes = 64 << 10
	DefaultWaitTimeout  = 10 * time.Minute
	// defaultWait is how long "wait": true holds the answer when the request
	// names no timeout.
	defaultWait = 5 * time.Minute
)

// Failed authentication is limited per client IP: after authFailureLimit
// failures within authFailureWindow the client is answered 429, even when
// it then presents the right token (otherwise the limit would not stop a
// guesser, who would learn of a hit from the first 200).
const (
	authFailureLimit  = 10
	authFailureWindow = time.Minute
)

// Config configures the API. The zero value of every field but Tokens has a
// usable default.
type Config struct {
	// Tokens are the accepted bearer tokens; several allow rotation. Empty
	// tokens are ignored. With none, every route answers 404.
	Tokens [][]byte
	// MaxBodyBytes caps a request body (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// WaitTimeout is the longest "timeout" a deploy with "wait": true may
	// ask for (default DefaultWaitTimeout).
	WaitTimeout time.Duration
	// Poller reports next poll times for GET /targets. Leave it nil when
	// polling is off (a typed nil pointer would be called).
	Poller Poller
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

type server struct {
	deps        Deployments
	poller      Poller
	logger      *slog.Logger
	tokens      [][sha256.Size]byte
	maxBody     int64
	maxWait     time.Duration
	defaultWait time.Duration
	failures    *failureLimiter
	now         func() time.Time
}

// New returns the handler for every route under Prefix. It always routes
// on the request's full path, so it may be mounted any way that hands it
// the subtree:
//
//	r.Mount(api.Prefix, h)          // chi
//	mux.Handle(api.Prefix+"/", h)   // net/http ServeMux
//
// With no non-empty token in cfg.Tokens the handler answers every request
// with 404 and a message saying the API is disabled.
func New(cfg Config, d Deployments, logger *slog.Logger) http.Handler {
	s := &server{
		deps:     d,
		poller:   cfg.Poller,
		logger:   logger,
		maxBody:  cfg.MaxBodyBytes,
		maxWait:  cfg.WaitTimeout,
		failures: newFailureLimiter(authFailureLimit, authFailureWindow),
		now:      time.Now,
	}
	for _, t := range cfg.Tokens {
		if len(t) > 0 {
			s.tokens = append(s.tokens, sha256.Sum256(t))
		}
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.maxWait <= 0 {
		s.maxWait = DefaultWaitTimeout
	}
	s.defaultWait = min(defaultWait, s.maxWait)
	return ownRouting(s.routes())
}
