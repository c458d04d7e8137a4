package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/deployer"
	"github.com/and3rn3t/hookd/internal/store"
	"github.com/and3rn3t/hookd/internal/strategy"
)

// The pages are tested against the real deployer over a real state file.
// What stands in for Docker: a source listing fixed targets and a strategy
// that walks a job through its stages as the test says (the real ones are
// tested against the engine in their packages, and the whole page against
// it in cmd/hookd's browser test).

const testToken = "web-test-token-0123456789abcdef"

// staticSource lists fixed targets.
type staticSource struct{ targets []deploy.Target }

func (s staticSource) Kind() string { return deploy.KindContainer }
func (s staticSource) List(context.Context) ([]deploy.Target, error) {
	return append([]deploy.Target(nil), s.targets...), nil
}

func (s staticSource) Inspect(_ context.Context, idOrName string) (deploy.Target, bool, error) {
	for _, t := range s.targets {
		if t.ID == idOrName || t.Name == idOrName {
			return t, true, nil
		}
	}
	return deploy.Target{}, false, nil
}

func (s staticSource) Watch(ctx context.Context) (<-chan string, <-chan error) {
	return make(chan string), make(chan error)
}

// scripted is a strategy whose deploys pull, swap and gate, each stage
// waiting until the test releases it when hold is set.
type scripted struct {
	hold    chan struct{} // nil: no waiting
	outcome deploy.Status // default succeeded
	digest  string
}

const scriptedName = "scripted"

func (s *scripted) Deploy(ctx context.Context, run *strategy.Run) strategy.Outcome {
	wait := func() bool {
		if s.hold == nil {
			return true
		}
		select {
		case <-s.hold:
			return true
		case <-ctx.Done():
			return false
		}
	}
	j := run.Job
	for _, st := range []struct {
		stage deploy.Stage
		phase string
	}{{deploy.StagePulling, "pull"}, {deploy.StageSwapping, "swap"}, {deploy.StageGating, "health"}} {
		t0 := time.Now()
		run.Stage(st.stage)
		if !wait() {
			return strategy.Outcome{Abandoned: true}
		}
		run.Phase(st.phase, t0)
		if st.stage == deploy.StagePulling {
			j.DigestBefore, j.DigestAfter, j.Revision = j.DigestAfter, s.digest, "0123456789abcdef0123456789abcdef01234567"
		}
	}
	switch s.outcome {
	case deploy.StatusRolledBack:
		j.RollbackReason, j.RollbackDetail = deploy.ReasonUnhealthy, "unhealthy: GET /healthz: 503 Service Unavailable\nsecond line"
		return strategy.Outcome{Status: deploy.StatusRolledBack, Err: fmt.Errorf("new container unhealthy; rolled back to the previous container")}
	case "", deploy.StatusSucceeded:
		j.HealthyAt = time.Now().UTC()
		return strategy.Outcome{Status: deploy.StatusSucceeded}
	default:
		return strategy.Outcome{Status: s.outcome, Err: fmt.Errorf("scripted %s", s.outcome)}
	}
}

// testTarget is a container target named name following ghcr.io/octo/name:latest.
func testTarget(name string) deploy.Target {
	ref, _ := deploy.ParseRef("ghcr.io/octo/" + name + ":latest")
	return deploy.Target{
		Name: name, ID: "id-" + name, Kind: deploy.KindContainer, Strategy: scriptedName,
		Image: ref.Repository(), Tag: ref.Tag, Ref: ref,
		ImageID: "sha256:" + strings.Repeat("b", 64), Digest: "sha256:" + strings.Repeat("a", 64),
	}
}

// rig is a running deployer over a state file, and the site in front of it.
type rig struct {
	st       *store.Store
	dep      *deployer.Deployer
	strategy *scripted
	site     *Site
	srv      *httptest.Server
	stopping chan struct{}
	failed   *api.FailedLogins
}

