// Package webhook turns GitHub package deliveries into deploy requests.
//
// The Handler serves POST /hooks/github: it caps the body, checks the
// X-Hub-Signature-256 HMAC against every configured secret, decodes only the
// fields it needs, maps registry_package and package events for container
// images to a deploy.Request, drops redeliveries, and hands the request to
// a Submitter without waiting for Docker. Every answer is a small JSON
// object; a delivery that does nothing says why.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v75/github"

	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/reply"
)

// Defaults for Config's zero values.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultRegistryHost = "ghcr.io"
)

// maxDeliveryIDLen bounds what is remembered and logged per delivery id;
// GitHub's ids are 36-character UUIDs.
const maxDeliveryIDLen = 100

// outcomeError labels a delivery that failed inside hookd (500). The
// metrics package has no constant for it; the value is still a fixed one.
const outcomeError = "error"

// Config configures a Handler.
type Config struct {
	// Secrets are the webhook secrets. A delivery is accepted when its
	// signature matches any of them, so a secret can be rotated by
	// configuring the old and the new one for a while. At least one is
	// required and none may be empty.
	Secrets [][]byte
	// MaxBodyBytes caps a delivery's body; DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	// RegistryHost is the registry GitHub package events map to, as the
	// targets' image references name it; DefaultRegistryHost when empty.
	RegistryHost string
	// Log, when set, is told how every delivery was answered (the status
	// page's "recent deliveries").
	Log DeliveryLog
}

// DeliveryLog is told how each delivery was answered, once it was. It must
// be quick and never block: it is called on the delivery's request.
type DeliveryLog interface {
	Delivered(Delivery)
}

// Delivery is what hookd answered one delivery: what GitHub's "Recent
// deliveries" shows, from hookd's side. Every string is bounded and
// printable; none is a secret, and only Signed deliveries carry anything
// their sender did not choose freely within those bounds.
type Delivery struct {
	At time.Time
	// ID is the X-GitHub-Delivery header when it is well formed, else "".
	ID string
	// Event is the X-GitHub-Event header ("package", "ping", …), or
	// "invalid" when it is not a plain name.
	Event string
	// Signed: the signature matched one of the secrets.
	Signed   bool
	Status   int
	Outcome  string // as in hookd_webhook_deliveries_total
	Image    string // the image it named, when it named one
	Reason   string // why nothing was queued, or the error the client was told
	Targets  []string
	Jobs     []string
	Duration time.Duration
}

// Submitter queues a deploy request without blocking. It returns the jobs
// queued, one per target that follows the image (none when no target does),
// or deploy.ErrQueueFull.
type Submitter interface {
	Submit(ctx context.Context, req deploy.Request) ([]deploy.Job, error)
}

