package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// request sends method url with the bearer token (none when empty) and
// returns the status, the WWW-Authenticate header and the trimmed body.
func request(t *testing.T, method, url, token string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(bytes.TrimSpace(body))
}

func TestRunRoutes(t *testing.T) {
	const token, metricsToken = "routes-test-token-0123456789", "routes-test-metrics-token"
	d := startDaemon(context.Background(), t, map[string]string{
		"DOCKER_HOST":         noDocker,
		"HOOKD_API_TOKEN":     token,
		"HOOKD_METRICS_TOKEN": metricsToken,
	})
	tests := []struct {
		name, method, path, token string
		wantCode                  int
		wantBody                  string // "" for any
	}{
		// An unauthenticated client cannot map the API by its 404s and 405s.
		{"unknown API path, no token", http.MethodGet, "/api/v1/nothing-here", "", 401, `{"error":"unauthorized"}`},
		{"wrong method, no token", http.MethodGet, "/api/v1/deploy", "", 401, `{"error":"unauthorized"}`},
		{"unrouted method, no token", http.MethodDelete, "/api/v1/jobs", "", 401, `{"error":"unauthorized"}`},
		{"API root, no token", http.MethodGet, "/api/v1", "", 401, `{"error":"unauthorized"}`},
		{"unknown API path", http.MethodGet, "/api/v1/nothing-here", token, 404, `{"error":"not found"}`},
		{"wrong method", http.MethodGet, "/api/v1/deploy", token, 405, `{"error":"method not allowed"}`},
		{"targets", http.MethodGet, "/api/v1/targets", token, 200, `{"targets":[]}`},
		{"jobs", http.MethodGet, "/api/v1/jobs", token, 200, `{"jobs":[]}`},
		{"job by id", http.MethodGet, "/api/v1/jobs/nope", token, 404, `{"error":"job \"nope\" not found"}`},
		{"deploy", http.MethodPost, "/api/v1/deploy", token, 404, ""},
		{"webhook wrong method", http.MethodGet, "/hooks/github", "", 405, `{"error":"method not allowed"}`},
		{"unknown path", http.MethodGet, "/nothing-here", "", 404, `{"error":"not found"}`},
		{"healthz", http.MethodGet, "/healthz", "", 200, `{"status":"ok"}`},
		{"readyz without Docker", http.MethodGet, "/readyz", "", 503, ""},
		{"metrics, no token", http.MethodGet, "/metrics", "", 401, `{"error":"unauthorized"}`},
		{"metrics, API token", http.MethodGet, "/metrics", token, 401, `{"error":"unauthorized"}`},
		{"metrics", http.MethodGet, "/metrics", metricsToken, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, challenge, body := request(t, tc.method, d.url+tc.path, tc.token)
			if code != tc.wantCode || tc.wantBody != "" && body != tc.wantBody {
				t.Errorf("%s %s = %d %s, want %d %s", tc.method, tc.path, code, body, tc.wantCode, tc.wantBody)
			}
			if code == http.StatusUnauthorized {
				realm := `Bearer realm="hookd"`
				if tc.path == "/metrics" {
					realm = `Bearer realm="hookd metrics"`
				}
				if challenge != realm {
					t.Errorf("%s %s challenge = %q, want %q", tc.method, tc.path, challenge, realm)
				}
			}
		})
	}
}

// Without an API token every API path says the API is off, whatever the
// request carries.
func TestRunAPIDisabled(t *testing.T) {
	d := startDaemon(context.Background(), t, map[string]string{"DOCKER_HOST": noDocker})
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/api/v1/deploy"},
		{http.MethodGet, "/api/v1/targets"},
		{http.MethodGet, "/api/v1/jobs"},
		{http.MethodGet, "/api/v1/jobs/job-1"},
		{http.MethodGet, "/api/v1"},
		{http.MethodDelete, "/api/v1/nothing-here"},
	} {
		// Not even an empty bearer token may get in.
		code, _, body := request(t, tc.method, d.url+tc.path, " ")
		want := `{"error":"api disabled: no HOOKD_API_TOKEN configured"}`
		if code != http.StatusNotFound || body != want {
			t.Errorf("%s %s = %d %s, want 404 %s", tc.method, tc.path, code, body, want)
		}
	}
}

// With metrics_listen, /metrics moves to its own listener.
func TestRunMetricsApart(t *testing.T) {
	metricsAddr := freeAddr(t)
	d := startDaemon(context.Background(), t, map[string]string{
		"DOCKER_HOST":          noDocker,
		"HOOKD_METRICS_LISTEN": metricsAddr,
	})
	if code, _, _ := request(t, http.MethodGet, d.url+"/metrics", ""); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the main listener = %d, want 404", code)
	}
	code, _, body := request(t, http.MethodGet, "http://"+metricsAddr+"/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, "hookd_") {
		t.Errorf("GET /metrics on metrics_listen = %d, want 200 with hookd's metrics", code)
	}
}
