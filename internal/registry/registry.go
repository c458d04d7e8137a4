// Package registry looks up image digests in OCI registries for the poller,
// and the signatures stored with an image for the verify gate
// (signatures.go): cheaply (a HEAD of the manifest, which transfers no body,
// with the bearer token kept between checks) and politely (per-registry
// exponential backoff, Retry-After, and Docker Hub / GHCR rate-limit headers
// honoured before the limit is hit).
package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// Errors a look-up wraps, besides ErrRateLimited and ErrBackoff.
var (
	// ErrUnauthorized: the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("registry denied access, check the registry credentials")
	// ErrNotFound: the repository or tag does not exist (or is private and
	// no credentials were given; registries answer either way).
	ErrNotFound = errors.New("manifest not found")
	// ErrNoPlatform: an index has no manifest for the client's platform.
	ErrNoPlatform = errors.New("no manifest for this platform")
)

// Config configures a Client. Zero values select the defaults.
type Config struct {
	// Keychain supplies credentials per registry (default authn.DefaultKeychain,
	// the Docker config file and its credential helpers); see NewKeychain.
	Keychain authn.Keychain
	// Platform selects the child of a multi-arch index in Platform()
	// (default linux/GOARCH, with the ARM variant). The caller should set it
	// from the Docker daemon's own platform when it knows it.
	Platform v1.Platform
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
	// Transport carries the requests (default a clone of http.DefaultTransport).
	Transport http.RoundTripper
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
}

// Descriptor is what a registry says about a tag.
type Descriptor struct {
	// Digest of the manifest the tag points at; for a multi-arch tag, the
	// index's digest (what `docker pull` records in RepoDigests).
	Digest    string
	MediaType string
	Size      int64
}

// Client looks up digests. It keeps one authenticated transport per
// repository, so a steady-state check is a single HEAD request. It is safe
// for concurrent use.
type Client struct {
	puller   *remote.Puller
	limits   *limiter
	platform v1.Platform
	log      *slog.Logger
}

// New returns a Client.
func New(cfg Config) *Client {
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	if cfg.Platform.OS == "" {
		cfg.Platform = DefaultPlatform()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lim := &limiter{
		inner:   cfg.Transport,
		metrics: cfg.Metrics,
		log:     cfg.Logger,
		now:     cfg.Now,
		// 30s, doubling per consecutive failure up to 30m, ±20% so that
		// several hookd instances behind one NAT do not retry in step.
		backoff: backoff.Policy{Base: 30 * time.Second, Max: 30 * time.Minute, Jitter: 0.2, MaxRetryAfter: maxRetryAfter},
		hosts:   map[string]*hostState{},
	}
	puller, err := remote.NewPuller(
		remote.WithAuthFromKeychain(cfg.Keychain),
		remote.WithTransport(lim),
		remote.WithPlatform(cfg.Platform),
		remote.WithUserAgent("hookd"),
		// No retries inside a look-up: the next poll is the retry, and a
		// retry after a 429 would be exactly the request the registry asked
		// us not to send.
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(func(error) bool { return false }),
	)
	if err != nil {
		// Only reachable with contradictory options, which New never passes.
		panic(fmt.Sprintf("registry: %v", err))
	}
	return &Client{puller: puller, limits: lim, platform: cfg.Platform, log: cfg.Logger}
}

// DefaultPlatform is linux with this binary's architecture (and, for ARM,
// its variant).
func DefaultPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm":
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" && s.Value != "" {
					p.Variant = "v" + s.Value[:1]
				}
			}
		}
	case "arm64":
		p.Variant = "v8"
	}
	return p
}

// Head returns the tag's current digest with a HEAD of its manifest, which
// transfers no body. The Accept header lists the OCI index, Docker manifest
// list, OCI manifest and Docker v2 manifest types. Only where the registry
// refuses HEAD (405, 501) does it fall back to a GET, and it remembers that
// per registry. Errors wrap ErrRateLimited or ErrBackoff (in a *WaitError,
// returned without sending anything while the registry must be left alone),
// ErrUnauthorized or ErrNotFound.
func (c *Client) Head(ctx context.Context, ref string) (Descriptor, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Descriptor{}, fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	host := r.Context().RegistryStr()
	if err := c.limits.admit(host); err != nil {
		return Descriptor{}, fmt.Errorf("head %s: %w", ref, err)
	}
	var d *v1.Descriptor
	if !c.limits.headRefused(host) {
		d, err = c.puller.Head(ctx, r)
		if err != nil && refusesHead(err) {
			c.limits.setHeadRefused(host)
			c.log.Info("registry refuses HEAD on manifests, using GET", "registry", host)
			d, err = nil, nil
		}
	}
	if d == nil && err == nil {
		var rd *remote.Descriptor
		if rd, err = c.puller.Get(ctx, r); err == nil {
			d = &rd.Descriptor
		}
	}
	if err != nil {
		return Descriptor{}, fmt.Errorf("head %s: %w", ref, c.explain(ctx, host, err))
	}
	return Descriptor{Digest: d.Digest.String(), MediaType: string(d.MediaType), Size: d.Size}, nil
}

