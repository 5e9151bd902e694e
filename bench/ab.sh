#!/usr/bin/env bash
# bench/ab.sh — berth before and after a change, side by side in one run.
#
#   bench/ab.sh DIR_A DIR_B        (as root; each DIR holds berth, berthd, berth-shim)
#
# Starts one berthd from each directory (`--runtime embedded --default-network
# none`, each with its own root and a run root on a tmpfs of its own, as
# /run is on a systemd host), then alternates them: N `run --rm --rootfs R
# /bin/true` each (MODE=exec: N `exec /bin/true` into a running container),
# then BURSTS bursts each of 50 `run --rm` 8 at a time. The order flips from
# round to round, so load from elsewhere hits both alike. Prints the median
# of each. Everything it made is removed on exit.
#
# Settings: N (40), BURSTS (6), MODE (run | exec), EXTRA_A / EXTRA_B (more
# berthd flags for one side).
#
# Make the two directories from two builds, e.g.
#   git stash; cargo build --release --bins; mkdir -p /tmp/a; cp target/release/{berth,berthd,berth-shim} /tmp/a
#   git stash pop; cargo build --release --bins; mkdir -p /tmp/b; cp target/release/{berth,berthd,berth-shim} /tmp/b
set -euo pipefail

A=${1:?usage: bench/ab.sh DIR_A DIR_B}
B=${2:?usage: bench/ab.sh DIR_A DIR_B}
N=${N:-40} BURSTS=${BURSTS:-6} MODE=${MODE:-run}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ "$(id -u)" = 0 ] || { echo "ab.sh: run as root" >&2; exit 1; }
for d in "$A" "$B"; do
	for b in berth berthd berth-shim; do
		[ -x "$d/$b" ] || { echo "ab.sh: no $d/$b" >&2; exit 1; }
	done
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-ab.XXXXXX")
declare -A bin=([A]=$A [B]=$B)
pids=()
cli() { "${bin[$1]}/berth" --socket "$tmp/$1.sock" "${@:2}"; }
cleanup() {
	set +e
	for s in A B; do
		if [ -S "$tmp/$s.sock" ]; then
			for id in $(cli "$s" ps -aq 2>/dev/null); do cli "$s" rm -f "$id" >/dev/null 2>&1; done
		fi
	done
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	for s in A B; do mountpoint -q "$tmp/$s-run" && umount "$tmp/$s-run"; done
	rm -rf "${tmp:?}"
}
trap cleanup EXIT

bash "$here/../scripts/mkrootfs.sh" "$tmp/rootfs" >/dev/null
R=$tmp/rootfs
for s in A B; do
	mkdir -p "$tmp/$s-run"
	mount -t tmpfs tmpfs "$tmp/$s-run"
	extra=EXTRA_$s
	# shellcheck disable=SC2086 # the extra flags are words
	"${bin[$s]}/berthd" --default-network none --runtime embedded --root "$tmp/$s" \
		--run-root "$tmp/$s-run" --socket "$tmp/$s.sock" --log-level warn ${!extra:-} \
		</dev/null 2>"$tmp/$s.log" &
	pids+=("$!")
done
for s in A B; do
	ok=""
	for _ in $(seq 200); do
		cli "$s" version >/dev/null 2>&1 && { ok=1; break; }
		sleep 0.05
	done
	[ -n "$ok" ] || { echo "ab.sh: berthd $s did not start (see $tmp/$s.log)" >&2; cat "$tmp/$s.log" >&2; exit 1; }
	for _ in 1 2 3; do cli "$s" run --rm --rootfs "$R" /bin/true; done
	[ "$MODE" = exec ] && cli "$s" run -d --name ab-exec --rootfs "$R" sleep 1000000 >/dev/null
done

order() { if (($1 % 2)); then echo A B; else echo B A; fi; }
declare -A T P
for ((i = 0; i < N; i++)); do
	for s in $(order "$i"); do
		t0=$EPOCHREALTIME
		if [ "$MODE" = exec ]; then
			cli "$s" exec ab-exec /bin/true
		else
			cli "$s" run --rm --rootfs "$R" /bin/true
		fi
		t1=$EPOCHREALTIME
		T[$s]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) * 1000}') "
	done
done
for ((i = 0; i < BURSTS; i++)); do
	for s in $(order "$i"); do
		t0=$EPOCHREALTIME
		seq 50 | xargs -P 8 -I{} "${bin[$s]}/berth" --socket "$tmp/$s.sock" run --rm --rootfs "$R" /bin/true
		t1=$EPOCHREALTIME
		P[$s]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", 50 / (b - a)}') "
	done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {if (!NR) print "—"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for s in A B; do
	echo "$s (${bin[$s]}): $MODE median $(echo "${T[$s]:-}" | median) ms over $N; 50 at 8 median $(echo "${P[$s]:-}" | median)/s over $BURSTS"
done
