#!/usr/bin/env bash
# Load test of POST /hooks/github on loopback: hookd's webhook handler
# against a bare net/http server that only reads the body and checks the
# HMAC (the ceiling on this machine). wrk (Debian's) posts the real 11 KB
# package payload, signed, with a new delivery id per request, at 16 and
# 64 connections for 10 s each against each server, interleaved.
#
# Targets: hookd >= 60% of the bare server's requests/s, p99 <= 3x its p99,
# zero errors, hookd's peak RSS (VmHWM) <= 30 MiB. Exits 1 if one is missed.
#
# Settings (environment): BENCH_DURATION (10s), BENCH_CONNECTIONS ("16 64"),
# BENCH_THREADS (wrk threads, 2), BENCH_ROUNDS (1; with more, every pair is
# run again and the median of each is reported, which helps on a machine
# others are using).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-"16 64"}
threads=${BENCH_THREADS:-2}
rounds=${BENCH_ROUNDS:-1}
payload=internal/webhook/testdata/package.published.container.real.json

command -v wrk >/dev/null || { echo "run.sh: wrk not found (apt-get install wrk)" >&2; exit 2; }
command -v openssl >/dev/null || { echo "run.sh: openssl not found" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/server" ./bench/bareserver

secret="bench-$(openssl rand -hex 16)"
signature="sha256=$(openssl dgst -sha256 -hmac "$secret" "$payload" | awk '{print $NF}')"

# start MODE: starts a server, sets addr_MODE and pid_MODE.
start() {
	local mode=$1
	BENCH_SECRET=$secret "$tmp/server" -mode "$mode" >"$tmp/$mode.addr" 2>/dev/null &
	local pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		[ -s "$tmp/$mode.addr" ] && break
		sleep 0.05
	done
	[ -s "$tmp/$mode.addr" ] || { echo "run.sh: $mode server did not start" >&2; exit 1; }
	printf -v "addr_$mode" '%s' "$(head -1 "$tmp/$mode.addr")"
	printf -v "pid_$mode" '%s' "$pid"
}
start bare
start hookd

# Warm up both (and check the signature is accepted).
for mode in bare hookd; do
	var=addr_$mode
	code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://${!var}/hooks/github" \
		-H 'Content-Type: application/json' -H 'X-GitHub-Event: package' \
		-H "X-GitHub-Delivery: warmup" -H "X-Hub-Signature-256: $signature" --data-binary "@$payload")
	[ "$code" = 202 ] || { echo "run.sh: $mode answered $code to a signed delivery, want 202" >&2; exit 1; }
done

# median of the arguments
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

# cpu PID: the process's user+system CPU time so far, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

declare -A rps_all p99_all rps p99 errs cpu_ticks requests
for round in $(seq "$rounds"); do
	for c in $connections; do
		for mode in bare hookd; do
			var=addr_$mode
			pid=pid_$mode
			before=$(cpu "${!pid}")
			echo "== round $round, $mode, $c connections, $duration: wrk -t$threads -c$c -d$duration --latency -s bench/post.lua http://${!var}/hooks/github"
			BENCH_PAYLOAD=$payload BENCH_SIGNATURE=$signature BENCH_RUN="$mode-$c-$round" \
				wrk -t"$threads" -c"$c" -d"$duration" --latency -s bench/post.lua "http://${!var}/hooks/github" | tee "$tmp/wrk.out"
			line=$(grep '^RESULT' "$tmp/wrk.out")
			get() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$line"; }
			cpu_ticks[$mode-$c]=$((${cpu_ticks[$mode-$c]:-0} + $(cpu "${!pid}") - before))
			requests[$mode-$c]=$((${requests[$mode-$c]:-0} + $(get requests)))
			rps_all[$mode-$c]+=" $(get rps)"
			p99_all[$mode-$c]+=" $(get p99_us)"
			errs[$mode-$c]=$((${errs[$mode-$c]:-0} + $(get errors_connect) + $(get errors_read) + $(get errors_write) + $(get errors_status) + $(get errors_timeout)))
		done
	done
done
for key in "${!rps_all[@]}"; do
	# shellcheck disable=SC2086 # word splitting wanted
	rps[$key]=$(median ${rps_all[$key]})
	# shellcheck disable=SC2086
	p99[$key]=$(median ${p99_all[$key]})
done

hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; } # KiB
hwm_hookd=$(hwm "$pid_hookd")
hwm_bare=$(hwm "$pid_bare")

echo
[ "$rounds" = 1 ] || echo "medians of $rounds rounds (errors summed)"
printf '%-6s %5s %10s %10s %7s %16s\n' server conns 'req/s' 'p99 (ms)' errors 'server CPU/req'
for c in $connections; do
	for mode in bare hookd; do
		printf '%-6s %5s %10s %10.2f %7s %13.1f µs\n' "$mode" "$c" "${rps[$mode-$c]}" "$(awk "BEGIN{print ${p99[$mode-$c]}/1000}")" "${errs[$mode-$c]}" \
			"$(awk "BEGIN{print ${cpu_ticks[$mode-$c]} / $tck * 1e6 / ${requests[$mode-$c]}}")"
	done
done
printf 'peak RSS (VmHWM): hookd %.1f MiB, bare %.1f MiB\n' "$(awk "BEGIN{print $hwm_hookd/1024}")" "$(awk "BEGIN{print $hwm_bare/1024}")"

ok=1
for c in $connections; do
	ratio=$(awk "BEGIN{printf \"%.2f\", ${rps[hookd-$c]}/${rps[bare-$c]}}")
	p99ratio=$(awk "BEGIN{printf \"%.2f\", ${p99[hookd-$c]}/${p99[bare-$c]}}")
	verdict=ok
	if awk "BEGIN{exit !($ratio < 0.60 || $p99ratio > 3.0)}" || [ "${errs[hookd-$c]}" != 0 ] || [ "${errs[bare-$c]}" != 0 ]; then
		verdict=MISSED
		ok=0
	fi
	echo "$c connections: hookd/bare req/s = $ratio (target >= 0.60), p99 ratio = $p99ratio (target <= 3), errors hookd ${errs[hookd-$c]} bare ${errs[bare-$c]} (target 0): $verdict"
done
if [ "$hwm_hookd" -gt $((30 * 1024)) ]; then
	echo "hookd peak RSS above 30 MiB: MISSED"
	ok=0
else
	echo "hookd peak RSS <= 30 MiB: ok"
fi
[ "$ok" = 1 ]
