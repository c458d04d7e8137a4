#!/usr/bin/env bash
# Run hookd for real against this host's Docker Engine (started if needed).
# Settings come from ./.env (see README: Configuration); on the first run a
# webhook secret is generated there, to be pasted into GitHub's webhook form.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/docker-engine.sh
[ -x bin/hookd ] || make build
if [ ! -f .env ]; then
  umask 077
  printf 'HOOKD_WEBHOOK_SECRET=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > .env
  echo "run: wrote a new webhook secret to .env; use it as the secret of the GitHub webhook"
fi
set -a
# shellcheck disable=SC1091
. ./.env
set +a
if [ "$(id -u)" != 0 ] && [ -z "${HOOKD_STATE_DIR:-}" ]; then
  export HOOKD_STATE_DIR="$PWD/.hookd-state"
fi
exec ./bin/hookd "$@"
