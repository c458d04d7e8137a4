package api

import (
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
)

// Job list limits.
const (
	defaultJobLimit = 50
	maxJobLimit     = 1000
)

// handleTargets lists the targets with what they run, their last job and
// when their registry is polled next.
func (s *server) handleTargets() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		targets := s.deps.Targets()
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
			}
			last, err := s.deps.Jobs(r.Context(), deploy.JobFilter{Target: t.Name, Limit: 1})
			if err != nil {
				s.writeError(w, r, fmt.Errorf("last job of %s: %w", t.Name, err), ErrorResponse{})
				return
			}
			if len(last) > 0 {
				ref := jobRef(last[0])
				v.LastJob = &ref
			}
			if s.poller != nil {
				if next, ok := s.poller.NextPoll(t.Name); ok {
					v.NextPoll = next
				}
			}
			out = append(out, v)
		}
		slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Name, b.Name) })
		writeJSON(w, http.StatusOK, TargetsResponse{Targets: out})
	}
}

// handleJobs lists jobs newest first, optionally of one target.
func (s *server) handleJobs() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := defaultJobLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxJobLimit {
				s.writeError(w, r, badRequest("limit must be a number from 1 to %d", maxJobLimit), ErrorResponse{})
				return
			}
			limit = n
		}
		jobs, err := s.deps.Jobs(r.Context(), deploy.JobFilter{Target: q.Get("target"), Limit: limit})
		if err != nil {
			s.writeError(w, r, fmt.Errorf("list jobs: %w", err), ErrorResponse{})
			return
		}
		if len(jobs) > limit {
			jobs = jobs[:limit]
		}
		writeJSON(w, http.StatusOK, JobsResponse{Jobs: jobViews(jobs)})
	}
}

// handleJob shows one job with its phases, timings, error and rollback reason.
func (s *server) handleJob() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		job, err := s.deps.Job(r.Context(), id)
		if errors.Is(err, deploy.ErrJobNotFound) {
			s.writeError(w, r, err, ErrorResponse{Error: fmt.Sprintf("job %q not found", id)})
			return
		}
		if err != nil {
			s.writeError(w, r, fmt.Errorf("job %s: %w", id, err), ErrorResponse{})
			return
		}
		writeJSON(w, http.StatusOK, jobView(job))
	}
}
