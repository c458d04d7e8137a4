package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/composehash"
	"github.com/and3rn3t/hookd/internal/connlimit"
	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/deployer"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/poller"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/store"
	"github.com/and3rn3t/hookd/internal/swarmsvc"
	"github.com/and3rn3t/hookd/internal/verify"
	"github.com/and3rn3t/hookd/internal/web"
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

// serve runs hookd until ctx is cancelled, shuts it down in order (see
// serveWith) and then closes the state file and the Docker client — only
// once every worker has returned, so never under a deploy step.
func serve(ctx context.Context, cfg Config, getenv func(string) string, logw io.Writer) error {
	logger := newLogger(cfg, logw)
	composehash.RouteLogs(logger.With("component", "compose"))
	for _, name := range cfg.readable {
		logger.Warn("secret file readable by every user on this host",
			"file", name, "fix", "chmod 600 "+name+" (or chmod 640 and a group hookd's user is in)")
	}
	dbPath := filepath.Join(cfg.StateDir, "hookd.db")
	st, err := store.Open(dbPath, store.Options{Logger: logger.With("component", "store")})
	if err != nil {
		return err
	}
	docker, err := client.NewClientWithOpts(dockerOptions(getenv)...)
	if err != nil {
		st.Close()
		return fmt.Errorf("docker client: %w", err)
	}
	closeClients := func() {
		docker.Close()
		if err := st.Close(); err != nil {
			logger.Error("close state file failed", "err", err)
		}
	}

	workersDone, err := serveWith(ctx, cfg, logger, st, docker)
	select {
	case <-workersDone:
		closeClients()
	default:
		// A worker overran its budget (logged) and still uses both: they
		// are closed when it returns, should the process live that long.
		go func() {
			<-workersDone
			closeClients()
		}()
	}
	logger.Info("stopped")
	return err
}

// shutdownBudgets splits shutdown_timeout between the two phases of a
// shutdown, so that neither can use up the other's time: a quarter for
// HTTP (waiting API calls are answered first, so what is left in flight is
// short), the rest for the workers to finish or abandon their current
// Docker step, which may include stopping a container (10 s by default).
func shutdownBudgets(total time.Duration) (httpBudget, workBudget time.Duration) {
	httpBudget = total / 4
	return httpBudget, total - httpBudget
}

