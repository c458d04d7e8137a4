package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/sigstoretest"
)

// TestRunVerifiedDeploysThreeDoors is the "done when", through
// run() with real parts: with verify=enforce and a pinned trusted root
// (the in-memory Sigstore's, as trusted_root.json), an image nobody signed
// is refused on the poll path, one another repository's workflow signed
// is refused on the webhook path and, forced, on the API path (hookd
// deploy --force); the container is untouched throughout. The same image
// line signed by the app's own workflow then deploys, and the job shows
// who signed it and the commit.
func TestRunVerifiedDeploysThreeDoors(t *testing.T) {
	ctx := context.Background()
	cli := dockertest.Docker(t)
	reg := dockertest.NewRegistry(t)
	ss := sigstoretest.New(t)
	const owner, name, token = "octo", "signed", "verify-test-token-0123456789"
	repo := owner + "/" + name
	cname := runTarget(ctx, t, cli, reg, repo, "hookd-verify")
	before := inspectContainer(ctx, t, cname)
	// Pushed while hookd is down, unsigned: the start-up check finds it.
	unsigned := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})

	d := startDaemon(ctx, t, map[string]string{
		"HOOKD_REGISTRY_HOST":            reg.Host,
		"HOOKD_POLL_INTERVAL":            "1h",
		"HOOKD_SETTLE_TIME":              "1s",
		"HOOKD_HEALTH_TIMEOUT":           "30s",
		"HOOKD_API_TOKEN":                token,
		"HOOKD_VERIFY":                   "enforce",
		"HOOKD_VERIFY_TRUSTED_ROOT_FILE": ss.WriteTrustedRoot(t, false),
	})
	untouched := func(when string) {
		t.Helper()
		if c := inspectContainer(ctx, t, cname); c != before {
			t.Errorf("%s: container = %+v, want untouched %+v", when, c, before)
		}
		if v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, cname)); err != nil || v != "v1" {
			t.Errorf("%s: %s answers %q, %v, want v1", when, cname, v, err)
		}
	}

	// 1. The poll door.
	j := waitJobWhere(t, d.url, token, func(j map[string]any) bool {
		return j["trigger"] == "poll" && j["status"] != "running" && j["status"] != "queued"
	})
	if j["status"] != "refused" || !strings.HasPrefix(fmt.Sprint(j["error"]), "not signed: ") || j["digest_after"] != unsigned {
		t.Errorf("poll job = %v, want refused: %s is not signed", j, unsigned)
	}
	untouched("after the poll")
	if out, err := hookdClient(ctx, d.url, token, "status", "--json"); err != nil || !strings.Contains(out, `"refused_digest": "`+unsigned+`"`) {
		t.Errorf("hookd status --json = %s, %v, want the target's refused_digest %s (polls skip it)", out, err, unsigned)
	}

	// 2. The webhook door: a push signed by another repository's workflow.
	foreign := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3"})
	attach(ctx, t, ss, reg, repo, foreign, sigstoretest.Workflow{Repo: "mallory/signed"})
	if code, out := d.deliver(t, "package", "verify-1", packageEvent(t, reg.Host, owner, name, "latest", foreign)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v, want 202", code, out)
	}
	j = waitJobWhere(t, d.url, token, func(j map[string]any) bool {
		return j["request_id"] == "verify-1" && j["status"] != "running" && j["status"] != "queued"
	})
	mallory := "https://github.com/mallory/signed/.github/workflows/build.yml@refs/heads/main"
	if j["status"] != "refused" || !strings.HasPrefix(fmt.Sprint(j["error"]), "signed by someone else: ") || !strings.Contains(fmt.Sprint(j["error"]), "was signed by "+mallory) ||
		!strings.Contains(fmt.Sprint(j["error"]), "expected a workflow of github.com/octo/signed") {
		t.Errorf("webhook job = %v, want refused, naming who signed and who was expected", j)
	}
	untouched("after the webhook")

	// 3. The API door, forced: force never skips the check.
	out, err := hookdClient(ctx, d.url, token, "deploy", cname, "--force", "--wait")
	if !errors.Is(err, errDeployFailed) || !strings.Contains(out, "refused") || !strings.Contains(out, "was signed by "+mallory) {
		t.Errorf("hookd deploy --force = %q, %v, want refused, saying who signed", out, err)
	}
	untouched("after the forced API deploy")

	// 4. Signed by the app's own workflow: deploys as before.
	own := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v4"})
	attach(ctx, t, ss, reg, repo, own, sigstoretest.Workflow{Repo: repo})
	if code, out := d.deliver(t, "package", "verify-2", packageEvent(t, reg.Host, owner, name, "latest", own)); code != http.StatusAccepted {
		t.Fatalf("delivery answered %d %v, want 202", code, out)
	}
	j = waitJobWhere(t, d.url, token, func(j map[string]any) bool {
		return j["request_id"] == "verify-2" && j["status"] != "running" && j["status"] != "queued"
	})
	if j["status"] != "succeeded" {
		t.Fatalf("signed push job = %v, want succeeded", j)
	}
	waitVersion(ctx, t, cli, cname, "v4")
	verified, _ := j["verified"].(map[string]any)
	if verified["identity"] != "https://github.com/octo/signed/.github/workflows/build.yml@refs/heads/main" || verified["commit"] != sigstoretest.DefaultCommit {
		t.Errorf("job verified = %v, want the workflow and commit %s", j["verified"], sigstoretest.DefaultCommit)
	}
	if notes := fmt.Sprint(j["notes"]); !strings.Contains(notes, "signature verified") {
		t.Errorf("job notes = %s, want the verified signature", notes)
	}

	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`hookd_verifications_total{outcome="unsigned"} 1`,
		`hookd_verifications_total{outcome="rejected"} 2`,
		`hookd_verifications_total{outcome="verified"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// attach signs digest as signer and attaches the bundle as a referrer.
func attach(ctx context.Context, t *testing.T, ss *sigstoretest.Sigstore, reg *dockertest.Registry, repo, digest string, signer sigstoretest.Signer) {
	t.Helper()
	st := sigstoretest.Statement(t, reg.Host+"/"+repo, digest, sigstoretest.PredicateProvenance)
	sigstoretest.AttachBundle(ctx, t, reg.Host+"/"+repo, digest, ss.Bundle(t, st, signer))
}

// running is what shows whether a container was touched.
type running struct {
	ID, StartedAt string
	Running       bool
}

func inspectContainer(ctx context.Context, t *testing.T, name string) running {
	t.Helper()
	c, err := dockertest.Docker(t).ContainerInspect(ctx, name)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return running{ID: c.ID, StartedAt: c.State.StartedAt, Running: c.State.Running}
}

// waitJobWhere polls the API's job list until a job matches.
func waitJobWhere(t *testing.T, url, token string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	dockertest.WaitFor(t, 60*time.Second, "job", func() (bool, string) {
		jobs := apiJobs(t, url, token)
		for _, j := range jobs {
			if match(j) {
				found = j
				return true, ""
			}
		}
		return false, fmt.Sprint(jobs)
	})
	return found
}

// hookdClient runs a client verb through run().
func hookdClient(ctx context.Context, url, token string, args ...string) (string, error) {
	env := map[string]string{"HOOKD_URL": url, "HOOKD_API_TOKEN": token}
	var stdout bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, io.Discard)
	return stdout.String(), err
}
