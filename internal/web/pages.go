package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/webhook"
)

// pageKind names a page's template (its file under templates/).
type pageKind string

const (
	pageOverview   pageKind = "overview.html"
	pageTarget     pageKind = "target.html"
	pageJob        pageKind = "job.html"
	pageDeliveries pageKind = "deliveries.html"
	pageSignIn     pageKind = "signin.html"
	pageMessage    pageKind = "message.html"
	pageOff        pageKind = "off.html"
	pageReload     pageKind = "reload.html"
)

var pageKinds = []pageKind{pageOverview, pageTarget, pageJob, pageDeliveries, pageSignIn, pageMessage, pageOff, pageReload}

// pages are the parsed templates, one per page, each with the layout.
type pages map[pageKind]*template.Template

// Views of the pages that are not built in views.go.
type (
	overviewView struct {
		page
		Attention []attention
		Targets   []targetView
		Polling   string
	}
	targetPageView struct {
		page
		T     targetView
		Jobs  []deploy.Job
		Chart chartView
	}
	jobView struct {
		page
		Job   deploy.Job
		Steps []step
		// Running is true while the job is queued or running.
		Running bool
	}
	deliveriesView struct {
		page
		Signed   []webhook.Delivery
		Unsigned []webhook.Delivery
		Since    time.Time
		Off      bool // no delivery log is wired
	}
	signInView struct {
		page
		Next  string
		Error string
	}
	messageView struct {
		page
		Heading string
		Text    string
		Back    string // a link relative to the root, "" for the overview
	}
	offView    struct{ page }
	reloadView struct{ page }
)

// parsePages parses every page. It is called once, when the first page is
// asked for: a hookd whose page nobody opens does not hold its templates
// (about 200 KB of heap).
func parsePages(now func() time.Time) (pages, error) {
	funcs := template.FuncMap{
		"ago":         func(t time.Time) string { return ago(now(), t) },
		"until":       func(t time.Time) string { return until(now(), t) },
		"stamp":       stamp,
		"iso":         iso,
		"seconds":     seconds,
		"between":     between,
		"short":       short,
		"revision":    revision,
		"statusText":  statusText,
		"statusClass": statusClass,
		"jobState":    jobState,
		"reasonText":  reasonText,
		"trigger":     triggerText,
		"path":        pathEscape,
		"sourceURL":   sourceURL,
		"commitURL":   commitURL,
		"duration":    func(j deploy.Job) string { return seconds(duration(j)) },
		"leadTime": func(j deploy.Job) string {
			if l := leadTime(j); l > 0 {
				return seconds(l)
			}
			return ""
		},
		"lines": func(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") },
		"statusCode": func(code int) string {
			if code == 0 {
				return ""
			}
			return fmt.Sprintf("%d %s", code, http.StatusText(code))
		},
		"codeClass": func(code int) string {
			switch {
			case code >= 500:
				return "bad"
			case code >= 400:
				return "warn"
			default:
				return "ok"
			}
		},
	}
	parse := func(name string) (*template.Template, error) {
		t, err := template.New(name).Funcs(funcs).ParseFS(embedded, "templates/layout.html", "templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", name, err)
		}
		return t, nil
	}
	p := pages{}
	for _, k := range pageKinds {
		t, err := parse(string(k))
		if err != nil {
			return nil, err
		}
		p[k] = t
	}
	return p, nil
}

// rootOf is the relative path from r's path back to the site's root.
func rootOf(r *http.Request) string {
	n := strings.Count(r.URL.Path, "/") - 1
	if n <= 0 {
		return "./"
	}
	return strings.Repeat("../", n)
}

// page returns the layout's data for r.
func (s *Site) page(r *http.Request, title string) page {
	p := page{Title: title, Root: rootOf(r), CSS: s.assets.css, JS: s.assets.js, Now: s.cfg.Now()}
	if sess, ok := s.currentSession(r); ok {
		p.CSRF = s.csrf(sess)
	}
	return p
}

