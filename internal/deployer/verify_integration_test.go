package deployer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/containers"
	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/dockertest"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/sigstoretest"
	"github.com/and3rn3t/hookd/internal/verify"
)

// Verified deploys on the real engine: images built in the test, pushed
// to the in-process registry, signed by the in-memory Sigstore, stored as
// cosign and attest-build-provenance store them, and a deployer with the
// signature gate wired in as cmd/hookd wires it. Every refusal is checked
// to leave the running container exactly as it was.
//
// The gate sits in the deployer, behind Submit: the webhook, the poller
// and the API only make deploy.Requests (their trigger differs, nothing
// else), so the requests below carry each trigger; cmd/hookd's
// TestRunVerifiedDeploysThreeDoors goes through the three doors of the
// real daemon.

// verifiedRig is a registry (GHCR-like: no referrers API, so referrers
// live in the sha256-<hex> tag index, and its repositories are GitHub's),
// a second one with the referrers API, the in-memory Sigstore and a
// running deployer whose gate enforces by default.
type verifiedRig struct {
	cli      *client.Client
	ghcr     *dockertest.Registry
	oci11    *dockertest.Registry
	sigstore *sigstoretest.Sigstore
	d        runningDeployer
}

func newVerifiedRig(ctx context.Context, t *testing.T) *verifiedRig {
	t.Helper()
	r := &verifiedRig{
		cli:      dockertest.Docker(t),
		ghcr:     dockertest.NewRegistry(t),
		oci11:    dockertest.NewRegistry(t, dockertest.WithReferrersAPI()),
		sigstore: sigstoretest.New(t),
	}
	return r
}

