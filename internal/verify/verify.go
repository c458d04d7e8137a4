package verify

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
	"github.com/and3rn3t/hookd/internal/registry"
)

// Registry finds the signatures stored for an image. *registry.Client
// satisfies it.
type Registry interface {
	Signatures(ctx context.Context, repo, digest string) ([]registry.Signature, error)
}

// Labels returns the labels of a target: its container's, or its Swarm
// service's (kind is deploy.KindContainer or deploy.KindService).
type Labels interface {
	Labels(ctx context.Context, kind, target string) (map[string]string, error)
}

// Config configures a Gate. Trust and Registry are required.
type Config struct {
	// Mode applies to targets without the hookd.verify label (default off).
	Mode     Mode
	Trust    Trust
	Registry Registry
	// Labels reads the targets' hookd.verify* labels; nil means every
	// target follows Mode and the default identity.
	Labels Labels
	// GitHubRegistry is the registry whose repositories are GitHub's,
	// OWNER/REPO[/…] (default ghcr.io): an image there is by default
	// expected to be signed by a workflow of OWNER/REPO.
	GitHubRegistry string
	// SignatureWait is how long a deploy a webhook asked for waits for an
	// unsigned image to be signed, under enforce: GitHub sends the event
	// when the image is pushed, and the workflow signs it a few seconds
	// later (default 60s; negative: no wait).
	SignatureWait time.Duration
	// SignaturePoll is how often the registry is asked meanwhile (default 5s).
	SignaturePoll time.Duration
	// Metrics defaults to metrics.Discard().
	Metrics *metrics.Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Gate verifies the signature of every image before it is deployed. It
// implements the deployer's Gate. It is safe for concurrent use.
type Gate struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	roots  []root.TrustedMaterial // the roots verifiers were made for
	cached []*sgverify.Verifier
}

// New returns a Gate, or an error when cfg lacks what it needs.
func New(cfg Config) (*Gate, error) {
	if cfg.Trust == nil {
		return nil, errors.New("verify: no trusted root")
	}
	if cfg.Registry == nil {
		return nil, errors.New("verify: no registry")
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeOff
	}
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, fmt.Errorf("verify: mode %w", err)
	}
	if cfg.GitHubRegistry == "" {
		cfg.GitHubRegistry = "ghcr.io"
	}
	if cfg.SignatureWait == 0 {
		cfg.SignatureWait = 60 * time.Second
	}
	if cfg.SignaturePoll <= 0 {
		cfg.SignaturePoll = 5 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Gate{cfg: cfg, log: cfg.Logger}, nil
}

// Admit verifies the signature of the image j is about to deploy
// (j.DigestAfter of j.Image's repository) under the target's policy. With
// enforce it returns an error when no signature by the expected identity
// covers the digest: one that wraps deploy.ErrRejected when the image
// itself is at fault (unsigned, signed by another identity, for other
// content, or tampered with), a plain one when the verdict could not be
// reached (the registry or the trusted root could not be read). With warn
// it records the failure in j.Notes and returns nil. A verified signature
// is recorded in j.Verified and j.Notes. The time spent is the job's
// "verify" phase.
func (g *Gate) Admit(ctx context.Context, j *deploy.Job) error {
	p, err := g.policyFor(ctx, j)
	if err != nil {
		g.cfg.Metrics.Verifications.WithLabelValues(metrics.VerifyError).Inc()
		return err
	}
	if p.mode == ModeOff {
		return nil
	}
	start := time.Now()
	out := g.check(ctx, j, p)
	if j.Phases == nil {
		j.Phases = map[string]float64{}
	}
	j.Phases["verify"] = time.Since(start).Seconds()
	g.cfg.Metrics.Verifications.WithLabelValues(out.outcome).Inc()
	log := g.log.With("job_id", j.ID, "target", j.Target, "image", j.Image, "digest", j.DigestAfter)

	if out.outcome == metrics.VerifyVerified {
		j.Verified = out.signed
		note := fmt.Sprintf("signature verified (%s): signed by %s", out.source, out.signed.Identity)
		if c := out.signed.Commit; c != "" {
			note += " at commit " + c
			if j.Revision != "" && !strings.EqualFold(j.Revision, c) {
				note += fmt.Sprintf(" (the image's %s says %s)", deploy.LabelImageRevision, j.Revision)
			}
		}
		j.Notes = append(j.Notes, note)
		log.Info("signature verified", "signer", out.signed.Identity, "commit", out.signed.Commit,
			"duration_seconds", j.Phases["verify"])
		return nil
	}
	if p.mode == ModeWarn {
		j.Notes = append(j.Notes, "signature NOT verified, deployed anyway ("+LabelVerify+"=warn): "+out.reason)
		log.Warn("signature not verified; deploying anyway (warn)", "reason", out.reason)
		return nil
	}
	if out.outcome == metrics.VerifyError {
		return errors.New(out.reason)
	}
	return rejection(out.reason)
}

