package main

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/system"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/deployer"
	"github.com/and3rn3t/hookd/internal/ghdeploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/notify"
)

// reportDrain bounds how long, once the workers stopped, the reporters
// may take to send what the last jobs left due (a final status, a
// message): one request per URL, usually.
const reportDrain = 5 * time.Second

// reporters are the subscribers of the job events that tell people what
// became of their deploys: GitHub deployment statuses and notifications.
// Either may be off.
type reporters struct {
	github  *ghdeploy.Reporter
	notify  *notify.Notifier
	targets *lateTargets

	stopRun context.CancelFunc
	unsub   []func()
	wg      sync.WaitGroup
}

// lateTargets lends the reporters the deployer's targets once it exists:
// the deployer takes the GitHub reporter as a gate, so it is made after it.
type lateTargets struct{ d *deployer.Deployer }

func (l *lateTargets) Targets() []deploy.Target {
	if l.d == nil {
		return nil
	}
	return l.d.Targets()
}

// hostNamer is the Engine API call that names the Docker host.
type hostNamer interface {
	Info(ctx context.Context) (system.Info, error)
}

// newReporters makes the reporters cfg asks for; none start before start.
func newReporters(ctx context.Context, cfg Config, docker hostNamer, m *metrics.Metrics, logger *slog.Logger) (*reporters, error) {
	r := &reporters{targets: &lateTargets{}}
	if cfg.GitHubToken == "" && len(cfg.NotifyURLs) == 0 {
		return r, nil
	}
	host := hostName(ctx, docker)
	if cfg.GitHubToken != "" {
		env := cfg.GitHubEnvironment
		if env == "" {
			env = host
		}
		gh, err := ghdeploy.New(ghdeploy.Config{
			Token:         cfg.GitHubToken,
			APIURL:        cfg.GitHubAPIURL,
			Environment:   env,
			PublicURL:     cfg.PublicURL,
			RequireChecks: cfg.GitHubRequireChecks,
			Targets:       r.targets,
			Metrics:       m,
			Logger:        logger.With("component", "github"),
		})
		if err != nil {
			return nil, err
		}
		r.github = gh
		logger.Info("reporting deploys as GitHub deployments", "environment", env, "require_checks", cfg.GitHubRequireChecks)
	}
	if len(cfg.NotifyURLs) > 0 {
		level, _ := notify.ParseLevel(cfg.NotifyLevel) // validated already
		n, err := notify.New(notify.Config{
			URLs:      cfg.NotifyURLs,
			Level:     level,
			Template:  cfg.NotifyTemplate,
			Host:      host,
			PublicURL: cfg.PublicURL,
			Metrics:   m,
			Logger:    logger.With("component", "notify"),
		})
		if err != nil {
			return nil, err
		}
		r.notify = n
		logger.Info("notifying of finished deploys", "urls", len(cfg.NotifyURLs), "level", cfg.NotifyLevel)
	}
	return r, nil
}

// gates are the policies the reporters add to every deploy: the checks
// gate when github_require_checks is on.
func (r *reporters) gates(cfg Config) []deployer.Gate {
	if r.github != nil && cfg.GitHubRequireChecks {
		return []deployer.Gate{r.github}
	}
	return nil
}

// start subscribes the reporters to dep's job events and runs them. Call
// it before dep runs, so that no event is missed.
func (r *reporters) start(dep *deployer.Deployer) {
	r.targets.d = dep
	ctx, cancel := context.WithCancel(context.Background())
	r.stopRun = cancel
	run := func(name string, f func(context.Context, <-chan deploy.Event)) {
		events, unsub := dep.Subscribe(name, 256)
		r.unsub = append(r.unsub, unsub)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			f(ctx, events)
		}()
	}
	if r.github != nil {
		run("github", r.github.Run)
	}
	if r.notify != nil {
		run("notify", r.notify.Run)
	}
}

// stop ends the subscriptions once the workers stopped: the reporters
// send what is due, within reportDrain, and return.
func (r *reporters) stop() {
	if r.stopRun == nil {
		return
	}
	for _, unsub := range r.unsub {
		unsub()
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(reportDrain)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.stopRun()
		<-done
	}
	r.stopRun()
}

// hostName is the Docker host's name, as the engine gives it (hookd in a
// container sees its container id as its own host name), else this
// machine's.
func hostName(ctx context.Context, docker hostNamer) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if docker != nil {
		if info, err := docker.Info(ctx); err == nil && info.Name != "" {
			return info.Name
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "docker"
}

// validateReporting checks the GitHub and notification settings; it reads
// notify_template_file into NotifyTemplate.
func validateReporting(c *Config, problems *configError) {
	if u, err := url.Parse(c.GitHubAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		problems.add("github_api_url: %q is not an http(s) address (example: https://api.github.com/)", c.GitHubAPIURL)
	}
	if c.GitHubRequireChecks && c.GitHubToken == "" {
		problems.add("github_require_checks: needs github_token (HOOKD_GITHUB_TOKEN) to ask GitHub about the checks")
	}
	if strings.ContainsAny(c.GitHubEnvironment, "\r\n\t") {
		problems.add("github_environment: must be one line")
	}
	if _, err := notify.ParseLevel(c.NotifyLevel); err != nil || c.NotifyLevel == "" {
		problems.add("notify_level: must be error, info or debug, got %q", c.NotifyLevel)
	}
	switch {
	case c.NotifyTemplate != "" && c.NotifyTemplateFile != "":
		problems.add("set notify_template or notify_template_file, not both")
	case c.NotifyTemplateFile != "":
		data, err := os.ReadFile(c.NotifyTemplateFile)
		if err != nil {
			problems.add("notify_template_file: %v", err)
			break
		}
		c.NotifyTemplate = string(data)
	}
	if c.NotifyTemplate != "" {
		if _, err := notify.ParseTemplate(c.NotifyTemplate); err != nil {
			problems.add("%v", err)
		}
	}
	if err := notify.CheckURLs(c.NotifyURLs); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			problems.add("notify_urls: %s", line)
		}
	}
}
