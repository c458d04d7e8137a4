package containers

import (
	"context"
	"io"
	"strings"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
)

// deployDocker is the part of the Engine API that Compose-native deploys
// added to the recreate strategy: resolving a tag to a digest and moving
// the tag (pull by digest, tag only what passed its gate), lifecycle hooks
// (exec), and the last log lines of a version that failed its gate.
type deployDocker interface {
	DistributionInspect(ctx context.Context, image, encodedRegistryAuth string) (registry.DistributionInspect, error)
	ImageTag(ctx context.Context, image, ref string) error
	ContainerExecCreate(ctx context.Context, container string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, options container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	ContainerLogs(ctx context.Context, container string, options container.LogsOptions) (io.ReadCloser, error)
}

// Labels Docker Compose puts on the containers it creates (see
// github.com/docker/compose/v5/pkg/api/labels.go). hookd keeps them true
// for the containers it creates, so that `docker compose up -d` finds
// nothing to change after a deploy.
const (
	composeProject     = "com.docker.compose.project"
	composeService     = "com.docker.compose.service"
	composeOneoff      = "com.docker.compose.oneoff"
	composeDependsOn   = "com.docker.compose.depends_on"
	composeImage       = "com.docker.compose.image"
	composeConfigHash  = "com.docker.compose.config-hash"
	composeWorkingDir  = "com.docker.compose.project.working_dir"
	composeConfigFiles = "com.docker.compose.project.config_files"
	composeEnvFile     = "com.docker.compose.project.environment_file"
)

// composeMember returns the project and service of a container Compose
// created for a service ("" for a one-off `compose run` container, or for
// one Compose did not create).
func composeMember(labels map[string]string) (project, service string) {
	if labels[composeOneoff] == "True" {
		return "", ""
	}
	return labels[composeProject], labels[composeService]
}

// composeDep is one entry of Compose's depends_on label.
type composeDep struct {
	Service string
	Restart bool // restart: true — restart this container after the service was updated
}

// composeDeps parses the depends_on label Compose writes:
// "db:service_healthy:true,cache:service_started:false" (service,
// condition, restart).
func composeDeps(label string) []composeDep {
	var out []composeDep
	for item := range strings.SplitSeq(label, ",") {
		parts := strings.Split(strings.TrimSpace(item), ":")
		if parts[0] == "" {
			continue
		}
		out = append(out, composeDep{Service: parts[0], Restart: len(parts) > 2 && parts[2] == "true"})
	}
	return out
}

// composeImageID returns the value Compose records in the
// com.docker.compose.image label for img, so that the label stays what
// Compose itself would write: the platform manifest's digest on engines
// that report image manifests (the containerd image store), else the image
// id (see compose's localContentDigest). The old container's label decides
// when both are possible: an old label equal to the old image's id means
// this Compose records ids.
func (r *Recreate) composeImageID(ctx context.Context, oldLabel, oldImageID string, img image.InspectResponse) string {
	if oldLabel == "" || oldLabel == oldImageID {
		return img.ID
	}
	withManifests, err := r.docker.ImageInspect(ctx, img.ID, client.ImageInspectWithManifests(true))
	if err != nil {
		return img.ID // the engine reports no manifests: Compose records the id too
	}
	return manifestID(withManifests)
}

// manifestID picks, as Compose does, the available image manifest of the
// image's own platform, else the only available one, else the image id.
func manifestID(img image.InspectResponse) string {
	var available []image.ManifestSummary
	for _, m := range img.Manifests {
		if m.Kind == image.ManifestKindImage && m.Available {
			available = append(available, m)
		}
	}
	for _, m := range available {
		if p := m.ImageData; p != nil && p.Platform.OS == img.Os && p.Platform.Architecture == img.Architecture &&
			p.Platform.Variant == img.Variant {
			return m.ID
		}
	}
	if len(available) == 1 {
		return available[0].ID
	}
	return img.ID
}

// keepComposeTrue sets the Compose labels of a replacement that depend on
// its image: com.docker.compose.image becomes what Compose would record
// for the new image. The others (project, service, number, config hash,
// depends_on) describe the service, which a new image does not change.
func keepComposeTrue(labels map[string]string, imageID string) {
	if _, ok := labels[composeImage]; ok {
		labels[composeImage] = imageID
	}
}
