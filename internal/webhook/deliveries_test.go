package webhook

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMemoryDeliveries(t *testing.T) {
	ctx := context.Background()
	d := NewMemoryDeliveries(3)
	seen := func(id string) bool {
		t.Helper()
		ok, err := d.Seen(ctx, id)
		if err != nil {
			t.Fatalf("Seen(%q): %v", id, err)
		}
		return ok
	}
	if seen("a") {
		t.Error("Seen(a) on an empty store = true, want false")
	}
	for _, id := range []string{"a", "b", "c", "a"} { // re-recording a changes nothing
		if err := d.Record(ctx, id, time.Now()); err != nil {
			t.Fatalf("Record(%q): %v", id, err)
		}
	}
	if n := d.Len(); n != 3 {
		t.Errorf("Len() = %d, want 3", n)
	}
	if err := d.Record(ctx, "d", time.Now()); err != nil { // forgets a, the oldest
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true, "d": true} {
		if got := seen(id); got != want {
			t.Errorf("Seen(%q) = %v, want %v", id, got, want)
		}
	}
	for i := range 100 {
		if err := d.Record(ctx, fmt.Sprint(i), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.Len(); n != 3 {
		t.Errorf("Len() after 100 more = %d, want 3", n)
	}
	for id, want := range map[string]bool{"96": false, "97": true, "98": true, "99": true, "d": false} {
		if got := seen(id); got != want {
			t.Errorf("Seen(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestMemoryDeliveriesDefaultAndConcurrency(t *testing.T) {
	d := NewMemoryDeliveries(0)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range DefaultMaxDeliveries {
				id := fmt.Sprintf("%d-%d", g, i)
				_ = d.Record(context.Background(), id, time.Time{})
				_, _ = d.Seen(context.Background(), id)
			}
		})
	}
	wg.Wait()
	if n := d.Len(); n != DefaultMaxDeliveries {
		t.Errorf("Len() = %d, want DefaultMaxDeliveries %d", n, DefaultMaxDeliveries)
	}
}
