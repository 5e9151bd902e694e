#!/usr/bin/env bash
# bench/trace.sh — a timeline of one `berth run --rm /bin/true`, one
# `berth exec` and one `berth stop` (of an init that exits on SIGTERM), to see
# where the time goes between the CLI, berthd, the shim,
# the libcontainer helpers and the container.
#
# Run as root after `cargo build --release --bins`:   bench/trace.sh [embedded|runc]
#
# Uses `perf record` on scheduler and a few syscall tracepoints, system-wide
# (low overhead: no ptrace, so the timings are close to the real ones), then
# prints every fork/exec/exit, fsync/fdatasync and unix-socket connect of the
# processes involved, in ms since the CLI started. Other processes on the
# machine are filtered out. Starts a private berthd in a temp dir and removes
# everything on exit.
set -euo pipefail

runtime=${1:-embedded}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
[ "$(id -u)" = 0 ] || { echo "trace.sh: run as root" >&2; exit 1; }
command -v perf >/dev/null || { echo "trace.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-trace.XXXXXX")
BIN=$tmp/bin
mkdir -p "$BIN"
for b in berth berthd berth-shim; do cp "$target/release/$b" "$BIN/$b"; done
daemon=""
cleanup() {
	set +e
	if [ -S "$tmp/s.sock" ]; then
		for id in $("$BIN/berth" --socket "$tmp/s.sock" ps -aq); do
			"$BIN/berth" --socket "$tmp/s.sock" rm -f "$id" >/dev/null 2>&1
		done
	fi
	if [ -n "$daemon" ]; then
		kill -TERM "$daemon" 2>/dev/null
		wait "$daemon" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs"
"$BIN/berthd" --default-network none --root "$tmp/state" --socket "$tmp/s.sock" --runtime "$runtime" --log-level warn \
	</dev/null 2>"$tmp/berthd.log" &
daemon=$!
for _ in $(seq 200); do
	"$BIN/berth" --socket "$tmp/s.sock" version >/dev/null 2>&1 && break
	sleep 0.05
done
B="$BIN/berth --socket $tmp/s.sock"
for _ in 1 2 3; do $B run --rm --rootfs "$tmp/rootfs" /bin/true; done
$B run -d --name tr-exec --rootfs "$tmp/rootfs" sleep 100000 >/dev/null
for _ in 1 2 3; do $B exec tr-exec /bin/true; done
# A container whose init exits on SIGTERM, for `berth stop`.
$B run -d --name tr-stop --rootfs "$tmp/rootfs" sh -c 'trap "exit 0" TERM; sleep 100000 & wait' >/dev/null
sleep 0.5

# Processes already running from our temp dir (the shims) belong to the tree
# (read before the trace: the stopped container's shim is gone after it).
pre=""
for d in /proc/[0-9]*; do
	args=()
	mapfile -d '' args <"$d/cmdline" 2>/dev/null || continue
	[[ " ${args[*]} " == *"$tmp/"* ]] && pre+=" ${d#/proc/}"
done

events=sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit
events+=,syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_connect
events+=,syscalls:sys_enter_kill
perf record -q -a -o "$tmp/perf.data" -e "$events" -- bash -c "
	sleep 0.2
	$B run --rm --rootfs $tmp/rootfs /bin/true
	sleep 0.3
	$B exec tr-exec /bin/true
	sleep 0.3
	$B stop -t 10 tr-stop
	sleep 0.2" >/dev/null 2>&1


# Keep the processes of our tree: berthd (and its threads), berth, the shims
# and what they fork; show times relative to each CLI start.
perf script -i "$tmp/perf.data" -F comm,pid,tid,time,event,trace 2>/dev/null | awk -v d="$daemon" -v bin="$BIN" -v pre="$pre" '
	function keep(pid) { return (pid in ours) }
	BEGIN { n = split(pre, p, " "); for (k = 1; k <= n; k++) ours[p[k]] = 1 }
	{
		# fields: comm pid/tid time: event: details (comm may contain spaces)
		for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) break
		split($i, pt, "/"); pid = pt[1]; t = $(i + 1); sub(":", "", t); ev = $(i + 2); sub(":$", "", ev)
		rest = ""; for (j = i + 3; j <= NF; j++) rest = rest " " $j
		comm = $1; for (j = 2; j < i; j++) comm = comm " " $j
		if (pid == d) ours[pid] = 1
		if (ev == "sched:sched_process_exec" && rest ~ ("filename=" bin "/berth ")) { ours[pid] = 1; t0 = t; print "" ; print "---- CLI: " rest }
		if (!keep(pid)) next
		if (ev == "sched:sched_process_fork") { match(rest, /child_pid=[0-9]+/); c = substr(rest, RSTART + 10, RLENGTH - 10); ours[c] = 1 }
		if (t0 == "") next
		gsub(/ (prio|group_dead|old_pid)=[^ ]*/, "", rest)
		gsub(/ (fd|uservaddr|addrlen): [^ ,]*,?/, "", rest)
		printf "%8.2f ms  %-18s %-7s %-28s %s\n", (t - t0) * 1000, comm, pid, ev, rest
	}'
