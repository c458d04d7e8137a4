package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/sigstoretest"
)

// The gate's own tests: real signatures from the in-memory Sigstore, a
// fake registry (the registry package tests the discovery against a real
// one; the deployer's integration tests the whole path on the engine).

const (
	image  = "ghcr.io/octo/web:latest"
	digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	other  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

var (
	ownWorkflow   = sigstoretest.Workflow{Repo: "octo/web"}
	otherWorkflow = sigstoretest.Workflow{Repo: "mallory/web"}
)

// fakeRegistry serves signatures per digest and counts the look-ups.
type fakeRegistry struct {
	mu    sync.Mutex
	sigs  map[string][]registry.Signature
	err   error
	calls int
	// after, when set, is how many look-ups answer none before sigs do.
	after int
}

func (f *fakeRegistry) Signatures(_ context.Context, repo, d string) ([]registry.Signature, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if repo != "ghcr.io/octo/web" {
		return nil, fmt.Errorf("unexpected repository %q", repo)
	}
	if f.calls <= f.after {
		return nil, nil
	}
	return f.sigs[d], f.err
}

type staticLabels map[string]string

func (l staticLabels) Labels(context.Context, string, string) (map[string]string, error) {
	return l, nil
}

type rig struct {
	ss  *sigstoretest.Sigstore
	reg *fakeRegistry
	m   *metrics.Metrics
}

func newRig(t *testing.T) *rig {
	return &rig{ss: sigstoretest.New(t), reg: &fakeRegistry{sigs: map[string][]registry.Signature{}}, m: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})}
}

