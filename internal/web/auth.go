package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strings"
	"time"
)

// Cookies. The session cookie is SameSite=Strict, so a browser does not
// send it on a navigation that starts on another site (a link in a
// notification or on GitHub). The hint cookie, Lax and worthless on its
// own, says a session may exist: such a navigation is then answered with a
// reload from hookd's own page, which does carry the session (see
// RequireSession).
const (
	sessionCookie = "hookd_session"
	hintCookie    = "hookd_signed_in"
)

// A session cookie is base64url(expiry(8) | nonce(16) | mac(32)), the MAC
// an HMAC-SHA256 under a key derived from the token the person signed in
// with. It holds nothing secret and nothing to look up: a restart keeps
// sessions, and removing a token from the configuration ends its sessions.
const (
	nonceLen      = 16
	sessionLen    = 8 + nonceLen + sha256.Size
	maxCookieLen  = 128 // longer values are not looked at
	csrfField     = "csrf"
	sessionDomain = "hookd status page session v1"
)

type sessionKey [sha256.Size]byte

// deriveKey returns the session key of an API token. The token itself is
// never kept by the site.
func deriveKey(token []byte) sessionKey {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(sessionDomain))
	var k sessionKey
	copy(k[:], m.Sum(nil))
	return k
}

// session is a verified session cookie.
type session struct {
	key     int // index into Site.keys
	nonce   [nonceLen]byte
	expires time.Time
}

func (k *sessionKey) mac(purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(purpose))
	m.Write(data)
	return m.Sum(nil)
}

// newSession returns a session under key i and its cookie value.
func (s *Site) newSession(i int) (session, string) {
	sess := session{key: i, expires: s.cfg.Now().Add(s.cfg.SessionTTL).Truncate(time.Second)}
	_, _ = rand.Read(sess.nonce[:])
	payload := binary.BigEndian.AppendUint64(make([]byte, 0, sessionLen), uint64(sess.expires.Unix()))
	payload = append(payload, sess.nonce[:]...)
	payload = append(payload, s.keys[i].mac("session", payload)...)
	return sess, base64.RawURLEncoding.EncodeToString(payload)
}

// verify returns the session of a cookie value. The MAC is checked under
// every key, each in constant time, so the time taken tells nothing about
// which token signed it.
func (s *Site) verify(value string) (session, bool) {
	if len(value) > maxCookieLen {
		return session{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) != sessionLen {
		return session{}, false
	}
	payload, mac := raw[:8+nonceLen], raw[8+nonceLen:]
	found := -1
	for i := range s.keys {
		if subtle.ConstantTimeCompare(s.keys[i].mac("session", payload), mac) == 1 {
			found = i
		}
	}
	if found < 0 {
		return session{}, false
	}
	sess := session{key: found, expires: time.Unix(int64(binary.BigEndian.Uint64(payload[:8])), 0)}
	copy(sess.nonce[:], payload[8:])
	if !s.cfg.Now().Before(sess.expires) {
		return session{}, false
	}
	return sess, true
}

// csrf is the session's CSRF token: a MAC of its nonce, so it needs no
// storage and changes with every sign-in.
func (s *Site) csrf(sess session) string {
	return base64.RawURLEncoding.EncodeToString(s.keys[sess.key].mac("csrf", sess.nonce[:])[:24])
}

// checkCSRF reports whether the form's CSRF token is the session's.
func (s *Site) checkCSRF(sess session, r *http.Request) bool {
	got := r.PostFormValue(csrfField)
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf(sess))) == 1
}

// matchToken returns the index of the key whose token is token, or -1.
// Every token is compared, as a derived key of fixed length, in constant
// time: the time taken tells neither a token's length nor which matched.
func (s *Site) matchToken(token []byte) int {
	got := deriveKey(token)
	found := -1
	for i := range s.keys {
		if subtle.ConstantTimeCompare(got[:], s.keys[i][:]) == 1 {
			found = i
		}
	}
	return found
}

type ctxKey struct{}

func sessionFrom(ctx context.Context) (session, bool) {
	sess, ok := ctx.Value(ctxKey{}).(session)
	return sess, ok
}

// currentSession returns the request's valid session, if any.
func (s *Site) currentSession(r *http.Request) (session, bool) {
	if sess, ok := sessionFrom(r.Context()); ok {
		return sess, true
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	return s.verify(c.Value)
}

// setCookies starts a session on w.
func (s *Site) setCookies(w http.ResponseWriter, r *http.Request, value string, expires time.Time) {
	secure := s.isSecure(r)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/", Expires: expires,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode,
	})
	http.SetCookie(w, &http.Cookie{
		Name: hintCookie, Value: "1", Path: "/", Expires: expires,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
	})
}

// clearCookies ends the session on w.
func (s *Site) clearCookies(w http.ResponseWriter, r *http.Request) {
	secure := s.isSecure(r)
	for _, c := range []struct {
		name string
		mode http.SameSite
	}{{sessionCookie, http.SameSiteStrictMode}, {hintCookie, http.SameSiteLaxMode}} {
		http.SetCookie(w, &http.Cookie{
			Name: c.name, Value: "", Path: "/", MaxAge: -1,
			HttpOnly: true, Secure: secure, SameSite: c.mode,
		})
	}
}

// isSecure applies secureRule to r.
func (s *Site) isSecure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.secure.httpsHost != "" && strings.EqualFold(r.Host, s.secure.httpsHost)
}

