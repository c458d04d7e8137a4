package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
)

const (
	sha     = "0e2a89b191332bb87b4f2fefef2f597eba2197b3"
	digestA = "sha256:4c2b8f0e6d1a3b5c7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f"
	digestB = "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a0918273645f4e3d2c1b0a998877665544"
	health  = "curl: (7) Failed to connect to localhost port 8080 after 0 ms: Couldn't connect to server"
)

var start = time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)

func finished(id, target string, status deploy.Status, took time.Duration) deploy.Job {
	j := deploy.Job{
		ID: id, Target: target, Kind: deploy.KindContainer, Image: "ghcr.io/octo/" + target + ":latest",
		Request:      deploy.Request{Trigger: deploy.TriggerWebhook, ID: "delivery-1"},
		DigestBefore: digestA, DigestAfter: digestB, Revision: sha,
		Status: status, StartedAt: start, FinishedAt: start.Add(took),
	}
	switch status {
	case deploy.StatusRolledBack:
		j.RollbackReason, j.RollbackDetail = deploy.ReasonUnhealthy, health
		j.Error = "new container unhealthy: " + health + "; rolled back to the previous container"
	case deploy.StatusFailed:
		j.Error = "pull ghcr.io/octo/" + target + ":latest: manifest unknown"
		j.DigestAfter, j.Revision = "", ""
	case deploy.StatusRefused:
		j.Error = "GitHub refused the deployment of octo/" + target + "@0e2a89b: checks not green: test (failure)"
	case deploy.StatusUpToDate:
		j.DigestAfter, j.Revision = digestA, ""
	}
	return j
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type rig struct {
	n      *Notifier
	events chan deploy.Event
	logs   *lockedBuffer
	m      *metrics.Metrics
	done   chan struct{}
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	logs := &lockedBuffer{}
	m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	cfg.Host = "pi"
	cfg.PublicURL = "https://pi.example.net/hookd"
	cfg.Metrics = m
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Settle == 0 {
		cfg.Settle = 50 * time.Millisecond
	}
	if cfg.Retry.Base == 0 {
		cfg.Retry = backoff.Policy{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	rg := &rig{n: n, events: make(chan deploy.Event, 64), logs: logs, m: m, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(rg.done)
		n.Run(ctx, rg.events)
	}()
	t.Cleanup(func() {
		cancel()
		<-rg.done
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return rg
}

// life publishes a job's events as the deployer does, ending in j.
func (rg *rig) life(j deploy.Job) {
	q := j
	q.Status = deploy.StatusQueued
	rg.events <- deploy.Event{Kind: "queued", Job: q}
	q.Status = deploy.StatusRunning
	rg.events <- deploy.Event{Kind: "running", Job: q}
	rg.events <- deploy.Event{Kind: "swapping", Job: q}
	rg.events <- deploy.Event{Kind: string(j.Status), Job: j}
}

// close ends the events and waits for Run to send what is queued.
func (rg *rig) close(t *testing.T) {
	t.Helper()
	close(rg.events)
	select {
	case <-rg.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the events were closed")
	}
}

func (rg *rig) count(service, outcome string) float64 {
	return testutil.ToFloat64(rg.m.Notifications.WithLabelValues(service, outcome))
}

const rolledBackText = `The new version failed its health check; the previous one is running again.
Health check: ` + health + `
ghcr.io/octo/web:latest
0e2a89b rolled back to sha256:4c2b8f0e6d1a
via webhook in 1m12s
https://pi.example.net/hookd/jobs/j7`

// TestRealSendersDeliverARollback: shoutrrr's own ntfy, Discord and
// generic webhook senders deliver one rollback, once each, with its title,
// reason and the container's health output.
func TestRealSendersDeliverARollback(t *testing.T) {
	ntfy, discord, hook := newNtfy(t), newDiscord(t), newWebhook(t)
	rg := newRig(t, Config{
		URLs: []string{
			"ntfy://" + ntfy.hostPort() + "/hookd-alerts?disabletls=yes",
			"discord://sEcReTtOkEn@123456789012345678",
			"generic+" + hook.srv.URL + "/hooks/deploys?template=json",
		},
		HTTPClient: discordVia(discord),
	})
	rg.life(finished("j7", "web", deploy.StatusRolledBack, 72*time.Second))
	waitFor(t, ntfy, 1, "ntfy")
	waitFor(t, discord, 1, "discord")
	waitFor(t, hook, 1, "the webhook")
	time.Sleep(100 * time.Millisecond) // a second message would come now
	rg.close(t)
	const title = "⚠️ web rolled back on pi"

	n := ntfy.requests()
	if len(n) != 1 {
		t.Fatalf("ntfy received %d messages, want 1", len(n))
	}
	if n[0].Path != "/hookd-alerts" || n[0].Header.Get("Title") != title || n[0].Body != rolledBackText {
		t.Errorf("ntfy received %s with title %q:\n%s\nwant /hookd-alerts, %q:\n%s", n[0].Path, n[0].Header.Get("Title"), n[0].Body, title, rolledBackText)
	}

	d := discord.requests()
	if len(d) != 1 {
		t.Fatalf("discord received %d messages, want 1", len(d))
	}
	if d[0].Header.Get("X-Original-Host") != "discord.com" || d[0].Path != "/api/webhooks/123456789012345678/sEcReTtOkEn" {
		t.Errorf("discord request went to %s%s, want discord.com/api/webhooks/ID/TOKEN", d[0].Header.Get("X-Original-Host"), d[0].Path)
	}
	var payload struct {
		Embeds []struct {
			Title       string `json:"title"`
			Description string `json:"description"`
		} `json:"embeds"`
	}
	if err := json.Unmarshal([]byte(d[0].Body), &payload); err != nil {
		t.Fatalf("discord payload %s: %v", d[0].Body, err)
	}
	if len(payload.Embeds) != 1 || payload.Embeds[0].Title != title || payload.Embeds[0].Description != rolledBackText {
		t.Errorf("discord payload %s\nwant one embed titled %q with the text", d[0].Body, title)
	}

	h := hook.requests()
	if len(h) != 1 {
		t.Fatalf("the webhook received %d messages, want 1", len(h))
	}
	var fields map[string]string
	if err := json.Unmarshal([]byte(h[0].Body), &fields); err != nil {
		t.Fatalf("webhook body %s: %v", h[0].Body, err)
	}
	if h[0].Path != "/hooks/deploys" || fields["title"] != title || fields["message"] != rolledBackText {
		t.Errorf("the webhook received %s %s, want the title and text as JSON", h[0].Path, h[0].Body)
	}
	for _, s := range []string{"ntfy", "discord", "generic"} {
		if rg.count(s, metrics.NotifySent) != 1 {
			t.Errorf("hookd_notifications_total{service=%s,outcome=sent} = %v, want 1", s, rg.count(s, metrics.NotifySent))
		}
	}
}

// TestJobsFinishingTogether: one push deploying three targets makes one
// message per URL, the worst first.
func TestJobsFinishingTogether(t *testing.T) {
	hook := newWebhook(t)
	rg := newRig(t, Config{URLs: []string{"generic+" + hook.srv.URL + "/hook"}})
	jobs := []deploy.Job{
		finished("j1", "web", deploy.StatusSucceeded, 12*time.Second),
		finished("j2", "api", deploy.StatusRolledBack, 72*time.Second),
		finished("j3", "worker", deploy.StatusSucceeded, 9*time.Second),
	}
	for _, j := range jobs { // all queued by the push
		q := j
		q.Status = deploy.StatusQueued
		rg.events <- deploy.Event{Kind: "queued", Job: q}
	}
	for _, j := range jobs { // then deployed one after the other
		r := j
		r.Status = deploy.StatusRunning
		rg.events <- deploy.Event{Kind: "running", Job: r}
		time.Sleep(80 * time.Millisecond) // longer than Settle
		rg.events <- deploy.Event{Kind: string(j.Status), Job: j}
	}
	got := waitFor(t, hook, 1, "the webhook")
	time.Sleep(200 * time.Millisecond)
	rg.close(t)
	if got = hook.requests(); len(got) != 1 {
		t.Fatalf("the webhook received %d messages, want 1:\n%v", len(got), got)
	}
	want := `⚠️ api rolled back
The new version failed its health check; the previous one is running again.
Health check: ` + health + `
ghcr.io/octo/api:latest
0e2a89b rolled back to sha256:4c2b8f0e6d1a
via webhook in 1m12s
https://pi.example.net/hookd/jobs/j2

✅ web deployed
ghcr.io/octo/web:latest
sha256:4c2b8f0e6d1a → 0e2a89b
via webhook in 12s
https://pi.example.net/hookd/jobs/j1

✅ worker deployed
ghcr.io/octo/worker:latest
sha256:4c2b8f0e6d1a → 0e2a89b
via webhook in 9s
https://pi.example.net/hookd/jobs/j3`
	if got[0].Body != want {
		t.Errorf("message:\n%s\nwant:\n%s", got[0].Body, want)
	}
}

func TestLevels(t *testing.T) {
	all := []deploy.Status{deploy.StatusSucceeded, deploy.StatusUpToDate, deploy.StatusRolledBack, deploy.StatusFailed, deploy.StatusRefused}
	tests := []struct {
		level Level
		want  []deploy.Status
	}{
		{LevelError, []deploy.Status{deploy.StatusRolledBack, deploy.StatusFailed, deploy.StatusRefused}},
		{LevelInfo, []deploy.Status{deploy.StatusSucceeded, deploy.StatusRolledBack, deploy.StatusFailed, deploy.StatusRefused}},
		{LevelDebug, all},
	}
	for _, tt := range tests {
		var got []deploy.Status
		for _, s := range all {
			if tt.level.tells(s) {
				got = append(got, s)
			}
		}
		if strings.Join(statuses(got), ",") != strings.Join(statuses(tt.want), ",") {
			t.Errorf("level %d tells %v, want %v", tt.level, got, tt.want)
		}
	}
	for s, want := range map[string]Level{"error": LevelError, "info": LevelInfo, "debug": LevelDebug, "": LevelInfo} {
		if got, err := ParseLevel(s); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v, want %v", s, got, err, want)
		}
	}
	if _, err := ParseLevel("warn"); err == nil {
		t.Error(`ParseLevel("warn") = nil error`)
	}
}

func statuses(s []deploy.Status) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return out
}

// TestSuccessSkippedAtErrorLevel: at notify_level error a success is not
// told, a failure is.
func TestSuccessSkippedAtErrorLevel(t *testing.T) {
	hook := newWebhook(t)
	rg := newRig(t, Config{URLs: []string{"generic+" + hook.srv.URL + "/hook"}, Level: LevelError})
	rg.life(finished("j1", "web", deploy.StatusSucceeded, time.Second))
	time.Sleep(150 * time.Millisecond)
	rg.life(finished("j2", "web", deploy.StatusFailed, 3*time.Second))
	waitFor(t, hook, 1, "the webhook")
	rg.close(t)
	got := hook.requests()
	if len(got) != 1 || !strings.HasPrefix(got[0].Body, "pull ghcr.io/octo/web:latest: manifest unknown\n") {
		t.Errorf("the webhook received %v, want only the failure", got)
	}
}

// TestFailingServiceIsRetriedAndNeverLogsTheURL: a webhook that fails
// twice gets the message on the third attempt, once; the log says it
// failed once, says when it works again, and never holds the URL's
// secrets.
func TestFailingServiceIsRetriedAndNeverLogsTheURL(t *testing.T) {
	hook := newWebhook(t)
	hook.failNext(http.StatusBadGateway, http.StatusServiceUnavailable)
	const pathSecret, querySecret = "p4thS3cretValue", "qu3ryS3cretValue"
	rg := newRig(t, Config{URLs: []string{"generic+" + hook.srv.URL + "/hooks/" + pathSecret + "?token=" + querySecret}})
	rg.life(finished("j1", "web", deploy.StatusRolledBack, time.Second))
	got := waitFor(t, hook, 3, "the webhook")
	time.Sleep(100 * time.Millisecond)
	rg.close(t)
	if got = hook.requests(); len(got) != 3 {
		t.Errorf("the webhook received %d requests, want 3 (two failures, one delivery)", len(got))
	}
	if f, s := rg.count("generic", metrics.NotifyFailed), rg.count("generic", metrics.NotifySent); f != 2 || s != 1 {
		t.Errorf("failed, sent = %v, %v, want 2, 1", f, s)
	}
	logs := rg.logs.String()
	if strings.Count(logs, "notification failed") != 1 || !strings.Contains(logs, "notifications work again") {
		t.Errorf("log:\n%s\nwant one failure line and a line saying it works again", logs)
	}
	if !strings.Contains(logs, "502 Bad Gateway") || !strings.Contains(logs, `url=notify_urls[0]`) {
		t.Errorf("log does not give the status and the URL's place in the list:\n%s", logs)
	}
	for _, secret := range []string{pathSecret, querySecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("log holds the URL's secret %q:\n%s", secret, logs)
		}
	}
}

func TestGivesUpAfterAttempts(t *testing.T) {
	hook := newWebhook(t)
	hook.failNext(500, 500, 500, 500)
	rg := newRig(t, Config{URLs: []string{"generic+" + hook.srv.URL + "/hook"}, Attempts: 3})
	rg.life(finished("j1", "web", deploy.StatusFailed, time.Second))
	waitFor(t, hook, 3, "the webhook")
	time.Sleep(150 * time.Millisecond)
	rg.close(t)
	if n := len(hook.requests()); n != 3 {
		t.Errorf("the webhook received %d attempts, want 3", n)
	}
	if d := rg.count("generic", metrics.NotifyDropped); d != 1 {
		t.Errorf("dropped = %v, want 1", d)
	}
}

// TestSlowServiceHoldsNoDeploy: a service that does not answer costs the
// notifier a timeout per attempt; events keep being taken meanwhile.
func TestSlowServiceHoldsNoDeploy(t *testing.T) {
	release := make(chan struct{})
	slow := newService(t, func(w http.ResponseWriter, r received) {
		<-release
		w.WriteHeader(http.StatusOK)
	})
	defer close(release)
	rg := newRig(t, Config{URLs: []string{"generic+" + slow.srv.URL + "/hook"}, SendTimeout: 100 * time.Millisecond, Attempts: 1})
	rg.life(finished("j1", "web", deploy.StatusFailed, time.Second))
	waitFor(t, slow, 1, "the slow webhook")
	for i := range 40 { // more events than the channel holds: Run keeps reading
		j := finished("x", "web", deploy.StatusFailed, time.Second)
		j.ID = "x" + string(rune('a'+i%26))
		select {
		case rg.events <- deploy.Event{Kind: "running", Job: j}:
		case <-time.After(2 * time.Second):
			t.Fatal("the notifier stopped taking events while a service hung")
		}
	}
}

func TestBadURLsAreNamedByPlaceNotText(t *testing.T) {
	_, err := New(Config{URLs: []string{
		"ntfy://ntfy.sh/fine",
		"nosuchservice://s3cr3tT0ken@host/path",
		"::not a url s3cr3tT0ken",
	}})
	if err == nil {
		t.Fatal("New accepted unknown services")
	}
	for _, want := range []string{"notify_urls[1] (nosuchservice)", "notify_urls[2] is not a service URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "s3cr3tT0ken") || strings.Contains(err.Error(), "notify_urls[0]") {
		t.Errorf("error %q holds a secret or blames a good URL", err)
	}
}

func TestTemplate(t *testing.T) {
	hook := newWebhook(t)
	rg := newRig(t, Config{
		URLs:     []string{"generic+" + hook.srv.URL + "/hook"},
		Template: `{{range .Jobs}}{{.Target}} {{.Status}} {{.To}} {{.Job.RollbackReason}}{{end}}`,
	})
	rg.life(finished("j1", "web", deploy.StatusRolledBack, time.Second))
	waitFor(t, hook, 1, "the webhook")
	rg.close(t)
	if got := hook.requests()[0].Body; got != "web rolled_back 0e2a89b unhealthy" {
		t.Errorf("templated message = %q", got)
	}
	if _, err := ParseTemplate(`{{.Nope}}`); err == nil || !strings.Contains(err.Error(), "notify_template") {
		t.Errorf("ParseTemplate of a template naming an unknown field = %v, want an error at start", err)
	}
}
