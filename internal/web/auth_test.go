package web

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/and3rn3t/hookd/internal/api"
	"github.com/and3rn3t/hookd/internal/deploy"
)

func cookieNamed(h http.Header, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestSignIn: a wrong token is refused without a cookie; the right one
// starts a session whose cookie is HttpOnly, SameSite=Strict and expires,
// and goes back where the person was going. The token is never on a page.
func TestSignIn(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}})
	c := r.client(t)

	a := r.get(t, c, "/targets/web")
	if a.code != http.StatusOK || !strings.Contains(a.body, `name="token"`) || !strings.Contains(a.body, `name="next" value="targets/web"`) {
		t.Fatalf("GET /targets/web signed out = %d, want the sign-in form going back to targets/web:\n%s", a.code, a.body)
	}
	if strings.Contains(a.body, ">web<") {
		t.Errorf("the sign-in form shows the target:\n%s", a.body)
	}

	a = r.signIn(t, c, "wrong-token")
	if a.code != http.StatusUnauthorized || !strings.Contains(a.body, "not hookd") || cookieNamed(a.header, sessionCookie) != nil {
		t.Errorf("wrong token: %d, cookie %v, want 401 with a message and no cookie:\n%s", a.code, cookieNamed(a.header, sessionCookie), a.body)
	}

	a = r.post(t, c, "/login", url.Values{"token": {testToken}, "next": {"targets/web"}})
	if a.code != http.StatusSeeOther || a.header.Get("Location") != "./targets/web" {
		t.Fatalf("right token: %d Location %q, want 303 to ./targets/web", a.code, a.header.Get("Location"))
	}
	sc := cookieNamed(a.header, sessionCookie)
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Secure || sc.Path != "/" {
		t.Fatalf("session cookie = %+v, want HttpOnly, SameSite=Strict, not Secure over http, Path=/", sc)
	}
	if ttl := time.Until(sc.Expires); ttl < DefaultSessionTTL-time.Minute || ttl > DefaultSessionTTL+time.Minute {
		t.Errorf("session expires in %v, want about %v", ttl, DefaultSessionTTL)
	}
	if strings.Contains(sc.Value, testToken) {
		t.Errorf("session cookie %q contains the token", sc.Value)
	}

	for _, path := range []string{"/", "/targets/web", "/deliveries", "/login"} {
		a = r.get(t, c, path)
		if strings.Contains(a.body, testToken) {
			t.Errorf("GET %s renders the token", path)
		}
		if path != "/login" && (a.code != http.StatusOK || !strings.Contains(a.body, "Sign out")) {
			t.Errorf("GET %s signed in = %d, want the page with Sign out", path, a.code)
		}
	}

	// Signing out ends the session on this client.
	page := r.get(t, c, "/").body
	a = r.post(t, c, "/logout", url.Values{"csrf": {csrfOf(t, page)}})
	if a.code != http.StatusSeeOther || cookieNamed(a.header, sessionCookie) == nil || cookieNamed(a.header, sessionCookie).MaxAge >= 0 {
		t.Errorf("sign out: %d %v, want 303 clearing the cookie", a.code, a.header)
	}
	if a = r.get(t, c, "/"); !strings.Contains(a.body, `name="token"`) {
		t.Errorf("after signing out, GET / = %d, want the sign-in form", a.code)
	}
}

// TestSessionCookie: a cookie that expired, was altered, or was signed by a
// token hookd no longer has is no session.
func TestSessionCookie(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := New(Config{Tokens: [][]byte{[]byte("one-token"), []byte("two-token")}, Now: clock}, &deployer0{})
	if err != nil {
		t.Fatal(err)
	}
	_, value := s.newSession(1)
	if _, ok := s.verify(value); !ok {
		t.Fatal("a fresh session does not verify")
	}
	if sess, _ := s.verify(value); sess.key != 1 {
		t.Errorf("session key = %d, want 1", sess.key)
	}
	flipped := []byte(value)
	flipped[len(flipped)-3] ^= 1
	other, _ := New(Config{Tokens: [][]byte{[]byte("one-token")}, Now: clock}, &deployer0{})
	tests := []struct {
		name  string
		site  *Site
		value string
		at    time.Time
		want  bool
	}{
		{"fresh", s, value, now, true},
		{"a second before expiry", s, value, now.Add(DefaultSessionTTL - time.Second), true},
		{"expired", s, value, now.Add(DefaultSessionTTL), false},
		{"altered", s, string(flipped), now, false},
		{"truncated", s, value[:len(value)-4], now, false},
		{"too long", s, value + strings.Repeat("A", maxCookieLen), now, false},
		{"token removed", other, value, now, false},
		{"empty", s, "", now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.at
			tt.site.cfg.Now = func() time.Time { return at }
			if _, ok := tt.site.verify(tt.value); ok != tt.want {
				t.Errorf("verify = %v, want %v", ok, tt.want)
			}
		})
	}
}

