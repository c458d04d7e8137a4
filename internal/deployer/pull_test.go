package deployer

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"github.com/and3rn3t/hookd/internal/deploy"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/authn"
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

type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	if k.user == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

func TestRegistryAuth(t *testing.T) {
	ref, _ := deploy.ParseRef("ghcr.io/acme/web")
	got, err := registryAuth(context.Background(), staticKeychain{"bot", "s3cret"}, ref)
	if err != nil {
		t.Fatalf("registryAuth() error = %v", err)
	}
	raw, err := base64.URLEncoding.DecodeString(got)
	if err != nil {
		t.Fatalf("X-Registry-Auth is not base64url: %v", err)
	}
	var ac registry.AuthConfig
	if err := json.Unmarshal(raw, &ac); err != nil {
		t.Fatal(err)
	}
	if ac.Username != "bot" || ac.Password != "s3cret" || ac.ServerAddress != "ghcr.io" {
		t.Errorf("auth config = %q %q %q, want bot, s3cret, ghcr.io", ac.Username, "***", ac.ServerAddress)
	}
	anon, err := registryAuth(context.Background(), staticKeychain{}, ref)
	if err != nil || anon != "" {
		t.Errorf("registryAuth(anonymous) = %q, %v, want empty", anon, err)
	}
}

func TestImageAge(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		created string
		want    time.Duration
		ok      bool
	}{
		{"2026-05-01T11:59:00Z", time.Minute, true},
		{"2026-05-01T11:59:59.5Z", 500 * time.Millisecond, true},
		{"1970-01-01T00:00:00Z", 0, false}, // reproducible build
		{"0001-01-01T00:00:00Z", 0, false}, // unset
		{"2026-05-01T13:00:00Z", 0, false}, // future
		{"2024-01-01T00:00:00Z", 0, false}, // over a year
		{"not a time", 0, false},
	}
	for _, tt := range tests {
		got, ok := imageAge(tt.created, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("imageAge(%q) = %v, %v, want %v, %v", tt.created, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRepoDigest(t *testing.T) {
	ref, _ := deploy.ParseRef("127.0.0.1:5000/acme/web:latest")
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	rds := []string{"127.0.0.1:5000/other@" + d2, "127.0.0.1:5000/acme/web@" + d1, "127.0.0.1:5000/acme/web@" + d2}
	if got := repoDigest(rds, ref, ""); got != d1 {
		t.Errorf("repoDigest() = %s, want first of the repository, %s", got, d1)
	}
	if got := repoDigest(rds, ref, d2); got != d2 {
		t.Errorf("repoDigest(want d2) = %s, want %s", got, d2)
	}
	if hasDigest(rds[:1], ref, d2) {
		t.Errorf("hasDigest() = true for a digest of another repository, want false")
	}
	if hasDigest(rds, ref, "") {
		t.Errorf("hasDigest(\"\") = true, want false")
	}
}

func TestEligible(t *testing.T) {
	on := map[string]string{deploy.LabelEnable: "true"}
	tests := []struct {
		name   string
		cname  string
		labels map[string]string
		want   bool
	}{
		{"labelled", "web", on, true},
		{"unlabelled", "web", map[string]string{}, false},
		{"label false", "web", map[string]string{deploy.LabelEnable: "false"}, false},
		{"swarm task", "web.1.abc", map[string]string{deploy.LabelEnable: "true", "com.docker.swarm.task.id": "x"}, false},
		{"hookd new", "web" + suffixNew, on, false},
		{"hookd old", "web" + suffixOld, on, false},
		{"hookd failed", "web" + suffixFailed, on, false},
	}
	for _, tt := range tests {
		if got := eligible(tt.cname, tt.labels); got != tt.want {
			t.Errorf("%s: eligible(%q, %v) = %v, want %v", tt.name, tt.cname, tt.labels, got, tt.want)
		}
	}
}
