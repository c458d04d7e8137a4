// Package notify tells people what became of their deploys: one message
// per finished job (or one for the jobs that finished together, one push
// deploying several targets) to every configured shoutrrr URL — ntfy,
// Gotify, Discord, Slack, Telegram, Matrix, Pushover, e-mail, a generic
// webhook and more, the URLs watchtower users already have.
//
// The Notifier is a subscriber of the deployer's job events. Each URL has
// its own bounded queue and goroutine, retries with backoff and counts its
// outcomes; nothing it does waits on a deploy or makes one wait.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"text/template"
	"time"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// Level says which finished jobs are told.
type Level int

// Levels, from the fewest messages to the most. The zero Level is
// LevelInfo, the default.
const (
	// LevelError: rollbacks, failures and refusals.
	LevelError Level = iota - 1
	// LevelInfo adds successes.
	LevelInfo
	// LevelDebug adds jobs that found their target up to date.
	LevelDebug
)

// ParseLevel reads "error", "info" or "debug".
func ParseLevel(s string) (Level, error) {
	switch s {
	case "error":
		return LevelError, nil
	case "info", "":
		return LevelInfo, nil
	case "debug":
		return LevelDebug, nil
	}
	return 0, fmt.Errorf("%q is not error, info or debug", s)
}

// tells reports whether a job that ended in status is told at level l.
func (l Level) tells(status deploy.Status) bool {
	switch status {
	case deploy.StatusRolledBack, deploy.StatusFailed, deploy.StatusRefused:
		return true
	case deploy.StatusSucceeded:
		return l >= LevelInfo
	case deploy.StatusUpToDate:
		return l >= LevelDebug
	}
	return false
}

