package webhook

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/and3rn3t/hookd/internal/metrics"
)

// post sends a forged delivery of size bytes on a new connection to a real
// server, the first prefix bytes at once and the rest only if all is true,
// and returns the connection.
func post(t *testing.T, addr string, size, prefix int, all bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: package\r\n"+
		"X-GitHub-Delivery: limits-%d\r\nX-Hub-Signature-256: sha256=%s\r\nContent-Length: %d\r\n\r\n",
		time.Now().UnixNano(), strings.Repeat("0", 64), size)
	n := size
	if !all {
		n = prefix
	}
	io.WriteString(c, strings.Repeat("x", n))
	return c
}

func status(t *testing.T, c net.Conn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReadLimits: bodies beyond 16 KiB share MaxReads slots; a delivery
// that finds them taken is answered 503 quickly and counted busy, while a
// small one (a whole package delivery) needs no slot. A body announced
// beyond the limit is refused unread; one that stalls is cut off after the
// body timeout.
func TestReadLimits(t *testing.T) {
	e := newEnv(t, Config{MaxReads: 1, MaxBodyBytes: 64 << 10, BodyTimeout: time.Second})
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	holder := post(t, addr, 40<<10, 20<<10, false) // takes the slot and stalls
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	if code := status(t, post(t, addr, 40<<10, 0, true)); code != http.StatusServiceUnavailable {
		t.Errorf("a second large body while the slot is taken = %d, want 503", code)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the 503 took %s, want it quick", took)
	}
	if v := testutil.ToFloat64(e.metrics.WebhookDeliveries.WithLabelValues("package", metrics.OutcomeBusy)); v != 1 {
		t.Errorf("deliveries{outcome=busy} = %v, want 1", v)
	}
	if code := status(t, post(t, addr, 11<<10, 0, true)); code != http.StatusUnauthorized {
		t.Errorf("a small forged body while the slot is taken = %d, want 401 (read without a slot)", code)
	}
	if code := status(t, post(t, addr, 1<<20, 0, false)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a body announced beyond the limit = %d, want 413", code)
	}
	if code := status(t, holder); code != http.StatusBadRequest {
		t.Errorf("the stalled body after the body timeout = %d, want 400", code)
	}
	if code := status(t, post(t, addr, 40<<10, 0, true)); code != http.StatusUnauthorized {
		t.Errorf("a large body once the slot is free = %d, want 401", code)
	}
}