// Handler is the GitHub webhook endpoint. It is safe for concurrent use.
type Handler struct {
	secrets    [][]byte
	maxBody    int64
	host       string
	sub        Submitter
	deliveries Deliveries
	metrics    *metrics.Metrics
	log        *slog.Logger
	recent     DeliveryLog // nil: nobody listens
	now        func() time.Time

	mu       sync.Mutex
	inflight map[string]struct{} // delivery ids between the dedupe look-up and Record
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the webhook handler. It returns an error, listing every
// problem, when no secret is configured, a secret is empty, MaxBodyBytes is
// negative, RegistryHost is not a registry host name, or sub or deliveries is
// nil. A nil m counts nowhere; a nil logger logs nowhere.
func NewHandler(cfg Config, sub Submitter, deliveries Deliveries, m *metrics.Metrics, logger *slog.Logger) (*Handler, error) {
	var errs []error
	// go-github skips the check for an empty secret; hookd never does.
	if len(cfg.Secrets) == 0 {
		errs = append(errs, errors.New("webhook secret is required"))
	}
	secrets := make([][]byte, 0, len(cfg.Secrets))
	for i, s := range cfg.Secrets {
		if len(s) == 0 {
			errs = append(errs, fmt.Errorf("webhook secret %d of %d is empty", i+1, len(cfg.Secrets)))
		}
		secrets = append(secrets, append([]byte(nil), s...))
	}
	maxBody := cfg.MaxBodyBytes
	switch {
	case maxBody == 0:
		maxBody = DefaultMaxBodyBytes
	case maxBody < 0:
		errs = append(errs, fmt.Errorf("webhook body limit %d is negative", maxBody))
	}
	host := strings.ToLower(cfg.RegistryHost)
	if host == "" {
		host = DefaultRegistryHost
	}
	if ref, err := deploy.ParseRef(host + "/owner/name"); err != nil || ref.Registry != host {
		errs = append(errs, fmt.Errorf("registry host %q is not a registry host name", cfg.RegistryHost))
	}
	if sub == nil {
		errs = append(errs, errors.New("webhook submitter is nil"))
	}
	if deliveries == nil {
		errs = append(errs, errors.New("webhook deliveries store is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if m == nil {
		m = metrics.Discard()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		secrets:    secrets,
		maxBody:    maxBody,
		host:       host,
		sub:        sub,
		deliveries: deliveries,
		metrics:    m,
		log:        logger,
		recent:     cfg.Log,
		now:        time.Now,
		inflight:   make(map[string]struct{}),
	}, nil
}

// Errors a delivery can end in, besides errInvalidSignature and
// errMalformed. Their text is what the client sees.
var (
	errMethod      = errors.New("method not allowed")
	errTooLarge    = errors.New("request body too large")
	errReadBody    = errors.New("cannot read request body")
	errDeliveryID  = errors.New("missing or malformed X-GitHub-Delivery header")
	errContentType = errors.New("unsupported content type")
	errInternal    = errors.New("internal error")
)

// errorTable maps errors to answers. The client gets the sentinel's text;
// the wrapped detail goes to the log only.
var errorTable = []struct {
	err     error
	status  int
	outcome string
}{
	{errInvalidSignature, http.StatusUnauthorized, metrics.OutcomeInvalidSignature},
	{errTooLarge, http.StatusRequestEntityTooLarge, metrics.OutcomeTooLarge},
	{errMalformed, http.StatusBadRequest, metrics.OutcomeBadRequest},
	{errReadBody, http.StatusBadRequest, metrics.OutcomeBadRequest},
	{errDeliveryID, http.StatusBadRequest, metrics.OutcomeBadRequest},
	{errContentType, http.StatusUnsupportedMediaType, metrics.OutcomeBadRequest},
	{errMethod, http.StatusMethodNotAllowed, metrics.OutcomeBadRequest},
	{deploy.ErrQueueFull, http.StatusServiceUnavailable, metrics.OutcomeQueueFull},
}

// writeError answers err and returns the status and metrics outcome.
func writeError(w http.ResponseWriter, err error) (status int, outcome string) {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			if e.status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", http.MethodPost)
			}
			reply.JSON(w, e.status, errorAnswer{Error: e.err.Error()})
			return e.status, e.outcome
		}
	}
	reply.JSON(w, http.StatusInternalServerError, errorAnswer{Error: errInternal.Error()})
	return http.StatusInternalServerError, outcomeError
}

// The answers.
type (
	errorAnswer struct {
		Error string `json:"error"`
	}
	queuedAnswer struct {
		Status     string   `json:"status"`
		DeliveryID string   `json:"delivery_id"`
		Image      string   `json:"image"`
		Digest     string   `json:"digest,omitempty"`
		Targets    []string `json:"targets"`
		Jobs       []string `json:"jobs"`
	}
	ignoredAnswer struct {
		Status     string `json:"status"`
		DeliveryID string `json:"delivery_id"`
		Image      string `json:"image,omitempty"` // when the payload named one
		Reason     string `json:"reason"`
	}
	duplicateAnswer struct {
		Status     string `json:"status"`
		DeliveryID string `json:"delivery_id"`
	}
	pingAnswer struct {
		Status     string `json:"status"`
		DeliveryID string `json:"delivery_id"`
		HookID     int64  `json:"hook_id"`
		Warning    string `json:"warning,omitempty"`
	}
)

// delivery is what one request has told so far, for the answer's log line.
type delivery struct {
	id       string // X-GitHub-Delivery, once checked
	event    string // metrics label: one of the event constants
	received time.Time
	signed   bool // the signature matched
	level    slog.Level
	attrs    []slog.Attr
}

// answer is a successful outcome.
type answer struct {
	status  int
	outcome string
	body    any
}

