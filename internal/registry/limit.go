package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/and3rn3t/hookd/internal/backoff"
	"github.com/and3rn3t/hookd/internal/metrics"
)

const (
	// maxRetryAfter caps a registry's Retry-After, so a bogus header cannot
	// silence polling for good.
	maxRetryAfter = 24 * time.Hour
	// defaultWindow is assumed when a registry reports a low remaining count
	// but neither a reset time nor a window.
	defaultWindow = time.Hour
)

// Errors a look-up wraps when it was not sent, or failed, because of the
// registry's limits. Both come inside a *WaitError that says until when.
var (
	// ErrRateLimited: the registry asked us to wait (429, Retry-After) or its
	// rate-limit headers say the remaining budget must be spread out.
	ErrRateLimited = errors.New("rate limited")
	// ErrBackoff: the registry failed (transport error, 5xx) and hookd backs
	// off exponentially before asking it again.
	ErrBackoff = errors.New("backing off after errors")
)

// WaitError says that no request goes to Registry before Until.
type WaitError struct {
	Registry string
	Until    time.Time
	// Err is ErrRateLimited or ErrBackoff.
	Err error
	// Cause is the failure that started the wait; nil when the look-up was
	// refused without sending anything.
	Cause error
}

func (e *WaitError) Error() string {
	msg := fmt.Sprintf("registry %s: %v, retry after %s", e.Registry, e.Err, e.Until.UTC().Format(time.RFC3339))
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap returns the sentinel and the cause.
func (e *WaitError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

// hostState is what hookd knows about one registry host.
type hostState struct {
	failures int       // consecutive host-level failures
	until    time.Time // no request at all before this
	reason   error     // ErrRateLimited or ErrBackoff, for until
	// Pacing while the rate-limit budget is low: one look-up per interval
	// until resetAt.
	interval time.Duration
	next     time.Time
	resetAt  time.Time
	noHead   bool // the registry refuses HEAD on manifests
}

// limiter is an http.RoundTripper that every registry request goes through
// (token requests too): it counts them, reads Retry-After and rate-limit
// headers, and refuses to send while a host is blocked. State is per host,
// so one failing registry does not delay the others.
type limiter struct {
	inner   http.RoundTripper
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	// backoff is the wait after host-level failures (transport errors,
	// 429, 5xx), or the registry's Retry-After.
	backoff backoff.Policy

	mu    sync.Mutex
	hosts map[string]*hostState
}

func (l *limiter) state(host string) *hostState {
	st := l.hosts[host]
	if st == nil {
		st = &hostState{}
		l.hosts[host] = st
	}
	return st
}

// RoundTrip implements http.RoundTripper.
func (l *limiter) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	l.mu.Lock()
	now := l.now()
	if st := l.hosts[host]; st != nil && now.Before(st.until) {
		err := &WaitError{Registry: host, Until: st.until, Err: st.reason}
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()

	resp, err := l.inner.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	l.metrics.RegistryRequests.WithLabelValues(host, req.Method, code).Inc()
	if err != nil {
		// Whether a transport error is the host's fault is decided per
		// look-up (see fail): the https half of a loopback ping fails by
		// design.
		return nil, err
	}
	l.observe(host, resp)
	return resp, nil
}

// observe updates host's state from a response.
func (l *limiter) observe(host string, resp *http.Response) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := l.state(host)
	code := resp.StatusCode
	switch {
	case code == http.StatusTooManyRequests || code >= 500:
		st.failures++
		st.reason = ErrBackoff
		if code == http.StatusTooManyRequests {
			st.reason = ErrRateLimited
		}
		wait, _ := retryAfter(resp.Header, now)
		st.until = now.Add(l.backoff.Delay(st.failures, wait))
		l.log.Info("registry backoff", "registry", host, "status", code, "failures", st.failures,
			"retry_after_seconds", st.until.Sub(now).Seconds())
	case code < 400:
		st.failures = 0
	}
	l.observeRateLimit(host, st, resp.Header, now)
}

// observeRateLimit reads Docker Hub's and GHCR's rate-limit headers and,
// when the remaining budget is low, spreads it until the reset instead of
// spending it and then hitting 429.
func (l *limiter) observeRateLimit(host string, st *hostState, h http.Header, now time.Time) {
	rl, ok := parseRateLimit(h, now)
	if !ok {
		return
	}
	low := rl.remaining < 5 || (rl.limit > 0 && rl.remaining*10 < rl.limit)
	if !low {
		st.interval = 0
		return
	}
	st.resetAt = now.Add(rl.reset)
	if rl.remaining <= 0 {
		st.until, st.reason = st.resetAt, ErrRateLimited
		l.log.Info("registry rate limit exhausted", "registry", host,
			"retry_after_seconds", rl.reset.Seconds())
		return
	}
	interval := rl.reset / time.Duration(rl.remaining)
	if st.interval == 0 {
		l.log.Info("registry rate limit low, slowing down", "registry", host,
			"remaining", rl.remaining, "limit", rl.limit, "interval_seconds", interval.Seconds())
	}
	st.interval = interval
	st.next = now.Add(interval)
}

// admit is called once per look-up before anything is sent. It refuses a
// look-up while host is blocked or paced.
func (l *limiter) admit(host string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := l.hosts[host]
	if st == nil {
		return nil
	}
	if now.Before(st.until) {
		return &WaitError{Registry: host, Until: st.until, Err: st.reason}
	}
	if st.interval > 0 {
		if !now.Before(st.resetAt) {
			st.interval = 0
		} else if now.Before(st.next) {
			return &WaitError{Registry: host, Until: st.next, Err: ErrRateLimited}
		} else {
			st.next = now.Add(st.interval)
		}
	}
	return nil
}

// fail records a host-level failure that no response told us about (a
// transport error) and returns the wait it caused.
func (l *limiter) fail(host string, cause error) *WaitError {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := l.state(host)
	st.failures++
	st.until, st.reason = now.Add(l.backoff.Delay(st.failures, 0)), ErrBackoff
	l.log.Info("registry backoff", "registry", host, "failures", st.failures,
		"retry_after_seconds", st.until.Sub(now).Seconds(), "err", cause)
	return &WaitError{Registry: host, Until: st.until, Err: st.reason, Cause: cause}
}

// blocked returns the wait host is under, if any; it is used to explain a
// failed look-up whose response started a wait.
func (l *limiter) blocked(host string) (*WaitError, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.hosts[host]
	if st == nil || !l.now().Before(st.until) {
		return nil, false
	}
	return &WaitError{Registry: host, Until: st.until, Err: st.reason}, true
}

func (l *limiter) headRefused(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.hosts[host]
	return st != nil && st.noHead
}

func (l *limiter) setHeadRefused(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state(host).noHead = true
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		d = time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), maxRetryAfter), true
}