// start runs the deployer once the test's containers exist.
func (r *verifiedRig) start(ctx context.Context, t *testing.T) {
	t.Helper()
	m := metrics.Discard()
	gate, err := verify.New(verify.Config{
		Mode:           verify.ModeEnforce,
		Trust:          verify.Static{r.sigstore.TrustedRoot(t, false)},
		Registry:       registry.New(registry.Config{Keychain: staticKeychain{}, Metrics: m}),
		Labels:         verify.EngineLabels{Docker: r.cli},
		GitHubRegistry: r.ghcr.Host,
		SignatureWait:  -1,
		Metrics:        m,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.d = startDeployer(ctx, t, r.cli, rig{Gates: []Gate{gate}, Metrics: m})
}

// target runs v1 of repo from reg as a labelled target and returns its
// name and container id.
func (r *verifiedRig) target(ctx context.Context, t *testing.T, reg *dockertest.Registry, repo string, labels map[string]string) (name, id string) {
	t.Helper()
	reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, name = dockertest.RunContainer(ctx, t, r.cli, dockertest.ContainerOptions{
		Image: reg.Ref(repo, "latest"), Name: strings.ReplaceAll(repo, "/", "-"), Labels: enabled(labels),
		Ports: map[string]string{dockertest.AppPort: ""},
	})
	return name, id
}

// sign signs digest as signer, with a statement naming subject, and
// attaches the bundle to repo@digest as a referrer.
func (r *verifiedRig) attach(ctx context.Context, t *testing.T, reg *dockertest.Registry, repo, digest, subject string, signer sigstoretest.Signer) []byte {
	t.Helper()
	b := r.sigstore.Bundle(t, sigstoretest.Statement(t, reg.Host+"/"+repo, subject, sigstoretest.PredicateCosignSign), signer)
	sigstoretest.AttachBundle(ctx, t, reg.Host+"/"+repo, digest, b)
	return b
}

// untouched fails the test unless the container under name is still id,
// running since before, and answering v1, with no other container of its
// name (scope is the test that created it).
func untouched(ctx context.Context, t, scope *testing.T, cli *client.Client, name, id string, startedAt string) {
	t.Helper()
	c := inspect(ctx, t, cli, name)
	if c.ID != id || !c.State.Running || c.State.StartedAt != startedAt {
		t.Errorf("container %s = %s running %v started %s, want untouched: %s running since %s",
			name, containers.ShortID(c.ID), c.State.Running, c.State.StartedAt, containers.ShortID(id), startedAt)
	}
	if left := containersNamed(ctx, scope, cli, name); len(left) != 1 {
		t.Errorf("containers named %s* = %v, want only the original", name, keys(left))
	}
	if v, err := dockertest.Version(ctx, dockertest.HostPort(ctx, t, cli, name)); err != nil || v != "v1" {
		t.Errorf("%s answers %q, %v, want v1", name, v, err)
	}
}

func TestIntegrationVerifiedDeploys(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	r := newVerifiedRig(ctx, t)
	ghcr, oci11 := r.ghcr, r.oci11

	type tc struct {
		name   string
		reg    *dockertest.Registry
		labels map[string]string
		// prepare pushes v2 (and signs it, or not) and returns its digest.
		prepare func(t *testing.T, repo string) string
		req     deploy.Request
		// want is "" for a successful deploy, else a substring of the refusal.
		want string
	}
	own := func(repo string) sigstoretest.Workflow { return sigstoretest.Workflow{Repo: repo} }
	push := func(t *testing.T, reg *dockertest.Registry, repo string) string {
		return reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	}
	cases := []tc{
		{name: "signed by the app's own workflow, referrer in the tag index", reg: ghcr,
			prepare: func(t *testing.T, repo string) string {
				d := push(t, ghcr, repo)
				r.attach(ctx, t, ghcr, repo, d, d, own(repo))
				return d
			}, req: deploy.Request{Trigger: deploy.TriggerWebhook}},
		{name: "signed by the delivery's repository workflow, referrers API", reg: oci11,
			prepare: func(t *testing.T, repo string) string {
				d := push(t, oci11, repo)
				r.attach(ctx, t, oci11, repo, d, d, sigstoretest.Workflow{Repo: "octo/monorepo"})
				return d
			}, req: deploy.Request{Trigger: deploy.TriggerWebhook, SourceRepo: "octo/monorepo"}},
		{name: "cosign .sig tag, identity by label", reg: ghcr,
			labels: map[string]string{verify.LabelIdentity: `ops@example\.com`, verify.LabelIssuer: "https://accounts.example.com"},
			prepare: func(t *testing.T, repo string) string {
				d := push(t, ghcr, repo)
				p, a := r.sigstore.Cosign(t, ghcr.Ref(repo, "latest"), d, sigstoretest.Email{Address: "ops@example.com"})
				sigstoretest.AttachCosign(ctx, t, ghcr.Host+"/"+repo, d, []sigstoretest.CosignSignature{{Payload: p, Annotations: a}})
				return d
			}, req: deploy.Request{Trigger: deploy.TriggerPoll}},
		{name: "unsigned", reg: ghcr, prepare: func(t *testing.T, repo string) string { return push(t, ghcr, repo) },
			req: deploy.Request{Trigger: deploy.TriggerPoll}, want: "not signed: "},
		{name: "signed by another repository's workflow", reg: ghcr,
			prepare: func(t *testing.T, repo string) string {
				d := push(t, ghcr, repo)
				r.attach(ctx, t, ghcr, repo, d, d, sigstoretest.Workflow{Repo: "mallory/web"})
				return d
			}, req: deploy.Request{Trigger: deploy.TriggerWebhook}, want: "signed by someone else: "},
		{name: "signature for another digest", reg: oci11,
			prepare: func(t *testing.T, repo string) string {
				v1, err := r.cli.ImageInspect(ctx, oci11.Ref(repo, "latest"))
				if err != nil || len(v1.RepoDigests) == 0 {
					t.Fatalf("inspect v1: %v", err)
				}
				_, old, _ := strings.Cut(v1.RepoDigests[0], "@")
				d := push(t, oci11, repo)
				r.attach(ctx, t, oci11, repo, d, old, own(repo)) // attached to v2, signs v1
				return d
			}, req: deploy.Request{Trigger: deploy.TriggerManual}, labels: map[string]string{verify.LabelIdentity: `https://github\.com/.+`},
			want: "signed for other content"},
		{name: "tampered bundle", reg: ghcr,
			prepare: func(t *testing.T, repo string) string {
				d := push(t, ghcr, repo)
				b := r.sigstore.Bundle(t, sigstoretest.Statement(t, repo, d, sigstoretest.PredicateCosignSign), own(repo))
				sigstoretest.AttachBundle(ctx, t, ghcr.Host+"/"+repo, d, sigstoretest.Tamper(t, b))
				return d
			}, req: deploy.Request{Trigger: deploy.TriggerWebhook}, want: "does not verify"},
		{name: "unsigned, forced", reg: ghcr, prepare: func(t *testing.T, repo string) string { return push(t, ghcr, repo) },
			req: deploy.Request{Trigger: deploy.TriggerManual, Force: true}, want: "not signed: "},
		{name: "unsigned, target in warn mode", reg: ghcr, labels: map[string]string{verify.LabelVerify: "warn"},
			prepare: func(t *testing.T, repo string) string { return push(t, ghcr, repo) },
			req:     deploy.Request{Trigger: deploy.TriggerPoll}},
	}

	// Every target runs before the deployer starts, so it finds them all.
	type running struct{ name, id, started string }
	targets := make([]running, len(cases))
	for i, c := range cases {
		repo := "octo/verify" + string(rune('a'+i))
		name, id := r.target(ctx, t, c.reg, repo, c.labels)
		targets[i] = running{name, id, inspect(ctx, t, r.cli, id).State.StartedAt}
	}
	r.start(ctx, t)

	parent := t
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := "octo/verify" + string(rune('a'+i))
			tg := targets[i]
			waitTarget(ctx, t, r.d.Deployer, tg.name)
			digest := c.prepare(t, repo)
			req := c.req
			req.Repository, req.Tag, req.Digest = c.reg.Host+"/"+repo, "latest", digest
			if req.Trigger == deploy.TriggerManual {
				req.Repository, req.Tag, req.Target = "", "", tg.name
			}
			j := deployOne(ctx, t, r.d.Deployer, req)

			if c.want == "" {
				if j.Status != deploy.StatusSucceeded {
					t.Fatalf("job = %s %q, want succeeded", j.Status, j.Error)
				}
				waitVersion(ctx, t, dockertest.HostPort(ctx, t, r.cli, tg.name), "v2")
				if c.labels[verify.LabelVerify] == "warn" {
					if len(j.Notes) == 0 || !strings.Contains(j.Notes[0], "NOT verified") {
						t.Errorf("job notes = %q, want the warning", j.Notes)
					}
					return
				}
				if j.Verified.Identity == "" || len(j.Notes) == 0 || !strings.Contains(j.Notes[0], "signature verified") {
					t.Errorf("job verified = %+v, notes %q, want the signer recorded", j.Verified, j.Notes)
				}
				if strings.HasPrefix(j.Verified.Identity, "https://github.com/") && j.Verified.Commit != sigstoretest.DefaultCommit {
					t.Errorf("job verified commit = %q, want %q", j.Verified.Commit, sigstoretest.DefaultCommit)
				}
				return
			}

			if j.Status != deploy.StatusRefused || !strings.Contains(j.Error, c.want) {
				t.Fatalf("job = %s %q, want refused saying %q", j.Status, j.Error, c.want)
			}
			if j.DigestAfter != digest {
				t.Errorf("refused job digest = %s, want %s", j.DigestAfter, digest)
			}
			untouched(ctx, t, parent, r.cli, tg.name, tg.id, tg.started)

			// Asked again without force (a poll, a redelivery): refused at
			// once, nothing pulled, nothing asked of the registry.
			c.reg.ResetRequests()
			again, err := r.d.Submit(ctx, deploy.Request{Repository: c.reg.Host + "/" + repo, Digest: digest, Trigger: deploy.TriggerPoll})
			if err != nil || len(again) != 1 || again[0].Status != deploy.StatusRefused || !strings.Contains(again[0].Error, "was refused") {
				t.Fatalf("poll for the refused digest = %+v, %v, want refused at once", again, err)
			}
			if reqs := c.reg.Requests(); len(reqs) != 0 {
				t.Errorf("registry requests after the refusal = %v, want none", reqs)
			}
			if got := waitTarget(ctx, t, r.d.Deployer, tg.name).Refused; got != digest {
				t.Errorf("target refused digest = %q, want %q (the poller skips it)", got, digest)
			}
			untouched(ctx, t, parent, r.cli, tg.name, tg.id, tg.started)
		})
	}
	if n := testutil.ToFloat64(r.d.metrics.Verifications.WithLabelValues(metrics.VerifyVerified)); n != 3 {
		t.Errorf("verifications{verified} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(r.d.metrics.Verifications.WithLabelValues(metrics.VerifyUnsigned)); n != 3 {
		t.Errorf("verifications{unsigned} = %v, want 3 (unsigned, forced, warn)", n)
	}
}

