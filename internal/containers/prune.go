package containers

import (
	"context"
	"log/slog"
	"strings"

	"github.com/and3rn3t/hookd/internal/deploy"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
)

// prune removes the images of the job's repository other than the one just
// deployed and the previous one (kept for rollback). An image any container
// uses, running or not, is never removed, and nothing is forced: an image
// tagged into another repository stays too.
func (r *Recreate) prune(ctx context.Context, j deploy.Job, newID, prevID string, log *slog.Logger) {
	ref, err := deploy.ParseRef(j.Image)
	if err != nil {
		return
	}
	imgs, err := r.docker.ImageList(ctx, image.ListOptions{})
	if err != nil {
		log.Warn("prune: list images failed", "err", err)
		return
	}
	ctrs, err := r.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		log.Warn("prune: list containers failed", "err", err)
		return
	}
	inUse := map[string]bool{newID: true, prevID: true}
	for _, c := range ctrs {
		inUse[c.ImageID] = true
	}
	for _, img := range imgs {
		if inUse[img.ID] || !ofRepository(img, ref) {
			continue
		}
		if _, err := r.docker.ImageRemove(ctx, img.ID, image.RemoveOptions{PruneChildren: true}); err != nil {
			log.Warn("prune: remove image failed", "image_id", ShortID(strings.TrimPrefix(img.ID, "sha256:")), "err", err)
			continue
		}
		log.Info("pruned image", "image_id", ShortID(strings.TrimPrefix(img.ID, "sha256:")))
	}
}

// ofRepository reports whether img carries a tag or digest of ref's
// repository. A re-pulled tag leaves the previous image with only its digest.
func ofRepository(img image.Summary, ref deploy.ImageRef) bool {
	for _, s := range append(append([]string{}, img.RepoTags...), img.RepoDigests...) {
		name := s
		if i := strings.Index(name, "@"); i >= 0 {
			name = name[:i]
		}
		r, err := deploy.ParseRef(name)
		if err == nil && r.Repository() == ref.Repository() {
			return true
		}
	}
	return false
}
