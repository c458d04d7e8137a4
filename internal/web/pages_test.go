package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	stdhtml "html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/webhook"
)

// text strips tags and collapses white space, for asserting what a reader
// sees.
func text(html string) string {
	return strings.Join(strings.Fields(stdhtml.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(html, " "))), " ")
}

// TestOverview: what needs attention comes first, worst first; every target
// shows its image, running version, health, last deploy and next poll.
func TestOverview(t *testing.T) {
	now := time.Now().UTC()
	web, api, db := testTarget("web"), testTarget("api"), testTarget("db")
	api.RolledBack = "sha256:" + strings.Repeat("a", 64)
	ok := jobAt("0000000000000001", "web", now.Add(-10*time.Minute), deploy.StatusSucceeded)
	rb := jobAt("0000000000000002", "api", now.Add(-5*time.Minute), deploy.StatusRolledBack)
	failed := jobAt("0000000000000003", "db", now.Add(-2*time.Minute), deploy.StatusFailed)
	for _, j := range []*deploy.Job{&ok, &rb, &failed} {
		j.Request.Trigger = deploy.TriggerPoll // the last webhook is the delivery of 50 h ago
	}
	dl := NewDeliveries(0, 0)
	dl.Delivered(webhook.Delivery{At: now.Add(-50 * time.Hour), Signed: true, Status: 202, Event: "package"})
	dl.Delivered(webhook.Delivery{At: now.Add(-time.Hour), Status: 401, Event: "package", Reason: "invalid signature"})
	r := newRig(t, rigOptions{
		targets: []deploy.Target{web, api, db},
		jobs:    []deploy.Job{ok, rb, failed},
		cfg:     Config{Deliveries: dl, Poller: fixedPoller(now.Add(4 * time.Minute)), PollInterval: 5 * time.Minute},
	})
	page := r.get(t, r.signedIn(t), "/").body
	seen := text(page)

	attention := seen[strings.Index(seen, "Needs attention"):strings.Index(seen, "Targets")]
	order := []string{"api rolled back", "ghcr.io refused hookd's registry credentials when db pulled", "webhooks 1 delivery with a wrong signature", "webhooks no signed delivery for 2 days"}
	last := -1
	for _, want := range order {
		i := strings.Index(attention, want)
		if i < 0 || i < last {
			t.Errorf("attention %q lacks %q in order %q", attention, want, order)
		}
		last = i
	}
	if !strings.Contains(attention, "0123456 (aaaaaaaaaaaa), was unhealthy (unhealthy: GET /healthz: 503)") {
		t.Errorf("the rollback's attention item does not say what and why: %q", attention)
	}
	for _, want := range []string{
		"web succeeded Image ghcr.io/octo/web:latest Running 0123456 Health passed its health gate",
		"Last deploy succeeded 9 min ago · registry poll Next poll in 3 min",
		"api rolled back", "Rolled back aaaaaaaaaaaa is not tried again unless forced",
		"db failed", "hookd asks the registry every 5 min while webhooks are silent",
	} {
		if !strings.Contains(seen, want) {
			t.Errorf("the overview lacks %q:\n%s", want, seen)
		}
	}
	if !strings.Contains(page, `href="./jobs/0000000000000002"`) || !strings.Contains(page, `href="targets/api"`) || strings.Contains(page, `href="/`) {
		t.Errorf("the overview does not link the job and the target relatively")
	}
}

type fixedPoller time.Time

func (p fixedPoller) NextPoll(string) (time.Time, bool) { return time.Time(p), true }

// TestRegistryRefusal: a poll refused for its credentials is on the
// overview until a look-up of that registry succeeds again.
func TestRegistryRefusal(t *testing.T) {
	reg := &refusingRegistry{err: fmt.Errorf("head: %w", registry.ErrUnauthorized)}
	w := WatchCredentials(reg)
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}, cfg: Config{Credentials: w}})
	c := r.signedIn(t)
	_, _ = w.Head(context.Background(), "ghcr.io/octo/web:latest")
	if seen := text(r.get(t, c, "/").body); !strings.Contains(seen, "ghcr.io refused hookd's registry credentials") ||
		!strings.Contains(seen, "ghcr.io/octo/web:latest") {
		t.Errorf("after a refused poll the overview says:\n%s", seen)
	}
	reg.err = fmt.Errorf("head: %w", registry.ErrNotFound) // says nothing about credentials
	_, _ = w.Head(context.Background(), "ghcr.io/octo/web:latest")
	if len(w.Refusals()) != 1 {
		t.Errorf("a not-found look-up cleared the refusal")
	}
	reg.err = nil
	_, _ = w.Head(context.Background(), "ghcr.io/octo/web:latest")
	if seen := text(r.get(t, c, "/").body); strings.Contains(seen, "refused hookd's registry credentials") {
		t.Errorf("after a good poll the overview still says:\n%s", seen)
	}
}

type refusingRegistry struct{ err error }

func (f *refusingRegistry) Head(context.Context, string) (registry.Descriptor, error) {
	return registry.Descriptor{Digest: "sha256:" + strings.Repeat("d", 64)}, f.err
}

