package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
)

// ghRecorder plays GitHub's deployments API for the end-to-end test: it
// records every request and creates what it is asked to.
type ghRecorder struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []recorded
	id   int64
	// red, when set, fails this check of every commit: GitHub refuses to
	// create a deployment unless required_contexts says otherwise.
	red string
}

type recorded struct {
	Method, Path, Auth string
	Body               map[string]any
}

func newGHRecorder(t *testing.T) *ghRecorder {
	t.Helper()
	g := &ghRecorder{id: 500}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var r recorded
		r.Method, r.Path, r.Auth = req.Method, strings.TrimPrefix(req.URL.Path, "/api/v3"), req.Header.Get("Authorization")
		if err := json.NewDecoder(req.Body).Decode(&r.Body); err != nil && err != io.EOF {
			http.Error(w, `{"message":"Problems parsing JSON"}`, http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.reqs = append(g.reqs, r)
		g.id++
		id, red := g.id, g.red
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if _, bypass := r.Body["required_contexts"]; red != "" && !bypass && strings.HasSuffix(r.Path, "/deployments") {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprintf(w, `{"message":"Conflict: Commit status checks failed for %s.","errors":[{"contexts":[{"context":%q,"state":"failure"},`+
				`{"context":"image","state":"success"}],"resource":"Deployment","field":"required_contexts","code":"invalid"}],"status":"409"}`, r.Body["ref"], red)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *ghRecorder) requests() []recorded {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]recorded(nil), g.reqs...)
}

// inbox is a generic webhook that receives hookd's notifications as JSON
// (shoutrrr's generic service with template=json).
type inbox struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []map[string]string
}

func newInbox(t *testing.T) *inbox {
	t.Helper()
	in := &inbox{}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m map[string]string
		if err := json.NewDecoder(req.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		in.mu.Lock()
		in.msgs = append(in.msgs, m)
		in.mu.Unlock()
	}))
	t.Cleanup(in.srv.Close)
	return in
}

func (in *inbox) messages() []map[string]string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]map[string]string(nil), in.msgs...)
}