// deployer0 is a Deployments with nothing, for tests that need no state.
type deployer0 struct{ Deployments }

func (*deployer0) Targets() []deploy.Target { return nil }

// TestSecureCookie: over TLS, or at public_url's https host, the cookies
// are Secure; over plain http at another name (the Pi's LAN address) they
// are not, or the browser would drop them.
func TestSecureCookie(t *testing.T) {
	s, err := New(Config{Tokens: [][]byte{[]byte(testToken)}, PublicURL: "https://pi.example.net/hookd"}, &deployer0{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		host string
		tls  bool
		want bool
	}{
		{"LAN over http", "192.168.1.20:8080", false, false},
		{"public host through a TLS proxy", "pi.example.net", false, true},
		{"TLS", "192.168.1.20:8443", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "http://"+tt.host+"/login", strings.NewReader("token="+testToken))
			req.Host = tt.host
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			if tt.tls {
				req.TLS = &tls.ConnectionState{}
			}
			rec := httptest.NewRecorder()
			s.Guard(s.SignIn()).ServeHTTP(rec, req)
			for _, name := range []string{sessionCookie, hintCookie} {
				c := cookieNamed(rec.Header(), name)
				if c == nil || c.Secure != tt.want {
					t.Errorf("%s cookie = %+v, want Secure=%v", name, c, tt.want)
				}
			}
		})
	}
}

// TestCSRF: an action needs the session's CSRF token and must come from
// hookd's own page; a refused one changes nothing.
func TestCSRF(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}})
	c := r.signedIn(t)
	page := r.get(t, c, "/targets/web").body
	token := csrfOf(t, page)
	other := r.signedIn(t) // another session: another token
	otherToken := csrfOf(t, r.get(t, other, "/").body)
	if token == otherToken {
		t.Fatal("two sessions share a CSRF token")
	}
	wrong := "x" + token[1:]
	if token[0] == 'x' {
		wrong = "y" + token[1:]
	}
	tests := []struct {
		name   string
		form   url.Values
		header map[string]string
		want   int
	}{
		{"no token", url.Values{}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"csrf": {wrong}}, nil, http.StatusForbidden},
		{"another session's token", url.Values{"csrf": {otherToken}}, nil, http.StatusForbidden},
		{"right token from another site", url.Values{"csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"right token, foreign Origin, no fetch metadata", url.Values{"csrf": {token}},
			map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.example"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := r.do(t, c, http.MethodPost, "/targets/web/deploy", tt.form, tt.header)
			if a.code != tt.want || !strings.Contains(a.body, "nothing was done") && !strings.Contains(a.body, "refused") {
				t.Errorf("POST deploy = %d, want %d with a page saying it was refused:\n%s", a.code, tt.want, a.body)
			}
		})
	}
	jobs, err := r.dep.Jobs(t.Context(), deploy.JobFilter{})
	if err != nil || len(jobs) != 0 {
		t.Fatalf("after refused forms: jobs %v, %v; want none", jobs, err)
	}
	a := r.post(t, c, "/targets/web/deploy", url.Values{"csrf": {token}})
	if a.code != http.StatusSeeOther || !strings.HasPrefix(a.header.Get("Location"), "../../jobs/") {
		t.Fatalf("POST deploy with the token = %d Location %q, want 303 to ../../jobs/ID", a.code, a.header.Get("Location"))
	}
	// Signed out, a form is refused too.
	a = r.post(t, r.client(t), "/targets/web/deploy", url.Values{"csrf": {token}})
	if a.code != http.StatusUnauthorized {
		t.Errorf("POST deploy signed out = %d, want 401", a.code)
	}
}

