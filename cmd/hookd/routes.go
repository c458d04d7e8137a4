package main

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/felixge/httpsnoop"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/reply"
	"github.com/and3rn3t/hookd/internal/web"
)

// routeDeps is what hookd's HTTP surface serves.
type routeDeps struct {
	webhook       http.Handler
	deployments   api.Deployments
	poller        api.Poller // nil when polling is off
	deploy        api.DeployConfig
	apiTokens     [][]byte // none: the API is off
	metrics       http.Handler
	metricsTokens [][]byte // none: /metrics is open
	metricsApart  bool     // /metrics is served by metricsRoutes on its own listener
	ready         func(context.Context) error
	healthy       func() error
	pages         *web.Site         // the status page; nil: not served
	failedLogins  *api.FailedLogins // shared by the API and the page's sign-in; nil: the API's own
}

// routes is hookd's whole HTTP surface on its main listener.
func routes(logger *slog.Logger, d routeDeps) http.Handler {
	apiLog := logger.With("component", "api")
	r := chi.NewRouter()
	r.Use(recoverer(logger), requestLog(logger))
	r.NotFound(handleError(http.StatusNotFound, "not found"))
	r.MethodNotAllowed(handleError(http.StatusMethodNotAllowed, "method not allowed"))

	r.Method(http.MethodPost, "/hooks/github", d.webhook)
	r.Route(api.Prefix, func(r chi.Router) {
		// Authentication comes before routing, so that an unauthenticated
		// client cannot map the API by its 404s and 405s.
		r.Use(apiAuth(d.apiTokens, d.failedLogins, apiLog))
		r.Method(http.MethodPost, "/deploy", api.HandleDeploy(d.deployments, d.deploy, apiLog))
		r.Method(http.MethodGet, "/targets", api.HandleTargets(d.deployments, d.poller, apiLog))
		r.Method(http.MethodGet, "/jobs", api.HandleJobs(d.deployments, apiLog))
		r.Method(http.MethodGet, "/jobs/{id}", api.HandleJob(d.deployments, apiLog))
	})
	if !d.metricsApart {
		r.With(metricsAuth(d.metricsTokens, logger)).Method(http.MethodGet, "/metrics", d.metrics)
	}
	r.Method(http.MethodGet, "/healthz", handleHealthz(d.healthy))
	r.Method(http.MethodGet, "/readyz", handleReadyz(d.ready))
	if d.pages != nil {
		statusPage(r, d.pages)
	}
	return r
}

// statusPage places the status page (internal/web). Guard answers every
// path with "the status page is off" while no API token is set; the
// assets and the sign-in need no session, everything else does.
func statusPage(r chi.Router, p *web.Site) {
	r.Group(func(r chi.Router) {
		r.Use(p.Guard)
		r.Method(http.MethodGet, "/assets/{file}", p.Assets())
		r.Method(http.MethodGet, "/login", p.SignInForm())
		r.Method(http.MethodPost, "/login", p.SignIn())
		r.Group(func(r chi.Router) {
			r.Use(p.RequireSession)
			r.Method(http.MethodGet, "/", p.Overview())
			r.Method(http.MethodGet, "/targets/{name}", p.Target())
			r.Method(http.MethodPost, "/targets/{name}/deploy", p.Deploy())
			r.Method(http.MethodGet, "/jobs/{id}", p.Job())
			r.Method(http.MethodGet, "/deliveries", p.RecentDeliveries())
			r.Method(http.MethodGet, "/events", p.Events())
			r.Method(http.MethodPost, "/logout", p.SignOut())
		})
	})
}

// metricsRoutes serves /metrics alone, on metrics_listen.
func metricsRoutes(logger *slog.Logger, d routeDeps) http.Handler {
	r := chi.NewRouter()
	r.Use(recoverer(logger))
	r.With(metricsAuth(d.metricsTokens, logger)).Method(http.MethodGet, "/metrics", d.metrics)
	return r
}

// apiAuth guards /api/v1; without a token the API is off and says so.
// Failed attempts count in failures when it is set.
func apiAuth(tokens [][]byte, failures *api.FailedLogins, logger *slog.Logger) func(http.Handler) http.Handler {
	if len(tokens) == 0 {
		return api.Disabled
	}
	if failures != nil {
		return api.RequireBearerLimited("hookd", tokens, failures, logger)
	}
	return api.RequireBearer("hookd", tokens, logger)
}

// metricsAuth guards /metrics when metrics_token is set; it is open otherwise.
func metricsAuth(tokens [][]byte, logger *slog.Logger) func(http.Handler) http.Handler {
	if len(tokens) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	return api.RequireBearer("hookd metrics", tokens, logger.With("component", "metrics"))
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:            reg,
		MaxRequestsInFlight: 4,
		// Prometheus asks for gzip. The page is about 12 KB; compressing it
		// every scrape costs hookd a compressor of about 1 MB (pooled, so
		// it stays live) and twice the CPU, to save 9 KB on a LAN.
		DisableCompression: true,
	})
}

// handleHealthz answers 200 while hookd runs, and 503 with the reason when
// it cannot work until its set-up is fixed (the Docker socket refuses its
// user): the image's HEALTHCHECK then marks the container unhealthy, where
// a Pi owner looks first. A Docker engine that is merely down is /readyz's
// business.
func handleHealthz(healthy func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if healthy != nil {
			if err := healthy(); err != nil {
				reply.JSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "reason": err.Error()})
				return
			}
		}
		reply.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// handleReadyz answers 503 while hookd cannot accept work (Docker does not
// answer, start-up is not done, the state file cannot be written); the
// client gets a fixed reason (see readiness), the log the detail.
func handleReadyz(ready func(context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			reply.JSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": readyReason(err)})
			return
		}
		reply.JSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// handleError answers every request with status and {"error": msg}.
func handleError(status int, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reply.JSON(w, status, map[string]string{"error": msg})
	}
}

// requestLog logs one line per request; probes, scrapes and the status
// page's event streams (which a proxy may cut and the browser reopen every
// minute) at debug level so that an idle hookd keeps its log quiet.
func requestLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m := httpsnoop.CaptureMetrics(next, w, r)
			level := slog.LevelInfo
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics", "/events":
				level = slog.LevelDebug
			}
			logger.Log(r.Context(), level, "http request",
				"method", r.Method,
				"path", r.URL.Path,
				"status", m.Code,
				"bytes", m.Written,
				"duration_seconds", m.Duration.Seconds(),
				"remote", r.RemoteAddr,
			)
		})
	}
}

// recoverer turns a handler panic into a 500 and one log line with the
// stack, so that one bad request cannot take the daemon down.
func recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				rec := recover()
				if rec == nil {
					return
				}
				if rec == http.ErrAbortHandler {
					panic(rec)
				}
				logger.Error("handler panic", "path", r.URL.Path, "panic", rec, "stack", string(debug.Stack()))
				reply.JSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
			}()
			next.ServeHTTP(w, r)
		})
	}
}
