// Package web is hookd's status page: a few server-rendered pages that
// answer "what is running, what happened to my last push, and why" on a
// phone, from the same binary, without a JavaScript build step.
//
//   - the overview (every target, what it runs, its last deploy, its next
//     poll, and first whatever needs attention),
//   - a target (its job history as a timeline, a chart of deploy duration
//     and lead time drawn on the server, "Deploy now" and "Force redeploy"),
//   - a job (its steps with timings, trigger, digests, error or rollback
//     reason and detail, and the notes reporters recorded),
//   - the recent webhook deliveries and how hookd answered them.
//
// The pages are html/template with their stylesheet and one small script
// embedded; they work with JavaScript off. With it, a page listens to the
// deployer's job events over Server-Sent Events and refreshes its live
// parts when a job it shows changes.
//
// Access: the page is off without an API token. People sign in with the
// API token and get a session cookie (HttpOnly, SameSite=Strict, Secure
// over TLS) that expires; its key is derived from the token, so removing a
// token from the configuration ends its sessions. Every action is a POST
// carrying a CSRF token bound to the session, behind net/http's
// cross-origin protection as well. Failed sign-ins count against the same
// per-client limit as the API's bearer tokens. Nothing secret is rendered.
//
// The package reads the deployer through its public methods only and never
// calls Docker.
package web

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
)

// Deployments is what the pages read from, and ask of, the deployer.
// *deployer.Deployer satisfies it.
type Deployments interface {
	// Submit queues req; it returns deploy.ErrUnknownTarget and
	// deploy.ErrQueueFull.
	Submit(ctx context.Context, req deploy.Request) ([]deploy.Job, error)
	// Targets returns the known targets sorted by name.
	Targets() []deploy.Target
	// Jobs returns matching jobs, newest first.
	Jobs(ctx context.Context, f deploy.JobFilter) ([]deploy.Job, error)
	// Job returns an error wrapping deploy.ErrJobNotFound for an unknown id.
	Job(ctx context.Context, id string) (deploy.Job, error)
	// Subscribe returns job events; a subscriber that falls behind loses
	// events, never slows a deploy.
	Subscribe(name string, buf int) (<-chan deploy.Event, func())
}

// Poller says when a target's registry is polled next. *poller.Poller
// satisfies it.
type Poller interface {
	NextPoll(target string) (time.Time, bool)
}

// Defaults of Config's zero values.
const (
	DefaultSessionTTL = 7 * 24 * time.Hour
	// DefaultMaxStreams bounds the open live-update connections.
	DefaultMaxStreams = 32
)

// Config configures the pages. Zero values select the defaults; without
// Tokens the page is off and says so.
type Config struct {
	// Tokens are the API tokens people sign in with.
	Tokens [][]byte
	// PublicURL is the address people reach hookd at (public_url), if
	// set: requests to its host over https get Secure cookies, and it is
	// a trusted origin for the pages' forms.
	PublicURL string
	// PollInterval is the poll interval, for the overview's words; 0 when
	// polling is off.
	PollInterval time.Duration
	// Poller, when polling is on (leave it nil otherwise).
	Poller Poller
	// Deliveries, when set, is the recent deliveries the webhook handler
	// answered; the page shows them.
	Deliveries *Deliveries
	// Credentials, when set, tells which registries refused hookd's
	// credentials on their last look-up.
	Credentials *CredentialWatch
	// FailedLogins counts failed sign-ins per client; share the API's so
	// that a guesser has one budget. A fresh one when nil.
	FailedLogins *api.FailedLogins
	// Stopping is closed when hookd begins to shut down: live-update
	// streams end then, so they do not hold the HTTP shutdown.
	Stopping <-chan struct{}
	// SessionTTL is how long a sign-in lasts (default DefaultSessionTTL).
	SessionTTL time.Duration
	// MaxStreams bounds the open live-update streams (default
	// DefaultMaxStreams); more are answered 503 and the page still works.
	MaxStreams int
	Logger     *slog.Logger
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
}

// Site serves the pages. Create it with New; its methods return the
// handlers that routes.go places.
type Site struct {
	cfg      Config
	deps     Deployments
	log      *slog.Logger
	keys     []sessionKey // one per token; none: the page is off
	failures *api.FailedLogins
	pages    func() (pages, error) // parsed on first use
	assets   *assets
	secure   secureRule
	streams  atomic.Int32
	started  time.Time
}

// New returns the site. It returns an error when PublicURL is not an
// http(s) URL. The pages' templates are parsed when the first page is
// asked for (their tests parse every one).
func New(cfg Config, d Deployments) (*Site, error) {
	if d == nil {
		return nil, errors.New("web: no deployments")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FailedLogins == nil {
		cfg.FailedLogins = api.NewFailedLogins()
	}
	sec, err := newSecureRule(cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	as, err := loadAssets()
	if err != nil {
		return nil, err
	}
	s := &Site{
		cfg:      cfg,
		deps:     d,
		log:      cfg.Logger,
		failures: cfg.FailedLogins,
		pages:    sync.OnceValues(func() (pages, error) { return parsePages(cfg.Now) }),
		assets:   as,
		secure:   sec,
		started:  cfg.Now(),
	}
	for _, t := range cfg.Tokens {
		if len(t) > 0 {
			s.keys = append(s.keys, deriveKey(t))
		}
	}
	return s, nil
}

// On reports whether the page is served (an API token is configured).
func (s *Site) On() bool { return len(s.keys) > 0 }

// JobURL returns the address of a job's page under publicURL (public_url),
// for the links notifications and GitHub deployment statuses give; "" when
// publicURL is empty.
func JobURL(publicURL, jobID string) string {
	if publicURL == "" || jobID == "" {
		return ""
	}
	return strings.TrimRight(publicURL, "/") + "/jobs/" + url.PathEscape(jobID)
}

// secureRule decides whether the session cookie is marked Secure: when the
// request came over TLS, or to public_url's host when that is https (TLS
// ended at a proxy in front of hookd). A request over plain http to
// another name (the Pi's LAN address) gets a cookie the browser keeps.
type secureRule struct {
	httpsHost string // public_url's host when its scheme is https
	origin    string // public_url's scheme://host, a trusted origin
}

func newSecureRule(publicURL string) (secureRule, error) {
	if publicURL == "" {
		return secureRule{}, nil
	}
	u, err := url.Parse(publicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return secureRule{}, fmt.Errorf("web: public URL %q is not an http(s) address", publicURL)
	}
	r := secureRule{origin: u.Scheme + "://" + u.Host}
	if u.Scheme == "https" {
		r.httpsHost = strings.ToLower(u.Host)
	}
	return r, nil
}

// files holds the templates and assets.
var _ fs.FS = embedded
