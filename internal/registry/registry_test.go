package registry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// anonymous is a keychain with no credentials, so tests never read the
// machine's Docker config.
var anonymous = authn.NewMultiKeychain()

func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	if cfg.Keychain == nil {
		cfg.Keychain = anonymous
	}
	return New(cfg)
}

func mustDigest(t testing.TB, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestHeadUnchangedTagTransfersNoBody(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBearer)
	idx, _, _ := multiArch(t)
	f.push(t, "o/app:latest", idx)
	f.requests()
	c := newClient(t, Config{})

	d, err := c.Head(ctx, f.ref("o/app:latest"))
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	want := Descriptor{Digest: mustDigest(t, idx), MediaType: string(types.OCIImageIndex)}
	if d.Digest != want.Digest || d.MediaType != want.MediaType || d.Size <= 0 {
		t.Errorf("Head = %+v, want the index %+v", d, want)
	}
	first := f.requests()
	wantFirst := []string{"GET /v2/", "GET /token", "HEAD /v2/o/app/manifests/latest"}
	if !reflect.DeepEqual(first, wantFirst) {
		t.Errorf("first check sent %v, want %v (ping, anonymous token, HEAD)", first, wantFirst)
	}
	f.bodyBytes()

	// The steady state: one HEAD, the token kept, no body.
	for range 3 {
		d2, err := c.Head(ctx, f.ref("o/app:latest"))
		if err != nil {
			t.Fatalf("Head: %v", err)
		}
		if d2 != d {
			t.Errorf("Head of an unchanged tag = %+v, want %+v", d2, d)
		}
	}
	if got, want := f.requests(), slices.Repeat([]string{"HEAD /v2/o/app/manifests/latest"}, 3); !reflect.DeepEqual(got, want) {
		t.Errorf("unchanged checks sent %v, want %v", got, want)
	}
	if n := f.bodyBytes(); n != 0 {
		t.Errorf("unchanged checks transferred %d body bytes, want 0", n)
	}

	// GHCR answers 404 to a HEAD whose Accept lacks the stored type.
	f.mu.Lock()
	accept := f.accepts[len(f.accepts)-1]
	f.mu.Unlock()
	for _, mt := range []types.MediaType{types.OCIImageIndex, types.DockerManifestList, types.OCIManifestSchema1, types.DockerManifestSchema2} {
		if !strings.Contains(accept, string(mt)) {
			t.Errorf("HEAD Accept = %q, want it to list %s", accept, mt)
		}
	}
}

func TestHeadSeesNewDigest(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBearer)
	c := newClient(t, Config{})
	for i := range 2 {
		img := randomImage(t)
		f.push(t, "o/app:latest", img)
		d, err := c.Head(ctx, f.ref("o/app:latest"))
		if err != nil {
			t.Fatalf("Head: %v", err)
		}
		if want := mustDigest(t, img); d.Digest != want {
			t.Errorf("Head after push %d = %s, want %s", i, d.Digest, want)
		}
	}
}

func TestHeadCredentials(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBasic)
	f.push(t, "private/app:latest", randomImage(t))
	// The Docker config (fallback) has stale credentials; hookd's own wins.
	stale := keychainFunc(func(authn.Resource) (authn.Authenticator, error) {
		return &authn.Basic{Username: "hookd", Password: "stale-docker-config-pw"}, nil
	})
	tests := []struct {
		name    string
		static  map[string]authn.Basic
		wantErr error
	}{
		{"static credentials", map[string]authn.Basic{f.host: {Username: f.user, Password: f.pass}}, nil},
		{"wrong password", map[string]authn.Basic{f.host: {Username: f.user, Password: "wrong-pa55word"}}, ErrUnauthorized},
		{"fallback only", nil, ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Config{Keychain: NewKeychain(tt.static, stale)})
			_, err := c.Head(ctx, f.ref("private/app:latest"))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Head = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			for _, secret := range []string{"wrong-pa55word", "stale-docker-config-pw", f.pass} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Head error %q contains a password", err)
				}
			}
			if !strings.Contains(err.Error(), "credentials") {
				t.Errorf("Head error %q does not say to check the credentials", err)
			}
			// A per-repository problem does not back the registry off.
			if _, err := c.Head(ctx, f.ref("private/app:latest")); errors.Is(err, ErrBackoff) || errors.Is(err, ErrRateLimited) {
				t.Errorf("second Head = %v, want another attempt", err)
			}
		})
	}
}

