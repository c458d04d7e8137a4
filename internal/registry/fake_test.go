package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Authentication modes of fakeRegistry.
const (
	authNone   = ""
	authBearer = "bearer" // GHCR-style: 401 + Bearer challenge, anonymous /token
	authBasic  = "basic"  // private registry: Basic credentials on every request
)

// fakeRegistry is the real in-process OCI registry behind a wrapper that
// adds authentication, records every request and counts bytes. Images are
// pushed through a second, unauthenticated server on the same storage.
type fakeRegistry struct {
	host  string // "127.0.0.1:port" of the server under test
	admin string // same storage, no auth, for pushing
	auth  string
	user  string
	pass  string

	wire atomic.Int64 // bytes read and written on the server's connections

	mu        sync.Mutex
	reqs      []string // "METHOD /path"
	accepts   []string // Accept of manifest requests
	body      int64    // response body bytes written
	tokens    map[string]bool
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

func newFakeRegistry(t testing.TB, auth string, opts ...ggcr.Option) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{auth: auth, user: "hookd", pass: "s3cret-pa55", tokens: map[string]bool{}}
	reg := ggcr.New(append([]ggcr.Option{ggcr.Logger(nilLogger())}, opts...)...)

	admin := httptest.NewServer(reg)
	t.Cleanup(admin.Close)
	f.admin = strings.TrimPrefix(admin.URL, "http://")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f.handler(reg))
	srv.Listener = &countingListener{Listener: ln, n: &f.wire}
	srv.Config.ErrorLog = nilLogger()
	srv.Start()
	t.Cleanup(srv.Close)
	f.host = strings.TrimPrefix(srv.URL, "http://")
	return f
}

func (f *fakeRegistry) handler(reg http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
		if strings.Contains(r.URL.Path, "/manifests/") {
			f.accepts = append(f.accepts, r.Header.Get("Accept"))
		}
		intercept := f.intercept
		f.mu.Unlock()
		w = &countingWriter{ResponseWriter: w, f: f}

		if r.URL.Path == "/token" {
			f.token(w, r)
			return
		}
		if !f.authorised(r) {
			switch f.auth {
			case authBearer:
				ch := fmt.Sprintf(`Bearer realm="http://%s/token",service="fake"`, f.host)
				if repo, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/"); ok {
					ch += fmt.Sprintf(`,scope="repository:%s:pull"`, repo)
				}
				w.Header().Set("WWW-Authenticate", ch)
			case authBasic:
				w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if intercept != nil && intercept(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	})
}

func (f *fakeRegistry) authorised(r *http.Request) bool {
	switch f.auth {
	case authBearer:
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		defer f.mu.Unlock()
		return ok && f.tokens[tok]
	case authBasic:
		u, p, ok := r.BasicAuth()
		return ok && u == f.user && p == f.pass
	}
	return true
}

// token answers the anonymous token request of the Bearer flow.
func (f *fakeRegistry) token(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("service") != "fake" || !strings.HasSuffix(r.URL.Query().Get("scope"), ":pull") {
		http.Error(w, "bad token request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	tok := fmt.Sprintf("tok-%d", len(f.tokens)+1)
	f.tokens[tok] = true
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
}

// setIntercept installs a hook that sees authorised requests first; it
// returns true when it answered.
func (f *fakeRegistry) setIntercept(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intercept = h
}

// requests returns and clears the request log.
func (f *fakeRegistry) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

// bodyBytes returns and clears the count of response body bytes.
func (f *fakeRegistry) bodyBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.body
	f.body = 0
	return n
}

func (f *fakeRegistry) ref(repoTag string) string { return f.host + "/" + repoTag }

// push writes img (a v1.Image or v1.ImageIndex) as repo:tag.
func (f *fakeRegistry) push(t testing.TB, repoTag string, img any) {
	t.Helper()
	ref, err := name.ParseReference(f.admin + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	switch x := img.(type) {
	case v1.Image:
		err = remote.Write(ref, x)
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, x)
	default:
		t.Fatalf("push %T", img)
	}
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

type countingWriter struct {
	http.ResponseWriter
	f *fakeRegistry
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if err == nil {
		w.f.mu.Lock()
		w.f.body += int64(n)
		w.f.mu.Unlock()
	}
	return n, err
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// multiArch builds an index like `docker buildx --platform linux/amd64,linux/arm64
// --provenance` pushes: two platform images and an attestation manifest.
func multiArch(t testing.TB) (idx v1.ImageIndex, amd64, arm64 v1.Image) {
	t.Helper()
	amd64 = randomImage(t)
	arm64 = randomImage(t)
	return withAttestation(t, amd64, arm64), amd64, arm64
}

// withAttestation indexes amd64 and arm64 with a fresh attestation manifest,
// as a rebuild that produced identical images but new provenance would.
func withAttestation(t testing.TB, amd64, arm64 v1.Image) v1.ImageIndex {
	t.Helper()
	amdDigest, err := amd64.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: randomImage(t), Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{
				"vnd.docker.reference.type":   "attestation-manifest",
				"vnd.docker.reference.digest": amdDigest.String(),
			}}},
	)
}

func randomImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }
