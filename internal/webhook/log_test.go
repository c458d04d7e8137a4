package webhook

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/metrics"
)

// recordedLog is a DeliveryLog that keeps what it is told.
type recordedLog struct {
	mu   sync.Mutex
	seen []Delivery
}

func (l *recordedLog) Delivered(d Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, d)
}

func (l *recordedLog) last(t *testing.T) Delivery {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) == 0 {
		t.Fatal("the delivery log was told nothing")
	}
	return l.seen[len(l.seen)-1]
}

// TestDeliveryLog checks that the delivery log is told of every answer as
// GitHub's "Recent deliveries" would show it from hookd's side: the status,
// the outcome, what was queued or why nothing was, whether the signature
// matched, and for a refusal only what the client was told (never a MAC or
// a secret).
func TestDeliveryLog(t *testing.T) {
	real := readFixture(t, realFixture)
	ping := readFixture(t, "ping.json")
	const image = "ghcr.io/theryangeary/www:0e2a89b"
	tests := []struct {
		name      string
		targets   []string
		submitErr error
		hook      hook
		want      Delivery
	}{
		{
			name: "queued", targets: []string{"www"},
			hook: hook{event: "package", id: "d-1", body: real, secret: oldSecret},
			want: Delivery{ID: "d-1", Event: "package", Signed: true, Status: http.StatusAccepted,
				Outcome: metrics.OutcomeQueued, Image: image, Targets: []string{"www"}, Jobs: []string{"job-1-0"}},
		},
		{
			name: "no target",
			hook: hook{event: "registry_package", id: "d-2", body: real, secret: newSecret},
			want: Delivery{ID: "d-2", Event: "registry_package", Signed: true, Status: http.StatusAccepted,
				Outcome: metrics.OutcomeIgnored, Image: image, Reason: reasonNoTarget},
		},
		{
			name: "ping",
			hook: hook{event: "ping", id: "d-3", body: ping, secret: oldSecret},
			want: Delivery{ID: "d-3", Event: "ping", Signed: true, Status: http.StatusOK, Outcome: metrics.OutcomeIgnored},
		},
		{
			name: "wrong secret",
			hook: hook{event: "package", id: "d-4", body: real, secret: "not-the-secret"},
			want: Delivery{ID: "d-4", Event: "package", Status: http.StatusUnauthorized,
				Outcome: metrics.OutcomeInvalidSignature, Reason: "invalid signature"},
		},
		{
			name: "queue full", targets: []string{"www"}, submitErr: fmt.Errorf("submit: %w", deploy.ErrQueueFull),
			hook: hook{event: "package", id: "d-5", body: real, secret: oldSecret},
			want: Delivery{ID: "d-5", Event: "package", Signed: true, Status: http.StatusServiceUnavailable,
				Outcome: metrics.OutcomeQueueFull, Reason: deploy.ErrQueueFull.Error()},
		},
		{
			name: "malformed header",
			hook: hook{event: "package\x01", id: "bad id with spaces", body: real, secret: oldSecret},
			want: Delivery{Event: "invalid", Signed: true, Status: http.StatusBadRequest,
				Outcome: metrics.OutcomeBadRequest, Reason: errDeliveryID.Error()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &recordedLog{}
			e := newEnv(t, Config{Log: log}, tt.targets...)
			e.sub.setErr(tt.submitErr)
			rec, _ := send(t, e.h, tt.hook)
			got := log.last(t)
			if got.Status != rec.Code {
				t.Errorf("logged status %d, answered %d", got.Status, rec.Code)
			}
			if got.At != fixedNow {
				t.Errorf("logged at %v, want the time it was received, %v", got.At, fixedNow)
			}
			if got.ID != tt.want.ID || got.Event != tt.want.Event || got.Signed != tt.want.Signed ||
				got.Status != tt.want.Status || got.Outcome != tt.want.Outcome || got.Image != tt.want.Image ||
				got.Reason != tt.want.Reason || !slices.Equal(got.Targets, tt.want.Targets) || !slices.Equal(got.Jobs, tt.want.Jobs) {
				t.Errorf("logged %+v,\nwant   %+v", got, tt.want)
			}
			text := fmt.Sprintf("%+v", got)
			if l := leaks(text, oldSecret, newSecret, macHex(oldSecret, real), macHex("not-the-secret", real)); len(l) > 0 {
				t.Errorf("logged delivery %s leaks %q", text, l)
			}
		})
	}
}