// serveWith wires hookd around st and docker and serves until ctx is
// cancelled or a server fails. Then it shuts down in order, each phase
// within its budget (see shutdownBudgets):
//
//  1. deploys waiting for their jobs answer at once, with the jobs as they
//     stand;
//  2. the HTTP servers stop taking requests and finish those in flight
//     (what is still open when the budget runs out is cut off);
//  3. the workers are told to stop: each finishes or abandons its current
//     step, and an abandoned job goes back to the queue.
//
// The returned channel is closed once every worker that uses st or docker
// has returned; it is still open when the workers overran their budget.
func serveWith(ctx context.Context, cfg Config, logger *slog.Logger, st *store.Store, docker *client.Client) (<-chan struct{}, error) {
	workersDone := make(chan struct{})
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.BuildInfo{Version: version, Revision: revision})
	reg.MustRegister(metrics.StateQuarantined(st.Quarantined))

	keychain := registry.NewKeychain(staticCredentials(cfg), nil)
	regClient := registry.New(registry.Config{
		Keychain: keychain,
		Metrics:  m,
		Logger:   logger.With("component", "registry"),
	})
	rep, err := newReporters(ctx, cfg, docker, m, logger)
	if err != nil {
		close(workersDone)
		return workersDone, err
	}
	dep, err := newDeployer(cfg, docker, regClient, keychain, st, m, logger, rep.gates(cfg)...)
	if err != nil {
		close(workersDone)
		return workersDone, err
	}
	// The reporters hear every job event from the start and send what the
	// last jobs left due once the workers stopped (see reporters.stop).
	rep.start(dep)
	defer rep.stop()

	// The status page learns from the poller's look-ups which registries
	// refuse hookd's credentials.
	credentials := web.WatchCredentials(regClient)
	var (
		poll      *poller.Poller
		apiPoller api.Poller // stays a nil interface when polling is off
	)
	if cfg.PollInterval > 0 {
		poll = poller.New(poller.Config{
			Interval: cfg.PollInterval,
			Metrics:  m,
			Logger:   logger.With("component", "poller"),
			Digests:  st,
		}, dep, dep, credentials)
		apiPoller = poll
	} else {
		logger.Info("polling off (HOOKD_POLL_INTERVAL=0): only webhooks and the API trigger deploys")
	}

	// Deliveries go straight to the deployer. The poller keeps quiet while
	// they arrive by reading the targets' LastWebhook, not by standing in
	// their way.
	recent := web.NewDeliveries(0, 0) // the status page's recent deliveries
	hook, err := webhook.NewHandler(webhook.Config{
		Secrets:      toBytes(cfg.WebhookSecrets),
		MaxBodyBytes: cfg.MaxBodyBytes,
		RegistryHost: cfg.RegistryHost,
		Log:          recent,
	}, dep, st, m, logger.With("component", "webhook"))
	if err != nil {
		close(workersDone)
		return workersDone, err
	}
	if len(cfg.APITokens) == 0 {
		logger.Warn("api disabled: no HOOKD_API_TOKEN configured; /api/v1 answers 404 and the client verbs cannot be used")
	}

	proxies, _ := api.ParseProxies(cfg.TrustedProxies) // validated already
	stopping := make(chan struct{})                    // closed when shutdown begins
	failedLogins := api.NewFailedLogins()
	pages, err := web.New(web.Config{
		Tokens:       toBytes(cfg.APITokens),
		PublicURL:    cfg.PublicURL,
		PollInterval: cfg.PollInterval,
		Poller:       apiPoller,
		Deliveries:   recent,
		Credentials:  credentials,
		FailedLogins: failedLogins,
		Stopping:     stopping,
		Logger:       logger.With("component", "web"),
	}, dep)
	if err != nil {
		close(workersDone)
		return workersDone, err
	}
	surface := routeDeps{
		webhook:       hook,
		deployments:   dep,
		poller:        apiPoller,
		deploy:        api.DeployConfig{Stopping: stopping},
		apiTokens:     toBytes(cfg.APITokens),
		metrics:       metricsHandler(reg),
		metricsTokens: toBytes(cfg.MetricsTokens),
		metricsApart:  cfg.MetricsListen != "",
		ready:         readiness(logger, dep.Ready, st.Writable),
		healthy:       dep.Healthy,
		pages:         pages,
		failedLogins:  failedLogins,
		proxies:       proxies,
	}
	servers := []*http.Server{newServer(cfg.Listen, routes(logger, surface), logger)}
	if cfg.MetricsListen != "" {
		servers = append(servers, newServer(cfg.MetricsListen, metricsRoutes(logger, surface), logger))
	}
	listeners := make([]net.Listener, 0, len(servers))
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			close(workersDone)
			return workersDone, fmt.Errorf("listen: %w", err)
		}
		lim := connlimit.New(ln, cfg.MaxConnections, m.ConnectionsShed.Inc)
		srv.ConnState, srv.ConnContext = lim.ConnState, lim.ConnContext
		srv.Handler = connlimit.TrackBodies(srv.Handler)
		listeners = append(listeners, lim)
	}

	// Workers get their own context: they must outlive the HTTP server's
	// shutdown so that requests answered 202 are queued, not dropped.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var wg sync.WaitGroup // the workers: everything that uses st or docker
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
	go func() {
		wg.Wait()
		close(workersDone)
	}()
	var serving sync.WaitGroup
	listening := []any{"version", version}
	if lim := debug.SetMemoryLimit(-1); lim < math.MaxInt64 {
		listening = append(listening, "memory_limit_mib", lim>>20) // see softMemoryLimit
	}
	for i, srv := range servers {
		logger.Info("listening", append([]any{"addr", listeners[i].Addr().String()}, listening...)...)
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", srv.Addr, err)
			}
		}()
	}

	var runErr error
	httpBudget, workBudget := shutdownBudgets(cfg.ShutdownTimeout)
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "http_budget_seconds", httpBudget.Seconds(), "worker_budget_seconds", workBudget.Seconds())
	case runErr = <-errc:
		logger.Error("stopping after failure", "err", runErr)
	}

	close(stopping) // 1. waiting deploys answer now
	httpCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpBudget)
	defer cancel()
	for _, srv := range servers { // 2.
		if err := srv.Shutdown(httpCtx); err != nil {
			logger.Warn("http shutdown incomplete; closing open connections", "addr", srv.Addr, "err", err)
			srv.Close()
		}
	}
	serving.Wait()

	stopWork() // 3.
	budget := time.NewTimer(workBudget)
	defer budget.Stop()
	select {
	case <-workersDone:
	case <-budget.C:
		logger.Warn("workers did not stop in time; the state file stays open until they return, and reconcile finishes their step at the next start",
			"worker_budget_seconds", workBudget.Seconds())
	}
	return workersDone, runErr
}

