#!/usr/bin/env bash
# bench/scale.sh — berth with many containers (issue 15, item 3). Not a test:
# at N=1000 it runs for several minutes.
#
# Run as root:   bench/scale.sh                  (N=1000)
#                N=200 STEP=50 CYCLES=500 bench/scale.sh
#
# What it measures, on one private berthd (--root/--socket under a temp dir,
# the embedded runtime, the busybox rootfs of scripts/mkrootfs.sh):
#   1. N idle `sleep` containers started with `run -d`, STEP at a time. After
#      each step: the create rate of that step (containers/s), so O(n) work
#      per create shows as a falling rate; `berth ps` and
#      `berth ps -a --format json` latency (median of PS_ROUNDS); the total
#      RSS and PSS of all shims plus berthd, and berthd's RSS alone.
#   2. Restore: berthd is stopped (SIGTERM, containers left running) and
#      started again; the time from its exec until `berth ps -q` lists all N
#      (it answers only once it has adopted every container).
#   3. Churn: the N containers are removed, then CYCLES of `run --rm
#      /bin/true` run with --events-max EVENTS_MAX, and the event count and
#      the database's size are read at each half: bounded if the second half
#      does not grow them.
#
# Settings (environment): N=1000 STEP=100 PS_ROUNDS=5 CYCLES=2000
# EVENTS_MAX=1000 NETWORK=none (the containers' --network; bridge would
# make a bridge and rules on this host) BENCH_NO_BUILD=1 (use
# target/release as it is) BENCH_OUT=bench/results/scale-latest.md.
#
# Cleanup (trap): every container is removed through berth, berthd is
# stopped by its pid, anything still running from the temp dir is killed by
# pid, the temp dir's mounts are unmounted and the dir is removed.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/.." && pwd)
N=${N:-1000}
STEP=${STEP:-100}
PS_ROUNDS=${PS_ROUNDS:-5}
CYCLES=${CYCLES:-2000}
EVENTS_MAX=${EVENTS_MAX:-1000}
NETWORK=${NETWORK:-none}
OUT=${BENCH_OUT:-$here/results/scale-latest.md}

log() { printf '[scale %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
[ "$(id -u)" = 0 ] || die "run as root (containers need it)"
cd "$repo"
if [ -z "${BENCH_NO_BUILD:-}" ]; then
	log "cargo build --release --bins"
	cargo build --release --bins --quiet >&2
fi

tmp=$(mktemp -d /tmp/berth-scale.XXXXXX)
chmod 0711 "$tmp"
BIN=$tmp/bin
R=$tmp/rootfs
mkdir -p "$BIN"
cp target/release/berth target/release/berthd target/release/berth-shim "$BIN/"
berthd_pid=""

B() { "$BIN/berth" --socket "$tmp/berth.sock" "$@"; }

# Every process whose command line mentions our temp dir is ours.

stop_berthd() {
	local i
	[ -n "$berthd_pid" ] || return 0
	kill -TERM "$berthd_pid" 2>/dev/null || true
	for i in $(seq 300); do
		kill -0 "$berthd_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$berthd_pid" 2>/dev/null || true
	wait "$berthd_pid" 2>/dev/null || true
	berthd_pid=""
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	set +e
	log "cleaning up"
	if [ -n "$berthd_pid" ]; then
		B ps -aq --no-trunc 2>/dev/null | xargs -r -n 50 "$BIN/berth" --socket "$tmp/berth.sock" rm -f >/dev/null 2>&1
	fi
	stop_berthd
	for pid in $(our_pids); do kill -KILL "$pid" 2>/dev/null; done
	grep " ${tmp:?}/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	rm -rf "${tmp:?}"
	exit "$rc"
}
trap cleanup EXIT INT TERM

bash scripts/mkrootfs.sh "$R" >/dev/null 2>&1 || die "scripts/mkrootfs.sh failed"

start_berthd() {
	"$BIN/berthd" --default-network none --root "$tmp/state" --socket "$tmp/berth.sock" --runtime embedded \
		--log-level warn "$@" </dev/null >/dev/null 2>>"$tmp/berthd.log" &
	berthd_pid=$!
}
wait_up() {
	local i
	for i in $(seq 600); do
		B version >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	die "berthd did not come up (see $tmp/berthd.log)"
}

now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
ms_since() { echo $(($(now_us) - $1)) | awk '{printf "%.1f", $1 / 1000}'; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "nan"}'; }
# ps_ms ARGS... -> median wall ms of `berth ARGS` over PS_ROUNDS
ps_ms() {
	local i t0
	for ((i = 0; i < PS_ROUNDS; i++)); do
		t0=$(now_us)
		B "$@" >/dev/null
		ms_since "$t0"
		echo
	done | median
}
# The shims and berthd (every process whose command line names the temp
# dir; the containers' own processes do not): total VmRSS, Pss and USS
# (Private_Clean + Private_Dirty) in KiB, and their count. RSS summed counts
# the shim binary's shared pages once per shim; Pss divides each shared
# page among its users (the honest total); USS is what each one alone adds.
mem_kib() {
	local pid
	for pid in $(our_pids); do
		awk '/^VmRSS:/ {r = $2} END {printf "%d ", r}' "/proc/$pid/status" 2>/dev/null || continue
		awk '/^Pss:/ {p = $2} /^Private_(Clean|Dirty):/ {u += $2} END {printf "%d %d\n", p, u}' \
			"/proc/$pid/smaps_rollup" 2>/dev/null || echo "0 0"
	done | awk '{r += $1; p += $2; u += $3; n++} END {printf "%d %d %d %d\n", r, p, u, n}'
}
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%FT%TZ)

