package web

import (
	"sync"
	"time"

	"github.com/and3rn3t/hookd/internal/webhook"
)

// Deliveries keeps the webhook deliveries hookd answered most recently, in
// memory (since start-up), for the status page: what GitHub's "Recent
// deliveries" shows, from hookd's side. Signed deliveries and unsigned
// ones (a wrong signature, a body too large, …) are kept apart, each in its
// own fixed ring, so a flood of forged requests cannot push the real ones
// out. It implements webhook.DeliveryLog and is safe for concurrent use.
type Deliveries struct {
	mu       sync.Mutex
	signed   ring
	unsigned ring
	forged   []time.Time // wrong signatures of the last day, bounded
}

var _ webhook.DeliveryLog = (*Deliveries)(nil)

// Sizes of the rings.
const (
	DefaultSignedDeliveries   = 50
	DefaultUnsignedDeliveries = 10
	maxForged                 = 1000
)

// NewDeliveries returns an empty Deliveries keeping signed deliveries and
// unsigned ones (non-positive: the defaults).
func NewDeliveries(signed, unsigned int) *Deliveries {
	if signed <= 0 {
		signed = DefaultSignedDeliveries
	}
	if unsigned <= 0 {
		unsigned = DefaultUnsignedDeliveries
	}
	return &Deliveries{signed: newRing(signed), unsigned: newRing(unsigned)}
}

// Delivered records d, forgetting the oldest of its kind when full.
func (l *Deliveries) Delivered(d webhook.Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d.Signed {
		l.signed.put(d)
		return
	}
	l.unsigned.put(d)
	if d.Status == 401 {
		if len(l.forged) == maxForged {
			l.forged = append(l.forged[:0], l.forged[1:]...)
		}
		l.forged = append(l.forged, d.At)
	}
}

// Signed returns the signed deliveries, newest first.
func (l *Deliveries) Signed() []webhook.Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.signed.newestFirst()
}

// Unsigned returns the deliveries refused before their signature was
// known good, newest first.
func (l *Deliveries) Unsigned() []webhook.Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unsigned.newestFirst()
}

// LastSigned is when the newest signed delivery arrived; zero for none.
func (l *Deliveries) LastSigned() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.signed.newest(); ok {
		return d.At
	}
	return time.Time{}
}

// Forged counts the deliveries with a wrong signature since since.
func (l *Deliveries) Forged(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, t := range l.forged {
		if !t.Before(since) {
			n++
		}
	}
	return n
}

// ring is a fixed-size ring of deliveries.
type ring struct {
	buf  []webhook.Delivery
	next int
	full bool
}

func newRing(n int) ring { return ring{buf: make([]webhook.Delivery, n)} }

func (r *ring) put(d webhook.Delivery) {
	r.buf[r.next] = d
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

func (r *ring) newest() (webhook.Delivery, bool) {
	if !r.full && r.next == 0 {
		return webhook.Delivery{}, false
	}
	return r.buf[(r.next-1+len(r.buf))%len(r.buf)], true
}

func (r *ring) newestFirst() []webhook.Delivery {
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := make([]webhook.Delivery, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}
