package web

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// The pages' data, built from what the deployer, the poller, the webhook
// handler and the registry watch know. The builders are pure functions of
// their inputs and the time.

// page is what every page's layout needs.
type page struct {
	Title string
	// Root is the relative path from the request's path to the site's
	// root ("./", "../"): every link is relative, so the pages work both
	// at hookd's own address and under a proxy's path prefix.
	Root string
	CSRF string // "" when signed out: no navigation is shown
	Nav  string // "overview", "deliveries"
	// Live is the query of the job events the page follows ("all",
	// "target=web", "job=…"); "" when it follows none.
	Live string
	CSS  string
	JS   string
	Now  time.Time
}

// targetView is one target on the overview or its own page.
type targetView struct {
	deploy.Target
	Last      *deploy.Job // its newest job
	LastFinal *deploy.Job // its newest finished job
	// Running is the version it runs: the image's revision label, else
	// the short digest, else the short image id; RunningFull the digest.
	Running     string
	RunningFull string
	// State is a word for its badge, StateClass its colour; Health says
	// what its last gate said.
	State      string
	StateClass string
	Health     string
	NextPoll   time.Time
	Polled     bool

	// Words and links of the overview's card, worked out once here rather
	// than by template functions (50 cards is a few thousand calls).
	// The overview is at the site's root, so its links need no Root.
	Path     string // "targets/NAME", escaped
	Ref      string // "image:tag"
	LastPath string // "jobs/ID", escaped
	LastWhat string // the last job's state
	LastWhen time.Time
	LastISO  string
	LastAgo  string
	LastHow  string // its trigger
}

// attention is one thing a person should look at first.
type attention struct {
	Level   string // "bad" or "warn"
	Subject string // what it is about: a target, a registry, "webhooks"
	Text    string
	Link    string // relative to the site's root, "" for none
	LinkTo  string // the link's words
}

// newTargetView describes t from its newest jobs (newest first).
func newTargetView(now time.Time, t deploy.Target, jobs []deploy.Job) targetView {
	v := targetView{Target: t}
	if len(jobs) > 0 {
		v.Last = &jobs[0]
	}
	for i := range jobs {
		if jobs[i].Status.Final() {
			v.LastFinal = &jobs[i]
			break
		}
	}
	v.Running, v.RunningFull = runningVersion(t, jobs)
	v.State, v.StateClass, v.Health = targetState(now, v.Last, v.LastFinal)
	v.Path, v.Ref = "targets/"+pathEscape(t.Name), t.Image+":"+t.Tag
	if l := v.Last; l != nil {
		v.LastPath, v.LastWhat, v.LastHow = "jobs/"+pathEscape(l.ID), jobState(*l), triggerText(l.Request)
		v.LastWhen = l.FinishedAt
		if v.LastWhen.IsZero() {
			v.LastWhen = l.CreatedAt
		}
		v.LastISO, v.LastAgo = iso(v.LastWhen), ago(now, v.LastWhen)
	}
	if v.LastFinal != nil && v.LastFinal.Status == deploy.StatusUpToDate {
		// Nothing was replaced: the gate the running version passed is
		// the health worth telling, when it is among the jobs at hand.
		for _, j := range jobs {
			if j.Status == deploy.StatusSucceeded && !j.HealthyAt.IsZero() && j.DigestAfter == v.LastFinal.DigestAfter {
				v.Health = "passed its health gate " + ago(now, j.HealthyAt) + "; up to date " + ago(now, v.LastFinal.FinishedAt)
				break
			}
		}
	}
	return v
}

// runningVersion names what t runs: the revision label of the newest job
// that deployed (or found up to date) the digest t runs, else t's short
// digest, else its short image id. full is the digest or image id.
func runningVersion(t deploy.Target, jobs []deploy.Job) (label, full string) {
	full = t.Digest
	if full == "" {
		full = t.ImageID
	}
	if t.Digest != "" {
		for _, j := range jobs {
			if (j.Status == deploy.StatusSucceeded || j.Status == deploy.StatusUpToDate) &&
				j.DigestAfter == t.Digest && j.Revision != "" {
				return revision(j.Revision), full
			}
		}
	}
	if full == "" {
		return "unknown", ""
	}
	return short(full), full
}