# ---------------------------------------------------------------------------
# 1. N idle containers, STEP at a time
# ---------------------------------------------------------------------------
start_berthd
wait_up
log "berthd up (pid $berthd_pid); $N containers, $STEP at a time"
rows=()
made=0
while ((made < N)); do
	t0=$(now_us)
	for ((i = 0; i < STEP && made < N; i++)); do
		B run -d --network "$NETWORK" --rootfs "$R" sleep 1000000 >/dev/null || die "run -d failed at $made"
		made=$((made + 1))
	done
	dt=$(($(now_us) - t0))
	rate=$(awk -v n="$i" -v us="$dt" 'BEGIN {printf "%.1f", n / (us / 1e6)}')
	sleep 1 # let the new shims go idle (they trim their memory after 1 s)
	ps_t=$(ps_ms ps)
	psa_t=$(ps_ms ps -a --format json)
	read -r rss pss uss nproc < <(mem_kib)
	drss=$(rss_of "$berthd_pid")
	rows+=("| $made | $rate | $ps_t | $psa_t | $((rss / 1024)) | $((pss / 1024)) | $((uss / 1024)) | $((drss / 1024)) |")
	log "$made: ${rate}/s, ps ${ps_t} ms, ps -a json ${psa_t} ms, shims+berthd RSS $((rss / 1024)) MiB PSS $((pss / 1024)) MiB USS $((uss / 1024)) MiB ($nproc processes), berthd $((drss / 1024)) MiB"
done
running=$(B ps -q | wc -l)
[ "$running" = "$N" ] || die "$running of $N containers running"

# ---------------------------------------------------------------------------
# 2. Restore with N live containers
# ---------------------------------------------------------------------------
log "restore: stopping berthd (containers stay)"
stop_berthd
t0=$(now_us)
start_berthd
for i in $(seq 1200); do
	n=$(B ps -q 2>/dev/null | wc -l) || n=0
	[ "$n" = "$N" ] && break
	sleep 0.02
done
restore_ms=$(ms_since "$t0")
[ "$n" = "$N" ] || die "after restore $n of $N containers listed"
drss_restored=$(rss_of "$berthd_pid")
log "restore: all $N listed ${restore_ms} ms after berthd's exec; berthd RSS $((drss_restored / 1024)) MiB"

# ---------------------------------------------------------------------------
# 3. Churn: event log and database bounded by retention
# ---------------------------------------------------------------------------
t0=$(now_us)
B ps -aq --no-trunc | xargs -r -n 50 "$BIN/berth" --socket "$tmp/berth.sock" rm -f >/dev/null
rm_ms=$(ms_since "$t0")
log "removed $N containers in ${rm_ms} ms"
stop_berthd
start_berthd --events-max "$EVENTS_MAX"
wait_up
db=$tmp/state/berth.redb
events_now() { B events --since 0 --until "$(date -u +%FT%T.%NZ)" --format json | wc -l; }
churn=()
half=$((CYCLES / 2))
for part in 1 2; do
	t0=$(now_us)
	for ((i = 0; i < half; i++)); do
		B run --rm --network "$NETWORK" --rootfs "$R" /bin/true >/dev/null || die "churn run failed"
	done
	rate=$(awk -v n="$half" -v us="$(($(now_us) - t0))" 'BEGIN {printf "%.1f", n / (us / 1e6)}')
	churn+=("| $((part * half)) | $rate | $(events_now) | $(stat -c %s "$db") |")
	log "churn: $((part * half)) cycles, ${rate}/s, $(events_now) events kept, db $(stat -c %s "$db") bytes"
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
{
	echo "# bench/scale.sh: berth $commit, $started"
	echo
	echo "N=$N STEP=$STEP PS_ROUNDS=$PS_ROUNDS CYCLES=$CYCLES EVENTS_MAX=$EVENTS_MAX NETWORK=$NETWORK;" \
		"$(nproc) CPUs; load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after."
	echo
	echo "## Idle containers (run -d sleep), $STEP at a time"
	echo
	echo "| containers | create rate of the step (/s) | \`ps\` ms | \`ps -a --format json\` ms | shims + berthd RSS MiB | PSS MiB | USS MiB | berthd RSS MiB |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	printf '%s\n' "${rows[@]}"
	echo
	echo "## Restore"
	echo
	echo "berthd restarted with $N live containers: all listed by \`ps\` ${restore_ms} ms after its exec; its RSS then $((drss_restored / 1024)) MiB."
	echo "Removing the $N (\`rm -f\`, 50 ids per command): ${rm_ms} ms."
	echo
	echo "## Churn: \`run --rm /bin/true\` with --events-max $EVENTS_MAX"
	echo
	echo "| cycles | rate (/s) | events kept | berth.redb bytes |"
	echo "| ---: | ---: | ---: | ---: |"
	printf '%s\n' "${churn[@]}"
} >"$OUT"
cat "$OUT"
