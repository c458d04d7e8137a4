package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tuf"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Trust supplies the trusted roots signatures are verified against: the
// Sigstore deployments (certificate authorities, transparency logs,
// timestamp authorities) whose word hookd takes.
type Trust interface {
	// Roots returns the trusted roots, at least one. An error means none
	// can be had now (a TUF repository that cannot be reached yet).
	Roots(ctx context.Context) ([]root.TrustedMaterial, error)
}

// Static is a Trust of fixed roots.
type Static []root.TrustedMaterial

// Roots returns s.
func (s Static) Roots(context.Context) ([]root.TrustedMaterial, error) {
	if len(s) == 0 {
		return nil, errors.New("no trusted root")
	}
	return s, nil
}

// maxRootFileBytes bounds a trusted root file; the public-good root is
// about 10 KB.
const maxRootFileBytes = 4 << 20

// LoadTrustedRootFile reads a trusted root pinned in a file: one
// trusted_root.json, or the JSON lines `gh attestation trusted-root` prints
// (one root per line: Sigstore's public-good instance and GitHub's own,
// which signs the attestations of private repositories). It returns an
// error naming the file and the line when a root does not parse.
func LoadTrustedRootFile(path string) (Static, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	if len(data) > maxRootFileBytes {
		return nil, fmt.Errorf("trusted root %s: larger than %d bytes", path, maxRootFileBytes)
	}
	if tr, err := root.NewTrustedRootFromJSON(data); err == nil {
		return Static{tr}, nil
	}
	var roots Static
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxRootFileBytes)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		tr, err := root.NewTrustedRootFromJSON(line)
		if err != nil {
			return nil, fmt.Errorf("trusted root %s: line %d: %w", path, n, err)
		}
		roots = append(roots, tr)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", path, err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("trusted root %s: no trusted root in the file", path)
	}
	return roots, nil
}

// TUFConfig configures a TUF-backed trust.
type TUFConfig struct {
	// CacheDir keeps the TUF metadata and the trusted root between runs
	// (hookd uses <state_dir>/sigstore).
	CacheDir string
	// RepositoryURL defaults to Sigstore's public-good TUF repository.
	RepositoryURL string
	// Root is the TUF root it starts from; default the one sigstore-go
	// embeds for the public-good repository.
	Root []byte
	// Refresh is how old the trusted root may get before it is fetched
	// again (default 24h, as sigstore-go's LiveTrustedRoot does).
	Refresh time.Duration
	// HTTPClient fetches the TUF metadata (default one with a 30s timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// TUF is Sigstore's public-good trusted root, fetched through its TUF
// repository (signed metadata rooted in the root sigstore-go embeds) and
// cached on disk. It is fetched when first needed, not at start-up, and
// again when it is older than Refresh, also only when needed: an idle
// hookd makes no request. A failed refresh keeps the root it had.
type TUF struct {
	cfg TUFConfig

	mu      sync.Mutex
	current root.TrustedMaterial
	fetched time.Time
}

// NewTUF returns a TUF trust; it does no I/O.
func NewTUF(cfg TUFConfig) *TUF {
	if cfg.RepositoryURL == "" {
		cfg.RepositoryURL = tuf.DefaultMirror
	}
	if cfg.Root == nil {
		cfg.Root = tuf.DefaultRoot()
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 24 * time.Hour
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &TUF{cfg: cfg}
}

// Roots returns the trusted root, fetching it when it has none or an old
// one. Errors name the TUF repository.
func (t *TUF) Roots(ctx context.Context) ([]root.TrustedMaterial, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	if t.current != nil && now.Sub(t.fetched) < t.cfg.Refresh {
		return []root.TrustedMaterial{t.current}, nil
	}
	tr, err := t.fetch(ctx)
	if err != nil {
		if t.current != nil {
			t.cfg.Logger.Warn("trusted root refresh failed; keeping the one fetched before",
				"repository", t.cfg.RepositoryURL, "fetched_at", t.fetched, "err", err)
			t.fetched = now.Add(-t.cfg.Refresh + time.Hour) // try again in an hour
			return []root.TrustedMaterial{t.current}, nil
		}
		return nil, err
	}
	t.current, t.fetched = tr, now
	return []root.TrustedMaterial{tr}, nil
}

// fetch updates the TUF metadata in the cache (with no request while the
// cached metadata is less than a day old and valid) and reads the trusted
// root target.
func (t *TUF) fetch(ctx context.Context) (*root.TrustedRoot, error) {
	if err := os.MkdirAll(t.cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	opts := tuf.DefaultOptions().
		WithRoot(t.cfg.Root).
		WithCachePath(t.cfg.CacheDir).
		WithRepositoryBaseURL(t.cfg.RepositoryURL).
		WithCacheValidity(1).
		WithFetcher(&fetcher{ctx: ctx, client: t.cfg.HTTPClient})
	c, err := tuf.New(opts)
	if err == nil {
		var tr *root.TrustedRoot
		if tr, err = root.GetTrustedRoot(c); err == nil {
			t.cfg.Logger.Info("trusted root fetched", "repository", t.cfg.RepositoryURL)
			return tr, nil
		}
	}
	return nil, fmt.Errorf("trusted root from TUF repository %s: %w", t.cfg.RepositoryURL, err)
}

// fetcher downloads TUF metadata under a context and with a timeout
// (go-tuf's default fetcher has neither).
type fetcher struct {
	ctx    context.Context
	client *http.Client
}

// DownloadFile implements go-tuf's fetcher.Fetcher.
func (f *fetcher) DownloadFile(url string, maxLength int64, _ time.Duration) ([]byte, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "hookd")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: url}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is larger than %d bytes", url, maxLength)}
	}
	return b, nil
}

// verifierFor returns the verifier a trusted root calls for. What a
// careful verifier requires follows from what the root lists: an SCT from
// one of its certificate-transparency logs when it lists any (public-good
// Fulcio embeds them; GitHub's instance has none); inclusion in one of its
// transparency logs, with a time from the log or a timestamp authority,
// when it lists any; otherwise a signed timestamp from one of its
// timestamp authorities (GitHub's instance, which keeps no public log).
// Every certificate must chain to one of its certificate authorities.
func verifierFor(tm root.TrustedMaterial) (*sgverify.Verifier, error) {
	var opts []sgverify.VerifierOption
	if len(tm.CTLogs()) > 0 {
		opts = append(opts, sgverify.WithSignedCertificateTimestamps(1))
	}
	switch {
	case len(tm.RekorLogs()) > 0:
		opts = append(opts, sgverify.WithTransparencyLog(1), sgverify.WithObserverTimestamps(1))
	case len(tm.TimestampingAuthorities()) > 0:
		opts = append(opts, sgverify.WithSignedTimestamps(1))
	default:
		return nil, errors.New("the trusted root lists neither a transparency log nor a timestamp authority")
	}
	if len(tm.FulcioCertificateAuthorities()) == 0 {
		return nil, errors.New("the trusted root lists no certificate authority")
	}
	return sgverify.NewVerifier(tm, opts...)
}
