#!/usr/bin/env bash
# bench/stats.sh — what `berth stats` costs berthd: its CPU time and RSS with
# N idle containers, first with nobody watching, then while CLIENTS clients
# stream `berth stats` of all of them for SECS seconds (berthd's one sampler
# reads every container's cgroup once a second, whatever the client count).
#
# Run as root:  bench/stats.sh            (N=100 SECS=60 CLIENTS=1)
#               N=20 SECS=10 bench/stats.sh
#               CLIENTS=4 bench/stats.sh  (the sampler is shared: the cost
#                                          should not grow with clients)
# BENCH_NO_BUILD=1 uses target/release as it is; BENCH_BIN=DIR takes the
# binaries from DIR instead (e.g. target/debug: slower, for a quick look). Not a test; figures in
# docs/performance.md. docker and podman beside it: bench/stats-peers.sh.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
N=${N:-100}
SECS=${SECS:-60}
CLIENTS=${CLIENTS:-1}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
if [ -z "${BENCH_NO_BUILD:-}" ] && [ -z "${BENCH_BIN:-}" ]; then
	(cd "$repo" && cargo build --release -q -p berthd -p berth-shim -p berth)
fi
B=${BENCH_BIN:-$repo/target/release}
tmp=$(mktemp -d /tmp/berth-stats.XXXXXX)
sock=$tmp/berth.sock
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	if [ -n "${dpid:-}" ]; then
		"$B/berth" --socket "$sock" ps -aq --no-trunc 2>/dev/null |
			xargs -r "$B/berth" --socket "$sock" rm -f >/dev/null 2>&1 || true
		kill "$dpid" 2>/dev/null || true
		wait "$dpid" 2>/dev/null || true
	fi
	rm -rf "${tmp:?}"
}
trap cleanup EXIT
bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs" >/dev/null
"$B/berthd" --default-network none --root "$tmp/state" --socket "$sock" --shim "$B/berth-shim" --log-level warn \
	2>"$tmp/berthd.log" &
dpid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
berth() { "$B/berth" --socket "$sock" "$@"; }
for i in $(seq "$N"); do
	berth run -d --name "idle$i" --rootfs "$tmp/rootfs" sleep 100000 >/dev/null
done
# utime+stime of berthd in clock ticks, and its RSS in KiB.
ticks() { awk '{print $14 + $15}' "/proc/$dpid/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$dpid/status"; }
hz=$(getconf CLK_TCK)
measure() { # label seconds
	local t0 t1 r0 r1
	t0=$(ticks)
	r0=$(rss)
	sleep "$2"
	t1=$(ticks)
	r1=$(rss)
	awk -v l="$1" -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$2" -v r0="$r0" -v r1="$r1" \
		'BEGIN { printf "%-28s cpu %5.2f %%  rss %6.1f -> %6.1f MiB\n", l, (b-a)/hz/s*100, r0/1024, r1/1024 }'
}
echo "berthd with $N idle containers ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
measure "idle, no stats client" "$SECS"
for c in $(seq "$CLIENTS"); do
	berth stats --format json >"$tmp/stats$c.out" &
	pids+=($!)
done
measure "stats, $CLIENTS client(s)" "$SECS"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
pids=()
lines=$(cat "$tmp"/stats*.out | wc -l)
echo "stats lines received: $lines (expected about $((N * SECS * CLIENTS)))"