// TestSignInLimit: after 10 wrong tokens a client is refused for a minute
// (the 11th attempt is answered 429),
// even with the right one, and so is its API bearer token when the API
// shares the count (as hookd wires it): one budget for a guesser.
func TestSignInLimit(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}})
	c := r.client(t)
	for i := range 11 {
		a := r.signIn(t, c, "guess")
		want := http.StatusUnauthorized
		if i == 10 {
			want = http.StatusTooManyRequests
		}
		if a.code != want {
			t.Fatalf("wrong token #%d = %d, want %d", i+1, a.code, want)
		}
	}
	a := r.signIn(t, c, testToken)
	if a.code != http.StatusTooManyRequests || a.header.Get("Retry-After") != "60" || cookieNamed(a.header, sessionCookie) != nil {
		t.Errorf("right token after 10 wrong = %d Retry-After %q, want 429 after 60 s without a session", a.code, a.header.Get("Retry-After"))
	}
	guarded := api.RequireBearerLimited("hookd", [][]byte{[]byte(testToken)}, r.failed, slog.New(slog.DiscardHandler))(
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	req := httptest.NewRequest(http.MethodGet, "/api/v1/targets", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	guarded.ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("API with the right token after 10 wrong sign-ins = %d, want 429", rec.Code)
	}
}

// TestOff: without an API token every page says the status page is off.
func TestOff(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}, noToken: true})
	c := r.client(t)
	for _, p := range []struct{ method, path string }{
		{http.MethodGet, "/"}, {http.MethodGet, "/login"}, {http.MethodPost, "/login"},
		{http.MethodGet, "/targets/web"}, {http.MethodGet, "/events"},
	} {
		a := r.do(t, c, p.method, p.path, url.Values{"token": {""}}, nil)
		if a.code != http.StatusNotFound || !strings.Contains(a.body, "status page is off") || !strings.Contains(a.body, "HOOKD_API_TOKEN") {
			t.Errorf("%s %s without a token = %d, want 404 saying the page is off:\n%s", p.method, p.path, a.code, a.body)
		}
	}
	// The page saying so is styled: its stylesheet is served.
	css := regexp.MustCompile(`href="\./(assets/[^"]+)"`).FindStringSubmatch(r.get(t, c, "/").body)
	if css == nil || r.get(t, c, "/"+css[1]).code != http.StatusOK {
		t.Errorf("the off page's stylesheet %v is not served", css)
	}
}

// TestLinkFromAnotherSite: a signed-in person following a link from
// another site (a notification) arrives without the Strict session cookie;
// hookd answers with a page that reloads itself from its own origin
// (which sends it) instead of asking them to sign in again.
func TestLinkFromAnotherSite(t *testing.T) {
	r := newRig(t, rigOptions{targets: []deploy.Target{testTarget("web")}})
	signed := r.signedIn(t)
	u, _ := url.Parse(r.srv.URL)
	var hint *http.Cookie
	for _, c := range signed.Jar.Cookies(u) {
		if c.Name == hintCookie {
			hint = c
		}
	}
	if hint == nil {
		t.Fatal("no hint cookie after signing in")
	}
	fresh := r.client(t)
	fresh.Jar.SetCookies(u, []*http.Cookie{hint}) // what a cross-site navigation sends
	a := r.do(t, fresh, http.MethodGet, "/targets/web", nil, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if a.code != http.StatusOK || !strings.Contains(a.body, `http-equiv="refresh"`) || strings.Contains(a.body, `name="token"`) {
		t.Errorf("cross-site link with the hint = %d, want the self-reloading page:\n%s", a.code, a.body)
	}
	// The reload is same-origin: without a session it is the sign-in
	// form, never another reload.
	a = r.do(t, fresh, http.MethodGet, "/targets/web", nil, nil)
	if !strings.Contains(a.body, `name="token"`) {
		t.Errorf("same-origin reload without a session = %d, want the sign-in form", a.code)
	}
}

// TestNextStaysOnSite: the sign-in form only ever goes on to a page of
// hookd's own.
func TestNextStaysOnSite(t *testing.T) {
	s := &Site{}
	for _, tt := range []struct{ next, want string }{
		{"", ""},
		{"targets/web", "targets/web"},
		{"jobs/0123?x=1", "jobs/0123?x=1"},
		{"deliveries", "deliveries"},
		{"/evil.example", ""},
		{"//evil.example/x", ""},
		{"https://evil.example", ""},
		{"javascript:alert(1)", ""},
		{"\\\\evil.example", ""},
		{"targets/../../x", ""},
		{"login", ""},
		{"targets/web\r\nSet-Cookie: x=1", ""},
	} {
		if got := s.cleanNext(tt.next); got != tt.want {
			t.Errorf("cleanNext(%q) = %q, want %q", tt.next, got, tt.want)
		}
	}
}