// TestIntegrationSwarmServiceVerified: a Swarm service's own labels set
// its policy (here enforce, where the default is off): an unsigned image
// leaves the service's spec as it was; one its workflow signed rolls out.
func TestIntegrationSwarmServiceVerified(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	cli := dockertest.Docker(t)
	swarmManager(ctx, t, cli)
	reg := dockertest.NewRegistry(t)
	ss := sigstoretest.New(t)
	const repo = "octo/swarm-signed"
	d1 := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v1"})
	id, name, _ := createService(ctx, t, cli, serviceOptions{
		name: "signed", image: reg.Ref(repo, "latest"), labels: enabled(map[string]string{verify.LabelVerify: "enforce"}),
	})
	m := metrics.Discard()
	gate, err := verify.New(verify.Config{
		Mode:           verify.ModeOff,
		Trust:          verify.Static{ss.TrustedRoot(t, false)},
		Registry:       registry.New(registry.Config{Keychain: staticKeychain{}, Metrics: m}),
		Labels:         verify.EngineLabels{Docker: cli},
		GitHubRegistry: reg.Host,
		SignatureWait:  -1,
		Metrics:        m,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := startDeployer(ctx, t, cli, rig{Gates: []Gate{gate}, Metrics: m})
	waitTarget(ctx, t, d.Deployer, name)
	before := inspectService(ctx, t, cli, id)

	unsigned := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v2"})
	j := deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/" + repo, Digest: unsigned, Trigger: deploy.TriggerWebhook})
	if j.Status != deploy.StatusRefused || !strings.HasPrefix(j.Error, "not signed: ") {
		t.Fatalf("unsigned service deploy = %s %q, want refused, not signed", j.Status, j.Error)
	}
	if after := inspectService(ctx, t, cli, id); after.Version.Index != before.Version.Index || pinnedDigest(t, after) != d1 {
		t.Errorf("service after the refusal: version %d pinned to %s, want untouched: version %d pinned to %s",
			after.Version.Index, pinnedDigest(t, after), before.Version.Index, d1)
	}

	signed := reg.PushApp(ctx, t, repo, "latest", dockertest.App{Version: "v3"})
	b := ss.Bundle(t, sigstoretest.Statement(t, reg.Host+"/"+repo, signed, sigstoretest.PredicateProvenance), sigstoretest.Workflow{Repo: repo})
	sigstoretest.AttachBundle(ctx, t, reg.Host+"/"+repo, signed, b)
	j = deployOne(ctx, t, d.Deployer, deploy.Request{Repository: reg.Host + "/" + repo, Digest: signed, Trigger: deploy.TriggerWebhook})
	if j.Status != deploy.StatusSucceeded || j.Verified.Commit != sigstoretest.DefaultCommit {
		t.Fatalf("signed service deploy = %s %q (verified %+v), want succeeded with the commit", j.Status, j.Error, j.Verified)
	}
	if got := pinnedDigest(t, inspectService(ctx, t, cli, id)); got != signed {
		t.Errorf("service pinned to %s, want %s", got, signed)
	}
}
