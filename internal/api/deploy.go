package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"io"
	"net/http"
	"slices"
	"time"
)

// submitTimeout bounds queueing a request (persisting its jobs).
const submitTimeout = 10 * time.Second

// handleDeploy queues a manual deploy of one target, of the targets that
// follow an image, or of every target, and answers 202 with the jobs, or
// with "wait" 200 with their final states (504 with the current ones when
// the timeout hits first).
func (s *server) handleDeploy() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := s.decodeDeploy(w, r)
		if err != nil {
			s.writeError(w, r, err, ErrorResponse{})
			return
		}
		req, wait, err := s.deployRequest(body)
		if err != nil {
			s.writeError(w, r, err, ErrorResponse{})
			return
		}
		if body.Image != "" && !s.followed(req) {
			s.writeError(w, r, errNoTarget, ErrorResponse{
				Error:  fmt.Sprintf("no target follows %s:%s", req.Repository, req.Tag),
				Images: s.images(),
			})
			return
		}

		// A client that hangs up mid-call must not leave the request
		// half submitted: queueing does not follow the request's context.
		subCtx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), submitTimeout)
		jobs, err := s.deps.Submit(subCtx, req)
		cancel()
		if err == nil && len(jobs) == 0 {
			err = errNoTarget
		}
		if err != nil {
			s.submitError(w, r, req, err)
			return
		}
		s.logger.InfoContext(r.Context(), "manual deploy queued",
			"request_id", req.ID, "target", req.Target, "image", body.Image,
			"force", req.Force, "jobs", len(jobs))

		if !body.Wait {
			refs := make([]JobRef, 0, len(jobs))
			for _, j := range jobs {
				refs = append(refs, jobRef(j))
			}
			writeJSON(w, http.StatusAccepted, struct {
				Jobs []JobRef `json:"jobs"`
			}{refs})
			return
		}
		s.wait(w, r, jobs, wait)
	}
}

// decodeDeploy reads the body strictly: one JSON object, no unknown fields.
// An empty body is the empty object (every target).
func (s *server) decodeDeploy(w http.ResponseWriter, r *http.Request) (DeployRequest, error) {
	var body DeployRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&body)
	if errors.Is(err, io.EOF) {
		return DeployRequest{}, nil
	}
	if err == nil {
		// Anything but white space after the object is an error too.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("data after the JSON object")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooLarge):
		return DeployRequest{}, errTooLarge
	default:
		return DeployRequest{}, badRequest("invalid JSON body: %v", err)
	}
}

// deployRequest validates body and turns it into the deployer's request and
// the time to wait.
func (s *server) deployRequest(body DeployRequest) (deploy.Request, time.Duration, error) {
	req := deploy.Request{
		Target:     body.Target,
		Trigger:    deploy.TriggerManual,
		ID:         newRequestID(),
		Force:      body.Force,
		ReceivedAt: s.now(),
	}
	if body.Target != "" && body.Image != "" {
		return req, 0, badRequest("give either target or image, not both")
	}
	if body.Image != "" {
		ref, err := deploy.ParseRef(body.Image)
		if err != nil {
			return req, 0, badRequest("%v", err)
		}
		req.Repository, req.Tag, req.Digest = ref.Repository(), ref.Tag, ref.Digest
	}
	wait := s.defaultWait
	if body.Timeout != "" {
		d, err := time.ParseDuration(body.Timeout)
		switch {
		case err != nil:
			return req, 0, badRequest("timeout %q is not a duration like \"5m\"", body.Timeout)
		case d <= 0:
			return req, 0, badRequest("timeout must be positive")
		case d > s.maxWait:
			return req, 0, badRequest("timeout %s exceeds the maximum %s", d, s.maxWait)
		}
		wait = d
	}
	return req, wait, nil
}

// submitError answers a failed Submit; a 404 lists what is known instead.
func (s *server) submitError(w http.ResponseWriter, r *http.Request, req deploy.Request, err error) {
	var body ErrorResponse
	if errors.Is(err, deploy.ErrUnknownTarget) || errors.Is(err, errNoTarget) {
		switch {
		case req.Target != "":
			body.Error = fmt.Sprintf("unknown target %q", req.Target)
			body.Targets = s.targetNames()
		case req.Repository != "":
			body.Error = fmt.Sprintf("no target follows %s:%s", req.Repository, req.Tag)
			body.Images = s.images()
		default:
			body.Error = "no targets: no container or service is labelled hookd.enable=true"
		}
	}
	s.writeError(w, r, err, body)
}

// wait holds the answer until every job is final or the timeout passes.
func (s *server) wait(w http.ResponseWriter, r *http.Request, jobs []deploy.Job, timeout time.Duration) {
	// The daemon's WriteTimeout must not cut a long wait short.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + 30*time.Second))

	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	final := make([]deploy.Job, len(jobs))
	copy(final, jobs)
	for i, j := range jobs {
		got, err := s.deps.WaitJob(ctx, j.ID)
		if err == nil {
			final[i] = got
			continue
		}
		if r.Context().Err() != nil {
			return // the client has gone; nobody to answer
		}
		if ctx.Err() == nil {
			s.writeError(w, r, fmt.Errorf("wait for job %s: %w", j.ID, err), ErrorResponse{})
			return
		}
		s.writeError(w, r, errWaitTimeout, ErrorResponse{
			Error: fmt.Sprintf("timed out after %s waiting for jobs", timeout),
			Jobs:  jobViews(s.current(r.Context(), final)),
		})
		return
	}
	writeJSON(w, http.StatusOK, DeployResponse{Jobs: jobViews(final)})
}

// current refreshes the jobs that are not final yet, keeping the last known
// state where the look-up fails.
func (s *server) current(ctx context.Context, jobs []deploy.Job) []deploy.Job {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out := make([]deploy.Job, len(jobs))
	for i, j := range jobs {
		out[i] = j
		if j.Status.Final() {
			continue
		}
		if got, err := s.deps.Job(ctx, j.ID); err == nil {
			out[i] = got
		}
	}
	return out
}

// followed reports whether any target follows req's repository and tag.
func (s *server) followed(req deploy.Request) bool {
	for _, t := range s.deps.Targets() {
		ref := targetRef(t)
		if ref.Repository() == req.Repository && ref.Tag == req.Tag {
			return true
		}
	}
	return false
}

func (s *server) targetNames() []string {
	names := []string{}
	for _, t := range s.deps.Targets() {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}

func (s *server) images() []string {
	images := []string{}
	for _, t := range s.deps.Targets() {
		ref := targetRef(t)
		images = append(images, ref.Repository()+":"+ref.Tag)
	}
	slices.Sort(images)
	return slices.Compact(images)
}

// newRequestID returns "api-" and 16 random hex digits.
func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "api-" + hex.EncodeToString(b)
}