// ServeHTTP handles one delivery: it answers, counts and logs it once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := &delivery{
		event:    eventLabel(github.WebHookType(r)),
		received: h.now(),
		level:    slog.LevelInfo,
	}
	if id := github.DeliveryID(r); validDeliveryID(id) {
		d.id = id
	}
	ans, err := h.serve(w, r, d)
	var status int
	var outcome string
	if err != nil {
		status, outcome = writeError(w, err)
		d.attrs = append(d.attrs, slog.String("err", err.Error()))
		switch {
		case status >= 500 && status != http.StatusServiceUnavailable:
			d.level = slog.LevelError
		case outcome == metrics.OutcomeInvalidSignature:
			d.attrs = append(d.attrs, slog.String("remote_addr", r.RemoteAddr))
			d.level = slog.LevelWarn
		default:
			d.level = slog.LevelWarn
		}
	} else {
		status, outcome = ans.status, ans.outcome
		reply.JSON(w, status, ans.body)
	}
	h.metrics.WebhookDeliveries.WithLabelValues(d.event, outcome).Inc()
	attrs := append([]slog.Attr{
		slog.String("delivery_id", d.id),
		slog.String("event", d.event),
		slog.String("outcome", outcome),
		slog.Int("status", status),
		slog.Float64("duration_seconds", h.now().Sub(d.received).Seconds()),
	}, d.attrs...)
	h.log.LogAttrs(r.Context(), d.level, "webhook delivery", attrs...)
	if h.recent != nil {
		h.recent.Delivered(d.summary(github.WebHookType(r), status, outcome, ans, err, h.now()))
	}
}

// serve runs the pipeline: cap and read the body, verify the signature,
// extract the payload, switch on the event type.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, d *delivery) (answer, error) {
	if r.Method != http.MethodPost {
		return answer{}, errMethod
	}
	body, err := readBody(w, r, h.maxBody)
	if err != nil {
		return answer{}, err
	}
	if err := verifySignature(r.Header, body, h.secrets); err != nil {
		return answer{}, err
	}
	d.signed = true
	h.metrics.WebhookLastDelivery.Set(float64(d.received.UnixNano()) / 1e9)
	if d.id == "" {
		return answer{}, errDeliveryID
	}
	payload, err := extractPayload(r.Header.Get("Content-Type"), body)
	if err != nil {
		return answer{}, err
	}
	switch event := github.WebHookType(r); event {
	case eventPing:
		return h.ping(d, payload)
	case eventPackage, eventRegistryPackage:
		return h.pkg(r.Context(), d, event, payload)
	default:
		d.attrs = append(d.attrs, slog.String("github_event", sanitizeEvent(event)))
		return ignored(d, reasonEvent, ""), nil
	}
}

func (h *Handler) ping(d *delivery, payload []byte) (answer, error) {
	p, err := parsePing(payload)
	if err != nil {
		return answer{}, err
	}
	a := pingAnswer{Status: "pong", DeliveryID: d.id, HookID: p.HookID}
	d.attrs = append(d.attrs, slog.Int64("hook_id", p.HookID), slog.String("hook_type", sanitizeEvent(p.Hook.Type)))
	if !p.subscribed() {
		a.Warning = "hook is not subscribed to package events"
		d.attrs = append(d.attrs, slog.String("warning", a.Warning))
		d.level = slog.LevelWarn
	}
	return answer{status: http.StatusOK, outcome: metrics.OutcomeIgnored, body: a}, nil
}

func (h *Handler) pkg(ctx context.Context, d *delivery, event string, payload []byte) (answer, error) {
	m, err := parsePackage(event, payload, h.host)
	if err != nil {
		return answer{}, err
	}
	if m.ignore != "" {
		return ignored(d, m.ignore, ""), nil
	}
	d.attrs = append(d.attrs, slog.String("image", m.image()), slog.String("digest", m.digest))

	release, dup := h.claim(ctx, d)
	if dup {
		return answer{
			status:  http.StatusOK,
			outcome: metrics.OutcomeDuplicate,
			body:    duplicateAnswer{Status: "duplicate", DeliveryID: d.id},
		}, nil
	}
	defer release()

	jobs, err := h.sub.Submit(ctx, deploy.Request{
		Repository: m.repository,
		Tag:        m.tag,
		Digest:     m.digest,
		SourceRepo: m.sourceRepo,
		Commit:     m.commit,
		Trigger:    deploy.TriggerWebhook,
		ID:         d.id,
		ReceivedAt: d.received,
	})
	if err != nil {
		return answer{}, fmt.Errorf("submit %s: %w", m.image(), err)
	}
	// Recorded only now, so a delivery answered 503 can be redelivered. The
	// request is queued whatever the client does, so its cancellation must
	// not lose the record.
	if err := h.deliveries.Record(context.WithoutCancel(ctx), d.id, d.received); err != nil {
		d.attrs = append(d.attrs, slog.String("record_err", err.Error()))
		d.level = slog.LevelWarn
	}
	if len(jobs) == 0 {
		// Counted as ignored, not queued: nothing will deploy, and an
		// alert on "queued but no deploy followed" must not fire for an
		// image that no target follows.
		return ignored(d, reasonNoTarget, m.image()), nil
	}
	a := queuedAnswer{
		Status:     "queued",
		DeliveryID: d.id,
		Image:      m.image(),
		Digest:     m.digest,
		Targets:    []string{},
		Jobs:       make([]string, 0, len(jobs)),
	}
	for _, j := range jobs {
		a.Jobs = append(a.Jobs, j.ID)
		if !slices.Contains(a.Targets, j.Target) {
			a.Targets = append(a.Targets, j.Target)
		}
	}
	d.attrs = append(d.attrs, slog.Any("targets", a.Targets), slog.Any("jobs", a.Jobs))
	return answer{status: http.StatusAccepted, outcome: metrics.OutcomeQueued, body: a}, nil
}

