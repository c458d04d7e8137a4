#!/usr/bin/env bash
# The test command: vet, the whole suite with the race detector against a
# real Docker Engine, and a short fuzz run of the webhook payload parser.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/docker-engine.sh
go vet ./...
go test -race -count=1 -timeout 30m ./...
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 20s -fuzzminimizetime 2s ./internal/webhook
