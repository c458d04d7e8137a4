#!/usr/bin/env bash
# Make sure Debian's caddy package is installed: the start-first tests put
# Caddy in front of their apps, in a container they build from the host's
# /usr/bin/caddy and the libraries it links (no base image can be pulled).
# Only the binary is needed: the package's own service is not left running.
set -euo pipefail

if [ -x /usr/bin/caddy ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "caddy: /usr/bin/caddy is missing; install Debian's caddy package (as root: apt-get install caddy)" >&2
  exit 1
fi
echo "caddy: installing Debian's caddy"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show caddy >/dev/null 2>&1; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends caddy >/dev/null
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet caddy 2>/dev/null; then
  systemctl disable --now caddy >/dev/null 2>&1 || true
fi
echo "caddy: $(/usr/bin/caddy version)"
