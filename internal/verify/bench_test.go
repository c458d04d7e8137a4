package verify

import (
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
	"github.com/and3rn3t/hookd/internal/sigstoretest"
)

// A real signature from Sigstore's public-good instance, made by a GitHub
// Actions workflow (the npm provenance of sigstore-js 2.0.0), and the
// public-good trusted root of its time: sigstore-go ships both as test
// data. They are read from the module, not copied here.
const (
	publicGoodBundle   = "pkg/testing/data/bundles/sigstore.js@2.0.0-provenance.sigstore.json"
	publicGoodRoot     = "pkg/testing/data/trusted-roots/public-good.json"
	publicGoodIdentity = "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main"
	publicGoodCommit   = "f0b49a04e5a62250e0f60fb128004a73110fe311"
	publicGoodSubject  = "46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c"
)

// sigstoreData reads a file of the sigstore-go module hookd builds with.
func sigstoreData(tb testing.TB, rel string) []byte {
	tb.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/sigstore/sigstore-go").Output()
	if err != nil {
		tb.Fatalf("locate the sigstore-go module: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), rel))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// publicGood returns the verifier hookd makes for the public-good root,
// the real bundle read as hookd reads one, and the policy hookd applies
// with the default identity of github.com/sigstore/sigstore-js.
func publicGood(tb testing.TB) (*sgverify.Verifier, entity, sgverify.PolicyBuilder) {
	tb.Helper()
	tr, err := root.NewTrustedRootFromJSON(sigstoreData(tb, publicGoodRoot))
	if err != nil {
		tb.Fatal(err)
	}
	v, err := verifierFor(tr)
	if err != nil {
		tb.Fatal(err)
	}
	ent, err := bundleEntity(sigstoreData(tb, publicGoodBundle))
	if err != nil {
		tb.Fatal(err)
	}
	want, _ := hex.DecodeString(publicGoodSubject)
	subject := regexp.MustCompile(`(?i)^https://github\.com/sigstore/sigstore-js/\.github/workflows/[^@]+@.+$`)
	id, err := sgverify.NewShortCertificateIdentity(GitHubActionsIssuer, "", "", subject.String())
	if err != nil {
		tb.Fatal(err)
	}
	return v, ent, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha512", want), sgverify.WithCertificateIdentity(id))
}

// TestPublicGoodGitHubBundle: what hookd requires of a signature under the
// public-good root (a certificate chaining to Fulcio, an SCT from its CT
// log, inclusion in Rekor) is what a real GitHub Actions signature has, and
// the commit comes out of its certificate.
func TestPublicGoodGitHubBundle(t *testing.T) {
	v, ent, policy := publicGood(t)
	res, err := v.Verify(ent.entity, policy)
	if err != nil {
		t.Fatalf("Verify(real public-good bundle) = %v", err)
	}
	got := summary(res.Signature)
	if got.Identity != publicGoodIdentity || got.Commit != publicGoodCommit || got.Issuer != GitHubActionsIssuer {
		t.Errorf("signer = %+v, want %s at %s", got, publicGoodIdentity, publicGoodCommit)
	}
	tr, _ := root.NewTrustedRootFromJSON(sigstoreData(t, publicGoodRoot))
	if len(tr.CTLogs()) == 0 || len(tr.RekorLogs()) == 0 {
		t.Fatal("the public-good root lists no CT log or no Rekor log: the test proves nothing")
	}
}

// BenchmarkVerify measures verifying one signature with a warm trusted
// root (the registry fetch is not counted): sigstore-go on the real
// public-good bundle (chain, SCT, Rekor inclusion promise and timestamp,
// identity), and the whole gate on a referrer bundle of the in-memory
// Sigstore with an SCT, a Rekor entry with its inclusion proof and a
// signed timestamp.
func BenchmarkVerify(b *testing.B) {
	b.Run("public-good bundle", func(b *testing.B) {
		v, ent, policy := publicGood(b)
		for b.Loop() {
			if _, err := v.Verify(ent.entity, policy); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gate", func(b *testing.B) {
		ss := sigstoretest.New(b)
		st := sigstoretest.Statement(b, "ghcr.io/octo/web", digest, sigstoretest.PredicateProvenance)
		reg := &fakeRegistry{sigs: map[string][]registry.Signature{digest: {{
			Format: registry.FormatBundle, Source: "referrer", Bundle: ss.Bundle(b, st, sigstoretest.Workflow{Repo: "octo/web", SCT: true}),
		}}}}
		g, err := New(Config{Mode: ModeEnforce, Trust: Static{ss.TrustedRoot(b, true)}, Registry: reg, SignatureWait: -1})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for b.Loop() {
			if err := g.Admit(ctx, job(deploy.TriggerPoll)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
