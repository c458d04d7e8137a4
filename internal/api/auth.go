package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/httprate"
)

// Failed authentication is limited per client IP: after authFailureLimit
// failures within authFailureWindow the client is answered 429, even when
// it then presents the right token (otherwise the limit would not stop a
// guesser, who would learn of a hit from the first 200).
const (
	authFailureLimit  = 10
	authFailureWindow = time.Minute
)

// RequireBearer returns middleware that lets a request through only when
// it carries one of tokens as "Authorization: Bearer <token>" (the scheme
// in any case). Empty tokens are ignored; with none left every request is
// refused. realm names what is protected in the 401's challenge.
//
// A refused request is answered 401 {"error":"unauthorized"} and logged,
// without the token or which part was wrong. A client IP (an IPv6 client:
// its /64) that failed 10 times within a minute is answered 429 with
// Retry-After, before its token is looked at, until the minute has passed;
// successful requests are never counted. Tokens are compared as SHA-256
// digests, all of them, in constant time, so the time taken tells neither
// a token's length nor which one matched.
func RequireBearer(realm string, tokens [][]byte, logger *slog.Logger) func(http.Handler) http.Handler {
	return RequireBearerLimited(realm, tokens, NewFailedLogins(), logger)
}

// RequireBearerLimited is RequireBearer counting failures in failures, so
// that doors sharing one FailedLogins (the API and the status page's
// sign-in) give a guesser one budget between them, not one each.
func RequireBearerLimited(realm string, tokens [][]byte, failures *FailedLogins, logger *slog.Logger) func(http.Handler) http.Handler {
	var sums [][sha256.Size]byte
	for _, t := range tokens {
		if len(t) > 0 {
			sums = append(sums, sha256.Sum256(t))
		}
	}
	challenge := `Bearer realm="` + realm + `"`
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip := clientIP(r)
			if failures.l.blocked(ip) {
				w.Header().Set("Retry-After", failures.l.retryAfter())
				writeError(w, r, logger, errTooManyFailures, ErrorResponse{})
				return
			}
			token, ok := bearerToken(r.Header.Get("Authorization"))
			if ok && tokenMatches(token, sums) {
				next.ServeHTTP(w, r)
				return
			}
			logger.WarnContext(r.Context(), "authentication failed",
				"realm", realm, "client_ip", ip, "method", r.Method, "path", r.URL.Path)
			if failures.l.fail(w, r, ip) {
				w.Header().Set("Retry-After", failures.l.retryAfter())
				writeError(w, r, logger, errTooManyFailures, ErrorResponse{})
				return
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, r, logger, errUnauthorized, ErrorResponse{})
		})
	}
}

// FailedLogins counts failed authentications per client IP (an IPv6
// client: its /64): after 10 within a minute the client is refused, even
// with the right token, until the minute has passed. Successes are never
// counted. It is safe for concurrent use.
type FailedLogins struct {
	l *failureLimiter
}

// NewFailedLogins returns an empty count.
func NewFailedLogins() *FailedLogins {
	return &FailedLogins{l: newFailureLimiter(authFailureLimit, authFailureWindow)}
}

// Blocked reports whether r's client has used up its failures; retryAfter
// is the Retry-After value (seconds) to answer with.
func (f *FailedLogins) Blocked(r *http.Request) (retryAfter string, blocked bool) {
	return f.l.retryAfter(), f.l.blocked(clientIP(r))
}

// Fail counts a failure of r's client and reports whether the client has
// now used up its failures. It sets no header on w.
func (f *FailedLogins) Fail(w http.ResponseWriter, r *http.Request) (retryAfter string, blocked bool) {
	return f.l.retryAfter(), f.l.fail(w, r, clientIP(r))
}

// Disabled is middleware for hookd without an API token: it answers every
// request 404 {"error":"api disabled: no HOOKD_API_TOKEN configured"}, so
// that the API's paths say why they do not work, whatever the request
// carries.
func Disabled(http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, nil, errAPIDisabled, ErrorResponse{})
	})
}

// bearerToken extracts the token of an "Authorization: Bearer <token>" header.
func bearerToken(header string) ([]byte, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, false
	}
	return []byte(token), true
}

// tokenMatches reports whether token is one of the accepted tokens, given
// as SHA-256 digests. Comparing digests of equal length keeps the length of
// the real token out of the timing, and every accepted token is compared
// so the time does not say which one matched.
func tokenMatches(token []byte, accepted [][sha256.Size]byte) bool {
	got := sha256.Sum256(token)
	match := 0
	for _, want := range accepted {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

// clientIP is the key failed attempts are counted under: the TCP peer.
// IPv6 clients are counted per /64.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return httprate.CanonicalizeIP(host)
}

// failureLimiter counts failed authentications per client IP in a sliding
// window (httprate's counter). Successful requests are never counted.
type failureLimiter struct {
	rl     *httprate.RateLimiter
	limit  int
	window time.Duration
}

func newFailureLimiter(limit int, window time.Duration) *failureLimiter {
	return &failureLimiter{
		// No X-RateLimit-* headers: they would tell a guesser how many
		// tries are left.
		rl:     httprate.NewRateLimiter(limit, window, httprate.WithResponseHeaders(httprate.ResponseHeaders{})),
		limit:  limit,
		window: window,
	}
}

// blocked reports whether ip has used up its failures for now.
func (f *failureLimiter) blocked(ip string) bool {
	_, rate, err := f.rl.Status(ip)
	if err != nil {
		return false // the in-memory counter never fails
	}
	return int(math.Round(rate)) >= f.limit
}

// fail counts a failure for ip and reports whether the limit is reached.
func (f *failureLimiter) fail(w http.ResponseWriter, r *http.Request, ip string) bool {
	return f.rl.OnLimit(w, r, ip)
}

func (f *failureLimiter) retryAfter() string {
	return strconv.Itoa(int(f.window.Seconds()))
}
