package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// received is one request a fake service got.
type received struct {
	Path, Query string
	Header      http.Header
	Body        string
}

// service is an httptest server that speaks one notification service's
// HTTP API well enough for shoutrrr's sender: it records every request and
// answers as the service does, or with fail's status while fail is set.
type service struct {
	srv    *httptest.Server
	answer func(w http.ResponseWriter, r received)

	mu   sync.Mutex
	got  []received
	fail []int // statuses to answer, in order, before answering normally
}

func newService(t *testing.T, answer func(w http.ResponseWriter, r received)) *service {
	t.Helper()
	s := &service{answer: answer}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r := received{Path: req.URL.Path, Query: req.URL.RawQuery, Header: req.Header.Clone(), Body: string(b)}
		s.mu.Lock()
		s.got = append(s.got, r)
		var status int
		if len(s.fail) > 0 {
			status, s.fail = s.fail[0], s.fail[1:]
		}
		s.mu.Unlock()
		if status != 0 {
			http.Error(w, `{"code":50001,"error":"unavailable"}`, status)
			return
		}
		s.answer(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *service) failNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, statuses...)
}

func (s *service) requests() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

// hostPort is the server's address, "127.0.0.1:PORT".
func (s *service) hostPort() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// ntfy answers a publish as ntfy.sh does: 200 with the message as JSON.
func newNtfy(t *testing.T) *service {
	return newService(t, func(w http.ResponseWriter, r received) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "hookd0001", "time": time.Now().Unix(), "event": "message",
			"topic": strings.TrimPrefix(r.Path, "/"), "message": r.Body})
	})
}

// discordHook answers an execute-webhook call as Discord does: 204.
func newDiscord(t *testing.T) *service {
	return newService(t, func(w http.ResponseWriter, r received) { w.WriteHeader(http.StatusNoContent) })
}

// webhook is a generic webhook receiver: 200, no body.
func newWebhook(t *testing.T) *service {
	return newService(t, func(w http.ResponseWriter, r received) { w.WriteHeader(http.StatusOK) })
}

// discordVia sends the requests for discord.com to s and the rest where
// they go: Discord's sender insists on https://discord.com, so tests give
// the notifier this client (the ntfy sender takes it too).
func discordVia(s *service) *http.Client {
	target, _ := url.Parse(s.srv.URL)
	return &http.Client{Timeout: 10 * time.Second, Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host != "discord.com" {
			return http.DefaultTransport.RoundTrip(req)
		}
		req = req.Clone(req.Context())
		req.Header.Set("X-Original-Host", req.URL.Host)
		req.URL.Scheme, req.URL.Host, req.Host = target.Scheme, target.Host, ""
		return http.DefaultTransport.RoundTrip(req)
	})}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// waitFor waits until s received n requests and returns them.
func waitFor(t *testing.T, s *service, n int, what string) []received {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.requests()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s received %d requests, want %d", what, len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