// targetState is a target's badge and health sentence from its newest job
// and its newest finished one.
func targetState(now time.Time, last, final *deploy.Job) (state, class, health string) {
	if last != nil && !last.Status.Final() {
		state, class = jobState(*last), "live"
	}
	switch {
	case final == nil:
		health = "running; no deploy recorded yet"
		if state == "" {
			state = "running"
		}
		return state, class, health
	case final.Status == deploy.StatusSucceeded:
		at := final.HealthyAt
		if at.IsZero() {
			at = final.FinishedAt
		}
		health = "passed its health gate " + ago(now, at)
	case final.Status == deploy.StatusUpToDate:
		health = "already ran the newest image " + ago(now, final.FinishedAt)
	case final.Status == deploy.StatusRolledBack:
		health = "the new version was " + reasonText(final.RollbackReason) + "; the previous version runs again"
	case final.Status == deploy.StatusFailed:
		health = "its last deploy failed " + ago(now, final.FinishedAt)
	case final.Status == deploy.StatusRefused:
		health = "its last deploy was refused " + ago(now, final.FinishedAt) + "; nothing was touched"
	}
	if state == "" {
		state, class = statusText(final.Status), statusClass(final.Status)
	}
	return state, class, health
}

// reasonText is a rollback reason as words.
func reasonText(reason string) string {
	switch reason {
	case deploy.ReasonUnhealthy:
		return "unhealthy"
	case deploy.ReasonExited:
		return "exited"
	case deploy.ReasonTimeout:
		return "not healthy in time"
	case deploy.ReasonStartFailed:
		return "unable to start"
	case "":
		return "not healthy"
	}
	return strings.ReplaceAll(reason, "_", " ")
}

// silence is how long webhooks may be quiet before the overview mentions it.
const silence = 24 * time.Hour

// credentialError matches what a registry or the engine says when it
// refuses credentials (or their absence) in a pull's error.
var credentialError = regexp.MustCompile(`(?i)unauthorized|authentication required|access (is )?denied|denied: |no basic auth credentials|incorrect username or password|registry denied access`)

// attentionInput is what the overview's attention list is built from.
type attentionInput struct {
	Now     time.Time
	Targets []targetView
	// LastWebhook is the newest signed delivery hookd knows of; zero when
	// it knows none.
	LastWebhook time.Time
	Polling     bool
	Refusals    []Refusal
	// Forged is how many deliveries with a wrong signature arrived in the
	// last day (in memory since start-up).
	Forged int
}