func (f *refusingRegistry) Platform(context.Context, string) (string, string, error) {
	return "", "", f.err
}

// TestDeployNowLive: "Deploy now" queues a manual deploy and goes to its
// job; the job's event stream tells the page of each step as the deploy
// takes it, and the job page then shows the steps with timings.
func TestDeployNowLive(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web"), testTarget("api")}})
	r.strategy.hold = make(chan struct{})
	c := r.signedIn(t)
	token := csrfOf(t, r.get(t, c, "/targets/web").body)

	// Follow web's events as the target page does.
	events := r.stream(t, c, "/events?target=web")
	a := r.post(t, c, "/targets/web/deploy", url.Values{"csrf": {token}})
	if a.code != http.StatusSeeOther {
		t.Fatalf("Deploy now = %d %s, want 303", a.code, a.body)
	}
	id := strings.TrimPrefix(a.header.Get("Location"), "../../jobs/")
	for _, want := range []string{"queued", "running", "pulling"} {
		if e := events.next(t); e.Kind != want || e.Job != id || e.Target != "web" {
			t.Fatalf("event = %+v, want %s of job %s", e, want, id)
		}
	}
	page := text(r.get(t, c, "/jobs/"+id).body)
	if !strings.Contains(page, "pulling the image") || !strings.Contains(page, "Trigger manual") {
		t.Errorf("job page while pulling:\n%s", page)
	}
	// An event of another target does not reach web's page.
	r.strategy.hold <- struct{}{} // pull done
	for _, want := range []string{"swapping"} {
		if e := events.next(t); e.Kind != want {
			t.Fatalf("event = %+v, want %s", e, want)
		}
	}
	r.strategy.hold <- struct{}{} // swap done
	if e := events.next(t); e.Kind != "gating" {
		t.Fatalf("event = %+v, want gating", e)
	}
	r.strategy.hold <- struct{}{} // gate passed
	if e := events.next(t); e.Kind != "succeeded" || e.Status != deploy.StatusSucceeded {
		t.Fatalf("event = %+v, want succeeded", e)
	}
	r.waitJob(t, id)
	page = text(r.get(t, c, "/jobs/"+id).body)
	for _, want := range []string{"Queued manual", "Started", "Pull", "Swap", "Health gate", "passed", "Ended: succeeded took"} {
		if !strings.Contains(page, want) {
			t.Errorf("finished job page lacks %q:\n%s", want, page)
		}
	}
	if seen := text(r.get(t, c, "/targets/web").body); !strings.Contains(seen, "The last deploy ran for") {
		t.Errorf("the target page has no chart of the deploy:\n%s", seen)
	}
}

// TestStreamEndsAtShutdown: an open page does not hold hookd's shutdown.
func TestStreamEndsAtShutdown(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}})
	c := r.signedIn(t)
	events := r.stream(t, c, "/events")
	close(r.stopping)
	select {
	case <-events.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream is still open 5 s after shutdown began")
	}
}

// TestRolledBackJobPage: a rolled-back job says why, with its health check's
// output, and its notes.
func TestRolledBackJobPage(t *testing.T) {
	j := jobAt("0000000000000009", "web", time.Now().Add(-time.Minute), deploy.StatusRolledBack)
	j.RollbackDetail = "unhealthy: GET /healthz: 503\nsecond line <b>not markup</b>"
	j.Notes = []string{"GitHub deployment 42: failure"}
	j.Failed = &deploy.FailedVersion{Logs: []string{"listening on :8080", "panic: <world> is locked"}}
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}, jobs: []deploy.Job{j}})
	page := r.get(t, r.signedIn(t), "/jobs/"+j.ID).body
	seen := text(page)
	for _, want := range []string{
		"Why it was rolled back", "The new version was unhealthy", "What its health check said",
		"Health gate (failed) 5.0 s: unhealthy", "Roll back previous version restored",
		"Trigger webhook: delivery delivery-0000000000000009", "Notes GitHub deployment 42: failure",
		"Its last log lines",
	} {
		if !strings.Contains(seen, want) {
			t.Errorf("rolled-back job page lacks %q:\n%s", want, seen)
		}
	}
	if !strings.Contains(page, "<pre>unhealthy: GET /healthz: 503\nsecond line &lt;b&gt;not markup&lt;/b&gt;</pre>") {
		t.Errorf("the health check's output is not shown as escaped text:\n%s", page)
	}
	if !strings.Contains(page, "<pre>listening on :8080\npanic: &lt;world&gt; is locked\n</pre>") {
		t.Errorf("the failed version's log lines are not shown as escaped text:\n%s", page)
	}
	if a := r.get(t, r.signedIn(t), "/jobs/nope"); a.code != http.StatusNotFound {
		t.Errorf("unknown job = %d, want 404", a.code)
	}
}

