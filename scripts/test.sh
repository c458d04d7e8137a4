#!/usr/bin/env bash
# The test command: vet, the whole suite with the race detector against a
# real Docker Engine (including the runtime image, built here from a binary
# built on the host), the deploy files checked by their real loaders, and a
# short fuzz run of the webhook payload parser.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/docker-engine.sh
./scripts/test-tools.sh
go vet ./...
./scripts/build-image.sh hookd:e2e
HOOKD_E2E_IMAGE=hookd:e2e go test -race -count=1 -timeout 30m ./...
(cd tools/checks && go vet ./... && go test -count=1 ./...)
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 20s -fuzzminimizetime 2s ./internal/webhook