func (r *rig) gate(t *testing.T, cfg Config) *Gate {
	t.Helper()
	if cfg.Trust == nil {
		cfg.Trust = Static{r.ss.TrustedRoot(t, false)}
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeEnforce
	}
	cfg.Registry, cfg.Metrics = r.reg, r.m
	if cfg.SignatureWait == 0 {
		cfg.SignatureWait = -1
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (r *rig) bundle(t *testing.T, subject string, s sigstoretest.Signer) registry.Signature {
	t.Helper()
	st := sigstoretest.Statement(t, "ghcr.io/octo/web", subject, sigstoretest.PredicateCosignSign)
	return registry.Signature{Format: registry.FormatBundle, Source: "referrer sha256:abc", Bundle: r.ss.Bundle(t, st, s)}
}

func (r *rig) cosign(t *testing.T, subject string, s sigstoretest.Email) registry.Signature {
	t.Helper()
	p, a := r.ss.Cosign(t, image, subject, s)
	return registry.Signature{Format: registry.FormatCosign, Source: "tag sha256-1111.sig", Payload: p, Annotations: a}
}

func job(trigger deploy.Trigger) *deploy.Job {
	return &deploy.Job{ID: "j1", Target: "web", Kind: deploy.KindContainer, Image: image, DigestAfter: digest,
		Request: deploy.Request{Trigger: trigger}}
}

func TestAdmit(t *testing.T) {
	r := newRig(t)
	st := sigstoretest.Statement(t, "ghcr.io/octo/web", digest, sigstoretest.PredicateProvenance)
	sbom := sigstoretest.Statement(t, "ghcr.io/octo/web", digest, "https://spdx.dev/Document/v2.3")
	tests := []struct {
		name   string
		sigs   []registry.Signature
		labels staticLabels
		// want is "" for admitted, else a substring of the refusal;
		// rejected says whether it is a verdict on the image.
		want     string
		rejected bool
		signer   string
		outcome  string
	}{
		{name: "signed by the image's own workflow", sigs: []registry.Signature{r.bundle(t, digest, ownWorkflow)},
			signer: ownWorkflow.Identity(), outcome: metrics.VerifyVerified},
		{name: "build provenance of the own workflow",
			sigs:   []registry.Signature{{Format: registry.FormatBundle, Source: "referrer", Bundle: r.ss.Bundle(t, st, ownWorkflow)}},
			signer: ownWorkflow.Identity(), outcome: metrics.VerifyVerified},
		{name: "unsigned", want: "not signed: no Sigstore signature found for ghcr.io/octo/web@", rejected: true, outcome: metrics.VerifyUnsigned},
		{name: "another repository's workflow", sigs: []registry.Signature{r.bundle(t, digest, otherWorkflow)},
			want: "signed by someone else: ghcr.io/octo/web@" + digest + " was signed by " + otherWorkflow.Identity() + " (issuer " + sigstoretest.GitHubIssuer + ")", rejected: true, outcome: metrics.VerifyRejected},
		{name: "signed for another digest", sigs: []registry.Signature{r.bundle(t, other, ownWorkflow)},
			want: "signed for other content: no signature covers ghcr.io/octo/web@" + digest, rejected: true, outcome: metrics.VerifyRejected},
		{name: "tampered bundle", sigs: []registry.Signature{{Format: registry.FormatBundle, Source: "referrer",
			Bundle: sigstoretest.Tamper(t, r.bundle(t, digest, ownWorkflow).Bundle)}},
			want: "does not verify", rejected: true, outcome: metrics.VerifyRejected},
		{name: "garbage in the referrer", sigs: []registry.Signature{{Format: registry.FormatBundle, Source: "referrer", Bundle: []byte("{nope")}},
			want: "unreadable Sigstore bundle", rejected: true, outcome: metrics.VerifyRejected},
		{name: "an SBOM is no signature", sigs: []registry.Signature{{Format: registry.FormatBundle, Source: "referrer", Bundle: r.ss.Bundle(t, sbom, ownWorkflow)}},
			want: "not a signature or build provenance", rejected: true, outcome: metrics.VerifyRejected},
		{name: "one good signature among bad ones",
			sigs:   []registry.Signature{r.bundle(t, digest, otherWorkflow), r.bundle(t, other, ownWorkflow), r.bundle(t, digest, ownWorkflow)},
			signer: ownWorkflow.Identity(), outcome: metrics.VerifyVerified},
		{name: "workflow pinned by label, other ref", sigs: []registry.Signature{r.bundle(t, digest, sigstoretest.Workflow{Repo: "octo/web", Ref: "refs/heads/dev"})},
			labels: staticLabels{LabelIdentity: `https://github\.com/octo/web/\.github/workflows/build\.yml@refs/heads/main`},
			want:   "refs/heads/dev", rejected: true, outcome: metrics.VerifyRejected},
		{name: "workflow pinned by label", sigs: []registry.Signature{r.bundle(t, digest, ownWorkflow)},
			labels: staticLabels{LabelIdentity: `https://github\.com/octo/web/\.github/workflows/build\.yml@refs/heads/main`},
			signer: ownWorkflow.Identity(), outcome: metrics.VerifyVerified},
		{name: "label pattern matches the whole subject only", sigs: []registry.Signature{r.bundle(t, digest, ownWorkflow)},
			labels: staticLabels{LabelIdentity: `https://github\.com/octo/web`},
			want:   "was signed by " + ownWorkflow.Identity(), rejected: true, outcome: metrics.VerifyRejected},
		{name: "cosign .sig tag, e-mail identity by label", sigs: []registry.Signature{r.cosign(t, digest, sigstoretest.Email{Address: "ops@example.com"})},
			labels: staticLabels{LabelIdentity: `ops@example\.com`, LabelIssuer: "https://accounts.example.com"},
			signer: "ops@example.com", outcome: metrics.VerifyVerified},
		{name: "cosign .sig tag for another digest", sigs: []registry.Signature{r.cosign(t, other, sigstoretest.Email{Address: "ops@example.com"})},
			labels: staticLabels{LabelIdentity: `ops@example\.com`, LabelIssuer: "https://accounts.example.com"},
			want:   "signed for other content", rejected: true, outcome: metrics.VerifyRejected},
		{name: "e-mail signer, other issuer", sigs: []registry.Signature{r.bundle(t, digest, sigstoretest.Email{Address: "ops@example.com"})},
			labels: staticLabels{LabelIdentity: `ops@example\.com`},
			want:   "issuer https://accounts.example.com", rejected: true, outcome: metrics.VerifyRejected},
		{name: "bad mode label", labels: staticLabels{LabelVerify: "enforced"},
			want: `label hookd.verify on web: "enforced" is not off, warn or enforce`, outcome: metrics.VerifyError},
		{name: "bad identity label", labels: staticLabels{LabelIdentity: `(`},
			want: "label hookd.verify-identity on web is not a regular expression", outcome: metrics.VerifyError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.reg.sigs[digest] = tt.sigs
			g := r.gate(t, Config{Labels: tt.labels})
			before := testutil.ToFloat64(r.m.Verifications.WithLabelValues(tt.outcome))
			j := job(deploy.TriggerManual)
			err := g.Admit(context.Background(), j)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Admit = %v, want admitted", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Admit = %v, want a refusal saying %q", err, tt.want)
			case tt.want != "" && errors.Is(err, deploy.ErrRejected) != tt.rejected:
				t.Errorf("Admit = %v: errors.Is(ErrRejected) = %v, want %v", err, !tt.rejected, tt.rejected)
			}
			if got := testutil.ToFloat64(r.m.Verifications.WithLabelValues(tt.outcome)) - before; got != 1 {
				t.Errorf("verifications{%s} grew by %v, want 1", tt.outcome, got)
			}
			if tt.want != "" {
				if j.Verified != (deploy.Verification{}) {
					t.Errorf("refused job records a verified signer %+v", j.Verified)
				}
				return
			}
			if j.Verified.Identity != tt.signer {
				t.Errorf("job verified identity = %q, want %q", j.Verified.Identity, tt.signer)
			}
			if len(j.Notes) != 1 || !strings.Contains(j.Notes[0], "signature verified") || !strings.Contains(j.Notes[0], tt.signer) {
				t.Errorf("job notes = %q, want one naming the signer", j.Notes)
			}
			if _, ok := j.Phases["verify"]; !ok {
				t.Errorf("job phases = %v, want verify timed", j.Phases)
			}
		})
	}
}

