package notify

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// Message is one notification: the jobs that finished together. It is
// what a notify_template is executed with.
type Message struct {
	// Title is the short line a phone shows in bold ("⚠️ web rolled back
	// on pi").
	Title string
	// Host is the Docker host's name.
	Host string
	// Jobs are the finished jobs, the worst first.
	Jobs []Job
}

// Job is one finished job as a notification tells it.
type Job struct {
	Target string
	// Status is the job's final status: succeeded, rolled_back, failed,
	// refused or up_to_date.
	Status string
	// Headline is "⚠️ web rolled back": the title of this job alone.
	Headline string
	// Image is the reference deployed, "ghcr.io/octo/web:latest".
	Image string
	// From and To are the versions before and after: the commit's first 7
	// characters ("0e2a89b") when the image says which, else the digest's
	// first 12 ("sha256:4c2b8f0e6d1a"); empty when unknown.
	From, To string
	// Trigger is webhook, poll or manual.
	Trigger  string
	Duration time.Duration
	// Reason says in a sentence what went wrong ("The new version failed
	// its health check; the previous one is running again."), Detail what
	// the container showed (the health check's output, the exit code) and
	// Error the job's error.
	Reason, Detail, Error string
	// URL is the job's page, when public_url is set.
	URL string
	// Job is the whole job.
	Job deploy.Job
}

// severity orders statuses, the worst first.
var severity = map[deploy.Status]int{
	deploy.StatusFailed:     0,
	deploy.StatusRolledBack: 1,
	deploy.StatusRefused:    2,
	deploy.StatusSucceeded:  3,
	deploy.StatusUpToDate:   4,
}

var icons = map[deploy.Status]string{
	deploy.StatusFailed:     "❌",
	deploy.StatusRolledBack: "⚠️",
	deploy.StatusRefused:    "🚫",
	deploy.StatusSucceeded:  "✅",
	deploy.StatusUpToDate:   "🆗",
}

var verbs = map[deploy.Status]string{
	deploy.StatusFailed:     "failed",
	deploy.StatusRolledBack: "rolled back",
	deploy.StatusRefused:    "refused",
	deploy.StatusSucceeded:  "deployed",
	deploy.StatusUpToDate:   "up to date",
}

// triggers say how a deploy started.
var triggers = map[string]string{
	string(deploy.TriggerWebhook): "via webhook",
	string(deploy.TriggerPoll):    "via registry poll",
	string(deploy.TriggerManual):  "via hookd deploy",
}

// reasons say what a rollback means for the person reading it.
var reasons = map[string]string{
	deploy.ReasonUnhealthy:   "The new version failed its health check; the previous one is running again.",
	deploy.ReasonExited:      "The new version exited; the previous one is running again.",
	deploy.ReasonTimeout:     "The new version was not healthy in time; the previous one is running again.",
	deploy.ReasonStartFailed: "The new version did not start; the previous one is running again.",
}

var detailLabels = map[string]string{
	deploy.ReasonUnhealthy:   "Health check",
	deploy.ReasonExited:      "Exit",
	deploy.ReasonTimeout:     "Health check",
	deploy.ReasonStartFailed: "Error",
}

// Limits that keep a message readable and under the services' limits
// (ntfy 4096 bytes, Discord 2000 characters an embed).
const (
	maxBody        = 1900
	maxDetailLines = 8
	maxLine        = 200
)

// compose builds the message of jobs. from holds, by job id, the commit
// of the version a job replaced, where an earlier job said so.
func compose(jobs []deploy.Job, host, publicURL string, from map[string]string) Message {
	jobs = slices.Clone(jobs)
	slices.SortStableFunc(jobs, func(a, b deploy.Job) int { return severity[a.Status] - severity[b.Status] })
	m := Message{Host: host}
	for _, j := range jobs {
		m.Jobs = append(m.Jobs, view(j, publicURL, from[j.ID]))
	}
	m.Title = title(jobs, host)
	return m
}

// title is one job's headline, or a count of several by status, the worst
// first: "⚠️ web rolled back, 2 deployed on pi".
func title(jobs []deploy.Job, host string) string {
	var parts []string
	for i := 0; i < len(jobs); {
		s := jobs[i].Status
		n := 1
		for i+n < len(jobs) && jobs[i+n].Status == s {
			n++
		}
		if n == 1 {
			parts = append(parts, jobs[i].Target+" "+verbs[s])
		} else {
			parts = append(parts, fmt.Sprintf("%d %s", n, verbs[s]))
		}
		i += n
	}
	t := icons[jobs[0].Status] + " " + strings.Join(parts, ", ")
	if host != "" {
		t += " on " + host
	}
	return t
}

