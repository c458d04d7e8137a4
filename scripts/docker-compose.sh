#!/usr/bin/env bash
# Make sure the Compose CLI plugin answers (`docker compose version`): the
# tests drive real compose.yml projects with it. Debian's docker.io ships no
# Compose v2, so when it is missing this builds Compose from its Go module
# (served by the Go module proxy) into the CLI plugin directory, once; the
# built binary is the cache. `go install` refuses the module because its
# go.mod has exclude lines, so it is built from the downloaded module
# directory instead.
set -euo pipefail

version=${HOOKD_COMPOSE_VERSION:-v5.6.0}
module=github.com/docker/compose/v5
plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins

if docker compose version >/dev/null 2>&1; then
  echo "docker-compose: using $(docker compose version --short 2>/dev/null || docker compose version)"
  exit 0
fi

echo "docker-compose: building Compose $version from $module (once; this takes a few minutes)"
mkdir -p "$plugins"
tmp=$(mktemp "$plugins/.docker-compose.XXXXXX")
log=$(mktemp)
trap 'rm -f "$tmp" "$log"' EXIT
dir=$(go mod download -json "$module@$version" 2>"$log" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "docker-compose: go mod download $module@$version gave no module directory:" >&2
  cat "$log" >&2
  exit 1
fi
# GOFLAGS from the caller (e.g. -race) must not leak into this build; the
# module's own go.sum pins its dependencies.
if ! (cd "$dir" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X $module/internal.Version=$version" -o "$tmp" ./cmd) >"$log" 2>&1; then
  echo "docker-compose: building Compose failed:" >&2
  cat "$log" >&2
  exit 1
fi
chmod 0755 "$tmp"
mv "$tmp" "$plugins/docker-compose"
trap - EXIT
echo "docker-compose: installed $(docker compose version --short 2>/dev/null || echo "$version") in $plugins"
