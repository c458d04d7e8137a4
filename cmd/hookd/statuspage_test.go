package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/and3rn3t/hookd/internal/dockertest"
)

// browserTools finds Debian's chromium and axe-core's script (installed by
// scripts/browser.sh, whose output scripts/test.sh exports). Without them
// the browser test skips, unless HOOKD_INTEGRATION is set: then it fails.
func browserTools(t *testing.T) (chromium, axe string) {
	t.Helper()
	chromium = os.Getenv("HOOKD_CHROMIUM")
	if chromium == "" {
		chromium, _ = exec.LookPath("chromium")
	}
	axe = os.Getenv("HOOKD_AXE_JS")
	if _, err := os.Stat(axe); chromium == "" || axe == "" || err != nil {
		msg := "the browser test needs chromium and axe-core: set -a; eval \"$(scripts/browser.sh)\"; set +a (sets HOOKD_CHROMIUM and HOOKD_AXE_JS)"
		if os.Getenv("HOOKD_INTEGRATION") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return chromium, axe
}

// browser is one headless chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	axe string // axe-core's source
	dir string // where screenshots go
}

func newBrowser(t *testing.T, chromium, axePath string) *browser {
	t.Helper()
	src, err := os.ReadFile(axePath)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox)
	ctx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(ctx)
	ctx, cancelTime := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	// The test's output directory: kept with go test -artifacts.
	return &browser{t: t, ctx: ctx, axe: string(src), dir: t.ArtifactDir()}
}

// do runs steps and fails the test on an error, saying what it was doing.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval runs a JavaScript expression and returns its value.
func eval[T any](b *browser, expr string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		b.t.Fatalf("evaluate %.80q: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is true.
func (b *browser) waitFor(what, cond string, timeout time.Duration) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(timeout))); err != nil {
		b.shot("failed")
		body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
		b.t.Fatalf("waiting %s for %s: %v\npage:\n%s", timeout, what, err, body)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(sel))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// screenshots saves the page as a phone (390×844) and a laptop (1280×800)
// show it, whole, and checks that it needs no horizontal scrolling on the
// narrowest phone (360 px).
func (b *browser) screenshots(name string) {
	b.t.Helper()
	for _, size := range []struct {
		w, h   int64
		mobile bool
	}{{360, 740, true}, {390, 844, true}, {1280, 800, false}} {
		var opts []chromedp.EmulateViewportOption
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		b.do("resize", chromedp.EmulateViewport(size.w, size.h, opts...), chromedp.Sleep(150*time.Millisecond))
		if size.w == 360 {
			if wide := eval[int](b, "document.documentElement.scrollWidth"); wide > 360 {
				b.t.Errorf("%s is %d px wide at 360 px: it scrolls sideways on a phone", name, wide)
			}
			continue
		}
		png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			b.t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(b.dir, fmt.Sprintf("%s-%dx%d.png", name, size.w, size.h))
		if err := os.WriteFile(path, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do("resize", chromedp.EmulateViewport(1280, 800))
}

// shot saves the page as it is, for a failure's post-mortem.
func (b *browser) shot(name string) {
	if png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644)
	}
}

// axeViolation is one serious or critical finding of axe-core.
type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

// accessible runs axe-core on the page in the light and the dark colour
// scheme and fails the test for every violation of impact serious or
// critical.
func (b *browser) accessible(name string) {
	b.t.Helper()
	for _, scheme := range []string{"light", "dark"} {
		if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		}); err != nil {
			b.t.Fatalf("emulate %s: %v", scheme, err)
		}
		if !eval[bool](b, "typeof axe === 'object'") {
			eval[any](b, b.axe+";0")
		}
		raw := eval[string](b, `axe.run(document, {resultTypes: ["violations"]}).then(r => JSON.stringify(
			r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => ({
				id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" "))}))))`,
			chromedp.EvalAwaitPromise)
		var found []axeViolation
		if err := json.Unmarshal([]byte(raw), &found); err != nil {
			b.t.Fatalf("axe result %q: %v", raw, err)
		}
		for _, v := range found {
			b.t.Errorf("axe on %s (%s): %s %s: %s at %v", name, scheme, v.Impact, v.ID, v.Help, v.Nodes)
		}
	}
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
		b.t.Fatal(err)
	}
}