// TestOverviewWeight: the overview of 50 targets with a job each, with its
// stylesheet and script, stays within 60 KB over the wire.
func TestOverviewWeight(t *testing.T) {
	targets, jobs := fleet(50, 20)
	r := newRig(t, rigOptions{targets: targets, jobs: jobs})
	c := r.signedIn(t)
	page := r.do(t, c, http.MethodGet, "/", nil, map[string]string{"Accept-Encoding": "gzip"})
	total := wireBytes(page)
	for _, m := range regexp.MustCompile(`(?:href|src)="\./(assets/[^"]+)"`).FindAllStringSubmatch(page.body, -1) {
		a := r.do(t, c, http.MethodGet, "/"+m[1], nil, map[string]string{"Accept-Encoding": "gzip"})
		if a.code != http.StatusOK {
			t.Fatalf("GET %s = %d", m[1], a.code)
		}
		total += wireBytes(a)
	}
	t.Logf("overview of 50 targets: %d bytes over the wire with its assets", total)
	if total > 60<<10 {
		t.Errorf("overview of 50 targets weighs %d bytes with its assets, want ≤ %d", total, 60<<10)
	}
}

// wireBytes is what an answer cost on the wire: its status line, headers and body.
func wireBytes(a answer) int {
	n := len("HTTP/1.1 200 OK\r\n\r\n") + len(a.body)
	for k, vs := range a.header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// fleet is n targets with perTarget finished jobs each, newest last.
func fleet(n, perTarget int) ([]deploy.Target, []deploy.Job) {
	now := time.Now().UTC()
	var targets []deploy.Target
	var jobs []deploy.Job
	for i := range n {
		name := fmt.Sprintf("service-%02d", i)
		targets = append(targets, testTarget(name))
		for k := range perTarget {
			created := now.Add(-time.Duration(perTarget-k) * time.Hour).Add(time.Duration(i) * time.Second)
			st := deploy.StatusSucceeded
			if k%7 == 3 {
				st = deploy.StatusUpToDate
			}
			jobs = append(jobs, jobAt(fmt.Sprintf("%012x%04x", created.UnixMilli(), i), name, created, st))
		}
	}
	return targets, jobs
}

// eventStream reads a page's event stream.
type eventStream struct {
	events chan event
	done   chan struct{}
}

func (s *eventStream) next(t *testing.T) event {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
		return event{}
	}
}

// stream opens path's event stream with c's session.
func (r *rig) stream(t *testing.T, c *http.Client, path string) *eventStream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req = req.WithContext(ctx)
	sc := *c
	sc.Timeout = 0
	resp, err := sc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s = %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &eventStream{events: make(chan event, 64), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e event
				if json.Unmarshal([]byte(data), &e) == nil {
					s.events <- e
				}
			}
		}
	}()
	return s
}

// TestUnderPathPrefix: behind a reverse proxy that serves hookd under a
// path prefix, every link, form and asset of a page still leads into
// hookd, because they are all relative.
func TestUnderPathPrefix(t *testing.T) {
	now := time.Now().UTC()
	r := newRig(t, rigOptions{
		targets: []deploy.Target{testTarget("web")},
		jobs:    []deploy.Job{jobAt("0000000000000001", "web", now.Add(-time.Minute), deploy.StatusSucceeded)},
	})
	proxy := httptest.NewServer(http.StripPrefix("/hookd", mux(r.site)))
	t.Cleanup(proxy.Close)
	c := r.client(t)
	get := func(u string) answer {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{code: resp.StatusCode, header: resp.Header, body: string(b)}
	}
	// Signing in goes back to the page asked for, under the prefix.
	a := get(proxy.URL + "/hookd/targets/web")
	req, _ := http.NewRequest(http.MethodPost, proxy.URL+"/hookd/login",
		strings.NewReader(url.Values{"token": {testToken}, "next": {"targets/web"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	base, _ := url.Parse(proxy.URL + "/hookd/login")
	next, _ := base.Parse(resp.Header.Get("Location"))
	if next.Path != "/hookd/targets/web" {
		t.Fatalf("sign-in went on to %s, want /hookd/targets/web", next.Path)
	}
	for _, path := range []string{"/hookd/", "/hookd/targets/web", "/hookd/jobs/0000000000000001", "/hookd/deliveries"} {
		page, _ := url.Parse(proxy.URL + path)
		a = get(page.String())
		if a.code != http.StatusOK {
			t.Fatalf("GET %s = %d", path, a.code)
		}
		for _, m := range regexp.MustCompile(`(?:href|src|action)="([^"#]*)"`).FindAllStringSubmatch(a.body, -1) {
			u, err := page.Parse(stdhtml.UnescapeString(m[1]))
			if err != nil || u.Host != page.Host {
				continue // a link out (a commit on GitHub)
			}
			if !strings.HasPrefix(u.Path, "/hookd/") {
				t.Errorf("%s links %q, which leaves the prefix: %s", path, m[1], u.Path)
				continue
			}
			if strings.HasSuffix(u.Path, "/deploy") || strings.HasSuffix(u.Path, "/logout") {
				continue // forms: POST only
			}
			if got := get(u.String()); got.code != http.StatusOK {
				t.Errorf("%s links %q → %s, answered %d", path, m[1], u.Path, got.code)
			}
		}
	}
}