type keychainFunc func(authn.Resource) (authn.Authenticator, error)

func (f keychainFunc) Resolve(r authn.Resource) (authn.Authenticator, error) { return f(r) }

func TestKeychainPrefersStaticCredentials(t *testing.T) {
	fallback := keychainFunc(func(r authn.Resource) (authn.Authenticator, error) {
		return &authn.Basic{Username: "from-docker-config", Password: "x"}, nil
	})
	kc := NewKeychain(map[string]authn.Basic{
		"GHCR.io":   {Username: "gh-user", Password: "gh-token"},
		"docker.io": {Username: "hub-user", Password: "hub-token"},
		"quay.io":   {},
	}, fallback)
	tests := []struct {
		registry string
		wantUser string
	}{
		{"ghcr.io", "gh-user"},
		{"index.docker.io", "hub-user"},
		{"quay.io", "from-docker-config"},
		{"registry.example.com:5000", "from-docker-config"},
	}
	for _, tt := range tests {
		reg, err := name.NewRegistry(tt.registry)
		if err != nil {
			t.Fatal(err)
		}
		a, err := kc.Resolve(reg)
		if err != nil {
			t.Fatalf("Resolve(%s): %v", tt.registry, err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != tt.wantUser {
			t.Errorf("Resolve(%s) user = %q, want %q", tt.registry, cfg.Username, tt.wantUser)
		}
	}
}

func TestHeadNotFound(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBearer)
	f.push(t, "o/app:latest", randomImage(t))
	c := newClient(t, Config{})
	_, err := c.Head(ctx, f.ref("o/app:nope"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Head(missing tag) = %v, want ErrNotFound", err)
	}
	// Another repository on the same registry is not delayed.
	if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
		t.Errorf("Head after a 404 = %v, want nil", err)
	}
}

func TestHeadHonoursRetryAfter(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		retryAfter func(now time.Time) string
	}{
		{"seconds", func(time.Time) string { return "120" }},
		{"http date", func(now time.Time) string { return now.Add(120 * time.Second).Format(http.TimeFormat) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t, authBearer)
			f.push(t, "o/app:latest", randomImage(t))
			clk := newClock()
			m := metrics.Discard()
			c := newClient(t, Config{Now: clk.Now, Metrics: m})
			if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
				t.Fatal(err)
			}
			f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Retry-After", tt.retryAfter(clk.Now()))
				http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
				return true
			})
			f.requests()

			_, err := c.Head(ctx, f.ref("o/app:latest"))
			var we *WaitError
			if !errors.Is(err, ErrRateLimited) || !errors.As(err, &we) {
				t.Fatalf("Head on 429 = %v, want ErrRateLimited in a *WaitError", err)
			}
			if want := clk.Now().Add(120 * time.Second); !we.Until.Equal(want) {
				t.Errorf("WaitError.Until = %v, want %v", we.Until, want)
			}
			if got := f.requests(); len(got) != 1 {
				t.Errorf("Head on 429 sent %v, want one request (no retry)", got)
			}
			f.setIntercept(nil)

			clk.Add(119 * time.Second)
			if _, err := c.Head(ctx, f.ref("o/app:latest")); !errors.Is(err, ErrRateLimited) {
				t.Errorf("Head before Retry-After expired = %v, want ErrRateLimited", err)
			}
			if got := f.requests(); len(got) != 0 {
				t.Errorf("Head before Retry-After expired sent %v, want nothing", got)
			}
			clk.Add(2 * time.Second)
			if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
				t.Errorf("Head after Retry-After = %v, want nil", err)
			}
			if got := testutil.ToFloat64(m.RegistryRequests.WithLabelValues(f.host, "HEAD", "429")); got != 1 {
				t.Errorf("hookd_registry_requests_total{code=429} = %v, want 1", got)
			}
		})
	}
}