// deliveryFor is the real package delivery for owner/name:tag, naming the
// repository and, when commit is not empty, the commit it was built from.
func deliveryFor(t *testing.T, host, owner, name, tag, digest, commit string) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(packageEvent(t, host, owner, name, tag, digest), &doc); err != nil {
		t.Fatal(err)
	}
	doc["repository"].(map[string]any)["full_name"] = owner + "/" + name
	doc["package"].(map[string]any)["package_version"].(map[string]any)["target_oid"] = commit
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRunReportsDeploysToGitHubAndPeople is the whole reporting path with
// real parts: signed deliveries reach the real deployer, which deploys a
// real target on a real engine from a real registry; hookd reports each
// deploy as a GitHub deployment on the commit (a fake GitHub API driven by
// go-github) and notifies through shoutrrr's generic webhook sender.
//
//  1. A good image, delivered twice (as a multi-arch push is): one
//     deployment on the delivery's commit, in_progress then success with
//     the target's URL and the job's page; one notification.
//  2. A broken image whose delivery names no commit: the deployment is on
//     the image's org.opencontainers.image.revision label, in_progress then
//     failure with the rollback reason; one notification with the reason
//     and the container's health-check output.
func TestRunReportsDeploysToGitHubAndPeople(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	gh := newGHRecorder(t)
	in := newInbox(t)
	const (
		owner, name = "octo", "shop"
		repo        = owner + "/" + name
		goodCommit  = "0e2a89b191332bb87b4f2fefef2f597eba2197b3"
		badCommit   = "7d3f0c5a1e9b2d4c6f8a0b1c2d3e4f5a6b7c8d9e"
		ghToken     = "github_pat_e2eTestToken0123456789"
		public      = "https://pi.example.net/hookd"
	)
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	_, cname := dockertest.RunContainer(ctx, t, cli, dockertest.ContainerOptions{
		Image:  reg.Ref(repo, "latest"),
		Name:   "hookd-report",
		Labels: map[string]string{deploy.LabelEnable: "true", deploy.LabelURL: "https://shop.example.net"},
		Ports:  map[string]string{"8080/tcp": ""},
	})
	d := startDaemon(ctx, t, map[string]string{
		"HOOKD_REGISTRY_HOST":      reg.Host,
		"HOOKD_HEALTH_TIMEOUT":     "30s",
		"HOOKD_SETTLE_TIME":        "1s",
		"HOOKD_PUBLIC_URL":         public,
		"HOOKD_GITHUB_TOKEN":       ghToken,
		"HOOKD_GITHUB_API_URL":     gh.srv.URL + "/api/v3/",
		"HOOKD_GITHUB_ENVIRONMENT": "garage-pi",
		"HOOKD_NOTIFY_URLS":        "generic+" + in.srv.URL + "/notify?template=json",
	})
	waitReady(t, d)

	// 1. A good image, two deliveries.
	labels := func(commit string) map[string]string {
		return map[string]string{deploy.LabelImageRevision: commit, deploy.LabelImageSource: "https://github.com/" + repo}
	}
	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2", Labels: labels(goodCommit)})
	body := deliveryFor(t, reg.Host, owner, name, "latest", digest, goodCommit)
	for _, id := range []string{"report-1", "report-2"} {
		if code, out := d.deliver(t, "package", id, body); code != http.StatusAccepted && code != http.StatusOK {
			t.Fatalf("delivery %s answered %d %v", id, code, out)
		}
	}
	waitVersion(ctx, t, cli, cname, "v2")
	dockertest.WaitFor(t, 30*time.Second, "GitHub's success status and a notification", func() (bool, string) {
		r, m := gh.requests(), in.messages()
		return len(r) >= 3 && r[len(r)-1].Body["state"] == "success" && len(m) >= 1, fmt.Sprintf("%d requests, %d messages", len(r), len(m))
	})

	// 2. A broken image; the delivery names no commit.
	digest = reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3", Unhealthy: true, Labels: labels(badCommit)})
	if code, out := d.deliver(t, "package", "report-3", deliveryFor(t, reg.Host, owner, name, "latest", digest, "")); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v", code, out)
	}
	dockertest.WaitFor(t, 60*time.Second, "GitHub's failure status and a second notification", func() (bool, string) {
		r, m := gh.requests(), in.messages()
		return len(r) >= 6 && r[len(r)-1].Body["state"] == "failure" && len(m) >= 2, fmt.Sprintf("%d requests, %d messages", len(r), len(m))
	})
	time.Sleep(3 * time.Second) // anything sent twice would arrive now
	waitVersion(ctx, t, cli, cname, "v2")

	reqs, msgs := gh.requests(), in.messages()
	if len(reqs) != 6 {
		t.Errorf("GitHub received %d requests, want 6 (two deployments, two statuses each):\n%v", len(reqs), reqs)
	}
	if len(msgs) != 2 {
		t.Errorf("%d notifications arrived, want 2:\n%v", len(msgs), msgs)
	}
	if t.Failed() {
		return
	}
	for _, r := range reqs {
		if r.Auth != "Bearer "+ghToken || r.Method != http.MethodPost {
			t.Errorf("%s %s with Authorization %q, want a POST with the token", r.Method, r.Path, r.Auth)
		}
	}
	check := func(r recorded, path string, want map[string]any) {
		t.Helper()
		if r.Path != path {
			t.Errorf("request to %s, want %s", r.Path, path)
		}
		for k, v := range want {
			if s, ok := v.(string); ok && strings.HasSuffix(s, "*") {
				if got, _ := r.Body[k].(string); !strings.HasPrefix(got, strings.TrimSuffix(s, "*")) {
					t.Errorf("%s: %s = %q, want %q", path, k, r.Body[k], s)
				}
				continue
			}
			if fmt.Sprint(r.Body[k]) != fmt.Sprint(v) {
				t.Errorf("%s: %s = %v, want %v", path, k, r.Body[k], v)
			}
		}
	}
	check(reqs[0], "/repos/octo/shop/deployments", map[string]any{"ref": goodCommit, "environment": "garage-pi",
		"auto_merge": false, "required_contexts": []any{}, "task": "deploy"})
	check(reqs[1], "/repos/octo/shop/deployments/501/statuses", map[string]any{"state": "in_progress", "log_url": public + "/jobs/*"})
	check(reqs[2], "/repos/octo/shop/deployments/501/statuses", map[string]any{"state": "success",
		"environment_url": "https://shop.example.net", "log_url": public + "/jobs/*", "description": "Deployed " + reg.Host + "/" + repo + ":latest to " + cname + "*"})
	check(reqs[3], "/repos/octo/shop/deployments", map[string]any{"ref": badCommit, "environment": "garage-pi"})
	check(reqs[4], "/repos/octo/shop/deployments/504/statuses", map[string]any{"state": "in_progress"})
	check(reqs[5], "/repos/octo/shop/deployments/504/statuses", map[string]any{"state": "failure",
		"description": "Rolled back: health check failed: unhealthy: configured unhealthy"})
	if _, ok := reqs[5].Body["environment_url"]; ok {
		t.Errorf("the failure status links the environment: %v", reqs[5].Body)
	}

	host := strings.TrimPrefix(msgs[0]["title"], "✅ "+cname+" deployed on ")
	if !strings.HasPrefix(msgs[0]["title"], "✅ "+cname+" deployed on ") || host == "" {
		t.Errorf("first title %q, want \"✅ %s deployed on HOST\"", msgs[0]["title"], cname)
	}
	for _, want := range []string{reg.Host + "/" + repo + ":latest", "→ 0e2a89b", "via webhook in ", public + "/jobs/"} {
		if !strings.Contains(msgs[0]["message"], want) {
			t.Errorf("first message lacks %q:\n%s", want, msgs[0]["message"])
		}
	}
	if want := "⚠️ " + cname + " rolled back on " + host; msgs[1]["title"] != want {
		t.Errorf("second title %q, want %q", msgs[1]["title"], want)
	}
	for _, want := range []string{
		"The new version failed its health check; the previous one is running again.",
		"Health check: unhealthy: configured unhealthy",
		"7d3f0c5 rolled back to 0e2a89b",
	} {
		if !strings.Contains(msgs[1]["message"], want) {
			t.Errorf("second message lacks %q:\n%s", want, msgs[1]["message"])
		}
	}
	t.Logf("notifications as sent:\n[%s]\n%s\n\n[%s]\n%s", msgs[0]["title"], msgs[0]["message"], msgs[1]["title"], msgs[1]["message"])
	if logs := d.logs.String(); strings.Contains(logs, ghToken) || strings.Contains(logs, "/notify?template") {
		t.Errorf("hookd's log holds the token or the notification URL")
	}
}