// Config wires a Notifier. URLs is required.
type Config struct {
	// URLs are shoutrrr service URLs.
	URLs  []string
	Level Level
	// Template, when set, is a text/template for the message's text,
	// executed with a Message; the title stays hookd's.
	Template string
	// Host names the Docker host in titles ("web deployed on pi").
	Host string
	// PublicURL, when set, links each job to PublicURL/jobs/ID.
	PublicURL string
	// HTTPClient, when set, is what the services that accept one (Discord,
	// ntfy, PagerDuty) send with; by default each keeps its own.
	HTTPClient *http.Client

	// Settle is how long the notifier waits after a job finished, with no
	// other job queued or running, for others to finish with it (default
	// 2 s); MaxWait bounds how long a finished job waits for the others
	// (default 30 s).
	Settle, MaxWait time.Duration
	// SendTimeout bounds one attempt (default 60 s; Discord's sender
	// retries on its own within it).
	SendTimeout time.Duration
	// Retry is the wait between attempts (default 5 s doubling to 5 min),
	// Attempts how many a message gets (default 6) and QueueSize how many
	// messages wait per URL (default 16).
	Retry     backoff.Policy
	Attempts  int
	QueueSize int

	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Notifier sends the notifications. Create it with New and run it with
// Run.
type Notifier struct {
	cfg     Config
	tmpl    *template.Template
	senders []*sender
	log     *slog.Logger

	// revisions remembers the commit of the digests that went live, so
	// that the next message can say what it replaced by commit.
	revisions map[string]revision // by target
}

type revision struct{ digest, commit string }

// New returns a Notifier for cfg's URLs. An error names every URL that is
// not a service URL shoutrrr knows (by its place in the list, never its
// text: it holds tokens) and a template that does not parse or run.
func New(cfg Config) (*Notifier, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("notify: no URLs")
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 30 * time.Second
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = time.Minute
	}
	if cfg.Retry.Base <= 0 {
		cfg.Retry = backoff.Policy{Base: 5 * time.Second, Max: 5 * time.Minute, Jitter: 0.2}
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 6
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 16
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{cfg: cfg, log: cfg.Logger, revisions: make(map[string]revision)}
	var errs []error
	if cfg.Template != "" {
		t, err := ParseTemplate(cfg.Template)
		if err != nil {
			errs = append(errs, err)
		}
		n.tmpl = t
	}
	for i, raw := range cfg.URLs {
		s, err := newSender(i, raw, &n.cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.senders = append(n.senders, s)
		for _, o := range []string{metrics.NotifySent, metrics.NotifyFailed, metrics.NotifyDropped} {
			cfg.Metrics.Notifications.WithLabelValues(s.service, o)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return n, nil
}

// CheckURLs returns an error naming every URL that is not a service URL
// shoutrrr knows, by its place in the list.
func CheckURLs(urls []string) error {
	cfg := Config{QueueSize: 1, Logger: slog.New(slog.DiscardHandler)}
	var errs []error
	for i, raw := range urls {
		if _, err := newSender(i, raw, &cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ParseTemplate parses a notify_template and runs it once on an example
// message, so that a template that cannot run fails at start, not at the
// first deploy.
func ParseTemplate(text string) (*template.Template, error) {
	t, err := template.New("notify_template").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("notify_template: %w", err)
	}
	j := deploy.Job{ID: "example", Target: "web", Image: "ghcr.io/octo/web:latest", Status: deploy.StatusRolledBack,
		Request:        deploy.Request{Trigger: deploy.TriggerWebhook},
		RollbackReason: deploy.ReasonUnhealthy, RollbackDetail: "connection refused",
		DigestBefore: "sha256:" + fmt.Sprintf("%064d", 1), DigestAfter: "sha256:" + fmt.Sprintf("%064d", 2)}
	if _, _, err := render(compose([]deploy.Job{j}, "pi", "https://pi.example.net", nil), t); err != nil {
		return nil, fmt.Errorf("notify_template: %w", err)
	}
	return t, nil
}

// Run sends the notifications of the events until ctx is done or events is
// closed; after a close it sends what finished (each URL's queue, with
// retries) until ctx is done.
func (n *Notifier) Run(ctx context.Context, events <-chan deploy.Event) {
	var wg sync.WaitGroup
	for _, s := range n.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx)
		}()
	}
	defer func() {
		for _, s := range n.senders {
			close(s.queue)
		}
		wg.Wait()
	}()

	live := make(map[string]time.Time) // jobs queued or running, by id: when last seen
	var finished []deploy.Job
	from := make(map[string]string) // job id → the commit it replaced, when known
	var first, last time.Time       // when the first and the last of finished ended
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-events:
			if !ok {
				n.flush(finished, from)
				return
			}
			now := time.Now()
			if !e.Final() {
				live[e.Job.ID] = now
				break
			}
			delete(live, e.Job.ID)
			told := n.cfg.Level.tells(e.Job.Status)
			if c := n.revisionOf(e.Job.Target, e.Job.DigestBefore); c != "" && told {
				from[e.Job.ID] = c
			}
			n.remember(e.Job)
			if !told {
				break
			}
			if len(finished) == 0 {
				first = now
			}
			finished = append(finished, e.Job)
			last = now
		case <-timer.C:
		case <-ctx.Done():
			return
		}
		if len(finished) == 0 {
			timer.Reset(time.Hour)
			continue
		}
		now := time.Now()
		// A job the notifier lost the end of (a dropped event) does not
		// hold the others back past MaxWait, nor is it kept forever.
		busy := false
		for id, seen := range live {
			if now.Sub(seen) > time.Hour {
				delete(live, id)
				continue
			}
			busy = true
		}
		settled := !busy && now.Sub(last) >= n.cfg.Settle
		if settled || now.Sub(first) >= n.cfg.MaxWait {
			n.flush(finished, from)
			finished = nil
			clear(from)
			timer.Reset(time.Hour)
			continue
		}
		wait := n.cfg.MaxWait - now.Sub(first)
		if !busy {
			wait = min(wait, n.cfg.Settle-now.Sub(last))
		}
		timer.Reset(wait)
	}
}

// remember notes the commit of a digest that went live on a target.
func (n *Notifier) remember(j deploy.Job) {
	if j.Status == deploy.StatusSucceeded && j.DigestAfter != "" && j.Revision != "" {
		n.revisions[j.Target] = revision{digest: j.DigestAfter, commit: j.Revision}
	}
}

func (n *Notifier) revisionOf(target, digest string) string {
	if r, ok := n.revisions[target]; ok && r.digest == digest && digest != "" {
		return r.commit
	}
	return ""
}

// flush queues one message about jobs to every URL. from holds the commit
// a job replaced, by job id, where it is known.
func (n *Notifier) flush(jobs []deploy.Job, from map[string]string) {
	if len(jobs) == 0 {
		return
	}
	m := compose(jobs, n.cfg.Host, n.cfg.PublicURL, from)
	title, text, err := render(m, n.tmpl)
	if err != nil {
		n.log.Warn("notify_template failed; sending the default text", "err", err)
	}
	for _, s := range n.senders {
		s.enqueue(note{title: title, text: text})
	}
}
