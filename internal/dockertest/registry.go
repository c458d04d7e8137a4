package dockertest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// Registry is an in-process OCI registry (go-containerregistry's) served
// over plain HTTP on 127.0.0.1, which the Docker engine pulls from without
// TLS. It records every request and can be made to fail or go down.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of image references.
	Host string

	t       testing.TB
	label   string
	inner   http.Handler
	opts    registryOptions
	rigAuth authn.Authenticator // what the rig itself pushes with
	rigUser string
	rigPass string

	mu         sync.Mutex
	records    []RequestRecord
	failStatus int
	retryAfter string
	tokens     map[string]grant // bearer and refresh tokens
	srv        *http.Server
	served     chan struct{} // closed when srv.Serve returned
}

// RequestRecord is one request the registry answered.
type RequestRecord struct {
	Method   string
	Path     string
	Query    string
	Status   int
	BytesOut int64
	// Auth is the scheme of the Authorization header: "", "basic" or "bearer".
	Auth string
	Time time.Time
}

type registryOptions struct {
	bearer     bool
	user, pass string
	referrers  bool
}

// RegistryOption configures NewRegistry.
type RegistryOption func(*registryOptions)

// WithBearerAuth makes the registry authenticate like GHCR: /v2/ answers
// 401 with a Bearer challenge pointing at http://HOST/token, which hands out
// tokens that later requests must carry. With user == "" anyone gets a
// pull-only token (a public package); otherwise /token requires Basic auth
// with user and pass, and grants pull and push. The rig's own pushes use
// separate credentials and never need user and pass.
func WithBearerAuth(user, pass string) RegistryOption {
	return func(o *registryOptions) {
		o.bearer = true
		o.user, o.pass = user, pass
	}
}

// WithReferrersAPI makes the registry answer the OCI 1.1 referrers API
// (/v2/<repo>/referrers/<digest>). Without it, like GHCR, it has none and
// referrers are listed in the sha256-<hex> tag index.
func WithReferrersAPI() RegistryOption {
	return func(o *registryOptions) { o.referrers = true }
}

type grant struct {
	push    bool
	refresh bool // a refresh token, not usable as a bearer token
}

// NewRegistry starts a registry on 127.0.0.1:<free port>; a cleanup stops it.
func NewRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	r := &Registry{
		t:      t,
		label:  LabelValue(t),
		tokens: map[string]grant{},
	}
	for _, o := range opts {
		o(&r.opts)
	}
	r.inner = ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(r.opts.referrers))
	rigUser, rigPass := "hookd-rig-"+randomHex(4), randomHex(16)
	r.rigAuth = authn.Anonymous
	if r.opts.bearer {
		r.rigAuth = &authn.Basic{Username: rigUser, Password: rigPass}
	}
	r.rigUser, r.rigPass = rigUser, rigPass

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("registry listen: %v", err)
	}
	r.Host = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.Down)
	return r
}

func (r *Registry) serve(ln net.Listener) {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	r.mu.Lock()
	r.srv, r.served = srv, served
	r.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // returns http.ErrServerClosed on Down
	}()
}

// Down closes the listener and every open connection: from now on the
// registry refuses connections, like a registry that is down. Up brings it
// back on the same address with the same content.
func (r *Registry) Down() {
	r.mu.Lock()
	srv, served := r.srv, r.served
	r.srv, r.served = nil, nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-served
}

// Up serves again on Host after Down. It fails the test when the port was
// taken in the meantime.
func (r *Registry) Up() {
	r.t.Helper()
	r.mu.Lock()
	up := r.srv != nil
	r.mu.Unlock()
	if up {
		return
	}
	ln, err := net.Listen("tcp", r.Host)
	if err != nil {
		r.t.Fatalf("registry up again on %s: %v", r.Host, err)
	}
	r.serve(ln)
}

// RegistryAuth returns the X-Registry-Auth value (base64url JSON) with
// which the Docker engine authenticates to this registry as user.
func (r *Registry) RegistryAuth(user, pass string) string {
	s, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: user, Password: pass, ServerAddress: r.Host})
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	return s
}

// Ref returns the reference "127.0.0.1:PORT/repo:tag".
func (r *Registry) Ref(repo, tag string) string {
	return r.Host + "/" + repo + ":" + tag
}

// Requests returns a copy of every request seen since start or the last
// ResetRequests, oldest first. The rig's own pushes are included.
func (r *Registry) Requests() []RequestRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RequestRecord(nil), r.records...)
}

// ResetRequests forgets the recorded requests.
func (r *Registry) ResetRequests() {
	r.mu.Lock()
	r.records = nil
	r.mu.Unlock()
}

// Fail makes every following request (token requests included) answer
// status, with a Retry-After header when retryAfter is not empty, until
// Fail(0, "").
func (r *Registry) Fail(status int, retryAfter string) {
	r.mu.Lock()
	r.failStatus, r.retryAfter = status, retryAfter
	r.mu.Unlock()
}