func view(j deploy.Job, publicURL, fromCommit string) Job {
	v := Job{
		Target:   j.Target,
		Status:   string(j.Status),
		Headline: icons[j.Status] + " " + j.Target + " " + verbs[j.Status],
		Image:    j.Image,
		Trigger:  string(j.Request.Trigger),
		Error:    j.Error,
		Job:      j,
	}
	if !j.StartedAt.IsZero() && j.FinishedAt.After(j.StartedAt) {
		v.Duration = j.FinishedAt.Sub(j.StartedAt)
	}
	v.From = version(fromCommit, j.DigestBefore)
	v.To = version(j.Revision, j.DigestAfter)
	switch j.Status {
	case deploy.StatusRolledBack:
		v.Reason = reasons[j.RollbackReason]
		if v.Reason == "" {
			v.Reason = "The new version was rolled back; the previous one is running again."
		}
		v.Detail = j.RollbackDetail
	case deploy.StatusFailed, deploy.StatusRefused:
		v.Reason = j.Error
	}
	if publicURL != "" {
		v.URL = strings.TrimRight(publicURL, "/") + "/jobs/" + url.PathEscape(j.ID)
	}
	return v
}

// version names an image version: the commit when known, else the
// digest, abbreviated.
func version(revision, digest string) string {
	if revision != "" {
		if len(revision) > 7 {
			revision = revision[:7]
		}
		return revision
	}
	if len(digest) > len("sha256:")+12 {
		return digest[:len("sha256:")+12]
	}
	return digest
}

// body is the default text of m: one block per job, the worst first;
// with several jobs each block starts with its headline. It stays under
// maxBody bytes: the jobs that do not fit are counted at the end.
func body(m Message) string {
	var out strings.Builder
	for i, j := range m.Jobs {
		var b strings.Builder
		if len(m.Jobs) > 1 {
			b.WriteString(j.Headline + "\n")
		}
		writeJob(&b, j)
		block := strings.TrimRight(b.String(), "\n")
		sep := ""
		if i > 0 {
			sep = "\n\n"
		}
		if out.Len()+len(sep)+len(block) > maxBody && i > 0 {
			fmt.Fprintf(&out, "\n\n… and %d more", len(m.Jobs)-i)
			break
		}
		out.WriteString(sep + block)
	}
	s := out.String()
	if len(s) > maxBody {
		s = cut(s, maxBody-len("…")) + "…"
	}
	return s
}

// maxLogLines is how many of a failed version's last log lines a message
// carries.
const maxLogLines = 5

func writeJob(b *strings.Builder, j Job) {
	line := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			b.WriteString(clipLine(s) + "\n")
		}
	}
	line(j.Reason)
	if j.Detail != "" {
		lines := detailLines(j.Detail)
		label := detailLabels[j.Job.RollbackReason]
		if label == "" {
			label = "Detail"
		}
		if len(lines) == 1 {
			line(label + ": " + lines[0])
		} else {
			line(label + ":")
			for _, l := range lines {
				b.WriteString("  " + clipLine(l) + "\n")
			}
		}
	}
	if f := j.Job.Failed; f != nil && len(f.Logs) > 0 {
		// The failed version's last words, a few: a phone shows little.
		logs := f.Logs
		if len(logs) > maxLogLines {
			logs = logs[len(logs)-maxLogLines:]
		}
		line("Its last log lines:")
		for _, l := range logs {
			if l = strings.TrimSpace(l); l != "" {
				b.WriteString("  " + clipLine(l) + "\n")
			}
		}
	}
	switch j.Status {
	case string(deploy.StatusUpToDate):
		line(j.Image + " already runs " + or(j.To, "this image"))
	default:
		line(j.Image)
		switch {
		case j.To == "":
		case j.Status == string(deploy.StatusRolledBack) && j.From != "":
			line(j.To + " rolled back to " + j.From)
		case j.Status == string(deploy.StatusSucceeded) && j.From != "" && j.From != j.To:
			line(j.From + " → " + j.To)
		case j.Status == string(deploy.StatusSucceeded):
			line(j.To)
		default:
			line("new version " + j.To)
		}
	}
	how := triggers[j.Trigger]
	if how == "" {
		how = "via " + j.Trigger
	}
	if j.Duration > 0 {
		how += " in " + duration(j.Duration)
	}
	line(how)
	line(j.URL)
}

// detailLines is a container's output as lines: trimmed, without empty
// ones, the last maxDetailLines of them.
func detailLines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > maxDetailLines {
		out = out[len(out)-maxDetailLines:]
	}
	return out
}

func duration(d time.Duration) string {
	if d < time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func clipLine(s string) string {
	if len(s) <= maxLine {
		return s
	}
	return cut(s, maxLine-len("…")) + "…"
}

// cut returns at most n bytes of s without splitting a character.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n]
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// render returns the title and text of m: the default text, or what tmpl
// makes of m.
func render(m Message, tmpl *template.Template) (title, text string, err error) {
	if tmpl == nil {
		return m.Title, body(m), nil
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, m); err != nil {
		return m.Title, body(m), err
	}
	return m.Title, strings.TrimSpace(b.String()), nil
}
