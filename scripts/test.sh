#!/usr/bin/env bash
# The test command: vet, the whole suite with the race detector against a
# real Docker Engine (including the runtime image, built here from a binary
# built on the host), a real chromium for the status page and Debian's Caddy
# in front of the start-first tests, the deploy files checked by their real
# loaders, and a short fuzz run of the webhook payload parser.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/docker-engine.sh
# The status page's browser test: Debian's chromium and axe-core (npm),
# installed when missing; their paths are exported for the test.
browser_env=$(./scripts/browser.sh)
while IFS= read -r line; do export "$line"; done <<<"$browser_env"
# Files tests leave for people to look at (the status page's screenshots).
artifacts=${HOOKD_TEST_ARTIFACTS:-${TMPDIR:-/tmp}/hookd-test-artifacts}
mkdir -p "$artifacts"
./scripts/caddy.sh
go vet ./...
./scripts/build-image.sh hookd:e2e
# The engine-restart tests restart the engine they are given: never the
# shared one, so not in this run; they get a private engine below.
env -u HOOKD_TEST_ENGINE_RESTART HOOKD_E2E_IMAGE=hookd:e2e go test -race -count=1 -timeout 30m -artifacts -outputdir "$artifacts" ./...
echo "test artifacts (screenshots): $artifacts/_artifacts"
if [ "${HOOKD_TEST_ENGINE_RESTART:-}" = 1 ]; then
  ./scripts/engine-restart-test.sh
fi
(cd tools/checks && go vet ./... && go test -count=1 ./...)
# A count, not a duration: with -fuzztime as a duration, Go 1.26's fuzz
# coordinator can fail at the deadline on a loaded machine with no crasher
# (golang/go#75804, fixed in Go 1.27).
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 10000x -fuzzminimizetime 200x ./internal/webhook
