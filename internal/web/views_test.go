package web

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/webhook"
)

func stepLine(steps []step) string {
	var parts []string
	for _, s := range steps {
		p := s.Name + ":" + s.State
		if s.Detail != "" {
			p += "(" + s.Detail + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// TestJobSteps: a job's steps as a reader follows them, at each point of
// its life.
func TestJobSteps(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	now := t0.Add(30 * time.Second)
	queued := deploy.Job{Status: deploy.StatusQueued, CreatedAt: t0, Request: deploy.Request{Trigger: deploy.TriggerPoll}}
	running := queued
	running.Status, running.StartedAt = deploy.StatusRunning, t0.Add(2*time.Second)
	pulling := running
	pulling.Stage = deploy.StagePulling
	gating := running
	gating.Stage, gating.Phases = deploy.StageGating, map[string]float64{"pull": 3.2, "swap": 0.4}
	hooks := running
	hooks.Stage, hooks.Phases = deploy.StageHooks, map[string]float64{"pull": 3.2}
	rollingBack := running
	rollingBack.Stage, rollingBack.Phases, rollingBack.RollbackReason = deploy.StageRollback, map[string]float64{"pull": 3.2, "swap": 0.4, "health": 60}, deploy.ReasonTimeout
	rolledBack := rollingBack
	rolledBack.Status, rolledBack.Stage, rolledBack.FinishedAt = deploy.StatusRolledBack, "", t0.Add(70*time.Second)
	succeeded := running
	succeeded.Status, succeeded.Phases = deploy.StatusSucceeded, map[string]float64{"pull": 3.2, "swap": 0.4, "health": 5, "drain": 1.5}
	succeeded.HealthyAt, succeeded.FinishedAt = t0.Add(11*time.Second), t0.Add(11*time.Second)
	refused := queued
	refused.Status, refused.FinishedAt = deploy.StatusRefused, t0

	tests := []struct {
		name string
		job  deploy.Job
		want string
	}{
		{"queued", queued, "Queued:now(waiting 30 s)"},
		{"started", running, "Queued:done(registry poll) Started:done(after 2.0 s in the queue)"},
		{"pulling", pulling, "Queued:done(registry poll) Started:done(after 2.0 s in the queue) Pull:now(pulling the image)"},
		{"running hooks", hooks, "Queued:done(registry poll) Started:done(after 2.0 s in the queue) Pull:done(3.2 s) Hooks:now(running hooks)"},
		{"gating", gating, "Queued:done(registry poll) Started:done(after 2.0 s in the queue) Pull:done(3.2 s) Swap:done(0.4 s) Health gate:now(waiting for the health gate)"},
		{"rolling back", rollingBack, "Queued:done(registry poll) Started:done(after 2.0 s in the queue) Pull:done(3.2 s) Swap:done(0.4 s) Health gate:failed(1 min 0 s: not healthy in time) Roll back:now(restoring the previous version)"},
		{"rolled back", rolledBack, "Queued:done(registry poll) Started:done(after 2.0 s in the queue) Pull:done(3.2 s) Swap:done(0.4 s) Health gate:failed(1 min 0 s: not healthy in time) Roll back:done(previous version restored) Ended: rolled back:failed(took 1 min 8 s)"},
		{"succeeded, a phase the list does not know", succeeded, "Queued:done(registry poll) Started:done(after 2.0 s in the queue) Pull:done(3.2 s) Swap:done(0.4 s) Health gate:done(5.0 s: passed) Drain:done(1.5 s) Ended: succeeded:done(took 9.0 s)"},
		{"refused", refused, "Queued:done(registry poll) Ended: refused:done"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stepLine(jobSteps(now, tt.job)); got != tt.want {
				t.Errorf("jobSteps =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestRunningVersion: the revision of the deploy that put the running
// digest there, else the short digest, else the short image id.
func TestRunningVersion(t *testing.T) {
	dg := "sha256:" + strings.Repeat("a", 64)
	other := "sha256:" + strings.Repeat("e", 64)
	rev := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name   string
		target deploy.Target
		jobs   []deploy.Job
		want   string
	}{
		{"deployed revision", deploy.Target{Digest: dg}, []deploy.Job{{Status: deploy.StatusSucceeded, DigestAfter: dg, Revision: rev}}, "0123456"},
		{"a version tag as revision", deploy.Target{Digest: dg}, []deploy.Job{{Status: deploy.StatusUpToDate, DigestAfter: dg, Revision: "v1.4.2"}}, "v1.4.2"},
		{"newest was rolled back", deploy.Target{Digest: dg}, []deploy.Job{
			{Status: deploy.StatusRolledBack, DigestAfter: other, Revision: "bad"},
			{Status: deploy.StatusSucceeded, DigestAfter: dg, Revision: rev},
		}, "0123456"},
		{"no revision label", deploy.Target{Digest: dg}, []deploy.Job{{Status: deploy.StatusSucceeded, DigestAfter: dg}}, "aaaaaaaaaaaa"},
		{"no digest", deploy.Target{ImageID: "sha256:" + strings.Repeat("b", 64)}, nil, "bbbbbbbbbbbb"},
		{"nothing", deploy.Target{}, nil, "unknown"},
	}
	for _, tt := range tests {
		if got, _ := runningVersion(tt.target, tt.jobs); got != tt.want {
			t.Errorf("%s: runningVersion = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestAttentionWebhookSilence: webhooks silent for a day are mentioned,
// once hookd has heard one at all; a Pi that only polls is not nagged.
func TestAttentionWebhookSilence(t *testing.T) {
	now := time.Date(2025, 6, 3, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		last    time.Time
		polling bool
		want    string // "" for no item
	}{
		{time.Time{}, true, ""},
		{now.Add(-23 * time.Hour), true, ""},
		{now.Add(-25 * time.Hour), true, "no signed delivery for 25 h (the last one 2025-06-02 11:00:00 UTC). If you pushed since, check the webhook's Recent deliveries on GitHub. Polling covers the gap meanwhile."},
		{now.Add(-72 * time.Hour), false, "no signed delivery for 3 days (the last one 2025-05-31 12:00:00 UTC). If you pushed since, check the webhook's Recent deliveries on GitHub. Polling is off, so nothing else will notice a push."},
	}
	for _, tt := range tests {
		items := attentionItems(attentionInput{Now: now, LastWebhook: tt.last, Polling: tt.polling})
		got := ""
		if len(items) == 1 {
			got = items[0].Text
		}
		if got != tt.want || len(items) > 1 {
			t.Errorf("last webhook %v: attention %+v, want %q", tt.last, items, tt.want)
		}
	}
}

// TestChart: the newest deploy is at the right edge, a failed one is drawn
// as such, only deploys that passed a gate have a lead time, and the
// summary says it in words.
func TestChart(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var jobs []deploy.Job // newest first
	for i := 4; i >= 0; i-- {
		st := deploy.StatusSucceeded
		if i == 4 {
			st = deploy.StatusRolledBack
		}
		j := jobAt(fmt.Sprint(i), "web", t0.Add(time.Duration(i)*time.Hour), st)
		j.FinishedAt = j.StartedAt.Add(time.Duration(2+i) * time.Second)
		jobs = append(jobs, j)
	}
	jobs = append([]deploy.Job{{Status: deploy.StatusRunning, StartedAt: t0}}, jobs...) // not drawn
	c := newChart(jobs)
	if len(c.Bars) != 5 || len(c.Dots) != 4 {
		t.Fatalf("chart has %d bars and %d dots, want 5 and 4", len(c.Bars), len(c.Dots))
	}
	last := c.Bars[4]
	if last.JobID != "4" || last.Class != "bad" || last.X+last.W > chartW-chartRight+0.1 || last.X+last.W < chartW-chartRight-20 {
		t.Errorf("newest bar = %+v, want job 4, bad, at the right edge", last)
	}
	if c.Bars[0].H >= last.H {
		t.Errorf("a 2 s deploy (%v) is drawn no shorter than a 6 s one (%v)", c.Bars[0].H, last.H)
	}
	want := "The last 5 deploys ran for 4.0 s at the median, 6.0 s at the longest; a new version was live 8.9 s after hookd heard of it, at the median."
	if c.Summary != want {
		t.Errorf("summary = %q, want %q", c.Summary, want)
	}
	if empty := newChart(nil); len(empty.Bars) != 0 {
		t.Errorf("chart of no jobs has bars")
	}
}

// TestDeliveriesRings: signed and unsigned deliveries are kept apart, each
// bounded, newest first, so forged requests cannot push real ones out.
func TestDeliveriesRings(t *testing.T) {
	l := NewDeliveries(3, 2)
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for i := range 5 {
		l.Delivered(webhook.Delivery{ID: fmt.Sprint("s", i), Signed: true, At: t0.Add(time.Duration(i) * time.Minute)})
	}
	for i := range 100 {
		l.Delivered(webhook.Delivery{ID: fmt.Sprint("u", i), Status: 401, At: t0.Add(time.Duration(i) * time.Second)})
	}
	var ids []string
	for _, d := range l.Signed() {
		ids = append(ids, d.ID)
	}
	if strings.Join(ids, " ") != "s4 s3 s2" {
		t.Errorf("signed = %v, want s4 s3 s2", ids)
	}
	if u := l.Unsigned(); len(u) != 2 || u[0].ID != "u99" {
		t.Errorf("unsigned = %v, want the 2 newest", u)
	}
	if got := l.LastSigned(); !got.Equal(t0.Add(4 * time.Minute)) {
		t.Errorf("last signed = %v", got)
	}
	if n := l.Forged(t0.Add(90 * time.Second)); n != 10 {
		t.Errorf("forged since 90 s = %d, want 10", n)
	}
}

// TestAssetsGzip: the stylesheet and script are served compressed to
// clients that take gzip, and never to those that refuse it.
func TestAssetsGzip(t *testing.T) {
	for _, tt := range []struct {
		header string
		want   bool
	}{{"gzip, deflate, br", true}, {"br;q=1.0, gzip;q=0.8", true}, {"gzip;q=0", false}, {"", false}, {"identity", false}} {
		r := &http.Request{Header: http.Header{"Accept-Encoding": {tt.header}}}
		if got := acceptsGzip(r); got != tt.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

// TestPagesParse: every page's template parses with the layout (they are
// parsed on first use, so a broken one would only show on a request).
func TestPagesParse(t *testing.T) {
	ps, err := parsePages(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range pageKinds {
		if ps[k] == nil || ps[k].Lookup("content") == nil {
			t.Errorf("page %s has no content template", k)
		}
	}
}