func TestBackoffIsPerRegistry(t *testing.T) {
	ctx := context.Background()
	bad, good := newFakeRegistry(t, authNone), newFakeRegistry(t, authNone)
	bad.push(t, "o/app:latest", randomImage(t))
	good.push(t, "o/app:latest", randomImage(t))
	clk := newClock()
	c := newClient(t, Config{Now: clk.Now})
	bad.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodHead {
			return false
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	headBad := func() error {
		t.Helper()
		bad.requests()
		_, err := c.Head(ctx, bad.ref("o/app:latest"))
		return err
	}
	sent := func() bool { return len(bad.requests()) > 0 }

	if err := headBad(); !errors.Is(err, ErrBackoff) {
		t.Fatalf("Head on 503 = %v, want ErrBackoff", err)
	}
	if _, err := c.Head(ctx, good.ref("o/app:latest")); err != nil {
		t.Errorf("Head of another registry while one backs off = %v, want nil", err)
	}
	// First failure: 30s ±20%; the second doubles it.
	steps := []struct {
		advance time.Duration
		sent    bool
	}{
		{0, false},
		{23 * time.Second, false},
		{14 * time.Second, true}, // 37s: the second failure
		{47 * time.Second, false},
		{26 * time.Second, true}, // 73s after the second failure
	}
	for i, s := range steps {
		clk.Add(s.advance)
		err := headBad()
		if got := sent(); got != s.sent {
			t.Errorf("step %d (+%v): request sent = %v, want %v (err %v)", i, s.advance, got, s.sent, err)
		}
		if !errors.Is(err, ErrBackoff) {
			t.Errorf("step %d: Head = %v, want ErrBackoff", i, err)
		}
	}

	// Recovery resets the backoff.
	bad.setIntercept(nil)
	clk.Add(3 * time.Minute)
	for range 2 {
		if err := headBad(); err != nil {
			t.Errorf("Head after recovery = %v, want nil", err)
		}
	}
}

func TestTransportErrorBacksOff(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close() // nothing listens: every dial fails
	clk := newClock()
	m := metrics.Discard()
	c := newClient(t, Config{Now: clk.Now, Metrics: m})
	_, err = c.Head(ctx, host+"/o/app:latest")
	if !errors.Is(err, ErrBackoff) {
		t.Fatalf("Head of an unreachable registry = %v, want ErrBackoff", err)
	}
	sent := testutil.ToFloat64(m.RegistryRequests.WithLabelValues(host, "GET", "error"))
	if sent == 0 {
		t.Errorf("failed requests were not counted")
	}
	clk.Add(20 * time.Second)
	if _, err := c.Head(ctx, host+"/o/app:latest"); !errors.Is(err, ErrBackoff) {
		t.Errorf("second Head = %v, want ErrBackoff", err)
	}
	if got := testutil.ToFloat64(m.RegistryRequests.WithLabelValues(host, "GET", "error")); got != sent {
		t.Errorf("requests during backoff: %v → %v, want none", sent, got)
	}
}

func TestHeadFallsBackToGetWhenHeadRefused(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBearer)
	idx, _, _ := multiArch(t)
	f.push(t, "o/app:latest", idx)
	f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return true
		}
		return false
	})
	f.requests()
	c := newClient(t, Config{})
	for i, want := range [][]string{
		{"GET /v2/", "GET /token", "HEAD /v2/o/app/manifests/latest", "GET /v2/o/app/manifests/latest"},
		{"GET /v2/o/app/manifests/latest"}, // remembered: no HEAD first
	} {
		d, err := c.Head(ctx, f.ref("o/app:latest"))
		if err != nil {
			t.Fatalf("Head %d: %v", i, err)
		}
		if d.Digest != mustDigest(t, idx) {
			t.Errorf("Head %d = %s, want the index digest %s", i, d.Digest, mustDigest(t, idx))
		}
		if got := f.requests(); !reflect.DeepEqual(got, want) {
			t.Errorf("Head %d sent %v, want %v", i, got, want)
		}
	}
}

