package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	dockerregistry "github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/authn"
)

type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	if k.user == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

func TestRegistryAuth(t *testing.T) {
	got, err := EncodedAuth(context.Background(), staticKeychain{"bot", "s3cret"}, "ghcr.io")
	if err != nil {
		t.Fatalf("EncodedAuth() error = %v", err)
	}
	raw, err := base64.URLEncoding.DecodeString(got)
	if err != nil {
		t.Fatalf("X-Registry-Auth is not base64url: %v", err)
	}
	var ac dockerregistry.AuthConfig
	if err := json.Unmarshal(raw, &ac); err != nil {
		t.Fatal(err)
	}
	if ac.Username != "bot" || ac.Password != "s3cret" || ac.ServerAddress != "ghcr.io" {
		t.Errorf("auth config = %q %q %q, want bot, s3cret, ghcr.io", ac.Username, "***", ac.ServerAddress)
	}
	anon, err := EncodedAuth(context.Background(), staticKeychain{}, "ghcr.io")
	if err != nil || anon != "" {
		t.Errorf("EncodedAuth(anonymous) = %q, %v, want empty", anon, err)
	}
}
