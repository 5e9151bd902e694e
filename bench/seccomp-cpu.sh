#!/usr/bin/env bash
# bench/seccomp-cpu.sh — the CPU time the default seccomp profile costs a
# container's start, measured where it is spent: in the container's own
# cgroup. The runtime's init process (libcontainer's in the embedded runtime,
# `runc init` with runc) joins the container's cgroup before it builds and
# loads the filter, so cpuacct.usage of a fresh `run -d ... sleep` container
# holds that work and nothing of berthd's or the shim's. Default profile and
# `--security-opt seccomp=unconfined` alternate run by run, for each runtime;
# prints the median and p90 in ms and the difference of the medians.
# Wall time is in bench/seccomp.sh; libseccomp alone in bench/seccomp-build.sh.
#
#   bench/seccomp-cpu.sh                  RUNS=40 per variant and runtime
#   BENCH_NO_BUILD=1 bench/seccomp-cpu.sh use target/release as it is
#   OPT_A=seccomp=P1.json OPT_B=seccomp=P2.json bench/seccomp-cpu.sh
#                                         compare two --security-opt values
#                                         (OPT_A: none = the default profile;
#                                         OPT_B: seccomp=unconfined), e.g. two
#                                         shapes of one profile
#   RUNTIMES=embedded bench/seccomp-cpu.sh one runtime only
#
# cgroup v1 (cpuacct) as on the build machine. Everything it starts is
# removed, berthd stopped by its pid and the temp dir removed on exit (trap).
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-40}
A=${OPT_A:-}
B_OPT=${OPT_B:-seccomp=unconfined}
RUNTIMES=${RUNTIMES:-embedded runc}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -n "${BENCH_NO_BUILD:-}${BENCH_BIN:-}" ] || (cd "$repo" && cargo build --release -q -p berth -p berthd -p berth-shim)
acct=/sys/fs/cgroup/cpuacct
[ -d "$acct" ] || { echo "needs cgroup v1 cpuacct at $acct" >&2; exit 1; }
tmp=$(mktemp -d /tmp/berth-seccomp-cpu-XXXXXX)
B=${BENCH_BIN:-$repo/target/release}
pids=()
cleanup() {
	for rt in embedded runc; do
		[ -S "$tmp/$rt.sock" ] || continue
		"$B/berth" --socket "$tmp/$rt.sock" ps -aq --no-trunc 2>/dev/null |
			xargs -r "$B/berth" --socket "$tmp/$rt.sock" rm -f >/dev/null 2>&1 || true
	done
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "${tmp:?}"
}
trap cleanup EXIT
bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs" >&2
for rt in $RUNTIMES; do
	"$B/berthd" --default-network none --root "$tmp/root-$rt" --socket "$tmp/$rt.sock" --runtime "$rt" \
		--shim "$B/berth-shim" --log-level warn 2>"$tmp/berthd-$rt.log" &
	pids+=($!)
done
for rt in $RUNTIMES; do
	for _ in $(seq 200); do [ -S "$tmp/$rt.sock" ] && break; sleep 0.05; done
done

# One container's start CPU, in ms: run it, read its cgroup, remove it.
one() {
	local rt=$1 id ns
	shift
	id=$("$B/berth" --socket "$tmp/$rt.sock" run -d "$@" --rootfs "$tmp/rootfs" sleep 1000)
	ns=$(cat "$acct/berth/$id/cpuacct.usage")
	"$B/berth" --socket "$tmp/$rt.sock" rm -f "$id" >/dev/null
	echo "scale=3; $ns / 1000000" | bc
}

stats() { # median p90 of the numbers on stdin
	sort -n | awk '{ v[NR] = $1 } END {
		p90 = int(NR * 0.9); if (p90 < 1) p90 = 1;
		printf "%.2f %.2f\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[p90] }'
}

# The --security-opt arguments of variant A and B.
a_args=()
[ -z "$A" ] || a_args=(--security-opt "$A")
b_args=(--security-opt "$B_OPT")
a_name=${A:-default}
printf '| runtime | profile | runs | median ms | p90 ms |\n| --- | --- | ---: | ---: | ---: |\n'
for rt in $RUNTIMES; do
	for _ in 1 2 3; do one "$rt" "${a_args[@]}" >/dev/null; one "$rt" "${b_args[@]}" >/dev/null; done
	: >"$tmp/d.$rt"
	: >"$tmp/u.$rt"
	for _ in $(seq "$RUNS"); do
		one "$rt" "${a_args[@]}" >>"$tmp/d.$rt"
		one "$rt" "${b_args[@]}" >>"$tmp/u.$rt"
	done
	read -r dmed dp90 < <(stats <"$tmp/d.$rt")
	read -r umed up90 < <(stats <"$tmp/u.$rt")
	printf '| %s | %s | %d | %s | %s |\n' "$rt" "${a_name##*/}" "$RUNS" "$dmed" "$dp90"
	printf '| %s | %s | %d | %s | %s |\n' "$rt" "${B_OPT##*/}" "$RUNS" "$umed" "$up90"
	printf '| %s | **difference (median)** | | **%s** | |\n' "$rt" "$(echo "scale=2; $dmed - $umed" | bc)"
done
