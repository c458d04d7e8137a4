package deployer

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	if k.user == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
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
		created, _ := time.Parse(time.RFC3339Nano, tt.created) // as the strategies read an image's created time
		got, ok := imageAge(created, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("imageAge(%q) = %v, %v, want %v, %v", tt.created, got, ok, tt.want, tt.ok)
		}
	}
}