// bufs recycles render buffers: a page is rendered whole before anything
// is sent, so a template error never leaves half a page.
var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// render executes the page kind with v and answers status with it.
func (s *Site) render(w http.ResponseWriter, r *http.Request, status int, kind pageKind, v any) {
	ps, err := s.pages()
	if err != nil {
		s.log.ErrorContext(r.Context(), "parse pages failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	t := ps[kind]
	buf := bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 256<<10 {
			bufs.Put(buf)
		}
	}()
	if err := t.ExecuteTemplate(buf, "layout", v); err != nil {
		s.log.ErrorContext(r.Context(), "render page failed", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages show state that changes and is not for shared caches.
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", fmt.Sprint(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// redirect answers 303 to target, a path relative to the site's root. The
// Location is relative to the request's path, so it holds under a proxy's
// path prefix (http.Redirect would make it absolute).
func (s *Site) redirect(w http.ResponseWriter, r *http.Request, target string) {
	w.Header().Set("Location", rootOf(r)+target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// refuse answers status with a short page saying why.
func (s *Site) refuse(w http.ResponseWriter, r *http.Request, status int, text string) {
	heading := http.StatusText(status)
	s.render(w, r, status, pageMessage, messageView{page: s.page(r, heading), Heading: heading, Text: text})
}

func (s *Site) notFound(w http.ResponseWriter, r *http.Request) {
	s.refuse(w, r, http.StatusNotFound, "There is nothing here.")
}

func (s *Site) signInPage(w http.ResponseWriter, r *http.Request, status int, next, msg string) {
	v := signInView{page: s.page(r, "Sign in"), Next: s.cleanNext(next), Error: msg}
	v.CSRF = "" // signed out: no navigation
	s.render(w, r, status, pageSignIn, v)
}

// targetJobs is how many jobs a target's page lists.
const targetJobs = 50

// Overview returns the handler of GET /: what needs attention first, then
// every target with what it runs, its health, its last deploy and its
// next poll.
func (s *Site) Overview() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := s.cfg.Now()
		targets := s.deps.Targets()
		views := make([]targetView, 0, len(targets))
		for _, t := range targets {
			jobs, err := s.recentJobs(r.Context(), t)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			v := newTargetView(now, t, jobs)
			if s.cfg.Poller != nil {
				v.NextPoll, v.Polled = s.cfg.Poller.NextPoll(t.Name)
			}
			views = append(views, v)
		}
		in := attentionInput{Now: now, Targets: views, Polling: s.cfg.Poller != nil, Refusals: s.cfg.Credentials.Refusals()}
		var lastDelivery time.Time
		if s.cfg.Deliveries != nil {
			lastDelivery = s.cfg.Deliveries.LastSigned()
			in.Forged = s.cfg.Deliveries.Forged(now.Add(-silence))
		}
		in.LastWebhook = lastWebhook(views, lastDelivery)
		v := overviewView{page: s.page(r, "Overview"), Attention: attentionItems(in), Targets: views}
		v.Nav, v.Live = "overview", "all"
		if s.cfg.Poller != nil {
			v.Polling = fmt.Sprintf("hookd asks the registry every %s while webhooks are silent.", roughly(s.cfg.PollInterval))
		} else {
			v.Polling = "Registry polling is off: only webhooks and manual deploys start deploys."
		}
		s.render(w, r, http.StatusOK, pageOverview, v)
	})
}

// recentJobs returns enough of t's newest jobs to say what it runs and
// how its last gate went: the newest one when it deployed what runs, a
// few more otherwise (it is under way, failed, or found nothing to do).
func (s *Site) recentJobs(ctx context.Context, t deploy.Target) ([]deploy.Job, error) {
	jobs, err := s.deps.Jobs(ctx, deploy.JobFilter{Target: t.Name, Limit: 1})
	if err != nil || len(jobs) == 0 {
		return jobs, err
	}
	// The newest job deployed what runs and says what it is: enough.
	if j := jobs[0]; j.Status == deploy.StatusSucceeded && (t.Digest == "" || j.DigestAfter == t.Digest && j.Revision != "") {
		return jobs, nil
	}
	return s.deps.Jobs(ctx, deploy.JobFilter{Target: t.Name, Limit: 10})
}

// Target returns the handler of GET /targets/{name}: the target's jobs as
// a timeline, a chart of their durations and lead times, and its deploy
// buttons. The route must name its parameter "name".
func (s *Site) Target() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, ok := s.target(r.PathValue("name"))
		if !ok {
			s.refuse(w, r, http.StatusNotFound, fmt.Sprintf("hookd has no target called %q.", r.PathValue("name")))
			return
		}
		jobs, err := s.deps.Jobs(r.Context(), deploy.JobFilter{Target: t.Name, Limit: targetJobs})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		tv := newTargetView(s.cfg.Now(), t, jobs)
		if s.cfg.Poller != nil {
			tv.NextPoll, tv.Polled = s.cfg.Poller.NextPoll(t.Name)
		}
		v := targetPageView{page: s.page(r, t.Name), T: tv, Jobs: jobs, Chart: newChart(jobs)}
		v.Live = "target=" + t.Name
		s.render(w, r, http.StatusOK, pageTarget, v)
	})
}

