#!/usr/bin/env bash
# The tests that restart the Docker engine in the middle of a deploy
# (TestIntegrationEngineRestart). They restart the engine they are given, so
# they run against a private one (scripts/private-dockerd.sh), never against
# the shared engine other tests use at the same time. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/hookd-engine.XXXXXX)
trap 'scripts/private-dockerd.sh stop "$dir"' EXIT
scripts/private-dockerd.sh start "$dir"
DOCKER_HOST="unix://$dir/docker.sock" HOOKD_INTEGRATION=1 HOOKD_TEST_ENGINE_RESTART=1 \
  HOOKD_TEST_ENGINE_RESTART_CMD="$PWD/scripts/private-dockerd.sh restart $dir" \
  go test -race -count=1 -timeout 20m -run '^TestIntegrationEngineRestart' ./internal/deployer "$@"
