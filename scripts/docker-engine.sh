#!/usr/bin/env bash
# Make sure a Docker Engine answers: the one at DOCKER_HOST or the local
# socket if it does; otherwise install Debian's docker.io and start dockerd
# detached, its output in a file, so that it never holds a caller's output open.
set -euo pipefail

log=${HOOKD_DOCKERD_LOG:-/var/log/hookd-dockerd.log}

answers() {
  command -v docker >/dev/null 2>&1 && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if answers; then
  echo "docker-engine: using the engine at ${DOCKER_HOST:-unix:///var/run/docker.sock} ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "docker-engine: DOCKER_HOST=$DOCKER_HOST does not answer" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no Docker Engine answers and dockerd is not installed; install Docker (as root: apt-get install docker.io)" >&2
    exit 1
  fi
  echo "docker-engine: installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  echo "docker-engine: dockerd is installed but not running; start it (sudo systemctl start docker)" >&2
  exit 1
fi
echo "docker-engine: starting dockerd (log: $log)"
setsid nohup dockerd >"$log" 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if answers; then
    echo "docker-engine: dockerd $(docker version --format '{{.Server.Version}}') is up"
    exit 0
  fi
  sleep 1
done
echo "docker-engine: dockerd did not answer within 60s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