// claim reports whether d's id was already submitted, or is being submitted
// by a concurrent request. Otherwise it holds the id until release is
// called, so two concurrent redeliveries submit once. A store that cannot be
// read does not stop the delivery: a second deploy of the same image finds
// the target up to date, a lost one would not be noticed.
func (h *Handler) claim(ctx context.Context, d *delivery) (release func(), dup bool) {
	h.mu.Lock()
	if _, busy := h.inflight[d.id]; busy {
		h.mu.Unlock()
		return nil, true
	}
	h.inflight[d.id] = struct{}{}
	h.mu.Unlock()
	release = func() {
		h.mu.Lock()
		delete(h.inflight, d.id)
		h.mu.Unlock()
	}
	seen, err := h.deliveries.Seen(ctx, d.id)
	if err != nil {
		d.attrs = append(d.attrs, slog.String("dedupe_err", err.Error()))
		d.level = slog.LevelWarn
	}
	if seen {
		release()
		return nil, true
	}
	return release, false
}

// summary is what a DeliveryLog is told about d: the answer's facts, or
// the error as the client was told it (never the detail behind it).
func (d *delivery) summary(event string, status int, outcome string, ans answer, err error, now time.Time) Delivery {
	s := Delivery{
		At:       d.received,
		ID:       d.id,
		Event:    sanitizeEvent(event),
		Signed:   d.signed,
		Status:   status,
		Outcome:  outcome,
		Duration: now.Sub(d.received),
	}
	if err != nil {
		s.Reason = errInternal.Error()
		for _, e := range errorTable {
			if errors.Is(err, e.err) {
				s.Reason = e.err.Error()
				break
			}
		}
		return s
	}
	switch b := ans.body.(type) {
	case queuedAnswer:
		s.Image, s.Targets, s.Jobs = b.Image, b.Targets, b.Jobs
	case ignoredAnswer:
		s.Image, s.Reason = b.Image, b.Reason
	case duplicateAnswer:
		s.Reason = "already handled (a redelivery)"
	case pingAnswer:
		s.Reason = b.Warning
	}
	return s
}

// ignored is the 202 answer to a delivery hookd does nothing with; image is
// the image it named, if any.
func ignored(d *delivery, reason, image string) answer {
	d.attrs = append(d.attrs, slog.String("reason", reason))
	return answer{
		status:  http.StatusAccepted,
		outcome: metrics.OutcomeIgnored,
		body:    ignoredAnswer{Status: "ignored", DeliveryID: d.id, Image: image, Reason: reason},
	}
}

// readBody reads the body, at most limit bytes of it. A body announced
// larger is refused before anything is read.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errTooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errTooLarge
		}
		return nil, fmt.Errorf("%w: %v", errReadBody, err)
	}
	return b, nil
}

// extractPayload returns the JSON payload of a body in either content type
// GitHub offers. The signature covers the body as sent, so this runs after
// the check.
func extractPayload(contentType string, body []byte) ([]byte, error) {
	mt := contentType
	if mt != "application/json" {
		var err error
		if mt, _, err = mime.ParseMediaType(contentType); err != nil {
			return nil, errContentType
		}
	}
	switch mt {
	case "application/json":
		return body, nil
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("%w: bad form encoding", errMalformed)
		}
		return []byte(form.Get("payload")), nil
	default:
		return nil, errContentType
	}
}

// eventLabel maps the X-GitHub-Event header to the fixed set of metrics
// label values.
func eventLabel(event string) string {
	switch event {
	case eventPing, eventPackage, eventRegistryPackage:
		return event
	default:
		return eventOther
	}
}

// validDeliveryID reports whether id is short and made of the characters of
// a UUID or similar, so that it can be remembered and logged.
func validDeliveryID(id string) bool {
	if id == "" || len(id) > maxDeliveryIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// sanitizeEvent returns a header-borne name for the log, or "invalid".
func sanitizeEvent(s string) string {
	if s == "" || len(s) > 64 {
		return "invalid"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "invalid"
		}
	}
	return s
}
