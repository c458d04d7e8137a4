#!/usr/bin/env bash
# The webhook benchmark, of the shipped binary: hookd built as `make build`
# builds it, its state directory on disk, against a bare net/http server that
# only reads the body and checks the HMAC (the ceiling on this machine), side
# by side in one run. wrk (Debian's, installed if missing) posts the real
# 11 KB package payload with a new delivery id per request, at 16 and 64
# connections, BENCH_DURATION each:
#
#  (a) forged: a wrong signature                      target: >= 0.6x the bare server's req/s
#  (b) signed, queues nothing (no target follows it)  target: >= 0.4x
#  (c) signed, queues a deploy for a real target (a labelled container
#      following the payload's image; the deliveries coalesce into its
#      pending job)                                   target: >= 2000 req/s at 16 connections,
#                                                     p99 <= 50 ms; fsyncs per delivery reported
#      then kill -9 in the middle of a burst: after a restart, every
#      delivery answered 202 has its job and is known (bench/burst)
#  flood: 500 strangers' connections for BENCH_FLOOD (60s), bench/flood:
#      hookd's peak private memory (RssAnon, sampled every 50 ms: what the
#      host pays) < 40 MiB, /healthz and a signed delivery answered within
#      1 s; the peak resident memory (VmHWM, which adds the binary's pages
#      mapped from the page cache) is reported beside it
#
# An answer from a cap (503) counts as an answer ("other" in the answers). Exits 1 if a target is
# missed. Needs a Docker Engine (for the target container of (c)), strace
# (fsyncs are counted with strace -c on the hookd process of (c)) and root or
# the packages installed.
#
# Settings: BENCH_DURATION (10s), BENCH_CONNECTIONS ("16 64"), BENCH_THREADS
# (wrk threads, 2), BENCH_FLOOD (60s; 0 skips the flood).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-"16 64"}
threads=${BENCH_THREADS:-2}
flood=${BENCH_FLOOD:-60s}
payload=internal/webhook/testdata/package.published.container.real.json
image=ghcr.io/theryangeary/www:0e2a89b # what the payload names

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v strace >/dev/null || need+=(strace)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || { echo "run.sh: install ${need[*]} (apt-get install ${need[*]})" >&2; exit 2; }
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
docker version >/dev/null 2>&1 || { echo "run.sh: no Docker Engine answers (scripts/docker-engine.sh starts one)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
scope="hookd.bench=$$"
container=hookd-bench-$$
made_image=no
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	docker rm -f "$container" >/dev/null 2>&1 || true
	[ "$made_image" = no ] || docker rmi "$image" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "== building hookd (as make build does), the bare server, bench/flood, bench/burst"
make --no-print-directory build >/dev/null
cp bin/hookd "$tmp/hookd"
for cmd in bareserver flood burst; do go build -o "$tmp/$cmd" "./bench/$cmd"; done
echo "state directories under $tmp, on $(stat -f -c %T "$tmp") ($(df --output=source "$tmp" | tail -1))"

# The target of (c): a container of the payload's image, from a static
# program in a FROM scratch image (nothing is pulled).
if ! docker image inspect "$image" >/dev/null 2>&1; then
	mkdir -p "$tmp/img"
	CGO_ENABLED=0 go build -o "$tmp/img/testapp" ./internal/dockertest/testapp
	printf 'FROM scratch\nCOPY testapp /testapp\nENTRYPOINT ["/testapp", "serve"]\n' >"$tmp/img/Dockerfile"
	docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
	docker build -q -t "$image" "$tmp/img" >/dev/null
	made_image=yes
fi
docker run -d --name "$container" --label hookd.enable=true --label "$scope" "$image" >/dev/null

secret="bench-$(openssl rand -hex 16)"
token="bench-token-$(openssl rand -hex 16)"
signature="sha256=$(openssl dgst -sha256 -hmac "$secret" "$payload" | awk '{print $NF}')"
forged="sha256=$(printf '0%.0s' $(seq 64))"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_hookd NAME FILTER [PREFIX...]: starts hookd (under PREFIX, e.g.
# strace) with its own state dir; sets addr_NAME and pid_NAME (hookd's own
# pid).
start_hookd() {
	local name=$1 filter=$2
	shift 2
	local port
	port=$(free_port)
	mkdir -p "$tmp/state-$name"
	env HOOKD_LISTEN="127.0.0.1:$port" HOOKD_STATE_DIR="$tmp/state-$name" HOOKD_WEBHOOK_SECRET="$secret" \
		HOOKD_API_TOKEN="$token" HOOKD_POLL_INTERVAL=0 HOOKD_LABEL_FILTER="$filter" HOOKD_LOG_LEVEL=warn \
		"$@" "$tmp/hookd" >>"$tmp/$name.log" 2>&1 &
	pids+=("$!")
	local ready=no
	for _ in $(seq 200); do
		if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=yes; break; fi
		sleep 0.05
	done
	[ $ready = yes ] || { echo "run.sh: hookd $name did not become ready" >&2; cat "$tmp/$name.log" >&2; exit 1; }
	printf -v "addr_$name" '%s' "127.0.0.1:$port"
	printf -v "pid_$name" '%s' "$(pgrep -n -f "^$tmp/hookd$" -P "$!" || echo "$!")"
}

BENCH_SECRET=$secret "$tmp/bareserver" >"$tmp/bare.addr" 2>/dev/null &
pids+=("$!")
pid_bare=$!
for _ in $(seq 100); do [ -s "$tmp/bare.addr" ] && break; sleep 0.05; done
addr_bare=$(head -1 "$tmp/bare.addr")
start_hookd none "hookd.bench-none=$$"                      # no targets: (a), (b)
start_hookd target "$scope" strace -f --seccomp-bpf -qq -c -e trace=fsync,fdatasync -o "$tmp/fsyncs.txt" # (c)

# bench NAME ADDR SIGNATURE CONNS: one wrk run; sets r_rps, r_p99, r_req,
# r_errors, r_codes (status → count).
bench() {
	local name=$1 addr=$2 sig=$3 c=$4
	echo "-- $name, $c connections, $duration: wrk -t$threads -c$c -d$duration --latency -s bench/post.lua http://$addr/hooks/github"
	BENCH_PAYLOAD=$payload BENCH_SIGNATURE=$sig BENCH_RUN="$name-$c-$$" \
		wrk -t"$threads" -c"$c" -d"$duration" --latency -s bench/post.lua "http://$addr/hooks/github" >"$tmp/wrk.out"
	local line
	line=$(grep '^RESULT' "$tmp/wrk.out")
	get() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$line"; }
	r_rps=$(get rps)
	r_p99=$(awk "BEGIN{print $(get p99_us)/1000}")
	r_req=$(get requests)
	r_errors=$(($(get errors_connect) + $(get errors_read) + $(get errors_write) + $(get errors_timeout)))
	r_codes="2xx=$(($(get requests) - $(get errors_status))) other=$(get errors_status)"
	printf '   %s req/s, p99 %s ms, answers %s, socket errors %s\n' "$r_rps" "$r_p99" "$r_codes" "$r_errors"
}

ok=1
verdict() { # verdict TEXT CONDITION
	if awk "BEGIN{exit !($2)}"; then echo "$1: ok"; else echo "$1: MISSED"; ok=0; fi
}
summary=()
for c in $connections; do
	bench bare-forged "$addr_bare" "$forged" "$c"
	bare_forged=$r_rps
	bench hookd-forged "$addr_none" "$forged" "$c"
	summary+=("$(printf '(a) forged          %3s conns: hookd %7s req/s vs bare %7s = %.2fx (target >= 0.6), hookd p99 %s ms, answers %s' \
		"$c" "$r_rps" "$bare_forged" "$(awk "BEGIN{print $r_rps/$bare_forged}")" "$r_p99" "$r_codes")")
	verdict "(a) $c connections" "$r_rps >= 0.6 * $bare_forged && $r_errors == 0"

	bench bare-signed "$addr_bare" "$signature" "$c"
	bare_signed=$r_rps
	bench hookd-nothing "$addr_none" "$signature" "$c"
	summary+=("$(printf '(b) queues nothing  %3s conns: hookd %7s req/s vs bare %7s = %.2fx (target >= 0.4), hookd p99 %s ms, answers %s' \
		"$c" "$r_rps" "$bare_signed" "$(awk "BEGIN{print $r_rps/$bare_signed}")" "$r_p99" "$r_codes")")
	verdict "(b) $c connections" "$r_rps >= 0.4 * $bare_signed && $r_errors == 0"
done
fsync_deliveries=0
for c in $connections; do
	bench hookd-deploy "$addr_target" "$signature" "$c"
	n202=$(sed -nE 's/.*2xx=([0-9]+).*/\1/p' <<<"$r_codes") # all 202: hookd answers nothing else 2xx here
	fsync_deliveries=$((fsync_deliveries + ${n202:-0}))
	summary+=("$(printf '(c) queues a deploy %3s conns: hookd %7s req/s, p99 %s ms, answers %s' "$c" "$r_rps" "$r_p99" "$r_codes")")
	if [ "$c" = 16 ]; then verdict "(c) 16 connections" "$r_rps >= 2000 && $r_p99 <= 50 && $r_errors == 0"; fi
done
# Stop (c)'s hookd so that strace writes its count: every fsync of the
# process's life, start-up and the deploy jobs' own writes included.
kill "$pid_target"
for _ in $(seq 100); do [ -s "$tmp/fsyncs.txt" ] && break; sleep 0.1; done
sleep 0.5
syncs=$(awk '$NF ~ /^(fsync|fdatasync)$/ {n += $4} END {print n+0}' "$tmp/fsyncs.txt")
summary+=("$(printf '(c) fsyncs: %s for %s deliveries answered 202 = %.3f per delivery (strace -c, whole life of the process)' \
	"$syncs" "$fsync_deliveries" "$(awk "BEGIN{print $syncs/($fsync_deliveries > 0 ? $fsync_deliveries : 1)}")")")

echo "-- kill -9 in the middle of a burst of deliveries queueing a deploy (16 connections)"
start_hookd kill "$scope"
BENCH_SECRET=$secret "$tmp/burst" -addr "$addr_kill" -conns 16 -duration 5s -out "$tmp/accepted.txt" -payload "$payload" >"$tmp/burst.out" &
burst=$!
sleep 1.5
kill -9 "$pid_kill"
wait "$burst"
cat "$tmp/burst.out"
start_hookd kill "$scope"
if BENCH_SECRET=$secret BENCH_TOKEN=$token "$tmp/burst" -addr "$addr_kill" -check "$tmp/accepted.txt" -payload "$payload" >"$tmp/check.out" 2>&1; then
	summary+=("(c) kill -9: $(cat "$tmp/check.out"): ok")
else
	summary+=("(c) kill -9: $(cat "$tmp/check.out"): MISSED")
	ok=0
fi

if [ "$flood" != 0 ]; then
	echo "-- flood: bench/flood -conns 500 -duration $flood against hookd (no targets)"
	BENCH_SECRET=$secret "$tmp/flood" -addr "$addr_none" -pid "$pid_none" -conns 500 -duration "$flood" -payload "$payload" | tee "$tmp/flood.out"
	line=$(grep '^RESULT' "$tmp/flood.out")
	get() { sed -E "s/.* $1=([0-9]+).*/\1/" <<<"$line"; }
	summary+=("$(printf 'flood: hookd peak private memory (RssAnon) %.1f MiB (target < 40), VmHWM %.1f MiB (over the whole run, binary pages included), slowest /healthz %s ms, slowest signed delivery %s ms (target <= 1000), unanswered %s + %s' \
		"$(awk "BEGIN{print $(get anon_peak_kib)/1024}")" "$(awk "BEGIN{print $(get hwm_kib)/1024}")" "$(get healthz_max_ms)" "$(get delivery_max_ms)" "$(get healthz_failed)" "$(get delivery_failed)")")
	verdict "flood" "$(get anon_peak_kib) > 0 && $(get anon_peak_kib) < 40 * 1024 && $(get healthz_max_ms) <= 1000 && $(get delivery_max_ms) <= 1000 && $(get healthz_failed) + $(get delivery_failed) == 0"
fi

echo
printf '%s\n' "${summary[@]}"
printf 'peak RSS (VmHWM) of the hookd of (a), (b) and the flood: %.1f MiB; of the bare server: %.1f MiB\n' \
	"$(awk '/^VmHWM/ {print $2/1024}' "/proc/$pid_none/status")" "$(awk '/^VmHWM/ {print $2/1024}' "/proc/$pid_bare/status")"
[ "$ok" = 1 ]