func TestRateLimitHeadersSlowDown(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		headers func(now time.Time) map[string]string
		// wait is how long the next check must wait; 0 means no slow-down.
		wait time.Duration
	}{
		{"docker hub plenty left", func(time.Time) map[string]string {
			return map[string]string{"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "60;w=21600"}
		}, 0},
		{"docker hub low", func(time.Time) map[string]string {
			return map[string]string{"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "3;w=21600"}
		}, 2 * time.Hour},
		{"ghcr low", func(now time.Time) map[string]string {
			return map[string]string{"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4",
				"x-ratelimit-reset": strconvTime(now.Add(400 * time.Second))}
		}, 100 * time.Second},
		{"ghcr under 10 percent", func(now time.Time) map[string]string {
			return map[string]string{"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "400",
				"x-ratelimit-reset": strconvTime(now.Add(4000 * time.Second))}
		}, 10 * time.Second},
		{"ghcr exhausted", func(now time.Time) map[string]string {
			return map[string]string{"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
				"x-ratelimit-reset": strconvTime(now.Add(600 * time.Second))}
		}, 600 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRegistry(t, authNone)
			f.push(t, "o/app:latest", randomImage(t))
			clk := newClock()
			c := newClient(t, Config{Now: clk.Now})
			f.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodHead {
					for k, v := range tt.headers(clk.Now()) {
						w.Header().Set(k, v)
					}
				}
				return false
			})
			if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
				t.Fatalf("Head: %v", err)
			}
			f.requests()
			head := func() error {
				_, err := c.Head(ctx, f.ref("o/app:latest"))
				return err
			}
			if tt.wait == 0 {
				if err := head(); err != nil || len(f.requests()) != 1 {
					t.Errorf("Head right after = %v, want a request", err)
				}
				return
			}
			clk.Add(tt.wait - time.Second)
			if err := head(); !errors.Is(err, ErrRateLimited) {
				t.Errorf("Head %v after = %v, want ErrRateLimited", tt.wait-time.Second, err)
			}
			if got := f.requests(); len(got) != 0 {
				t.Errorf("Head while slowed down sent %v, want nothing", got)
			}
			clk.Add(2 * time.Second)
			if err := head(); err != nil {
				t.Errorf("Head %v after = %v, want nil", tt.wait+time.Second, err)
			}
			if got := f.requests(); len(got) != 1 {
				t.Errorf("Head after the wait sent %v, want one request", got)
			}
		})
	}
}