// rejection is a refusal for the image itself: it wraps deploy.ErrRejected
// without adding the word to the message.
type rejection string

func (r rejection) Error() string        { return string(r) }
func (r rejection) Is(target error) bool { return target == deploy.ErrRejected }

// outcome is what checking one image found.
type outcome struct {
	outcome string // a metrics.Verify* value
	reason  string // why it failed, for people
	source  string
	signed  deploy.Verification
}

// check finds the image's signatures and verifies them.
func (g *Gate) check(ctx context.Context, j *deploy.Job, p policy) outcome {
	ref, err := deploy.ParseRef(j.Image)
	if err != nil || j.DigestAfter == "" {
		return outcome{outcome: metrics.VerifyError, reason: fmt.Sprintf("could not verify %s: its digest is not known", j.Image)}
	}
	image := ref.Repository() + "@" + j.DigestAfter
	verifiers, err := g.verifiers(ctx)
	if err != nil {
		return outcome{outcome: metrics.VerifyError, reason: fmt.Sprintf("could not verify %s: %v", image, err)}
	}
	sigs, fetchErr := g.signatures(ctx, ref.Repository(), j)
	if len(sigs) == 0 && fetchErr != nil {
		return outcome{outcome: metrics.VerifyError, reason: fmt.Sprintf("could not verify %s: %v", image, fetchErr)}
	}
	if len(sigs) == 0 {
		return outcome{outcome: metrics.VerifyUnsigned, reason: fmt.Sprintf(
			"not signed: no Sigstore signature found for %s (looked for OCI referrers and the cosign .sig tag); expected %s",
			image, p.expected)}
	}

	best := result{verdict: unreadable - 1}
	var failures []string
	for _, s := range sigs {
		r := checkSignature(s, j.DigestAfter, verifiers, p)
		if r.verdict == verified {
			return outcome{outcome: metrics.VerifyVerified, source: r.source, signed: r.signed}
		}
		failures = append(failures, r.source+": "+r.detail)
		if r.verdict > best.verdict {
			best = r
		}
	}
	if fetchErr != nil {
		// What could not be read might have held the signature.
		return outcome{outcome: metrics.VerifyError, reason: fmt.Sprintf("could not verify %s: no signature found so far is acceptable (%s), and %v",
			image, strings.Join(failures, "; "), fetchErr)}
	}
	var head string
	switch best.verdict {
	case otherIdentity:
		head = fmt.Sprintf("signed by someone else: %s was %s", image, best.detail)
	case otherDigest:
		head = fmt.Sprintf("signed for other content: no signature covers %s", image)
	default:
		head = fmt.Sprintf("invalid signature: no valid signature for %s", image)
	}
	reason := fmt.Sprintf("%s; expected %s", head, p.expected)
	if len(failures) > 1 || best.verdict != otherIdentity {
		reason += " [" + strings.Join(limit(failures, 3), "; ") + "]"
	}
	return outcome{outcome: metrics.VerifyRejected, reason: reason}
}

// signatures reads the image's signatures. An image a webhook asked for
// that has none yet is asked about again until SignatureWait has passed:
// the workflow signs it after pushing it, and GitHub sends the event at
// the push.
func (g *Gate) signatures(ctx context.Context, repo string, j *deploy.Job) ([]registry.Signature, error) {
	var deadline time.Time
	if j.Request.Trigger == deploy.TriggerWebhook && g.cfg.SignatureWait > 0 {
		deadline = time.Now().Add(g.cfg.SignatureWait)
	}
	for {
		sigs, err := g.cfg.Registry.Signatures(ctx, repo, j.DigestAfter)
		if len(sigs) > 0 || err != nil || !time.Now().Before(deadline) {
			return sigs, err
		}
		t := time.NewTimer(g.cfg.SignaturePoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// verifiers returns a verifier per trusted root, made again when the
// roots change (a TUF refresh).
func (g *Gate) verifiers(ctx context.Context) ([]*sgverify.Verifier, error) {
	roots, err := g.cfg.Trust.Roots(ctx)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if sameRoots(roots, g.roots) {
		return g.cached, nil
	}
	vs := make([]*sgverify.Verifier, 0, len(roots))
	for i, tm := range roots {
		v, err := verifierFor(tm)
		if err != nil {
			return nil, fmt.Errorf("trusted root %d: %w", i+1, err)
		}
		vs = append(vs, v)
	}
	g.roots, g.cached = roots, vs
	return vs, nil
}

func sameRoots(a, b []root.TrustedMaterial) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func limit(ss []string, n int) []string {
	if len(ss) <= n {
		return ss
	}
	return append(ss[:n:n], fmt.Sprintf("and %d more", len(ss)-n))
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
