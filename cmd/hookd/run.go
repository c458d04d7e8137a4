package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deployer"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/poller"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/store"
	"github.com/and3rn3t/hookd/internal/webhook"
)

// The bbolt store is the deployer's state.
var _ deployer.State = (*store.Store)(nil)

// Stamped at build time: -ldflags "-X main.version=v1.2.3 -X main.revision=abc".
var (
	version  = "dev"
	revision = ""
)

// run is the whole program; main only supplies the process's environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "deploy", "status":
			return runClient(ctx, args[0], args[1:], getenv, stdout, stderr)
		case "healthcheck":
			return healthcheck(ctx, getenv)
		case "version", "--version":
			fmt.Fprintf(stdout, "hookd %s %s %s\n", version, revision, runtime.Version())
			return nil
		case "serve":
			args = args[1:]
		}
	}
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, getenv, stderr)
}

// exitCode reports err and maps it to the process's exit status: 0 for
// success and --help, 2 for usage and configuration errors, 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	var cfgErr *configError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &cfgErr), errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "hookd: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "hookd: %v\n", err)
		return 1
	}
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs hookd until ctx is cancelled, then shuts down in order: stop
// taking requests (in-flight ones finish), stop the workers (the current
// deploy step finishes or is abandoned where reconcile can pick it up),
// close the clients.
func serve(ctx context.Context, cfg Config, getenv func(string) string, logw io.Writer) error {
	logger := newLogger(cfg, logw)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.BuildInfo{Version: version, Revision: revision})

	dbPath := filepath.Join(cfg.StateDir, "hookd.db")
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	docker, err := client.NewClientWithOpts(dockerOptions(getenv)...)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()

	keychain := registry.NewKeychain(staticCredentials(cfg), nil)
	dep := deployer.New(docker, deployer.Config{
		HealthTimeout: cfg.HealthTimeout,
		SettleTime:    cfg.SettleTime,
		Concurrency:   cfg.Concurrency,
		QueueSize:     cfg.QueueSize,
		Keychain:      keychain,
		PruneImages:   cfg.PruneImages,
		LabelFilter:   cfg.LabelFilter,
		State:         st,
		Metrics:       m,
		Logger:        logger.With("component", "deployer"),
		SelfID:        selfContainerID(),
	})

	// Webhook requests go through the poller (when polling is on) so that
	// deliveries naming a target push its next registry check back.
	var (
		submitter webhook.Submitter = dep
		poll      *poller.Poller
		apiPoller api.Poller // stays a nil interface when polling is off
	)
	if cfg.PollInterval > 0 {
		regClient := registry.New(registry.Config{
			Keychain: keychain,
			Metrics:  m,
			Logger:   logger.With("component", "registry"),
		})
		poll = poller.New(poller.Config{
			Interval: cfg.PollInterval,
			Metrics:  m,
			Logger:   logger.With("component", "poller"),
			Digests:  st,
		}, dep, dep, regClient)
		submitter, apiPoller = poll, poll
	} else {
		logger.Info("polling off (HOOKD_POLL_INTERVAL=0): only webhooks and the API trigger deploys")
	}

	hook, err := webhook.NewHandler(webhook.Config{
		Secrets:      toBytes(cfg.WebhookSecrets),
		MaxBodyBytes: cfg.MaxBodyBytes,
		RegistryHost: cfg.RegistryHost,
	}, submitter, st, m, logger.With("component", "webhook"))
	if err != nil {
		return err
	}
	apiHandler := api.New(api.Config{Tokens: toBytes(cfg.APITokens), Poller: apiPoller}, dep, logger.With("component", "api"))
	if len(cfg.APITokens) == 0 {
		logger.Warn("api disabled: no HOOKD_API_TOKEN configured; /api/v1 answers 404 and the client verbs cannot be used")
	}

	mainHandler := routes(logger, routeDeps{
		webhook:   hook,
		api:       apiHandler,
		metrics:   metricsHandler(reg, cfg),
		ready:     dep.Ready,
		healthy:   dep.Healthy,
		noMetrics: cfg.MetricsListen != "",
	})
	servers := []*http.Server{newServer(cfg.Listen, mainHandler, logger)}
	if cfg.MetricsListen != "" {
		servers = append(servers, newServer(cfg.MetricsListen, metricsRoutes(logger, metricsHandler(reg, cfg)), logger))
	}
	listeners := make([]net.Listener, 0, len(servers))
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen: %w", err)
		}
		listeners = append(listeners, ln)
	}

	// Workers get their own context: they must outlive the HTTP server's
	// shutdown so that requests answered 202 are queued, not dropped.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var wg sync.WaitGroup
	errc := make(chan error, len(servers)+2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := dep.Run(workCtx); err != nil {
			errc <- fmt.Errorf("deployer: %w", err)
		}
	}()
	if poll != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := poll.Run(workCtx); err != nil {
				errc <- fmt.Errorf("poller: %w", err)
			}
		}()
	}
	for i, srv := range servers {
		logger.Info("listening", "addr", listeners[i].Addr().String(), "version", version)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", srv.Addr, err)
			}
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case runErr = <-errc:
		logger.Error("stopping after failure", "err", runErr)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			logger.Warn("http shutdown incomplete", "addr", srv.Addr, "err", err)
		}
	}
	stopWork()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-shutdownCtx.Done():
		logger.Warn("workers did not stop in time; reconcile will finish their step at the next start")
	}
	logger.Info("stopped")
	return runErr
}

