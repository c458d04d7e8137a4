package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/httprate"
)

// authenticate lets a request through only with one of the configured
// bearer tokens. A client that failed too often recently is refused before
// its token is even looked at.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := clientIP(r)
		if s.failures.blocked(ip) {
			w.Header().Set("Retry-After", s.failures.retryAfter())
			s.writeError(w, r, errTooManyFailures, ErrorResponse{})
			return
		}
		token, ok := bearerToken(r.Header.Get("Authorization"))
		if ok && tokenMatches(token, s.tokens) {
			next.ServeHTTP(w, r)
			return
		}
		// Which part was wrong (scheme, token, header missing) stays in
		// neither the answer nor the log.
		s.logger.WarnContext(r.Context(), "api authentication failed",
			"client_ip", ip, "method", r.Method, "path", r.URL.Path)
		if s.failures.fail(w, r, ip) {
			w.Header().Set("Retry-After", s.failures.retryAfter())
			s.writeError(w, r, errTooManyFailures, ErrorResponse{})
			return
		}
		s.writeError(w, r, errUnauthorized, ErrorResponse{})
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