type rigOptions struct {
	targets []deploy.Target
	jobs    []deploy.Job // put in the state file before the deployer starts
	cfg     Config       // Tokens default to testToken
	noToken bool
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "hookd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, j := range o.jobs {
		if err := st.PutJob(context.Background(), j); err != nil {
			t.Fatal(err)
		}
	}
	r := &rig{st: st, strategy: &scripted{digest: "sha256:" + strings.Repeat("c", 64)}, stopping: make(chan struct{})}
	r.dep, err = deployer.New(deployer.Config{
		State:      st,
		Ping:       func(context.Context) error { return nil },
		Sources:    []deployer.Source{staticSource{targets: o.targets}},
		Strategies: map[string]deployer.Strategy{scriptedName: r.strategy},
		QueueSize:  4,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.dep.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for r.dep.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("deployer not ready after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	cfg := o.cfg
	if cfg.Tokens == nil && !o.noToken {
		cfg.Tokens = [][]byte{[]byte(testToken)}
	}
	if cfg.Stopping == nil {
		cfg.Stopping = r.stopping
	}
	if cfg.FailedLogins == nil {
		cfg.FailedLogins = api.NewFailedLogins()
	}
	r.failed = cfg.FailedLogins
	r.site, err = New(cfg, r.dep)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.srv = httptest.NewServer(mux(r.site))
	t.Cleanup(r.srv.Close)
	return r
}

// mux places the site's handlers as cmd/hookd's routes.go does, on
// net/http's ServeMux (both set r.PathValue).
func mux(s *Site) http.Handler {
	m := http.NewServeMux()
	guarded := http.NewServeMux()
	m.Handle("/", s.Guard(guarded))
	guarded.Handle("GET /assets/{file}", s.Assets())
	guarded.Handle("GET /login", s.SignInForm())
	guarded.Handle("POST /login", s.SignIn())
	in := func(h http.Handler) http.Handler { return s.RequireSession(h) }
	guarded.Handle("GET /{$}", in(s.Overview()))
	guarded.Handle("GET /targets/{name}", in(s.Target()))
	guarded.Handle("POST /targets/{name}/deploy", in(s.Deploy()))
	guarded.Handle("GET /jobs/{id}", in(s.Job()))
	guarded.Handle("GET /deliveries", in(s.RecentDeliveries()))
	guarded.Handle("GET /events", in(s.Events()))
	guarded.Handle("POST /logout", in(s.SignOut()))
	return m
}

// client is a browser-like client: it keeps cookies and does not follow
// redirects, so that tests see them. Its requests say they come from the
// page itself (Sec-Fetch-Site: same-origin), as a browser's form posts do.
func (r *rig) client(t testing.TB) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// answer is a response read whole.
type answer struct {
	code   int
	header http.Header
	body   string
}

func (r *rig) do(t testing.TB, c *http.Client, method, path string, form url.Values, header map[string]string) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, r.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (r *rig) get(t testing.TB, c *http.Client, path string) answer {
	t.Helper()
	return r.do(t, c, http.MethodGet, path, nil, nil)
}

func (r *rig) post(t testing.TB, c *http.Client, path string, form url.Values) answer {
	t.Helper()
	return r.do(t, c, http.MethodPost, path, form, nil)
}

// signIn signs c in with token and returns the answer.
func (r *rig) signIn(t testing.TB, c *http.Client, token string) answer {
	t.Helper()
	return r.post(t, c, "/login", url.Values{"token": {token}})
}

// signedIn returns a client with a session.
func (r *rig) signedIn(t testing.TB) *http.Client {
	t.Helper()
	c := r.client(t)
	if a := r.signIn(t, c, testToken); a.code != http.StatusSeeOther {
		t.Fatalf("sign in: %d %s", a.code, a.body)
	}
	return c
}

// csrfOf finds the CSRF token in a page.
func csrfOf(t testing.TB, page string) string {
	t.Helper()
	const marker = `name="csrf" value="`
	i := strings.Index(page, marker)
	if i < 0 {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	rest := page[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}

// waitJob waits until the job is final.
func (r *rig) waitJob(t testing.TB, id string) deploy.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := r.dep.WaitJob(ctx, id)
	if err != nil {
		t.Fatalf("wait for job %s: %v (%+v)", id, err, j)
	}
	return j
}

// jobAt is a finished job of target created at created.
func jobAt(id, target string, created time.Time, status deploy.Status) deploy.Job {
	j := deploy.Job{
		ID: id, Target: target, Kind: deploy.KindContainer, Status: status,
		Image:        "ghcr.io/octo/" + target + ":latest",
		DigestBefore: "sha256:" + strings.Repeat("9", 64), DigestAfter: "sha256:" + strings.Repeat("a", 64),
		Request:   deploy.Request{Trigger: deploy.TriggerWebhook, ID: "delivery-" + id, ReceivedAt: created.Add(-time.Second)},
		CreatedAt: created, StartedAt: created.Add(100 * time.Millisecond),
		FinishedAt: created.Add(8 * time.Second),
		Phases:     map[string]float64{"pull": 2.5, "swap": 0.4, "health": 5},
		Revision:   "0123456789abcdef0123456789abcdef01234567",
		Source:     "https://github.com/octo/" + target,
	}
	switch status {
	case deploy.StatusSucceeded:
		j.HealthyAt = created.Add(7900 * time.Millisecond)
	case deploy.StatusRolledBack:
		j.RollbackReason, j.RollbackDetail = deploy.ReasonUnhealthy, "unhealthy: GET /healthz: 503"
		j.Error = "new container unhealthy: unhealthy: GET /healthz: 503; rolled back to the previous container"
	case deploy.StatusFailed:
		j.Error = "pull ghcr.io/octo/" + target + ": unauthorized: authentication required"
	}
	return j
}
