package registry

import (
	"context"
	"fmt"

	dockerregistry "github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// EncodedAuth resolves credentials for the registry host and encodes them as
// the X-Registry-Auth value ImagePull takes; "" means anonymous.
func EncodedAuth(ctx context.Context, kc authn.Keychain, host string) (string, error) {
	reg, err := name.NewRegistry(host)
	if err != nil {
		return "", fmt.Errorf("registry %q: %w", host, err)
	}
	auth, err := authn.Resolve(ctx, kc, reg)
	if err != nil {
		return "", fmt.Errorf("resolve credentials for %s: %w", host, err)
	}
	if auth == authn.Anonymous {
		return "", nil
	}
	ac, err := authn.Authorization(ctx, auth)
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	if ac == nil || *ac == (authn.AuthConfig{}) {
		return "", nil
	}
	return dockerregistry.EncodeAuthConfig(dockerregistry.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		Auth:          ac.Auth,
		ServerAddress: host,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	})
}