// attentionItems lists what needs attention, the worst first: a rollback,
// a failed deploy, a registry refusing credentials, a refused deploy,
// deliveries with a wrong signature, webhooks silent for a day.
func attentionItems(in attentionInput) []attention {
	var bad, warn []attention
	refusedHosts := map[string]bool{}
	for _, r := range in.Refusals {
		refusedHosts[r.Host] = true
		bad = append(bad, attention{
			Level: "bad", Subject: r.Host,
			Text: fmt.Sprintf("refused hookd's registry credentials %s (%s); polls of %s fail until they are fixed (registry_username / registry_password, or the Docker config's login).",
				ago(in.Now, r.Since), r.Ref, r.Host),
		})
	}
	for _, t := range in.Targets {
		j := t.LastFinal
		if j == nil {
			continue
		}
		link, linkTo := "jobs/"+pathEscape(j.ID), "see the job"
		switch j.Status {
		case deploy.StatusRolledBack:
			text := fmt.Sprintf("rolled back %s: the new version, %s, was %s",
				ago(in.Now, j.FinishedAt), versionOf(*j), reasonText(j.RollbackReason))
			if j.RollbackDetail != "" {
				text += " (" + clip(j.RollbackDetail, 160) + ")"
			}
			bad = append(bad, attention{Level: "bad", Subject: t.Name, Text: text + ". The previous version runs again.", Link: link, LinkTo: linkTo})
		case deploy.StatusFailed:
			if credentialError.MatchString(j.Error) {
				host := registryHost(j.Image)
				if !refusedHosts[host] {
					refusedHosts[host] = true
					bad = append(bad, attention{Level: "bad", Subject: host,
						Text: fmt.Sprintf("refused hookd's registry credentials when %s pulled %s: %s", t.Name, ago(in.Now, j.FinishedAt), clip(j.Error, 160)),
						Link: link, LinkTo: linkTo})
				}
				continue
			}
			bad = append(bad, attention{Level: "bad", Subject: t.Name,
				Text: fmt.Sprintf("deploy failed %s: %s", ago(in.Now, j.FinishedAt), clip(j.Error, 200)), Link: link, LinkTo: linkTo})
		case deploy.StatusRefused:
			warn = append(warn, attention{Level: "warn", Subject: t.Name,
				Text: fmt.Sprintf("deploy refused %s: %s", ago(in.Now, j.FinishedAt), clip(j.Error, 200)), Link: link, LinkTo: linkTo})
		}
	}
	if in.Forged > 0 {
		warn = append(warn, attention{Level: "warn", Subject: "webhooks",
			Text: fmt.Sprintf("%d %s with a wrong signature in the last day: GitHub's webhook secret and hookd's webhook_secret may differ, or someone else is knocking.",
				in.Forged, plural(in.Forged, "delivery", "deliveries")),
			Link: "deliveries", LinkTo: "recent deliveries"})
	}
	if !in.LastWebhook.IsZero() && in.Now.Sub(in.LastWebhook) > silence {
		text := fmt.Sprintf("no signed delivery for %s (the last one %s). If you pushed since, check the webhook's Recent deliveries on GitHub.",
			roughly(in.Now.Sub(in.LastWebhook)), stamp(in.LastWebhook))
		if in.Polling {
			text += " Polling covers the gap meanwhile."
		} else {
			text += " Polling is off, so nothing else will notice a push."
		}
		warn = append(warn, attention{Level: "warn", Subject: "webhooks", Text: text, Link: "deliveries", LinkTo: "recent deliveries"})
	}
	return append(bad, warn...)
}

// versionOf names the version a job deployed: its revision and short
// digest, or what is known of them.
func versionOf(j deploy.Job) string {
	switch {
	case j.Revision != "" && j.DigestAfter != "":
		return revision(j.Revision) + " (" + short(j.DigestAfter) + ")"
	case j.Revision != "":
		return revision(j.Revision)
	case j.DigestAfter != "":
		return short(j.DigestAfter)
	}
	return j.Image
}

// registryHost is the registry of an image reference ("ghcr.io").
func registryHost(image string) string {
	if r, err := deploy.ParseRef(image); err == nil {
		return r.Registry
	}
	host, _, _ := strings.Cut(image, "/")
	return host
}

// clip shortens s to about n characters, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 { // not inside a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// lastWebhook is the newest time a webhook asked for a target, from the
// targets (since start-up), the recent deliveries and the jobs shown.
func lastWebhook(targets []targetView, deliveries time.Time) time.Time {
	last := deliveries
	for _, t := range targets {
		if t.LastWebhook.After(last) {
			last = t.LastWebhook
		}
		for _, j := range []*deploy.Job{t.Last, t.LastFinal} {
			if j != nil && j.Request.Trigger == deploy.TriggerWebhook && j.Request.ReceivedAt.After(last) {
				last = j.Request.ReceivedAt
			}
		}
	}
	return last
}

// step is one line of a job's steps.
type step struct {
	Name   string
	State  string // "done", "now", "failed", "todo"
	Detail string
	At     time.Time
}

// phaseSteps are the phases strategies record, in the order they happen,
// with the stage that runs each.
type phaseStep struct {
	phase string
	stage deploy.Stage
	name  string
}

var phaseSteps = []phaseStep{
	{"pull", deploy.StagePulling, "Pull"},
	{"verify", deploy.StageVerifying, "Verify"},
	{"hooks", deploy.StageHooks, "Hooks"},
	{"swap", deploy.StageSwapping, "Swap"},
	{"health", deploy.StageGating, "Health gate"},
}