// TestAdmitKeepsTheCommit: a workflow certificate's source repository
// digest is the commit the job keeps, with the ref; a revision label that
// disagrees is noted.
func TestAdmitKeepsTheCommit(t *testing.T) {
	r := newRig(t)
	const commit = "89abcdef0123456789abcdef0123456789abcdef"
	r.reg.sigs[digest] = []registry.Signature{r.bundle(t, digest, sigstoretest.Workflow{Repo: "Octo/Web", Commit: commit})}
	j := job(deploy.TriggerManual)
	j.Revision = "ffffffffffffffffffffffffffffffffffffffff"
	if err := r.gate(t, Config{}).Admit(context.Background(), j); err != nil {
		t.Fatalf("Admit = %v (the repository's case must not matter)", err)
	}
	want := deploy.Verification{Identity: "https://github.com/Octo/Web/.github/workflows/build.yml@refs/heads/main",
		Issuer: sigstoretest.GitHubIssuer, Commit: commit, Ref: "refs/heads/main"}
	if j.Verified != want {
		t.Errorf("job verified = %+v, want %+v", j.Verified, want)
	}
	if !strings.Contains(j.Notes[0], "at commit "+commit) || !strings.Contains(j.Notes[0], "revision label") && !strings.Contains(j.Notes[0], deploy.LabelImageRevision+" says ffff") {
		t.Errorf("note = %q, want the commit and the disagreeing revision label", j.Notes[0])
	}
}

