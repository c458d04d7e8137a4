package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/reply"
)

// Job list limits.
const (
	defaultJobLimit = 50
	maxJobLimit     = 1000
)

// HandleTargets returns the handler of GET /targets: the targets with what
// they run, their last job and, when p is not nil, when their registry is
// polled next. Leave p nil when polling is off (a typed nil pointer would
// be called).
func HandleTargets(d Deployments, p Poller, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targets := d.Targets()
		out := make([]Target, 0, len(targets))
		for _, t := range targets {
			ref := targetRef(t)
			v := Target{
				Name:       t.Name,
				Kind:       t.Kind,
				Image:      ref.Repository(),
				Tag:        ref.Tag,
				Digest:     t.Digest,
				ImageID:    t.ImageID,
				RolledBack: t.RolledBack,
				Refused:    t.Refused,
			}
			last, err := d.Jobs(r.Context(), deploy.JobFilter{Target: t.Name, Limit: 1})
			if err != nil {
				writeError(w, r, logger, fmt.Errorf("last job of %s: %w", t.Name, err), ErrorResponse{})
				return
			}
			if len(last) > 0 {
				ref := jobRef(last[0])
				v.LastJob = &ref
			}
			if p != nil {
				if next, ok := p.NextPoll(t.Name); ok {
					v.NextPoll = next
				}
			}
			out = append(out, v)
		}
		slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Name, b.Name) })
		reply.JSON(w, http.StatusOK, TargetsResponse{Targets: out})
	})
}

// HandleJobs returns the handler of GET /jobs: jobs newest first,
// optionally of one target (?target=), at most ?limit= of them (1 to 1000,
// default 50).
func HandleJobs(d Deployments, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := defaultJobLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxJobLimit {
				writeError(w, r, logger, badRequest("limit must be a number from 1 to %d", maxJobLimit), ErrorResponse{})
				return
			}
			limit = n
		}
		jobs, err := d.Jobs(r.Context(), deploy.JobFilter{Target: q.Get("target"), Limit: limit})
		if err != nil {
			writeError(w, r, logger, fmt.Errorf("list jobs: %w", err), ErrorResponse{})
			return
		}
		if len(jobs) > limit {
			jobs = jobs[:limit]
		}
		reply.JSON(w, http.StatusOK, JobsResponse{Jobs: jobViews(jobs)})
	})
}

// HandleJob returns the handler of GET /jobs/{id}: one job with its phases,
// timings, error and rollback reason. The route must name its parameter
// "id".
func HandleJob(d Deployments, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		job, err := d.Job(r.Context(), id)
		if errors.Is(err, deploy.ErrJobNotFound) {
			writeError(w, r, logger, err, ErrorResponse{Error: fmt.Sprintf("job %q not found", id)})
			return
		}
		if err != nil {
			writeError(w, r, logger, fmt.Errorf("job %s: %w", id, err), ErrorResponse{})
			return
		}
		reply.JSON(w, http.StatusOK, jobView(job))
	})
}