func strconvTime(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

func TestPlatformSkipsAttestations(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBearer)
	idx, amd64, arm64 := multiArch(t)
	f.push(t, "o/app:latest", idx)
	single := randomImage(t)
	f.push(t, "o/app:single", single)
	configOf := func(img v1.Image) string {
		h, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		return h.String()
	}
	tests := []struct {
		name       string
		platform   v1.Platform
		ref        string
		wantDigest string
		wantConfig string
		wantErr    error
	}{
		{"arm64 child", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "o/app:latest",
			mustDigest(t, arm64), configOf(arm64), nil},
		{"amd64 child", v1.Platform{OS: "linux", Architecture: "amd64"}, "o/app:latest",
			mustDigest(t, amd64), configOf(amd64), nil},
		{"arm64 without variant", v1.Platform{OS: "linux", Architecture: "arm64"}, "o/app:latest",
			mustDigest(t, arm64), configOf(arm64), nil},
		{"by index digest", v1.Platform{OS: "linux", Architecture: "amd64"}, "o/app@" + mustDigest(t, idx),
			mustDigest(t, amd64), configOf(amd64), nil},
		{"single-arch image", v1.Platform{OS: "linux", Architecture: "amd64"}, "o/app:single",
			mustDigest(t, single), configOf(single), nil},
		{"platform not built", v1.Platform{OS: "linux", Architecture: "s390x"}, "o/app:latest",
			"", "", ErrNoPlatform},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Config{Platform: tt.platform})
			md, cd, err := c.Platform(ctx, f.ref(tt.ref))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Platform(%s) error = %v, want %v", tt.ref, err, tt.wantErr)
			}
			if md != tt.wantDigest || cd != tt.wantConfig {
				t.Errorf("Platform(%s) = %s, %s; want %s, %s", tt.ref, md, cd, tt.wantDigest, tt.wantConfig)
			}
		})
	}

	t.Run("attestation-only rebuild", func(t *testing.T) {
		c := newClient(t, Config{Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}})
		before, err := c.Head(ctx, f.ref("o/app:latest"))
		if err != nil {
			t.Fatal(err)
		}
		f.push(t, "o/app:latest", withAttestation(t, amd64, arm64))
		after, err := c.Head(ctx, f.ref("o/app:latest"))
		if err != nil {
			t.Fatal(err)
		}
		if before.Digest == after.Digest {
			t.Fatalf("index digest unchanged after a rebuild with new provenance")
		}
		f.requests()
		md, cd, err := c.Platform(ctx, f.ref("o/app:latest"))
		if err != nil {
			t.Fatal(err)
		}
		if md != mustDigest(t, arm64) || cd != configOf(arm64) {
			t.Errorf("Platform after attestation-only rebuild = %s, %s; want the unchanged %s, %s",
				md, cd, mustDigest(t, arm64), configOf(arm64))
		}
		for _, r := range f.requests() {
			if strings.Contains(r, "/blobs/") {
				t.Errorf("Platform fetched a blob: %s", r)
			}
		}
	})
}

func TestRequestsAreCounted(t *testing.T) {
	ctx := context.Background()
	f := newFakeRegistry(t, authBearer)
	f.push(t, "o/app:latest", randomImage(t))
	m := metrics.Discard()
	c := newClient(t, Config{Metrics: m})
	for range 3 {
		if _, err := c.Head(ctx, f.ref("o/app:latest")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		method, code string
		want         float64
	}{
		{"GET", "401", 1},  // ping
		{"GET", "200", 1},  // token
		{"HEAD", "200", 3}, // one per check
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.RegistryRequests.WithLabelValues(f.host, tt.method, tt.code)); got != tt.want {
			t.Errorf("hookd_registry_requests_total{registry=%q,method=%q,code=%q} = %v, want %v",
				f.host, tt.method, tt.code, got, tt.want)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		h      map[string]string
		want   rateLimit
		wantOK bool
	}{
		{map[string]string{}, rateLimit{}, false},
		{map[string]string{"RateLimit-Remaining": "76;w=21600", "RateLimit-Limit": "100;w=21600"},
			rateLimit{limit: 100, remaining: 76, reset: 6 * time.Hour}, true},
		{map[string]string{"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "1748779260"},
			rateLimit{remaining: 10, reset: 60 * time.Second}, true},
		{map[string]string{"RateLimit-Remaining": "3", "RateLimit-Reset": "30"},
			rateLimit{remaining: 3, reset: 30 * time.Second}, true},
		{map[string]string{"RateLimit-Remaining": "3"}, rateLimit{remaining: 3, reset: defaultWindow}, true},
		{map[string]string{"RateLimit-Remaining": "lots"}, rateLimit{}, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.h {
			h.Set(k, v)
		}
		got, ok := parseRateLimit(h, now)
		if ok != tt.wantOK || (ok && got != tt.want) {
			t.Errorf("parseRateLimit(%v) = %+v, %v; want %+v, %v", tt.h, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestDefaultPlatform(t *testing.T) {
	p := New(Config{Keychain: anonymous}).platform
	if p.OS != "linux" || p.Architecture == "" {
		t.Errorf("default platform = %v, want linux/GOARCH", p)
	}
}