func TestAdmitModes(t *testing.T) {
	r := newRig(t)
	t.Run("warn deploys and notes why", func(t *testing.T) {
		j := job(deploy.TriggerPoll)
		if err := r.gate(t, Config{Mode: ModeWarn}).Admit(context.Background(), j); err != nil {
			t.Fatalf("Admit(warn, unsigned) = %v, want nil", err)
		}
		if len(j.Notes) != 1 || !strings.Contains(j.Notes[0], "NOT verified") || !strings.Contains(j.Notes[0], "not signed:") {
			t.Errorf("notes = %q, want the warning", j.Notes)
		}
	})
	t.Run("label turns verification off for one target", func(t *testing.T) {
		calls := r.reg.calls
		if err := r.gate(t, Config{Labels: staticLabels{LabelVerify: "off"}}).Admit(context.Background(), job(deploy.TriggerPoll)); err != nil {
			t.Fatalf("Admit(off) = %v", err)
		}
		if r.reg.calls != calls {
			t.Errorf("registry asked %d times with verification off, want 0", r.reg.calls-calls)
		}
	})
	t.Run("label enforces where the default is off", func(t *testing.T) {
		err := r.gate(t, Config{Mode: ModeOff, Labels: staticLabels{LabelVerify: "enforce"}}).Admit(context.Background(), job(deploy.TriggerPoll))
		if !errors.Is(err, deploy.ErrRejected) {
			t.Errorf("Admit = %v, want rejected", err)
		}
	})
	t.Run("registry error is no verdict", func(t *testing.T) {
		r.reg.err = errors.New("registry 127.0.0.1: backing off after errors")
		defer func() { r.reg.err = nil }()
		err := r.gate(t, Config{}).Admit(context.Background(), job(deploy.TriggerPoll))
		if err == nil || errors.Is(err, deploy.ErrRejected) || !strings.Contains(err.Error(), "backing off") {
			t.Errorf("Admit = %v, want a refusal that is no verdict on the image, naming the registry error", err)
		}
	})
	t.Run("no default identity off the GitHub registry", func(t *testing.T) {
		j := job(deploy.TriggerPoll)
		j.Image = "registry.example.com/octo/web:latest"
		err := r.gate(t, Config{}).Admit(context.Background(), j)
		if err == nil || !strings.Contains(err.Error(), "set the label hookd.verify-identity") {
			t.Errorf("Admit = %v, want it to ask for hookd.verify-identity", err)
		}
	})
}

// TestDefaultIdentity: which repository's workflows sign an image by
// default.
func TestDefaultIdentity(t *testing.T) {
	g := &Gate{cfg: Config{GitHubRegistry: "ghcr.io"}}
	tests := []struct {
		name, image, source, delivery string
		want                          string
	}{
		{"image name", "ghcr.io/octo/web:latest", "", "", "octo/web"},
		{"nested image name", "ghcr.io/octo/web/api:1", "", "", "octo/web"},
		{"source label of the same owner", "ghcr.io/octo/web:latest", "https://github.com/Octo/monorepo", "", "Octo/monorepo"},
		{"source label of another owner is ignored", "ghcr.io/octo/web:latest", "https://github.com/mallory/web", "", "octo/web"},
		{"webhook delivery", "ghcr.io/octo/web:latest", "https://github.com/octo/x", "octo/monorepo", "octo/monorepo"},
		{"other registry", "docker.io/octo/web:latest", "https://github.com/octo/web", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &deploy.Job{Image: tt.image, Source: tt.source, Request: deploy.Request{SourceRepo: tt.delivery}}
			if got, _ := g.sourceRepo(j); got != tt.want {
				t.Errorf("sourceRepo(%s, source %q, delivery %q) = %q, want %q", tt.image, tt.source, tt.delivery, got, tt.want)
			}
		})
	}
}

