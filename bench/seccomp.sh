#!/usr/bin/env bash
# bench/seccomp.sh — what the default seccomp profile costs a container start:
# `berth run --rm --rootfs R /bin/true` with the default profile and with
# `--security-opt seccomp=unconfined`, alternating one by one (so drift in the
# machine's load hits both alike), for each runtime (embedded, runc). Prints
# the mean, median and p90 in ms of each, and the difference of the medians.
#
#   bench/seccomp.sh                  RUNS=100 per variant and runtime
#   BENCH_NO_BUILD=1 bench/seccomp.sh use target/release as it is
#
# Everything it starts is stopped and its temp dir removed on exit (trap).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-100}
[ -n "${BENCH_NO_BUILD:-}" ] || (cd "$repo" && cargo build --release -p berth -p berthd -p berth-shim >&2)
tmp=$(mktemp -d /tmp/berth-seccomp-XXXXXX)
bin="$tmp/bin"
mkdir -p "$bin"
cp "$repo"/target/release/{berth,berthd,berth-shim} "$bin/"
pids=()
cleanup() {
	for rt in embedded runc; do
		[ -S "$tmp/$rt.sock" ] || continue
		for id in $("$bin/berth" --socket "$tmp/$rt.sock" ps -aq 2>/dev/null); do
			"$bin/berth" --socket "$tmp/$rt.sock" rm -f "$id" >/dev/null 2>&1 || true
		done
	done
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "${tmp:?}"
}
trap cleanup EXIT
bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs" >&2
for rt in embedded runc; do
	"$bin/berthd" --default-network none --root "$tmp/root-$rt" --socket "$tmp/$rt.sock" --runtime "$rt" \
		--shim "$bin/berth-shim" --log-level warn 2>"$tmp/berthd-$rt.log" &
	pids+=($!)
done
for rt in embedded runc; do
	for _ in $(seq 200); do [ -S "$tmp/$rt.sock" ] && break; sleep 0.05; done
done

# One run, in ms.
one() {
	local rt=$1
	shift
	local t0 t1
	t0=$(date +%s%N)
	"$bin/berth" --socket "$tmp/$rt.sock" run --rm "$@" --rootfs "$tmp/rootfs" /bin/true >/dev/null
	t1=$(date +%s%N)
	echo "scale=3; ($t1 - $t0) / 1000000" | bc
}

# mean median p90 of the numbers on stdin.
stats() {
	sort -n | awk '{ v[NR] = $1; s += $1 } END {
		p90 = int(NR * 0.9); if (p90 < 1) p90 = 1;
		printf "%.2f %.2f %.2f\n", s / NR, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[p90] }'
}

printf '| runtime | profile | runs | mean ms | median ms | p90 ms |\n'
printf '| --- | --- | ---: | ---: | ---: | ---: |\n'
for rt in embedded runc; do
	# Warm up both paths (page cache, the first profile parse).
	for _ in 1 2 3; do one "$rt" >/dev/null; one "$rt" --security-opt seccomp=unconfined >/dev/null; done
	: >"$tmp/default.$rt"
	: >"$tmp/unconfined.$rt"
	for _ in $(seq "$RUNS"); do
		one "$rt" >>"$tmp/default.$rt"
		one "$rt" --security-opt seccomp=unconfined >>"$tmp/unconfined.$rt"
	done
	read -r dm dmed dp90 < <(stats <"$tmp/default.$rt")
	read -r um umed up90 < <(stats <"$tmp/unconfined.$rt")
	printf '| %s | default | %d | %s | %s | %s |\n' "$rt" "$RUNS" "$dm" "$dmed" "$dp90"
	printf '| %s | unconfined | %d | %s | %s | %s |\n' "$rt" "$RUNS" "$um" "$umed" "$up90"
	printf '| %s | **cost (median)** | | | **%s** | |\n' "$rt" "$(echo "scale=2; $dmed - $umed" | bc)"
done