func (s *Site) target(name string) (deploy.Target, bool) {
	for _, t := range s.deps.Targets() {
		if t.Name == name {
			return t, true
		}
	}
	return deploy.Target{}, false
}

// Job returns the handler of GET /jobs/{id}: one job's steps with timings,
// its trigger, digests, error or rollback reason and detail, and its
// notes. The route must name its parameter "id".
func (s *Site) Job() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		j, err := s.deps.Job(r.Context(), id)
		if errors.Is(err, deploy.ErrJobNotFound) {
			s.refuse(w, r, http.StatusNotFound, fmt.Sprintf("hookd has no job %q (old jobs are pruned).", id))
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v := jobView{page: s.page(r, "Job "+j.ID), Job: j, Steps: jobSteps(s.cfg.Now(), j), Running: !j.Status.Final()}
		v.Title = j.Target + ": " + jobState(j)
		v.Live = "job=" + j.ID
		s.render(w, r, http.StatusOK, pageJob, v)
	})
}

// RecentDeliveries returns the handler of GET /deliveries: the webhook
// deliveries hookd answered since it started, newest first.
func (s *Site) RecentDeliveries() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := deliveriesView{page: s.page(r, "Recent deliveries"), Since: s.started, Off: s.cfg.Deliveries == nil}
		v.Nav = "deliveries"
		if s.cfg.Deliveries != nil {
			v.Signed, v.Unsigned = s.cfg.Deliveries.Signed(), s.cfg.Deliveries.Unsigned()
		}
		s.render(w, r, http.StatusOK, pageDeliveries, v)
	})
}

// submitTimeout bounds queueing a deploy (persisting its job).
const submitTimeout = 10 * time.Second

// Deploy returns the handler of POST /targets/{name}/deploy (form field
// force=1 recreates even when up to date): it queues a manual deploy and
// goes to its job's page.
func (s *Site) Deploy() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		force := r.PostFormValue("force") == "1"
		req := deploy.Request{Target: name, Trigger: deploy.TriggerManual, ID: requestID(), Force: force, ReceivedAt: time.Now()}
		// A person who closes the page must not leave the request half
		// submitted: queueing does not follow the request's context.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), submitTimeout)
		jobs, err := s.deps.Submit(ctx, req)
		cancel()
		switch {
		case errors.Is(err, deploy.ErrUnknownTarget) || err == nil && len(jobs) == 0:
			s.refuse(w, r, http.StatusNotFound, fmt.Sprintf("hookd has no target called %q.", name))
			return
		case errors.Is(err, deploy.ErrQueueFull):
			s.refuse(w, r, http.StatusServiceUnavailable, "The deploy queue is full. Try again in a minute.")
			return
		case err != nil:
			s.fail(w, r, err)
			return
		}
		s.log.InfoContext(r.Context(), "manual deploy queued", "request_id", req.ID, "target", name, "force", force, "job_id", jobs[0].ID)
		s.redirect(w, r, "jobs/"+pathEscape(jobs[0].ID))
	})
}

// fail answers 500 for an error of hookd's own; the detail goes to the log.
func (s *Site) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.log.ErrorContext(r.Context(), "status page request failed", "path", r.URL.Path, "err", err)
	s.refuse(w, r, http.StatusInternalServerError, "hookd could not read its state; its log says why.")
}

// requestID names a manual deploy from the page, for tracing.
func requestID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "page-" + hex.EncodeToString(b[:])
}