// Platform resolves ref (a tag or ref@digest) to the manifest for the
// client's platform and that manifest's config digest, which is the image ID
// Docker shows. When an index digest changed, comparing these with what runs
// tells an attestation-only rebuild (same platform image) from a real
// change. It fetches the index and the one platform manifest, never a blob.
// Errors are those of Head, and ErrNoPlatform.
func (c *Client) Platform(ctx context.Context, ref string) (manifestDigest, configDigest string, err error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", "", fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	host := r.Context().RegistryStr()
	if err := c.limits.admit(host); err != nil {
		return "", "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	d, err := c.puller.Get(ctx, r)
	if err != nil {
		return "", "", fmt.Errorf("resolve %s: %w", ref, c.explain(ctx, host, err))
	}
	if d.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(d.Manifest))
		if err != nil {
			return "", "", fmt.Errorf("resolve %s: parse index: %w", ref, err)
		}
		child, ok := pick(im.Manifests, c.platform)
		if !ok {
			return "", "", fmt.Errorf("resolve %s for %s: %w", ref, c.platform, ErrNoPlatform)
		}
		if d, err = c.puller.Get(ctx, r.Context().Digest(child.Digest.String())); err != nil {
			return "", "", fmt.Errorf("resolve %s for %s: %w", ref, c.platform, c.explain(ctx, host, err))
		}
	}
	if !d.MediaType.IsImage() {
		return "", "", fmt.Errorf("resolve %s: unsupported manifest type %q", ref, d.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
	if err != nil {
		return "", "", fmt.Errorf("resolve %s: parse manifest: %w", ref, err)
	}
	return d.Digest.String(), m.Config.Digest.String(), nil
}

// pick returns the index entry for want: same OS and architecture, the
// exact variant if present, else one without a variant (arm64 images often
// omit "v8"). Attestation manifests never match.
func pick(ms []v1.Descriptor, want v1.Platform) (v1.Descriptor, bool) {
	var fallback *v1.Descriptor
	for i, m := range ms {
		p := m.Platform
		if p == nil || m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			continue
		}
		if p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		if p.Variant == want.Variant {
			return m, true
		}
		if fallback == nil && (p.Variant == "" || want.Variant == "") {
			fallback = &ms[i]
		}
	}
	if fallback != nil {
		return *fallback, true
	}
	return v1.Descriptor{}, false
}

// refusesHead reports whether err says the registry does not do HEAD on
// manifests.
func refusesHead(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusMethodNotAllowed || te.StatusCode == http.StatusNotImplemented)
}

// explain classifies a failed look-up: it starts a backoff for transport
// errors, reports the wait a 429/5xx response started, and marks
// authentication and not-found errors.
func (c *Client) explain(ctx context.Context, host string, err error) error {
	var we *WaitError
	if errors.As(err, &we) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		case te.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		if w, ok := c.limits.blocked(host); ok {
			w.Cause = err
			return w
		}
		return err
	}
	var ue *url.Error
	if ctx.Err() == nil && errors.As(err, &ue) {
		return c.limits.fail(host, err)
	}
	return err
}

// NewKeychain returns a keychain that answers with static credentials for
// the registries in static, keyed by host ("ghcr.io"; "docker.io" means
// Docker Hub), and asks fallback (authn.DefaultKeychain when nil) for the
// others. hookd's own configuration thus wins over the Docker config file.
// Entries with an empty username and password are ignored.
func NewKeychain(static map[string]authn.Basic, fallback authn.Keychain) authn.Keychain {
	if fallback == nil {
		fallback = authn.DefaultKeychain
	}
	k := &keychain{static: map[string]authn.AuthConfig{}, fallback: fallback}
	for host, b := range static {
		if b.Username == "" && b.Password == "" {
			continue
		}
		k.static[normaliseHost(host)] = authn.AuthConfig{Username: b.Username, Password: b.Password}
	}
	return k
}

type keychain struct {
	static   map[string]authn.AuthConfig
	fallback authn.Keychain
}

// Resolve implements authn.Keychain.
func (k *keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain.
func (k *keychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	if cfg, ok := k.static[normaliseHost(target.RegistryStr())]; ok {
		return authn.FromConfig(cfg), nil
	}
	return authn.Resolve(ctx, k.fallback, target)
}

func normaliseHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return name.DefaultRegistry
	}
	return h
}
