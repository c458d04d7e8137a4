package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs an http.Server on a Listener of max connections with the
// given patience and returns its address and the count of shed ones.
func serve(t *testing.T, limit int, patience time.Duration, h http.Handler) (string, *atomic.Int64) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var shed atomic.Int64
	l := New(inner, limit, func() { shed.Add(1) })
	l.patience = patience
	srv := &http.Server{Handler: TrackBodies(h), ConnState: l.ConnState, ConnContext: l.ConnContext, ReadHeaderTimeout: time.Minute}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return inner.Addr().String(), &shed
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one request on a new connection and returns the status, or 0
// when the connection was closed without an answer.
func get(t *testing.T, addr string) int {
	t.Helper()
	c := dial(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// closed reports whether the server closed c (within a second).
func closed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || err != nil && !strings.Contains(err.Error(), "timeout")
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusOK)
})

// TestShedsTheLongestWaiting: at the cap, a new connection is served once
// the connection that has waited longest on its client (silent since it
// connected) is closed; the younger one is kept.
func TestShedsTheLongestWaiting(t *testing.T) {
	addr, shed := serve(t, 2, 200*time.Millisecond, ok)
	old := dial(t, addr)
	time.Sleep(50 * time.Millisecond)
	young := dial(t, addr)
	time.Sleep(250 * time.Millisecond) // both past their patience

	start := time.Now()
	if code := get(t, addr); code != http.StatusOK {
		t.Fatalf("new request at the cap = %d, want 200", code)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("new request took %s", took)
	}
	if !closed(old) {
		t.Error("the connection that waited longest is still open")
	}
	if closed(young) {
		t.Error("the younger waiting connection was closed too")
	}
	if n := shed.Load(); n != 1 {
		t.Errorf("shed = %d, want 1", n)
	}
}

// TestSlowBodyIsShed: a client trickling a request body waits on its
// client like one trickling headers, and is shed for a newcomer.
func TestSlowBodyIsShed(t *testing.T) {
	addr, shed := serve(t, 1, 200*time.Millisecond, ok)
	slow := dial(t, addr)
	io.WriteString(slow, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
	time.Sleep(300 * time.Millisecond)
	if code := get(t, addr); code != http.StatusOK {
		t.Fatalf("new request = %d, want 200", code)
	}
	if !closed(slow) || shed.Load() != 1 {
		t.Errorf("slow body: closed = %v, shed = %d; want closed, 1", closed(slow), shed.Load())
	}
}

// TestAnsweredConnectionsAreNotShed: connections whose requests are being
// handled are never closed; a newcomer waits until one is done, then is
// served.
func TestAnsweredConnectionsAreNotShed(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	addr, shed := serve(t, 2, 50*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	}))
	busy := make(chan int, 2)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 2 {
		go func() {
			resp, err := client.Get("http://" + addr + "/slow")
			if err != nil {
				busy <- 0
				return
			}
			resp.Body.Close()
			busy <- resp.StatusCode
		}()
	}
	<-entered
	<-entered
	answered := make(chan int, 1)
	go func() { answered <- get(t, addr) }()
	select {
	case code := <-answered:
		t.Fatalf("newcomer answered %d while both places were being answered, want it to wait", code)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	for range 2 {
		if code := <-busy; code != http.StatusOK {
			t.Errorf("request being answered got %d, want 200 (never shed)", code)
		}
	}
	if code := <-answered; code != http.StatusOK {
		t.Errorf("newcomer = %d after a place freed, want 200", code)
	}
	if n := shed.Load(); n != 0 {
		t.Errorf("shed = %d, want 0", n)
	}
}