// newDeployer wires the deployer with its sources of targets (containers
// first: a container keeps a name a service also has) and its strategies.
func newDeployer(cfg Config, docker *client.Client, reg *registry.Client, keychain authn.Keychain,
	st *store.Store, m *metrics.Metrics, logger *slog.Logger, gates ...deployer.Gate,
) (*deployer.Deployer, error) {
	scope := deploy.Scope(cfg.LabelFilter)
	ccfg := containers.Config{
		HealthTimeout: cfg.HealthTimeout,
		SettleTime:    cfg.SettleTime,
		Keychain:      keychain,
		PruneImages:   cfg.PruneImages,
		SelfID:        selfContainerID(),
		Scope:         scope,
		Logger:        logger.With("component", "containers"),
	}
	scfg := swarmsvc.Config{
		SettleTime: cfg.SettleTime,
		Keychain:   keychain,
		Scope:      scope,
		Logger:     logger.With("component", "swarm"),
	}
	gate, err := newVerifyGate(cfg, docker, reg, m, logger)
	if err != nil {
		return nil, err
	}
	return deployer.New(deployer.Config{
		State: st,
		Ping: func(ctx context.Context) error {
			_, err := docker.Ping(ctx)
			return err
		},
		Sources: []deployer.Source{containers.NewSource(docker, ccfg), swarmsvc.NewSource(docker, scfg)},
		Strategies: map[string]deployer.Strategy{
			containers.Name:           containers.NewRecreate(docker, ccfg),
			containers.StartFirstName: containers.NewStartFirst(docker, ccfg),
			swarmsvc.Name:             swarmsvc.New(docker, reg, scfg),
		},
		// The signature first: a deploy GitHub hears of is one hookd may run.
		Gates:       append([]deployer.Gate{gate}, gates...),
		Concurrency: cfg.Concurrency,
		QueueSize:   cfg.QueueSize,
		Metrics:     m,
		Logger:      logger.With("component", "deployer"),
	})
}

// newVerifyGate wires the signature gate. It is always in place, since a
// target's hookd.verify label may turn verification on where the setting
// has it off; the public-good trusted root is fetched (through TUF, into
// <state_dir>/sigstore) only when a signature is first checked.
func newVerifyGate(cfg Config, docker *client.Client, reg *registry.Client, m *metrics.Metrics, logger *slog.Logger) (*verify.Gate, error) {
	mode, err := verify.ParseMode(cfg.Verify)
	if err != nil {
		return nil, err // validated already
	}
	log := logger.With("component", "verify")
	var trust verify.Trust
	if cfg.VerifyTrustedRootFile != "" {
		roots, err := verify.LoadTrustedRootFile(cfg.VerifyTrustedRootFile)
		if err != nil {
			return nil, err
		}
		trust = roots
	} else {
		trust = verify.NewTUF(verify.TUFConfig{CacheDir: filepath.Join(cfg.StateDir, "sigstore"), Logger: log})
	}
	return verify.New(verify.Config{
		Mode:           mode,
		Trust:          trust,
		Registry:       reg,
		Labels:         verify.EngineLabels{Docker: docker},
		GitHubRegistry: cfg.RegistryHost,
		Metrics:        m,
		Logger:         log,
	})
}

func newServer(addr string, h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough for GitHub's 10 s delivery timeout and a scrape; the
		// API's wait=true answers extend their own deadline.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  120 * time.Second,
		// GitHub's headers are about 1 KB; every connection still reading
		// its headers may hold this much.
		MaxHeaderBytes: 16 << 10,
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
