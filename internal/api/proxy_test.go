package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRealClient checks which address a request is counted under.
func TestRealClient(t *testing.T) {
	trusted, err := ParseProxies([]string{"10.0.0.0/8", "192.0.2.7", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer string
		header     http.Header
		want       string
	}{
		{"untrusted peer keeps its address", "198.51.100.1:5000", http.Header{"X-Forwarded-For": {"203.0.113.9"}}, "198.51.100.1:5000"},
		{"trusted peer, X-Forwarded-For", "192.0.2.7:5000", http.Header{"X-Forwarded-For": {"203.0.113.9"}}, "203.0.113.9:0"},
		{"forged entries left of the client are ignored", "192.0.2.7:5000", http.Header{"X-Forwarded-For": {"1.2.3.4, 203.0.113.9"}}, "203.0.113.9:0"},
		{"trusted hops are skipped", "192.0.2.7:5000", http.Header{"X-Forwarded-For": {"203.0.113.9, 10.1.2.3"}}, "203.0.113.9:0"},
		{"Forwarded wins, quoted IPv6 with port", "[::1]:5000", http.Header{
			"Forwarded":       {`for="[2001:db8::17]:4711";proto=https, for=10.0.0.1`},
			"X-Forwarded-For": {"203.0.113.9"},
		}, "[2001:db8::17]:0"},
		{"unknown client keeps the last trusted hop", "192.0.2.7:5000", http.Header{"Forwarded": {"for=unknown, for=10.0.0.1"}}, "10.0.0.1:0"},
		{"no header keeps the peer", "192.0.2.7:5000", http.Header{}, "192.0.2.7:5000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			h := RealClient(trusted)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr, r.Header = tc.peer, tc.header
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != tc.want {
				t.Errorf("RemoteAddr = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := ParseProxies([]string{"10.0.0.0/8", "proxy.local"}); err == nil {
		t.Error(`ParseProxies("proxy.local") = nil error, want one`)
	}
}