// TestRunRefusesARedCommit: with github_require_checks, a commit whose
// checks failed on GitHub is refused before anything is touched, and the
// people are told why.
func TestRunRefusesARedCommit(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	gh := newGHRecorder(t)
	gh.red = "test"
	in := newInbox(t)
	const owner, name, commit = "octo", "cart", "7d3f0c5a1e9b2d4c6f8a0b1c2d3e4f5a6b7c8d9e"
	repo := owner + "/" + name
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-red")
	d := startDaemon(ctx, t, map[string]string{
		"HOOKD_REGISTRY_HOST":         reg.Host,
		"HOOKD_SETTLE_TIME":           "1s",
		"HOOKD_GITHUB_TOKEN":          "github_pat_e2eTestToken0123456789",
		"HOOKD_GITHUB_API_URL":        gh.srv.URL + "/api/v3/",
		"HOOKD_GITHUB_REQUIRE_CHECKS": "true",
		"HOOKD_NOTIFY_URLS":           "generic+" + in.srv.URL + "/notify?template=json",
		"HOOKD_NOTIFY_LEVEL":          "error",
	})
	waitReady(t, d)
	digest := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2",
		Labels: map[string]string{deploy.LabelImageRevision: commit}})
	if code, out := d.deliver(t, "package", "red-1", deliveryFor(t, reg.Host, owner, name, "latest", digest, commit)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v", code, out)
	}
	dockertest.WaitFor(t, 30*time.Second, "a notification", func() (bool, string) {
		return len(in.messages()) > 0, fmt.Sprintf("%d messages", len(in.messages()))
	})
	waitVersion(ctx, t, cli, cname, "v1")
	msgs, reqs := in.messages(), gh.requests()
	if want := "🚫 " + cname + " refused on "; len(msgs) != 1 || !strings.HasPrefix(msgs[0]["title"], want) ||
		!strings.HasPrefix(msgs[0]["message"], "GitHub refused the deployment of octo/cart@7d3f0c5: checks not green: test (failure)\n") {
		t.Errorf("notifications %v, want one %q… naming the red check", msgs, want)
	}
	if len(reqs) != 1 || reqs[0].Body["ref"] != commit {
		t.Errorf("GitHub received %v, want one deployment request for %s (refused)", reqs, commit)
	}
}
