#!/usr/bin/env bash
# A private Docker Engine for the tests that restart their engine: its own
# socket, data root, exec root, containerd and bridge, and no iptables rules,
# so that stopping it never disturbs the shared engine other tests use.
# Needs root and dockerd (scripts/docker-engine.sh installs it).
#
#   private-dockerd.sh start DIR     start one under DIR (DOCKER_HOST=unix://DIR/docker.sock)
#   private-dockerd.sh restart DIR   stop it as an upgrade would (SIGTERM, wait) and start it again
#   private-dockerd.sh stop DIR      stop it, remove its bridge and DIR
#
# Never start a second dockerd with --bridge=none: dockerd then deletes the
# host's docker0, the bridge of the shared engine.
set -euo pipefail
cmd=${1:?usage: private-dockerd.sh start|restart|stop DIR}
dir=${2:?usage: private-dockerd.sh start|restart|stop DIR}
sock="unix://$dir/docker.sock"

if ! command -v ip >/dev/null 2>&1; then
  echo "private-dockerd: installing Debian's iproute2"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq iproute2 >/dev/null
fi

answers() { DOCKER_HOST=$sock timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  mkdir -p "$dir"
  if [ ! -s "$dir/bridge" ]; then
    # A bridge of its own, in a /24 of the benchmarking range 198.18.0.0/15
    # that no route uses.
    local br net
    br="hkd$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    for _ in $(seq 1 50); do
      net="198.18.$((RANDOM % 256))"
      ip route | grep -q "^$net\." || break
    done
    ip link add name "$br" type bridge
    ip addr add "$net.1/24" dev "$br"
    ip link set "$br" up
    echo "$br" > "$dir/bridge"
  fi
  setsid nohup dockerd --host "$sock" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" --bridge "$(cat "$dir/bridge")" --iptables=false --ip-masq=false \
    >>"$dir/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    answers && return 0
    sleep 0.5
  done
  echo "private-dockerd: dockerd under $dir did not answer within 60s; last lines of its log:" >&2
  tail -n 20 "$dir/dockerd.log" >&2 || true
  return 1
}

stop_daemon() {
  local pid
  pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 240); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  echo "private-dockerd: dockerd $pid did not stop within 60s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

case "$cmd" in
  start) start ;;
  restart) stop_daemon; start ;;
  stop)
    stop_daemon
    if [ -s "$dir/bridge" ]; then ip link del "$(cat "$dir/bridge")" 2>/dev/null || true; fi
    # Whatever the engine left mounted under DIR, deepest first.
    awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
    ;;
  *) echo "usage: private-dockerd.sh start|restart|stop DIR" >&2; exit 2 ;;
esac
