package reply

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestJSON(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		v        any
		wantCode int
		wantBody string
	}{
		{"object", http.StatusAccepted, map[string]string{"status": "queued"}, http.StatusAccepted, `{"status":"queued"}` + "\n"},
		{"html is escaped", http.StatusOK, map[string]string{"error": "<b>"}, http.StatusOK, `{"error":"\u003cb\u003e"}` + "\n"},
		{"unencodable", http.StatusOK, map[string]any{"f": func() {}}, http.StatusInternalServerError, `{"error":"internal error"}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			JSON(rec, tc.status, tc.v)
			if rec.Code != tc.wantCode || rec.Body.String() != tc.wantBody {
				t.Errorf("JSON(%d, %v) = %d %q, want %d %q", tc.status, tc.v, rec.Code, rec.Body, tc.wantCode, tc.wantBody)
			}
			for k, want := range map[string]string{
				"Content-Type":           "application/json",
				"Cache-Control":          "no-store",
				"X-Content-Type-Options": "nosniff",
			} {
				if got := rec.Header().Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}
