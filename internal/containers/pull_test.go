package containers

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestPullProgressSurfacesRegistryErrors(t *testing.T) {
	tests := []struct {
		name, stream, want string
	}{
		{
			name:   "unauthorized",
			stream: `{"status":"Pulling from acme/web","id":"latest"}` + "\n" + `{"errorDetail":{"message":"unauthorized: authentication required"},"error":"unauthorized: authentication required"}`,
			want:   "unauthorized: authentication required",
		},
		{
			name:   "manifest unknown",
			stream: `{"errorDetail":{"message":"manifest for 127.0.0.1:5000/web:nope not found: manifest unknown"}}`,
			want:   "manifest unknown",
		},
		{
			name:   "rate limited, error field only",
			stream: `{"error":"toomanyrequests: rate limit exceeded"}`,
			want:   "toomanyrequests",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newPullProgress(slog.New(slog.DiscardHandler)).read(strings.NewReader(tt.stream))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("read() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestPullProgressCountsLayers(t *testing.T) {
	stream := strings.Join([]string{
		`{"status":"Pulling from acme/web","id":"latest"}`,
		`{"status":"Pulling fs layer","id":"aaa"}`,
		`{"status":"Already exists","id":"bbb"}`,
		`{"status":"Downloading","id":"aaa","progressDetail":{"current":500,"total":1000}}`,
		`{"status":"Download complete","id":"aaa"}`,
		`{"status":"Pull complete","id":"aaa"}`,
		`{"status":"Digest: sha256:0123"}`,
		`{"status":"Status: Downloaded newer image for acme/web:latest"}`,
	}, "\n")
	var buf bytes.Buffer
	p := newPullProgress(slog.New(slog.NewTextHandler(&buf, nil)))
	if err := p.read(strings.NewReader(stream)); err != nil {
		t.Fatalf("read() error = %v", err)
	}
	done, total, n := p.totals()
	if done != 2 || total != 2 || n != 1000 {
		t.Errorf("totals() = %d, %d, %d, want 2, 2, 1000", done, total, n)
	}
	if !strings.Contains(buf.String(), "pull finished") {
		t.Errorf("log = %q, want a 'pull finished' line", buf.String())
	}
}

func TestPullProgressRateLimitsLogs(t *testing.T) {
	var buf bytes.Buffer
	p := newPullProgress(slog.New(slog.NewTextHandler(&buf, nil)))
	now := time.Now()
	p.now = func() time.Time { return now }
	p.last = now
	for i := range 100 {
		p.update(pullMessage{ID: "aaa", Status: "Downloading", ProgressDetail: struct {
			Current int64 `json:"current"`
			Total   int64 `json:"total"`
		}{int64(i), 100}})
	}
	if n := strings.Count(buf.String(), "pull progress"); n != 0 {
		t.Errorf("progress lines within 5s = %d, want 0", n)
	}
	now = now.Add(6 * time.Second)
	p.update(pullMessage{ID: "aaa", Status: "Downloading"})
	if n := strings.Count(buf.String(), "pull progress"); n != 1 {
		t.Errorf("progress lines after 6s = %d, want 1", n)
	}
}
