package webhook

import (
	"context"
	"sync"
	"time"
)

// DefaultMaxDeliveries is how many delivery ids NewMemoryDeliveries keeps
// when asked for a non-positive number. GitHub only redelivers recent
// deliveries, and ids are at most maxDeliveryIDLen bytes, so this bounds the
// memory to well under a few MiB.
const DefaultMaxDeliveries = 10000

// Deliveries remembers which delivery ids have already been submitted, so
// that GitHub's "Redeliver" button (which reuses the id) is answered, not
// redeployed. The bbolt store implements it durably; MemoryDeliveries is the
// bounded in-memory version.
type Deliveries interface {
	// Seen reports whether id was recorded.
	Seen(ctx context.Context, id string) (bool, error)
	// Record remembers id as submitted at at.
	Record(ctx context.Context, id string, at time.Time) error
}

// MemoryDeliveries is a Deliveries that keeps the most recently recorded ids
// in memory, up to a fixed number; the oldest recorded id is forgotten first.
// It is safe for concurrent use. Its methods never return an error.
type MemoryDeliveries struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string // insertion order; ring[next] is the oldest once full
	next int
	max  int
}

var _ Deliveries = (*MemoryDeliveries)(nil)

// NewMemoryDeliveries returns an empty MemoryDeliveries that holds at most max
// ids (DefaultMaxDeliveries when max <= 0).
func NewMemoryDeliveries(max int) *MemoryDeliveries {
	if max <= 0 {
		max = DefaultMaxDeliveries
	}
	return &MemoryDeliveries{
		ids:  make(map[string]struct{}, max),
		ring: make([]string, 0, max),
		max:  max,
	}
}

// Seen reports whether id is among the remembered ids.
func (d *MemoryDeliveries) Seen(_ context.Context, id string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.ids[id]
	return ok, nil
}

// Record remembers id, forgetting the oldest id when full. Recording an id
// that is already remembered changes nothing.
func (d *MemoryDeliveries) Record(_ context.Context, id string, _ time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ids[id]; ok {
		return nil
	}
	if len(d.ring) < d.max {
		d.ring = append(d.ring, id)
	} else {
		delete(d.ids, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % d.max
	}
	d.ids[id] = struct{}{}
	return nil
}

// Len returns how many ids are remembered.
func (d *MemoryDeliveries) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ids)
}
