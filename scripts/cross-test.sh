#!/usr/bin/env bash
# The suite on the Raspberry Pi's own architectures, under qemu-user:
# GOARCH=arm64, and GOARCH=arm GOARM=7 (32-bit Raspberry Pi OS: int is 32
# bits, 64-bit atomics need 8-byte alignment). Every package hookd ships
# runs; the tests that need a Docker Engine skip (the engine here runs amd64
# images), so this covers the pure code. Left out, to stay within minutes
# under emulation: the test rig itself (internal/dockertest: it builds and
# pushes test images, which is not code a Pi runs) and TestCardinality
# (30,000 deliveries to count metric series, nothing that depends on the
# architecture; about 90 s per architecture under qemu).
# Installs Debian's qemu-user-static when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-aarch64-static >/dev/null 2>&1 || ! command -v qemu-arm-static >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "cross-test: qemu-user-static is missing; install it (apt-get install qemu-user-static)" >&2
    exit 1
  fi
  echo "cross-test: installing Debian's qemu-user-static"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq qemu-user-static >/dev/null
fi

pkgs=$(go list ./... | grep -v '/internal/dockertest')
for arch in arm64 arm; do
  case $arch in
    arm64) qemu=qemu-aarch64-static ;;
    arm) qemu=qemu-arm-static ;;
  esac
  start=$(date +%s)
  # No engine answers: the engine tests skip instead of running amd64
  # images from an arm test binary. TestFloodOfStrangers builds hookd and
  # execs it as a process of its own, which under GOARCH=arm would need
  # qemu too; it measures the host's binary anyway.
  env -u HOOKD_INTEGRATION -u HOOKD_TEST_ENGINE_RESTART DOCKER_HOST=unix:///nonexistent/docker.sock \
    GOARCH=$arch GOARM=7 go test -count=1 -timeout 20m -exec "$qemu" -skip '^(TestCardinality|TestFloodOfStrangers)$' $pkgs
  echo "cross-test: GOARCH=$arch$([ $arch = arm ] && echo ' GOARM=7') passed in $(( $(date +%s) - start ))s"
done
