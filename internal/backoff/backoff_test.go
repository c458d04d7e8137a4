package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Base: 500 * time.Millisecond, Max: 30 * time.Second}
	tests := []struct {
		failures   int
		retryAfter time.Duration
		want       time.Duration
	}{
		{0, 0, 500 * time.Millisecond},
		{1, 0, 500 * time.Millisecond},
		{2, 0, time.Second},
		{3, 0, 2 * time.Second},
		{7, 0, 30 * time.Second},
		{100, 0, 30 * time.Second},
		{1, 7 * time.Second, 7 * time.Second}, // Retry-After wins
		{1, time.Hour, 30 * time.Second},      // but is capped
		{5, 2 * time.Second, 2 * time.Second}, // even when shorter than the doubling
	}
	for _, tt := range tests {
		if got := p.Delay(tt.failures, tt.retryAfter); got != tt.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tt.failures, tt.retryAfter, got, tt.want)
		}
	}
}

func TestDelayMaxRetryAfter(t *testing.T) {
	p := Policy{Base: 30 * time.Second, Max: 30 * time.Minute, MaxRetryAfter: 24 * time.Hour}
	if got := p.Delay(1, 2*time.Hour); got != 2*time.Hour {
		t.Errorf("Delay(1, 2h) = %v, want 2h (under MaxRetryAfter)", got)
	}
	if got := p.Delay(1, 48*time.Hour); got != 24*time.Hour {
		t.Errorf("Delay(1, 48h) = %v, want 24h", got)
	}
}

func TestDelayJitterStaysInBounds(t *testing.T) {
	p := Policy{Base: 30 * time.Second, Max: 30 * time.Minute, Jitter: 0.2}
	for range 1000 {
		got := p.Delay(2, 0)
		if got < 48*time.Second || got > 72*time.Second {
			t.Fatalf("Delay(2, 0) = %v, want 60s ±20%%", got)
		}
	}
}
