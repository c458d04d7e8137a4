#!/usr/bin/env bash
# Build the hookd runtime image from a binary compiled on this host, against
# the running Docker Engine, without pulling any base image (the Dockerfile's
# "prebuilt" target is FROM scratch). Prints the image size.
#
#   scripts/build-image.sh [TAG]        (default tag: hookd:dev)
#
# The binary is built for the engine's architecture (`make build` with
# GOOS/GOARCH set), so the image also runs on a remote DOCKER_HOST of another
# architecture. The multi-arch release image is built by CI with buildx from
# the Dockerfile's default target instead.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-hookd:dev}"

arch="$(docker version --format '{{.Server.Arch}}')"
case "$arch" in
  amd64|x86_64) goarch=amd64 ;;
  arm64|aarch64) goarch=arm64 ;;
  arm|armv7l) goarch=arm ;;
  *) echo "build-image: unsupported engine architecture $arch" >&2; exit 1 ;;
esac

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
REVISION="${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
export VERSION REVISION

# The same build as `make build` (CGO off, -trimpath, stamped -ldflags), for
# linux/<engine arch>.
GOOS=linux GOARCH="$goarch" GOARM=7 make --no-print-directory build

ca=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$ca" ]; then
  echo "build-image: $ca is missing; install the ca-certificates package" >&2
  exit 1
fi

rm -rf dist/image
mkdir -p dist/image/state
cp bin/hookd dist/image/hookd
cp "$ca" dist/image/ca-certificates.crt

# The legacy builder (an engine without buildx) builds every stage up to the
# target; "prebuilt" comes before the golang stage, so either builder works.
# Without buildx the CLI must be told to use the legacy builder.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
docker build --target prebuilt \
  --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$REVISION" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$tag" .

# The image this script built last time under the same tag is now untagged:
# remove it unless something still uses it (rm fails then, which is fine).
current="$(docker image inspect --format '{{.Id}}' "$tag")"
if [ -n "$previous" ] && [ "$previous" != "$current" ] &&
   [ "$(docker image inspect --format '{{len .RepoTags}}' "$previous" 2>/dev/null || echo 1)" = 0 ]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi

size="$(docker image inspect --format '{{.Size}}' "$tag")"
echo "build-image: $tag is $size bytes ($(( (size + 524288) / 1048576 )) MiB)"
