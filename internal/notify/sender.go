package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/services/chat/discord"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// note is one message for one URL.
type note struct {
	title, text string
}

// sender delivers the messages of one URL, one at a time, with retries.
type sender struct {
	name    string // "notify_urls[2]", how logs name the URL
	service string // the URL's scheme: discord, ntfy, generic, …
	svc     types.Service
	redact  func(string) string
	queue   chan note
	cfg     *Config
	log     *slog.Logger

	// inflight holds the result of a send that overran SendTimeout (or
	// was cut short by shutdown): the next send waits for it, so that at
	// most one send per URL is ever under way.
	inflight chan error
	failing  bool // a failure was logged; the next success says so
	full     bool // the queue overflowed; logged once until it drains
}

// newSender parses the i-th URL into a shoutrrr service. Errors name the
// URL by its index and service, never by its text.
func newSender(i int, raw string, cfg *Config) (*sender, error) {
	name := fmt.Sprintf("notify_urls[%d]", i)
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("%s is not a service URL (like ntfy://ntfy.sh/topic or discord://token@id)", name)
	}
	service := strings.ToLower(strings.SplitN(u.Scheme, "+", 2)[0])
	redact := redactor(u)
	if service == "discord" && !hasParam(u, "splitlines") {
		// Discord turns every line into an embed of its own by default;
		// a deploy message is one embed.
		q := u.Query()
		q.Set("splitlines", "no")
		u.RawQuery = q.Encode()
	}
	var r router.ServiceRouter // no logger: shoutrrr logs URLs
	svc, err := r.Locate(u.String())
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %s (the URL formats are at https://shoutrrr.nickfedor.com/)", name, service, redact(err.Error()))
	}
	if c := cfg.HTTPClient; c != nil {
		switch s := svc.(type) {
		case *discord.Service:
			s.HTTPClient = c
		case interface{ SetHTTPClient(*http.Client) }:
			s.SetHTTPClient(c)
		}
	}
	return &sender{
		name: name, service: service, svc: svc, redact: redact, cfg: cfg,
		queue: make(chan note, cfg.QueueSize),
		log:   cfg.Logger.With("url", name, "service", service),
	}, nil
}

func hasParam(u *url.URL, key string) bool {
	for k := range u.Query() {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// enqueue queues n without waiting; a full queue drops it, counted.
func (s *sender) enqueue(n note) {
	select {
	case s.queue <- n:
		s.full = false
	default:
		s.cfg.Metrics.Notifications.WithLabelValues(s.service, metrics.NotifyDropped).Inc()
		if !s.full {
			s.full = true
			s.log.Warn("notification dropped: the queue of this URL is full; it has been failing", "queue_size", cap(s.queue))
		}
	}
}

// run sends the queued messages until the queue is closed and empty, or
// ctx is done.
func (s *sender) run(ctx context.Context) {
	for {
		select {
		case n, ok := <-s.queue:
			if !ok {
				return
			}
			s.deliver(ctx, n)
		case <-ctx.Done():
			return
		}
	}
}

// deliver sends n, retrying with backoff up to Attempts times.
func (s *sender) deliver(ctx context.Context, n note) {
	counts := s.cfg.Metrics.Notifications
	for attempt := 1; ; attempt++ {
		err := s.send(ctx, n)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			counts.WithLabelValues(s.service, metrics.NotifySent).Inc()
			if s.failing {
				s.failing = false
				s.log.Info("notifications work again")
			}
			return
		}
		counts.WithLabelValues(s.service, metrics.NotifyFailed).Inc()
		msg := s.redact(err.Error())
		if !s.failing {
			s.failing = true
			s.log.Warn("notification failed; retrying", "err", msg, "attempt", attempt)
		}
		if attempt >= s.cfg.Attempts {
			counts.WithLabelValues(s.service, metrics.NotifyDropped).Inc()
			s.log.Warn("notification dropped", "attempts", attempt, "err", msg, "title", n.title)
			return
		}
		t := time.NewTimer(s.cfg.Retry.Delay(attempt, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

var errSendTimeout = errors.New("the service did not answer in time")

// send makes one attempt. shoutrrr's Send takes no context: it runs in a
// goroutine of its own, and one that overruns SendTimeout or shutdown is
// left to finish while the next attempt waits for it.
func (s *sender) send(ctx context.Context, n note) error {
	if s.inflight != nil {
		select {
		case <-s.inflight:
			s.inflight = nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan error, 1)
	params := types.Params{types.TitleKey: n.title}
	go func() { done <- s.svc.Send(n.text, &params) }()
	t := time.NewTimer(s.cfg.SendTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		s.inflight = done
		return errSendTimeout
	case <-ctx.Done():
		s.inflight = done
		return ctx.Err()
	}
}

// redactor returns a function that removes the secret parts of u from a
// text (shoutrrr's errors quote the URLs they post to): the user and
// password, every path segment and query value, the fragment, and the
// host unless it is a domain name or an address with a port (Discord,
// Slack and Pushover URLs carry a token as the "host"). Parts shorter
// than 3 characters are left: they keep no secret, and removing them
// would garble the text.
func redactor(u *url.URL) func(string) string {
	var parts []string
	add := func(s string) {
		if len(s) < 3 {
			return
		}
		parts = append(parts, s)
		if e := url.PathEscape(s); e != s {
			parts = append(parts, e)
		}
		if e := url.QueryEscape(s); e != s {
			parts = append(parts, e)
		}
	}
	if u.User != nil {
		add(u.User.Username())
		if p, ok := u.User.Password(); ok {
			add(p)
		}
	}
	if h := u.Hostname(); !strings.Contains(h, ".") && u.Port() == "" {
		add(h)
	}
	for _, seg := range strings.Split(u.EscapedPath(), "/") {
		add(seg)
		if p, err := url.PathUnescape(seg); err == nil {
			add(p)
		}
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			add(v)
		}
	}
	add(u.Fragment)
	// The longest first, so that a part inside another does not leave the
	// rest of the other behind.
	sort.Slice(parts, func(a, b int) bool { return len(parts[a]) > len(parts[b]) })
	return func(s string) string {
		for _, p := range parts {
			s = strings.ReplaceAll(s, p, "***")
		}
		return s
	}
}