// Guard is the middleware of every page: without an API token it answers
// every request with a page saying the status page is off; otherwise it
// refuses cross-origin POSTs (net/http's CrossOriginProtection, with
// public_url as a trusted origin) and sets the pages' security headers.
func (s *Site) Guard(next http.Handler) http.Handler {
	if !s.On() {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/assets/") {
				next.ServeHTTP(w, r) // public, and the "off" page's stylesheet
				return
			}
			s.render(w, r, http.StatusNotFound, pageOff, offView{page: s.page(r, "Status page off")})
		})
	}
	cop := http.NewCrossOriginProtection()
	if s.secure.origin != "" {
		// Only fails for a malformed origin, which newSecureRule refused.
		_ = cop.AddTrustedOrigin(s.secure.origin)
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.WarnContext(r.Context(), "cross-origin form refused", "method", r.Method, "path", r.URL.Path)
		s.refuse(w, r, http.StatusForbidden, "This form did not come from hookd's own page, so it was refused. Open the page and try again.")
	}))
	return cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	}))
}

// RequireSession lets a request through only with a valid session; its
// POSTs must also carry the session's CSRF token. Without a session a GET
// is shown the sign-in form (with a way back to where it was going), any
// other request is refused 401.
//
// A navigation from another site (Sec-Fetch-Site: cross-site) arrives
// without the Strict session cookie even when the person is signed in;
// when the Lax hint cookie says they may be, it is answered with a page
// that reloads itself from hookd's own origin, which does carry the
// session. The reload is same-origin, so it cannot loop.
func (s *Site) RequireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.currentSession(r)
		if !ok {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				s.refuse(w, r, http.StatusUnauthorized, "Your session has ended. Sign in again, then repeat what you did.")
				return
			}
			if _, err := r.Cookie(hintCookie); err == nil && r.Header.Get("Sec-Fetch-Site") == "cross-site" {
				s.render(w, r, http.StatusOK, pageReload, reloadView{page: s.page(r, "hookd")})
				return
			}
			s.signInPage(w, r, http.StatusOK, returnPath(r), "")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if !s.checkCSRF(sess, r) {
				s.log.WarnContext(r.Context(), "csrf token refused", "path", r.URL.Path)
				s.refuse(w, r, http.StatusForbidden, "This form has expired or did not come from hookd's page, so nothing was done. Reload the page and try again.")
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess)))
	})
}

// maxFormBytes caps a form's body: the forms have two short fields.
const maxFormBytes = 4 << 10

// SignInForm returns the handler of GET /login.
func (s *Site) SignInForm() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.currentSession(r); ok {
			s.redirect(w, r, s.cleanNext(r.URL.Query().Get("next")))
			return
		}
		s.signInPage(w, r, http.StatusOK, r.URL.Query().Get("next"), "")
	})
}

// SignIn returns the handler of POST /login: the token is checked against
// the API tokens; a client that failed too often is refused before its
// token is looked at. Success starts a session and goes on to "next".
func (s *Site) SignIn() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		next := r.PostFormValue("next")
		if retry, blocked := s.failures.Blocked(r); blocked {
			w.Header().Set("Retry-After", retry)
			s.signInPage(w, r, http.StatusTooManyRequests, next, "Too many wrong tokens from this address. Wait a minute, then try again.")
			return
		}
		i := s.matchToken([]byte(strings.TrimSpace(r.PostFormValue("token"))))
		if i < 0 {
			s.log.WarnContext(r.Context(), "sign-in failed", "client", r.RemoteAddr)
			if retry, blocked := s.failures.Fail(w, r); blocked {
				w.Header().Set("Retry-After", retry)
				s.signInPage(w, r, http.StatusTooManyRequests, next, "Too many wrong tokens from this address. Wait a minute, then try again.")
				return
			}
			s.signInPage(w, r, http.StatusUnauthorized, next, "That is not hookd's API token.")
			return
		}
		sess, value := s.newSession(i)
		s.setCookies(w, r, value, sess.expires)
		s.log.InfoContext(r.Context(), "signed in", "client", r.RemoteAddr)
		s.redirect(w, r, s.cleanNext(next))
	})
}

// SignOut returns the handler of POST /logout (behind RequireSession).
func (s *Site) SignOut() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.clearCookies(w, r)
		s.redirect(w, r, "login")
	})
}

// returnPath is where a GET was going, relative to the site's root
// ("targets/web"), for the sign-in form to go back to.
func returnPath(r *http.Request) string {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if r.URL.RawQuery != "" {
		p += "?" + r.URL.RawQuery
	}
	return p
}

// cleanNext returns next when it is a path below the site's root, and ""
// (the overview) otherwise: the sign-in form never sends anyone elsewhere.
func (s *Site) cleanNext(next string) string {
	if next == "" || len(next) > 512 || strings.ContainsAny(next, "\\\r\n\t") ||
		strings.HasPrefix(next, "/") || strings.Contains(next, "..") || strings.Contains(next, "//") {
		return ""
	}
	if i := strings.IndexAny(next, ":"); i >= 0 && (strings.IndexAny(next, "/?#") < 0 || i < strings.IndexAny(next, "/?#")) {
		return "" // a scheme
	}
	if next == "login" || strings.HasPrefix(next, "login?") {
		return ""
	}
	return next
}