// TestSignatureWait: an image a webhook announced is waited for until its
// workflow signed it; one a poll found is judged at once.
func TestSignatureWait(t *testing.T) {
	r := newRig(t)
	r.reg.sigs[digest] = []registry.Signature{r.bundle(t, digest, ownWorkflow)}
	r.reg.after = 3
	g := r.gate(t, Config{SignatureWait: 5 * time.Second, SignaturePoll: 10 * time.Millisecond})
	if err := g.Admit(context.Background(), job(deploy.TriggerWebhook)); err != nil {
		t.Fatalf("Admit(webhook, signed after 3 looks) = %v, want admitted", err)
	}
	if r.reg.calls != 4 {
		t.Errorf("registry look-ups = %d, want 4", r.reg.calls)
	}
	r.reg.calls = 0
	if err := g.Admit(context.Background(), job(deploy.TriggerPoll)); !errors.Is(err, deploy.ErrRejected) || r.reg.calls != 1 {
		t.Errorf("Admit(poll, unsigned) = %v after %d look-ups, want rejected after 1", err, r.reg.calls)
	}
}

// TestSCTFollowsTheTrustedRoot: a trusted root that lists a
// certificate-transparency log makes an SCT from it required (public-good
// Fulcio's certificates embed one); a root without one (GitHub's own
// instance) does not.
func TestSCTFollowsTheTrustedRoot(t *testing.T) {
	r := newRig(t)
	withCT := Static{r.ss.TrustedRoot(t, true)}
	tests := []struct {
		name   string
		signer sigstoretest.Signer
		trust  Trust
		ok     bool
	}{
		{"no CT log, no SCT", ownWorkflow, Static{r.ss.TrustedRoot(t, false)}, true},
		{"CT log, certificate with SCT", sigstoretest.Workflow{Repo: "octo/web", SCT: true}, withCT, true},
		{"CT log, certificate without SCT", ownWorkflow, withCT, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.reg.sigs[digest] = []registry.Signature{r.bundle(t, digest, tt.signer)}
			err := r.gate(t, Config{Trust: tt.trust}).Admit(context.Background(), job(deploy.TriggerPoll))
			if tt.ok && err != nil {
				t.Errorf("Admit = %v, want admitted", err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "signed certificate timestamp")) {
				t.Errorf("Admit = %v, want refused for the missing SCT", err)
			}
		})
	}
}

// TestTrustedRootFile: the file setting takes one trusted_root.json, or
// the JSON lines gh attestation trusted-root prints (a signature verifies
// against any of them).
func TestTrustedRootFile(t *testing.T) {
	r := newRig(t)
	single := r.ss.WriteTrustedRoot(t, false)
	otherRoot, err := sigstoretest.New(t).TrustedRoot(t, false).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile(single)
	if err != nil {
		t.Fatal(err)
	}
	lines := filepath.Join(t.TempDir(), "trusted_root.jsonl")
	if err := os.WriteFile(lines, []byte(compact(t, otherRoot)+"\n"+compact(t, own)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.reg.sigs[digest] = []registry.Signature{r.bundle(t, digest, ownWorkflow)}
	for _, p := range []string{single, lines} {
		trust, err := LoadTrustedRootFile(p)
		if err != nil {
			t.Fatalf("LoadTrustedRootFile(%s) = %v", filepath.Base(p), err)
		}
		if err := r.gate(t, Config{Trust: trust}).Admit(context.Background(), job(deploy.TriggerPoll)); err != nil {
			t.Errorf("Admit with %s = %v, want admitted", filepath.Base(p), err)
		}
	}
	onlyOther := filepath.Join(t.TempDir(), "other.json")
	if err := os.WriteFile(onlyOther, otherRoot, 0o600); err != nil {
		t.Fatal(err)
	}
	trust, err := LoadTrustedRootFile(onlyOther)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.gate(t, Config{Trust: trust}).Admit(context.Background(), job(deploy.TriggerPoll)); !errors.Is(err, deploy.ErrRejected) {
		t.Errorf("Admit against another deployment's root = %v, want rejected", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte("{\"mediaType\": 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTrustedRootFile(bad); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("LoadTrustedRootFile(bad) = %v, want an error naming the line", err)
	}
}

func compact(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}