// jobSteps lists a job's steps with their timings: queued, started, each
// phase the strategy recorded (or the stage it is in now), the rollback,
// and the end.
func jobSteps(now time.Time, j deploy.Job) []step {
	steps := []step{{Name: "Queued", State: "done", At: j.CreatedAt, Detail: triggerText(j.Request)}}
	if j.Status == deploy.StatusQueued {
		steps[0].State = "now"
		steps[0].Detail = "waiting " + roughly(now.Sub(j.CreatedAt))
		return steps
	}
	if !j.StartedAt.IsZero() {
		wait := "straight from the queue"
		if j.StartedAt.Sub(j.CreatedAt) >= 100*time.Millisecond {
			wait = "after " + between(j.CreatedAt, j.StartedAt) + " in the queue"
		}
		steps = append(steps, step{Name: "Started", State: "done", At: j.StartedAt, Detail: wait})
	}
	// Which stage is under way: the current one while running.
	current := deploy.Stage("")
	if j.Status == deploy.StatusRunning {
		current = j.Stage
	}
	for _, p := range phaseSteps {
		secs, ok := j.Phases[p.phase]
		switch {
		case current == p.stage:
			steps = append(steps, step{Name: p.name, State: "now", Detail: stageText(p.stage)})
		case ok:
			st := step{Name: p.name, State: "done", Detail: seconds(secs)}
			if p.phase == "health" {
				switch {
				case j.Status == deploy.StatusRolledBack || (j.Status == deploy.StatusRunning && j.Stage == deploy.StageRollback):
					st.State, st.Detail = "failed", seconds(secs)+": "+reasonText(j.RollbackReason)
				case !j.HealthyAt.IsZero():
					st.Detail, st.At = seconds(secs)+": passed", j.HealthyAt
				}
			}
			steps = append(steps, st)
		}
	}
	// Phases a strategy recorded that the list above does not know.
	var extra []string
	for name := range j.Phases {
		if !slices.ContainsFunc(phaseSteps, func(p phaseStep) bool { return p.phase == name }) && name != "total" {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		steps = append(steps, step{Name: strings.ToUpper(name[:1]) + name[1:], State: "done", Detail: seconds(j.Phases[name])})
	}
	if current == deploy.StageRollback || j.Status == deploy.StatusRolledBack {
		st := step{Name: "Roll back", State: "done", Detail: "previous version restored"}
		if current == deploy.StageRollback {
			st.State, st.Detail = "now", "restoring the previous version"
		}
		steps = append(steps, st)
	}
	if current != "" && current != deploy.StageRollback &&
		!slices.ContainsFunc(phaseSteps, func(p phaseStep) bool { return p.stage == current }) {
		steps = append(steps, step{Name: stageText(current), State: "now"})
	}
	if j.Status.Final() {
		end := step{Name: "Ended: " + statusText(j.Status), State: "done", At: j.FinishedAt}
		if d := between(j.StartedAt, j.FinishedAt); d != "" {
			end.Detail = "took " + d
		}
		if j.Status == deploy.StatusFailed || j.Status == deploy.StatusRolledBack {
			end.State = "failed"
		}
		steps = append(steps, end)
	}
	return steps
}

// leadTime is from hookd learning of the image to the new version passing
// its gate; 0 when the job did not pass one.
func leadTime(j deploy.Job) float64 {
	if j.Status != deploy.StatusSucceeded || j.HealthyAt.IsZero() || j.Request.ReceivedAt.IsZero() {
		return 0
	}
	return j.HealthyAt.Sub(j.Request.ReceivedAt).Seconds()
}

// duration is a job's run time, from its start to its end; 0 when unknown.
func duration(j deploy.Job) float64 {
	if j.StartedAt.IsZero() || j.FinishedAt.IsZero() || j.FinishedAt.Before(j.StartedAt) {
		return 0
	}
	return j.FinishedAt.Sub(j.StartedAt).Seconds()
}