func newServer(addr string, h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough for GitHub's 10 s delivery timeout and a scrape; the
		// API's wait=true answers extend their own deadline.
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// dockerOptions finds the engine the standard way (DOCKER_HOST, TLS from
// DOCKER_CERT_PATH and DOCKER_TLS_VERIFY, else the local socket), reading
// the injected environment rather than the process's.
func dockerOptions(getenv func(string) string) []client.Opt {
	opts := []client.Opt{client.WithAPIVersionNegotiation()}
	if host := getenv("DOCKER_HOST"); host != "" {
		opts = append(opts, client.WithHost(host))
	}
	if dir := getenv("DOCKER_CERT_PATH"); dir != "" && getenv("DOCKER_TLS_VERIFY") != "" {
		opts = append(opts, client.WithTLSClientConfig(
			filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")))
	}
	if v := getenv("DOCKER_API_VERSION"); v != "" {
		opts = append(opts, client.WithVersion(v))
	}
	return opts
}

func toBytes(ss []string) [][]byte {
	out := make([][]byte, 0, len(ss))
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

func staticCredentials(cfg Config) map[string]authn.Basic {
	if cfg.RegistryUsername == "" {
		return nil
	}
	return map[string]authn.Basic{
		cfg.RegistryHost: {Username: cfg.RegistryUsername, Password: cfg.RegistryPassword},
	}
}

// containerIDPattern finds hookd's own container id in its mount table:
// Docker bind-mounts /etc/hostname from the container's directory.
var containerIDPattern = regexp.MustCompile(`/containers/([0-9a-f]{64})/(?:hostname|resolv\.conf|hosts)`)

// selfContainerID returns the id of the container hookd runs in, or "".
// The deployer uses it to refuse replacing itself.
func selfContainerID() string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	if m := containerIDPattern.FindSubmatch(data); m != nil {
		return string(m[1])
	}
	return ""
}

// healthcheck asks the local hookd's /healthz; the container image has no
// shell or curl, so its HEALTHCHECK runs "hookd healthcheck".
func healthcheck(ctx context.Context, getenv func(string) string) error {
	addr := getenv("HOOKD_LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: HOOKD_LISTEN %q is not host:port", addr)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Reason string `json:"reason"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body)
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("healthcheck: /healthz answered %s", strings.TrimSpace(resp.Status))
		if body.Reason != "" {
			msg += ": " + body.Reason
		}
		return errors.New(msg)
	}
	return nil
}
