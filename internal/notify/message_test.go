package notify

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// TestMessageTexts holds the texts people read on their phones, one per
// outcome, as they are sent.
func TestMessageTexts(t *testing.T) {
	tests := []struct {
		status      deploy.Status
		edit        func(*deploy.Job)
		title, text string
	}{
		{deploy.StatusSucceeded, nil, "✅ web deployed on pi", `sha256:4c2b8f0e6d1a → 0e2a89b`},
		{deploy.StatusRolledBack, func(j *deploy.Job) {
			j.RollbackReason, j.RollbackDetail = deploy.ReasonExited, "exit code 3"
		}, "⚠️ web rolled back on pi", `The new version exited; the previous one is running again.
Exit: exit code 3
ghcr.io/octo/web:latest
0e2a89b rolled back to sha256:4c2b8f0e6d1a`},
		{deploy.StatusRolledBack, func(j *deploy.Job) {
			j.RollbackReason, j.RollbackDetail = deploy.ReasonExited, "exit code 3"
			j.Failed = &deploy.FailedVersion{Logs: []string{"l1", "l2", "listening on :8080", "", "opening /data/world", "panic: world is locked", "exit"}}
		}, "⚠️ web rolled back on pi", `The new version exited; the previous one is running again.
Exit: exit code 3
Its last log lines:
  listening on :8080
  opening /data/world
  panic: world is locked
  exit
ghcr.io/octo/web:latest
0e2a89b rolled back to sha256:4c2b8f0e6d1a`},
		{deploy.StatusFailed, nil, "❌ web failed on pi", `pull ghcr.io/octo/web:latest: manifest unknown
ghcr.io/octo/web:latest`},
		{deploy.StatusRefused, nil, "🚫 web refused on pi", `GitHub refused the deployment of octo/web@0e2a89b: checks not green: test (failure)
ghcr.io/octo/web:latest
new version 0e2a89b`},
		{deploy.StatusUpToDate, func(j *deploy.Job) { j.Request.Trigger = deploy.TriggerPoll },
			"🆗 web up to date on pi", `ghcr.io/octo/web:latest already runs sha256:4c2b8f0e6d1a
via registry poll in 5s`},
	}
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			j := finished("j1", "web", tt.status, 5*time.Second)
			if tt.edit != nil {
				tt.edit(&j)
			}
			title, text, err := render(compose([]deploy.Job{j}, "pi", "", nil), nil)
			if err != nil {
				t.Fatal(err)
			}
			if title != tt.title || !strings.Contains(text, tt.text) {
				t.Errorf("message %q:\n%s\nwant %q containing:\n%s", title, text, tt.title, tt.text)
			}
		})
	}
}

// TestLongOutputStaysReadable: a health check's long output keeps its last
// lines, each cut to a phone's patience, and many jobs fit one message.
func TestLongOutputStaysReadable(t *testing.T) {
	j := finished("j1", "web", deploy.StatusRolledBack, time.Second)
	var out []string
	for i := range 30 {
		out = append(out, fmt.Sprintf("line %02d %s", i, strings.Repeat("x", 300)))
	}
	j.RollbackDetail = strings.Join(out, "\n")
	_, text, _ := render(compose([]deploy.Job{j}, "pi", "", nil), nil)
	if strings.Contains(text, "line 21") || !strings.Contains(text, "line 22") || !strings.Contains(text, "line 29") {
		t.Errorf("text keeps other than the last %d lines:\n%s", maxDetailLines, text)
	}
	for _, l := range strings.Split(text, "\n") {
		if len(l) > maxLine+2 {
			t.Errorf("line of %d bytes: %q", len(l), l)
		}
	}

	var jobs []deploy.Job
	for i := range 40 {
		jobs = append(jobs, finished(fmt.Sprintf("j%d", i), fmt.Sprintf("app%02d", i), deploy.StatusSucceeded, time.Second))
	}
	title, text, _ := render(compose(jobs, "pi", "https://pi.example.net", nil), nil)
	if title != "✅ 40 deployed on pi" {
		t.Errorf("title = %q", title)
	}
	if len(text) > maxBody || !strings.Contains(text, "more") {
		t.Errorf("text of %d bytes (limit %d), want the rest counted:\n%s", len(text), maxBody, text)
	}
}

func TestRedactor(t *testing.T) {
	tests := []struct {
		url     string
		secrets []string
		keep    []string
	}{
		{"discord://sEcReTtOkEn@123456789012345678", []string{"sEcReTtOkEn", "123456789012345678"}, []string{"discord.com"}},
		{"telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@channel-name", []string{"110201543", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "channel-name"}, nil},
		{"generic+https://hooks.example.net/in/k3yk3yk3y?token=t0kent0ken", []string{"k3yk3yk3y", "t0kent0ken"}, []string{"hooks.example.net"}},
		{"ntfy://user:pa55word@ntfy.example.net/private-topic", []string{"pa55word", "private-topic", "user"}, []string{"ntfy.example.net"}},
		{"slack://xoxb:123456789012-1234567890123-4eIv4NtyVCstQZrBj4e8tu7b@C001CH4NN3L", []string{"xoxb", "123456789012-1234567890123-4eIv4NtyVCstQZrBj4e8tu7b", "C001CH4NN3L"}, nil},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		// What shoutrrr's errors look like: the URL it posted to, quoted
		// and escaped, and the service URL itself.
		text := fmt.Sprintf("Post %q: dial tcp: connection refused; %s; https://discord.com/api/webhooks/%s/%s; %s",
			tt.url, url.QueryEscape(tt.url), u.Host, u.User.Username(), u.Redacted())
		got := redactor(u)(text)
		for _, s := range tt.secrets {
			if strings.Contains(got, s) {
				t.Errorf("redacted %s still holds %q: %s", tt.url, s, got)
			}
		}
		for _, s := range tt.keep {
			if !strings.Contains(got, s) {
				t.Errorf("redacted %s lost %q, which helps find the problem: %s", tt.url, s, got)
			}
		}
	}
}
