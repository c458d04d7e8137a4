#!/usr/bin/env bash
# What the status page's browser test needs: Debian's chromium, and the
# axe-core accessibility checker from npm, installed into a cache directory
# outside the repository (never committed). Each is installed only when
# missing, quietly. Prints the two paths as environment assignments, which
# scripts/test.sh exports (by hand: set -a; eval "$(scripts/browser.sh)"; set +a):
#
#   HOOKD_CHROMIUM=/usr/bin/chromium
#   HOOKD_AXE_JS=$HOME/.cache/hookd/axe-core-4.11.4/node_modules/axe-core/axe.min.js
set -euo pipefail

axe_version=4.11.4
cache=${HOOKD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hookd}

# apt quietly: its output goes to a file that is shown only if it fails.
apt_install() {
  local log
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a
  if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "browser: chromium is not installed; install it (as root: apt-get install chromium)" >&2
    exit 1
  fi
  echo "browser: installing Debian's chromium" >&2
  apt_install chromium fonts-dejavu-core
  chromium=$(command -v chromium)
fi

axe_dir=$cache/axe-core-$axe_version
axe=$axe_dir/node_modules/axe-core/axe.min.js
if [ ! -s "$axe" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "browser: npm is not installed; install it (as root: apt-get install npm)" >&2
      exit 1
    fi
    echo "browser: installing Debian's npm" >&2
    apt_install npm
  fi
  echo "browser: installing axe-core $axe_version into $axe_dir" >&2
  mkdir -p "$axe_dir"
  npm install --prefix "$axe_dir" --no-save --no-audit --no-fund --loglevel=error "axe-core@$axe_version" >&2
fi

echo "HOOKD_CHROMIUM=$chromium"
echo "HOOKD_AXE_JS=$axe"