// ServeHTTP records the request and answers it: injected failure, token
// endpoint, authentication, then the registry proper.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rw := &recordingWriter{ResponseWriter: w}
	defer func() {
		status := rw.status
		if status == 0 {
			status = http.StatusOK
		}
		rec := RequestRecord{
			Method:   req.Method,
			Path:     req.URL.Path,
			Query:    req.URL.RawQuery,
			Status:   status,
			BytesOut: rw.n,
			Auth:     authScheme(req),
			Time:     time.Now(),
		}
		r.mu.Lock()
		r.records = append(r.records, rec)
		r.mu.Unlock()
	}()

	r.mu.Lock()
	failStatus, retryAfter := r.failStatus, r.retryAfter
	r.mu.Unlock()
	if failStatus != 0 {
		if retryAfter != "" {
			rw.Header().Set("Retry-After", retryAfter)
		}
		code := "UNAVAILABLE"
		if failStatus == http.StatusTooManyRequests {
			code = "TOOMANYREQUESTS"
		}
		writeRegistryError(rw, failStatus, code, http.StatusText(failStatus))
		return
	}

	if r.opts.bearer {
		if req.URL.Path == "/token" {
			r.serveToken(rw, req)
			return
		}
		if !r.authorized(req) {
			r.challenge(rw, req)
			return
		}
	}
	r.inner.ServeHTTP(rw, req)
}

func authScheme(req *http.Request) string {
	scheme, _, _ := strings.Cut(req.Header.Get("Authorization"), " ")
	return strings.ToLower(scheme)
}

func (r *Registry) authorized(req *http.Request) bool {
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	r.mu.Lock()
	g, ok := r.tokens[tok]
	r.mu.Unlock()
	if !ok || g.refresh {
		return false
	}
	return g.push || req.Method == http.MethodGet || req.Method == http.MethodHead
}

func (r *Registry) challenge(w http.ResponseWriter, req *http.Request) {
	v := fmt.Sprintf(`Bearer realm="http://%s/token",service="%s"`, r.Host, r.Host)
	if repo := repoOf(req.URL.Path); repo != "" {
		actions := "pull"
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			actions = "pull,push"
		}
		v += fmt.Sprintf(`,scope="repository:%s:%s"`, repo, actions)
	}
	w.Header().Set("WWW-Authenticate", v)
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

// repoOf returns the repository named by a /v2/<repo>/{manifests,blobs,tags,referrers}/… path.
func repoOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	best := -1
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, kind); i > best {
			best = i
		}
	}
	if best <= 0 {
		return ""
	}
	return rest[:best]
}

// serveToken implements the token endpoint of the Docker token spec: GET
// with optional Basic auth, or the OAuth2 POST form (password or
// refresh_token grant).
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	var (
		user, pass string
		hasCreds   bool
		refresh    string
		offline    bool
	)
	switch req.Method {
	case http.MethodGet:
		user, pass, hasCreds = req.BasicAuth()
		offline = req.URL.Query().Get("offline_token") == "true"
	case http.MethodPost:
		req.Body = http.MaxBytesReader(w, req.Body, 64<<10)
		if err := req.ParseForm(); err != nil {
			writeRegistryError(w, http.StatusBadRequest, "UNSUPPORTED", "bad token request")
			return
		}
		switch req.PostForm.Get("grant_type") {
		case "password":
			user, pass, hasCreds = req.PostForm.Get("username"), req.PostForm.Get("password"), true
			offline = req.PostForm.Get("access_type") == "offline"
		case "refresh_token":
			refresh = req.PostForm.Get("refresh_token")
		default:
			writeRegistryError(w, http.StatusBadRequest, "UNSUPPORTED", "unsupported grant_type")
			return
		}
	default:
		writeRegistryError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed")
		return
	}

	var g grant
	switch {
	case refresh != "":
		r.mu.Lock()
		rg, ok := r.tokens[refresh]
		r.mu.Unlock()
		if !ok || !rg.refresh {
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid refresh token")
			return
		}
		g = grant{push: rg.push}
	case hasCreds:
		if !r.validCreds(user, pass) {
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid username or password")
			return
		}
		g = grant{push: true}
	case r.opts.user == "":
		g = grant{} // anonymous: pull only
	default:
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Basic realm="%s"`, r.Host))
		writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}

	tok := randomHex(24)
	resp := map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   300,
		"issued_at":    time.Now().UTC().Format(time.RFC3339),
	}
	r.mu.Lock()
	r.tokens[tok] = g
	if offline || refresh != "" {
		rt := randomHex(24)
		r.tokens[rt] = grant{push: g.push, refresh: true}
		resp["refresh_token"] = rt
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (r *Registry) validCreds(user, pass string) bool {
	if eq(user, r.rigUser) && eq(pass, r.rigPass) {
		return true
	}
	return r.opts.user != "" && eq(user, r.opts.user) && eq(pass, r.opts.pass)
}

func eq(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg}},
	})
}

type recordingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *recordingWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
