// Package backoff is hookd's one rule for waiting after failures: the wait
// after n consecutive failures is base doubled n-1 times, capped, unless the
// other side said how long to wait (Retry-After), which wins, capped too.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is one caller's base and cap. Jitter, from 0 to 0.5, spreads each
// wait by ±Jitter of itself so that many waiters do not retry in step.
type Policy struct {
	Base, Max time.Duration
	Jitter    float64
	// MaxRetryAfter caps what the other side may ask for (default Max), so
	// that a bogus Retry-After cannot silence a caller for good.
	MaxRetryAfter time.Duration
}

// Delay returns the wait after failures consecutive failures (1 for the
// first). A positive retryAfter is what the other side asked for: it is
// used as it is, capped at MaxRetryAfter, without jitter.
func (p Policy) Delay(failures int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		limit := p.MaxRetryAfter
		if limit <= 0 {
			limit = p.Max
		}
		return min(retryAfter, limit)
	}
	d := p.Base
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if j := min(max(p.Jitter, 0), 0.5); j > 0 {
		d = time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
	}
	return d
}
