package memtrim

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestStateLook(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	const mib = 1 << 20
	type reading struct {
		at   time.Duration // after the start, or after the trim at t0
		rss  int64
		busy bool
		want bool
	}
	tests := []struct {
		name     string
		trimmed  bool // trimmed at t0
		readings []reading
	}{
		{name: "start-up settles first", readings: []reading{
			{30 * time.Second, 18 * mib, false, false},
			{time.Minute, 18 * mib, false, true},
		}},
		{name: "first look after start-up while a deploy runs", readings: []reading{
			{time.Minute, 18 * mib, true, false},
			{75 * time.Second, 18 * mib, false, true},
		}},
		{name: "settles, then grows past the gap", trimmed: true, readings: []reading{
			{30 * time.Second, 10 * mib, false, false}, // what hookd runs came back
			{time.Minute, 11*mib - 1, false, false},
			{90 * time.Second, 11 * mib, false, true},
		}},
		{name: "grows from the least reading, not the first", trimmed: true, readings: []reading{
			{10 * time.Second, 14 * mib, false, false}, // a poll round right after the trim
			{40 * time.Second, 10 * mib, false, false},
			{70 * time.Second, 14 * mib, false, true},
		}},
		{name: "grown, but too soon", trimmed: true, readings: []reading{
			{10 * time.Second, 10 * mib, false, false},
			{50 * time.Second, 16 * mib, false, false},
		}},
		{name: "quiet and flat: no churn", trimmed: true, readings: []reading{
			{30 * time.Second, 10 * mib, false, false},
			{time.Hour, 10*mib + 512<<10, false, false},
		}},
		{name: "grown, gap passed, busy", trimmed: true, readings: []reading{
			{30 * time.Second, 10 * mib, false, false},
			{time.Hour, 20 * mib, true, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			busy := false
			s := newState(Config{Busy: func() bool { return busy }}, t0)
			if tt.trimmed {
				s.look(t0, 20*mib) // the start-up trim
				s.trimmed(t0)
			}
			for _, r := range tt.readings {
				busy = r.busy
				if got := s.look(t0.Add(r.at), r.rss); got != r.want {
					t.Errorf("look(+%v, %.1f MiB, busy %v) = %v, want %v", r.at, float64(r.rss)/mib, r.busy, got, r.want)
				}
			}
		})
	}
}

func TestRunTrimsOnceQuietThenStops(t *testing.T) {
	if _, err := resident(); err != nil {
		t.Skipf("no resident memory to read here: %v", err)
	}
	var trims atomic.Int32
	logger := slog.New(&countHandler{msg: "memory trimmed", n: &trims})
	ctx, cancel := context.WithCancel(context.Background())
	var looks atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Every: 10 * time.Millisecond, Settle: time.Millisecond, Busy: func() bool {
			return looks.Add(1) == 1 // busy at the first look only
		}}, logger)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for trims.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no trim within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := looks.Load(); n < 2 {
		t.Errorf("trimmed at look %d, want not before the second (the first was busy)", n)
	}
	time.Sleep(100 * time.Millisecond) // ten more looks: none is due (1m gap)
	cancel()
	<-done
	if n := trims.Load(); n != 1 {
		t.Errorf("trims = %d, want 1 (the next waits for the gap and for growth)", n)
	}
}

// countHandler counts the log records with one message.
type countHandler struct {
	msg string
	n   *atomic.Int32
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countHandler) WithGroup(string) slog.Handler            { return h }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