// jobCount asks the API how many jobs target has.
func jobCount(t *testing.T, d *daemon, token, target string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, d.url+"/api/v1/jobs?limit=1000&target="+target, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return len(out.Jobs)
}

// TestStatusPageInBrowser drives the status page of a real hookd (through
// run(), a real engine, the in-process registry) in Debian's chromium, as
// a Pi owner on a phone would: a wrong token is refused and the right one
// signs in; the targets are listed; a pushed version is followed live to
// succeeded without a reload; "Deploy now" queues a manual deploy; a
// rolled-back deploy's page says why, with the health check's output; a
// forged form is refused; axe-core finds nothing serious or critical on any
// page, in either colour scheme; no page scrolls sideways at 360 px; and
// every page is saved as a screenshot at 390×844 and 1280×800 in the
// test's output directory (go test -artifacts keeps it).
func TestStatusPageInBrowser(t *testing.T) {
	chromium, axe := browserTools(t)
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	const token = "status-page-token-0123456789"
	good := runTarget(ctx, t, cli, reg, "octo/page", "hookd-page")
	bad := runTarget(ctx, t, cli, reg, "octo/pagebad", "hookd-pagebad")
	d := startDaemon(ctx, t, map[string]string{
		"HOOKD_API_TOKEN":      token,
		"HOOKD_REGISTRY_HOST":  reg.Host,
		"HOOKD_HEALTH_TIMEOUT": "20s",
		"HOOKD_SETTLE_TIME":    "1s",
	})
	waitReady(t, d)
	b := newBrowser(t, chromium, axe)

	// Signed out, every page is the sign-in form; a wrong token is refused.
	b.do("open the overview", chromedp.Navigate(d.url+"/"), chromedp.WaitVisible("#token"))
	b.accessible("sign-in")
	b.screenshots("signin")
	b.do("sign in with a wrong token", chromedp.SendKeys("#token", "not-the-token"), chromedp.Click("button[type=submit]"),
		chromedp.WaitVisible("#signin-error"))
	if got := b.text("#signin-error"); !strings.Contains(got, "not hookd's API token") {
		t.Errorf("wrong token: the page says %q", got)
	}
	b.do("sign in", chromedp.SendKeys("#token", token), chromedp.Click("button[type=submit]"), chromedp.WaitVisible("#targets"))
	if got := b.text("#targets"); !strings.Contains(got, good) || !strings.Contains(got, bad) {
		t.Errorf("the overview lists %q, want %s and %s", got, good, bad)
	}
	// Keyboard: the first Tab reaches "Skip to content", which leads to the
	// page's content.
	b.do("tab to the skip link", chromedp.KeyEvent("\t"))
	if !eval[bool](b, "document.activeElement.classList.contains('skip')") {
		t.Error("the first Tab does not reach the skip link")
	}

	// A push is followed live on the target's page: the page is not
	// reloaded, its timeline moves through the job's steps to succeeded.
	b.do("open the target", chromedp.Navigate(d.url+"/targets/"+good), chromedp.WaitVisible("#jobs"))
	b.waitFor("the live stream", "document.body.dataset.stream === 'open'", 10*time.Second)
	eval[any](b, `window.__sameDocument = true; window.__seen = [];
		(() => {
			const note = () => {
				const badge = document.querySelector("#jobs li .badge");
				const s = badge ? badge.textContent.trim() : "";
				if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
			};
			new MutationObserver(note).observe(document.getElementById("jobs"), {childList: true, subtree: true, characterData: true});
		})(); 0`)
	digest := reg.PushApp(ctx, t, "octo/page", "latest", dockertest.App{Version: "v2"})
	if code, out := d.deliver(t, "package", "page-1", packageEvent(t, reg.Host, "octo", "page", "latest", digest)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v", code, out)
	}
	b.waitFor("the job to succeed on the page", "window.__seen.includes('succeeded')", 90*time.Second)
	seen := eval[[]string](b, "window.__seen")
	if !eval[bool](b, "window.__sameDocument === true") {
		t.Error("the page was reloaded to show the job")
	}
	live := slices.IndexFunc(seen, func(s string) bool {
		return s == "queued" || s == "running" || s == "pulling the image" || s == "swapping containers" || s == "waiting for the health gate"
	})
	if live < 0 || live > slices.Index(seen, "succeeded") {
		t.Errorf("the page showed %q, want the job under way before it succeeded", seen)
	}
	waitVersion(ctx, t, cli, good, "v2")
	if got := b.text("#summary"); !strings.Contains(got, "passed its health gate") {
		t.Errorf("the target's summary after the deploy: %q", got)
	}
	b.accessible("target")
	b.screenshots("target")

	// "Deploy now" queues a manual deploy and shows its job until it ends.
	before := jobCount(t, d, token, good)
	b.do("press Deploy now", chromedp.Click("#deploy-now"), chromedp.WaitVisible("#job"))
	b.waitFor("the manual job to end", `["up to date", "succeeded"].includes(document.querySelector("#job .badge").textContent.trim())`, 60*time.Second)
	if got := b.text(".facts"); !strings.Contains(got, "manual") {
		t.Errorf("the job's facts say %q, want a manual trigger", got)
	}
	if n := jobCount(t, d, token, good); n != before+1 {
		t.Errorf("after Deploy now %s has %d jobs, want %d", good, n, before+1)
	}

	// A form whose CSRF token is not the session's is refused and does nothing.
	b.do("open the target", chromedp.Navigate(d.url+"/targets/"+good), chromedp.WaitVisible("#deploy-now"))
	eval[any](b, `document.querySelector("#deploy-now").form.querySelector("input[name=csrf]").value = "forged"; 0`)
	// The target's page has a main h1 too: wait for the answer's page to
	// load before reading it.
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click("#deploy-now"))
	if err != nil {
		b.shot("failed")
		t.Fatalf("press Deploy now with a forged token: %v", err)
	}
	if resp.Status != http.StatusForbidden {
		t.Errorf("a forged form was answered %d, want %d", resp.Status, http.StatusForbidden)
	}
	if got := b.text("main"); !strings.Contains(got, "Forbidden") || !strings.Contains(got, "nothing was done") {
		t.Errorf("a forged form: the page says %q, want Forbidden and nothing done", got)
	}
	if n := jobCount(t, d, token, good); n != before+1 {
		t.Errorf("after the forged form %s has %d jobs, want %d", good, n, before+1)
	}

	// A version that fails its health gate is rolled back; the overview
	// says so first, and the job's page says why.
	b.do("open the overview", chromedp.Navigate(d.url+"/"), chromedp.WaitVisible("#targets"))
	b.waitFor("the live stream", "document.body.dataset.stream === 'open'", 10*time.Second)
	digest = reg.PushApp(ctx, t, "octo/pagebad", "latest", dockertest.App{Version: "v2", Unhealthy: true})
	if code, out := d.deliver(t, "package", "page-2", packageEvent(t, reg.Host, "octo", "pagebad", "latest", digest)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v", code, out)
	}
	b.waitFor("the rollback on the overview", fmt.Sprintf(`[...document.querySelectorAll("#attention li")].some(li => li.textContent.includes(%q) && li.textContent.includes("rolled back"))`, bad), 90*time.Second)
	b.accessible("overview")
	b.screenshots("overview")
	eval[any](b, fmt.Sprintf(`[...document.querySelectorAll("#attention li")].find(li => li.textContent.includes(%q)).querySelector("a").click(); 0`, bad))
	b.do("open the rolled-back job", chromedp.WaitVisible(".outcome"))
	outcome := b.text(".outcome")
	for _, want := range []string{"Why it was rolled back", "unhealthy", "What its health check said", "configured unhealthy"} {
		if !strings.Contains(outcome, want) {
			t.Errorf("the rolled-back job's page says %q, want %q", outcome, want)
		}
	}
	if steps := b.text(".steps"); !strings.Contains(steps, "Roll back") || !strings.Contains(steps, "Health gate") {
		t.Errorf("the rolled-back job's steps: %q", steps)
	}
	waitVersion(ctx, t, cli, bad, "v1")
	b.accessible("job")
	b.screenshots("job-rolled-back")

	b.do("open the deliveries", chromedp.Navigate(d.url+"/deliveries"), chromedp.WaitVisible("main ol"))
	if got := b.text("main"); !strings.Contains(got, "page-1") || !strings.Contains(got, "202 Accepted") {
		t.Errorf("recent deliveries: %q, want page-1 answered 202", got)
	}
	b.accessible("deliveries")
	b.screenshots("deliveries")
	t.Logf("screenshots in %s", b.dir)
}
