package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/reply"
)

// submitTimeout bounds queueing a request (persisting its jobs).
const submitTimeout = 10 * time.Second

// deployHandler serves POST /deploy.
type deployHandler struct {
	deps        Deployments
	logger      *slog.Logger
	maxBody     int64
	maxWait     time.Duration
	defaultWait time.Duration
	stopping    <-chan struct{}
}

// HandleDeploy returns the handler of POST /deploy. It queues a manual
// deploy of one target, of the targets that follow an image, or of every
// target, and answers 202 with the jobs; with "wait" it answers 200 with
// their final states, 504 with their current ones when the timeout hits
// first, and 503 with their current ones when hookd begins to shut down
// first (see DeployConfig.Stopping).
func HandleDeploy(d Deployments, cfg DeployConfig, logger *slog.Logger) http.Handler {
	h := &deployHandler{
		deps:     d,
		logger:   logger,
		maxBody:  cfg.MaxBodyBytes,
		maxWait:  cfg.WaitTimeout,
		stopping: cfg.Stopping,
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.maxWait <= 0 {
		h.maxWait = DefaultWaitTimeout
	}
	h.defaultWait = min(defaultWait, h.maxWait)
	return h
}

func (h *deployHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := h.decode(w, r)
	if err != nil {
		writeError(w, r, h.logger, err, ErrorResponse{})
		return
	}
	req, wait, err := h.request(body)
	if err != nil {
		writeError(w, r, h.logger, err, ErrorResponse{})
		return
	}
	if body.Image != "" && !h.followed(req) {
		writeError(w, r, h.logger, errNoTarget, ErrorResponse{
			Error:  fmt.Sprintf("no target follows %s:%s", req.Repository, req.Tag),
			Images: h.images(),
		})
		return
	}

	// A client that hangs up mid-call must not leave the request half
	// submitted: queueing does not follow the request's context.
	subCtx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), submitTimeout)
	jobs, err := h.deps.Submit(subCtx, req)
	cancel()
	if err == nil && len(jobs) == 0 {
		err = errNoTarget
	}
	if err != nil {
		h.submitError(w, r, req, err)
		return
	}
	h.logger.InfoContext(r.Context(), "manual deploy queued",
		"request_id", req.ID, "target", req.Target, "image", body.Image,
		"force", req.Force, "jobs", len(jobs))

	if !body.Wait {
		refs := make([]JobRef, 0, len(jobs))
		for _, j := range jobs {
			refs = append(refs, jobRef(j))
		}
		reply.JSON(w, http.StatusAccepted, struct {
			Jobs []JobRef `json:"jobs"`
		}{refs})
		return
	}
	h.wait(w, r, jobs, wait)
}

// decode reads the body strictly: one JSON object, no unknown fields. An
// empty body is the empty object (every target).
func (h *deployHandler) decode(w http.ResponseWriter, r *http.Request) (DeployRequest, error) {
	var body DeployRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.maxBody))
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

// request validates body and turns it into the deployer's request and the
// time to wait.
func (h *deployHandler) request(body DeployRequest) (deploy.Request, time.Duration, error) {
	req := deploy.Request{
		Target:     body.Target,
		Trigger:    deploy.TriggerManual,
		ID:         newRequestID(),
		Force:      body.Force,
		ReceivedAt: time.Now(),
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
	wait := h.defaultWait
	if body.Timeout != "" {
		d, err := time.ParseDuration(body.Timeout)
		switch {
		case err != nil:
			return req, 0, badRequest("timeout %q is not a duration like \"5m\"", body.Timeout)
		case d <= 0:
			return req, 0, badRequest("timeout must be positive")
		case d > h.maxWait:
			return req, 0, badRequest("timeout %s exceeds the maximum %s", d, h.maxWait)
		}
		wait = d
	}
	return req, wait, nil
}

// submitError answers a failed Submit; a 404 lists what is known instead.
func (h *deployHandler) submitError(w http.ResponseWriter, r *http.Request, req deploy.Request, err error) {
	var body ErrorResponse
	if errors.Is(err, deploy.ErrUnknownTarget) || errors.Is(err, errNoTarget) {
		switch {
		case req.Target != "":
			body.Error = fmt.Sprintf("unknown target %q", req.Target)
			body.Targets = h.targetNames()
		case req.Repository != "":
			body.Error = fmt.Sprintf("no target follows %s:%s", req.Repository, req.Tag)
			body.Images = h.images()
		default:
			body.Error = "no targets: no container or service is labelled hookd.enable=true"
		}
	}
	writeError(w, r, h.logger, err, body)
}

// wait holds the answer until every job is final, the timeout passes or
// hookd begins to shut down; the last two answer with the jobs as they
// stand.
func (h *deployHandler) wait(w http.ResponseWriter, r *http.Request, jobs []deploy.Job, timeout time.Duration) {
	// The daemon's WriteTimeout must not cut a long wait short.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + 30*time.Second))

	untilStop, stop := context.WithCancelCause(r.Context())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-h.stopping: // a nil channel never fires
			stop(errShuttingDown)
		case <-untilStop.Done():
		}
	}()
	defer func() { stop(nil); <-watched }()
	ctx, cancel := context.WithTimeoutCause(untilStop, timeout, errWaitTimeout)
	defer cancel()

	final := make([]deploy.Job, len(jobs))
	copy(final, jobs)
	for i, j := range jobs {
		got, err := h.deps.WaitJob(ctx, j.ID)
		if err == nil {
			final[i] = got
			continue
		}
		if r.Context().Err() != nil {
			return // the client has gone; nobody to answer
		}
		if ctx.Err() == nil {
			writeError(w, r, h.logger, fmt.Errorf("wait for job %s: %w", j.ID, err), ErrorResponse{})
			return
		}
		body := ErrorResponse{Jobs: jobViews(h.current(r.Context(), final))}
		if cause := context.Cause(ctx); errors.Is(cause, errShuttingDown) {
			writeError(w, r, h.logger, cause, body)
			return
		}
		body.Error = fmt.Sprintf("timed out after %s waiting for jobs", timeout)
		writeError(w, r, h.logger, errWaitTimeout, body)
		return
	}
	reply.JSON(w, http.StatusOK, DeployResponse{Jobs: jobViews(final)})
}

// current refreshes the jobs that are not final yet, keeping the last known
// state where the look-up fails.
func (h *deployHandler) current(ctx context.Context, jobs []deploy.Job) []deploy.Job {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out := make([]deploy.Job, len(jobs))
	for i, j := range jobs {
		out[i] = j
		if j.Status.Final() {
			continue
		}
		if got, err := h.deps.Job(ctx, j.ID); err == nil {
			out[i] = got
		}
	}
	return out
}

// followed reports whether any target follows req's repository and tag.
func (h *deployHandler) followed(req deploy.Request) bool {
	for _, t := range h.deps.Targets() {
		ref := targetRef(t)
		if ref.Repository() == req.Repository && ref.Tag == req.Tag {
			return true
		}
	}
	return false
}

func (h *deployHandler) targetNames() []string {
	names := []string{}
	for _, t := range h.deps.Targets() {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}

func (h *deployHandler) images() []string {
	images := []string{}
	for _, t := range h.deps.Targets() {
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
