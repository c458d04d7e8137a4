package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// Test secrets. Signatures are computed in the tests, never stored.
const (
	oldSecret = "old-secret-2b7e151628aed2a6"
	newSecret = "new-secret-abf7158809cf4f3c"
)

const realFixture = "package.published.container.real.json"

// fixedNow is the handler's clock in tests.
var fixedNow = time.Date(2025, 11, 3, 13, 50, 30, 0, time.UTC)

// fakeSubmitter stands in for the deployer's queue (the real one is tested
// in internal/deployer).
type fakeSubmitter struct {
	mu      sync.Mutex
	calls   int
	reqs    []deploy.Request // accepted requests
	err     error
	targets []string
	entered chan struct{} // when set, Submit signals here first
	block   chan struct{} // when set, Submit waits for it
}

func (f *fakeSubmitter) Submit(_ context.Context, req deploy.Request) ([]deploy.Job, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	f.reqs = append(f.reqs, req)
	jobs := make([]deploy.Job, 0, len(f.targets))
	for i, t := range f.targets {
		jobs = append(jobs, deploy.Job{
			ID: fmt.Sprintf("job-%d-%d", len(f.reqs), i), Target: t, Request: req, Status: deploy.StatusQueued,
		})
	}
	return jobs, nil
}

func (f *fakeSubmitter) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeSubmitter) accepted() []deploy.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]deploy.Request(nil), f.reqs...)
}

func (f *fakeSubmitter) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// syncBuffer is a bytes.Buffer safe for concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a handler under test with everything it talks to.
type env struct {
	h          *Handler
	sub        *fakeSubmitter
	deliveries *MemoryDeliveries
	metrics    *metrics.Metrics
	reg        *prometheus.Registry
	logs       *syncBuffer
}

// newEnv returns a handler accepting oldSecret and newSecret, with a fake
// submitter whose jobs go to targets, a fixed clock and captured JSON logs.
func newEnv(t *testing.T, cfg Config, targets ...string) *env {
	t.Helper()
	if cfg.Secrets == nil {
		cfg.Secrets = [][]byte{[]byte(oldSecret), []byte(newSecret)}
	}
	e := &env{
		sub:        &fakeSubmitter{targets: targets},
		deliveries: NewMemoryDeliveries(0),
		reg:        prometheus.NewRegistry(),
		logs:       &syncBuffer{},
	}
	e.metrics = metrics.New(e.reg, metrics.BuildInfo{})
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := NewHandler(cfg, e.sub, e.deliveries, e.metrics, logger)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	h.now = func() time.Time { return fixedNow }
	e.h = h
	return e
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit returns body with each old string (which must occur exactly once)
// replaced by its new string; pairs alternate old, new.
func edit(t *testing.T, body []byte, pairs ...string) []byte {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if n := bytes.Count(body, []byte(pairs[i])); n != 1 {
			t.Fatalf("edit: %q occurs %d times, want 1", pairs[i], n)
		}
		body = bytes.Replace(body, []byte(pairs[i]), []byte(pairs[i+1]), 1)
	}
	return body
}

func macHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func mac1Hex(secret string, body []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// hook describes one delivery to send.
type hook struct {
	event  string
	id     string
	body   []byte // the JSON payload
	form   bool   // send as application/x-www-form-urlencoded payload=
	secret string // signs X-Hub-Signature-256 over the body as sent; "" sends none
	// header overrides, applied after signing; an empty value deletes.
	header map[string]string
	method string
}

// wire returns the body as sent and its content type.
func (k hook) wire() ([]byte, string) {
	if k.form {
		return []byte("payload=" + url.QueryEscape(string(k.body))), "application/x-www-form-urlencoded"
	}
	return k.body, "application/json"
}

// response is every field any answer has.
type response struct {
	Status     string   `json:"status"`
	Error      string   `json:"error"`
	DeliveryID string   `json:"delivery_id"`
	Image      string   `json:"image"`
	Digest     string   `json:"digest"`
	Targets    []string `json:"targets"`
	Jobs       []string `json:"jobs"`
	Reason     string   `json:"reason"`
	HookID     int64    `json:"hook_id"`
	Warning    string   `json:"warning"`
}

func newRequest(k hook) *http.Request {
	body, ct := k.wire()
	method := k.method
	if method == "" {
		method = http.MethodPost
	}
	r := httptest.NewRequest(method, "/hooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", ct)
	r.Header.Set("User-Agent", "GitHub-Hookshot/044aadd")
	if k.event != "" {
		r.Header.Set("X-GitHub-Event", k.event)
	}
	if k.id != "" {
		r.Header.Set("X-GitHub-Delivery", k.id)
	}
	if k.secret != "" {
		r.Header.Set("X-Hub-Signature-256", "sha256="+macHex(k.secret, body))
	}
	for name, v := range k.header {
		if v == "" {
			r.Header.Del(name)
		} else {
			r.Header.Set(name, v)
		}
	}
	return r
}

// send delivers k to h and decodes the JSON answer.
func send(t *testing.T, h http.Handler, k hook) (*httptest.ResponseRecorder, response) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, newRequest(k))
	var resp response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("answer %q is not JSON: %v", rec.Body.String(), err)
	}
	return rec, resp
}

// leaks returns those of secrets that occur in text.
func leaks(text string, secrets ...string) []string {
	var found []string
	for _, s := range secrets {
		if s != "" && strings.Contains(strings.ToLower(text), strings.ToLower(s)) {
			found = append(found, s)
		}
	}
	return found
}

// logLines returns the captured JSON log records.
func logLines(t *testing.T, logs *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}
