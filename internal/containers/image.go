package containers

import (
	"context"
	"fmt"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
)

// The local tag ("repo:tag") a target follows always names what runs: the
// new version is pulled by digest, and the tag moves to it only once it
// passed its gate. A later `docker compose up -d`, or a reboot that
// recreates from the compose file, then never brings back a version that
// was rolled back.
//
// The one exception lasts a create call: the engine records a container's
// image as the reference it was created from, and the replacement must be
// recorded as "repo:tag" (as Compose and hookd's own target discovery read
// it), so the tag names the new image while its container is created and
// is put back right after. The journal keeps both image ids, so that a
// restarted hookd puts the tag back too.

// resolve asks the engine which digest ref's tag names in its registry
// (the engine's own credentials and registry settings apply).
func (r *Recreate) resolve(ctx context.Context, ref deploy.ImageRef) (string, error) {
	s := ref.Repository() + ":" + ref.Tag
	auth, err := registry.EncodedAuth(ctx, r.cfg.Keychain, ref.Registry)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", s, err)
	}
	d, err := r.docker.DistributionInspect(ctx, s, auth)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", s, err)
	}
	if d.Descriptor.Digest == "" {
		return "", fmt.Errorf("resolve %s: the registry named no digest", s)
	}
	return d.Descriptor.Digest.String(), nil
}

// createTagged creates the container of sp, whose Config.Image is the tag
// sp.Tag, from the image sp.ImageID: it points the tag at that image for
// the create only, and back at sp.PrevImageID whatever the create did.
func (r *Recreate) createTagged(ctx context.Context, sp spec, name string) (string, error) {
	if sp.Tag == "" {
		created, err := r.docker.ContainerCreate(ctx, sp.Config, sp.HostConfig, sp.Networking, nil, name)
		return created.ID, err
	}
	if err := r.docker.ImageTag(ctx, sp.ImageID, sp.Tag); err != nil {
		return "", fmt.Errorf("tag %s: %w", sp.Tag, err)
	}
	created, err := r.docker.ContainerCreate(ctx, sp.Config, sp.HostConfig, sp.Networking, nil, name)
	if terr := r.docker.ImageTag(ctx, sp.PrevImageID, sp.Tag); terr != nil {
		r.log.Error("putting the tag back on the running image failed", "tag", sp.Tag, "err", terr)
		if err == nil {
			err = fmt.Errorf("tag %s back: %w", sp.Tag, terr)
		}
	}
	return created.ID, err
}

// moveTag points tag at imageID unless the tag names an image other than
// the two a swap knows (someone pulled meanwhile: theirs wins).
func (r *Recreate) moveTag(ctx context.Context, tag, imageID, otherID string) error {
	if tag == "" || imageID == "" {
		return nil
	}
	if img, err := r.docker.ImageInspect(ctx, tag); err == nil && img.ID != imageID && img.ID != otherID {
		r.log.Warn("local tag names another image; left as is", "tag", tag, "image_id", ShortID(img.ID))
		return nil
	}
	if err := r.docker.ImageTag(ctx, imageID, tag); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	return nil
}
