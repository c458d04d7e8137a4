package web

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// Words and numbers as people read them on the page. All pure.

// ago says how long before now t was: "just now", "42 s ago", "5 min ago",
// "3 h ago", "2 days ago"; "" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "just now"
	}
	return roughly(d) + " ago"
}

// until says how long from now t is: "in 4 min", or "due now".
func until(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now)
	if d <= 0 {
		return "due now"
	}
	return "in " + roughly(d)
}

// roughly rounds d to the unit people think in.
func roughly(d time.Duration) string {
	switch {
	case d < 5*time.Second:
		return "a moment"
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d.Hours()))
	default:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
}

// seconds says a duration given in seconds: "0.4 s", "12 s", "2 min 5 s".
func seconds(s float64) string {
	switch {
	case s < 0 || math.IsNaN(s):
		return ""
	case s == 0:
		return "0 s"
	case s < 10:
		return fmt.Sprintf("%.1f s", s)
	case s < 60:
		return fmt.Sprintf("%.0f s", s)
	case s < 3600:
		m := int(s) / 60
		return fmt.Sprintf("%d min %d s", m, int(s)-60*m)
	default:
		h := int(s) / 3600
		return fmt.Sprintf("%d h %d min", h, (int(s)-3600*h)/60)
	}
}

// between says the time from a to b, "" when either is unknown.
func between(a, b time.Time) string {
	if a.IsZero() || b.IsZero() || b.Before(a) {
		return ""
	}
	return seconds(b.Sub(a).Seconds())
}

// stamp is t as an absolute time for a title or a <time> element's text.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// iso is t for a <time datetime> attribute.
func iso(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// short is the first 12 hex digits of a digest or image id
// ("sha256:0123456789ab…" → "0123456789ab").
func short(digest string) string {
	_, hex, ok := strings.Cut(digest, ":")
	if !ok {
		hex = digest
	}
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// revision shortens a commit id to 7 hex digits and leaves anything else
// (a version tag) as it is, at most 40 characters.
func revision(rev string) string {
	if len(rev) == 40 && strings.Trim(strings.ToLower(rev), "0123456789abcdef") == "" {
		return rev[:7]
	}
	if len(rev) > 40 {
		return rev[:40] + "…"
	}
	return rev
}

// statusText is a job status as a word.
func statusText(s deploy.Status) string {
	switch s {
	case deploy.StatusUpToDate:
		return "up to date"
	case deploy.StatusRolledBack:
		return "rolled back"
	case "":
		return "unknown"
	}
	return string(s)
}

// statusClass is the badge colour of a status: ok, bad, warn, live.
func statusClass(s deploy.Status) string {
	switch s {
	case deploy.StatusSucceeded, deploy.StatusUpToDate:
		return "ok"
	case deploy.StatusRolledBack, deploy.StatusFailed:
		return "bad"
	case deploy.StatusRefused:
		return "warn"
	case deploy.StatusQueued, deploy.StatusRunning:
		return "live"
	}
	return ""
}

// stageText names a stage as a step.
func stageText(s deploy.Stage) string {
	switch s {
	case deploy.StagePulling:
		return "pulling the image"
	case deploy.StageVerifying:
		return "verifying"
	case deploy.StageHooks:
		return "running hooks"
	case deploy.StageSwapping:
		return "swapping containers"
	case deploy.StageGating:
		return "waiting for the health gate"
	case deploy.StageRollback:
		return "rolling back"
	}
	return strings.ReplaceAll(string(s), "_", " ")
}

// jobState is what a job is doing or how it ended, in a word or two.
func jobState(j deploy.Job) string {
	if j.Status == deploy.StatusRunning && j.Stage != "" {
		return stageText(j.Stage)
	}
	return statusText(j.Status)
}

// triggerText says how a job was asked for.
func triggerText(r deploy.Request) string {
	switch r.Trigger {
	case deploy.TriggerWebhook:
		return "webhook"
	case deploy.TriggerPoll:
		return "registry poll"
	case deploy.TriggerManual:
		return "manual"
	}
	return string(r.Trigger)
}

// pathEscape escapes a path segment (a target name, a job id).
func pathEscape(s string) string { return url.PathEscape(s) }

// sourceURL returns a job's org.opencontainers.image.source as a link when
// it is an https URL, else "". It comes from an image label: html/template
// escapes it, and only https is linked.
func sourceURL(src string) string {
	u, err := url.Parse(src)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return ""
	}
	return u.String()
}

// commitURL links a revision to its commit on GitHub when the source is a
// GitHub repository and the revision a commit id.
func commitURL(src, rev string) string {
	s := sourceURL(src)
	if s == "" || len(rev) != 40 || strings.Trim(strings.ToLower(rev), "0123456789abcdef") != "" {
		return ""
	}
	u, _ := url.Parse(s)
	if !strings.EqualFold(u.Host, "github.com") {
		return ""
	}
	return strings.TrimSuffix(strings.TrimRight(s, "/"), ".git") + "/commit/" + rev
}
