package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/felixge/httpsnoop"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type routeDeps struct {
	webhook   http.Handler
	api       http.Handler
	metrics   http.Handler
	ready     func(context.Context) error
	healthy   func() error
	noMetrics bool // /metrics is served on its own listener
}

// routes is hookd's whole HTTP surface.
func routes(logger *slog.Logger, d routeDeps) http.Handler {
	r := chi.NewRouter()
	r.Use(recoverer(logger), requestLog(logger))
	r.Post("/hooks/github", d.webhook.ServeHTTP)
	r.Mount("/api/v1", d.api)
	if !d.noMetrics {
		r.Method(http.MethodGet, "/metrics", d.metrics)
	}
	r.Get("/healthz", handleHealthz(d.healthy))
	r.Get("/readyz", handleReadyz(d.ready))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	})
	return r
}

// metricsRoutes serves /metrics alone, for HOOKD_METRICS_LISTEN.
func metricsRoutes(logger *slog.Logger, metrics http.Handler) http.Handler {
	r := chi.NewRouter()
	r.Use(recoverer(logger))
	r.Method(http.MethodGet, "/metrics", metrics)
	return r
}

func metricsHandler(reg *prometheus.Registry, cfg Config) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:            reg,
		MaxRequestsInFlight: 4,
		// Prometheus asks for gzip. The page is about 12 KB; compressing it
		// every scrape costs hookd a compressor of about 1 MB (pooled, so
		// it stays live) and twice the CPU, to save 9 KB on a LAN.
		DisableCompression: true,
	})
	if len(cfg.MetricsTokens) == 0 {
		return h
	}
	sums := make([][32]byte, len(cfg.MetricsTokens))
	for i, t := range cfg.MetricsTokens {
		sums[i] = sha256.Sum256([]byte(t))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Compare digests so neither the length nor the prefix of a
		// token shows in the timing; check every token.
		sum := sha256.Sum256([]byte(got))
		match := 0
		for i := range sums {
			match |= subtle.ConstantTimeCompare(sum[:], sums[i][:])
		}
		if !ok || match != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hookd metrics"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// handleHealthz answers 200 while hookd runs, and 503 with the reason when
// it cannot work until its set-up is fixed (the Docker socket refuses its
// user): the image's HEALTHCHECK then marks the container unhealthy, where
// a Pi owner looks first. A Docker engine that is merely down is /readyz's
// business.
func handleHealthz(healthy func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if healthy != nil {
			if err := healthy(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "reason": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz answers 503 while hookd cannot do its job (Docker does not
// answer); the reason goes to the log, not to the client.
func handleReadyz(ready func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "docker engine not reachable or targets not yet discovered"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// requestLog logs one line per request; probes and scrapes at debug level
// so that an idle hookd keeps its log quiet.
func requestLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m := httpsnoop.CaptureMetrics(next, w, r)
			level := slog.LevelInfo
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
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
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
			}()
			next.ServeHTTP(w, r)
		})
	}
}
