package api

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
)

func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.NotFound(s.notFound)
	if len(s.tokens) == 0 {
		r.HandleFunc(Prefix, s.disabled)
		r.HandleFunc(Prefix+"/*", s.disabled)
		return r
	}
	r.Route(Prefix, func(r chi.Router) {
		// Authentication comes before routing so that an unauthenticated
		// client cannot map the API by its 404s and 405s.
		r.Use(s.authenticate)
		r.Post("/deploy", s.handleDeploy())
		r.Get("/targets", s.handleTargets())
		r.Get("/jobs", s.handleJobs())
		r.Get("/jobs/{id}", s.handleJob())
		r.NotFound(s.notFound)
		r.MethodNotAllowed(s.methodNotAllowed)
	})
	return r
}

func (s *server) disabled(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, errAPIDisabled, ErrorResponse{})
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, errNotFound, ErrorResponse{})
}

func (s *server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, errMethodNotAllowed, ErrorResponse{})
}

// ownRouting hides a parent chi router's routing context from h. chi's
// Mount would otherwise hand h only the path below the mount point, and h
// routes on full paths so that it works the same under any router.
func ownRouting(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if chi.RouteContext(r.Context()) != nil {
			r = r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, nil))
		}
		h.ServeHTTP(w, r)
	})
}