// rateLimit is a registry's report of its request budget.
type rateLimit struct {
	limit     int           // 0 when unknown
	remaining int           // requests left in the window
	reset     time.Duration // until the budget is refilled
}

// parseRateLimit reads Docker Hub's "RateLimit-Remaining: 76;w=21600" (and
// RateLimit-Limit), GitHub's x-ratelimit-remaining / x-ratelimit-limit /
// x-ratelimit-reset (Unix seconds), and the IETF draft's RateLimit-Reset
// (delta seconds).
func parseRateLimit(h http.Header, now time.Time) (rateLimit, bool) {
	var rl rateLimit
	var window time.Duration
	rem, w, ok := parseQuota(h.Get("RateLimit-Remaining"))
	if !ok {
		rem, w, ok = parseQuota(h.Get("X-RateLimit-Remaining"))
	}
	if !ok {
		return rl, false
	}
	rl.remaining, window = rem, w
	if lim, w, ok := parseQuota(h.Get("RateLimit-Limit")); ok {
		rl.limit = lim
		window = max(window, w)
	} else if lim, _, ok := parseQuota(h.Get("X-RateLimit-Limit")); ok {
		rl.limit = lim
	}
	switch {
	case h.Get("X-RateLimit-Reset") != "":
		if n, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64); err == nil {
			if n > 1e9 { // a Unix time
				rl.reset = time.Unix(n, 0).Sub(now)
			} else {
				rl.reset = time.Duration(n) * time.Second
			}
		}
	case h.Get("RateLimit-Reset") != "":
		if n, err := strconv.ParseInt(strings.TrimSpace(h.Get("RateLimit-Reset")), 10, 64); err == nil {
			rl.reset = time.Duration(n) * time.Second
		}
	}
	if rl.reset <= 0 {
		rl.reset = window
	}
	if rl.reset <= 0 {
		rl.reset = defaultWindow
	}
	rl.reset = min(rl.reset, maxRetryAfter)
	return rl, true
}

// parseQuota parses "76" or "76;w=21600" into the count and the window.
func parseQuota(v string) (n int, window time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, 0, false
	}
	head, params, _ := strings.Cut(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(head))
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range strings.Split(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if k == "w" {
			if s, err := strconv.Atoi(val); err == nil && s > 0 {
				window = time.Duration(s) * time.Second
			}
		}
	}
	return n, window, true
}
