#!/usr/bin/env bash
# bench/stats-peers.sh — `berth stats` beside `docker stats` and `podman stats`:
# with N idle `sleep` containers in each stack, the CPU time and RSS of each
# stack's processes for SECS seconds with nobody watching, then for SECS
# seconds while one stats client streams all N containers.
#
# Run as root:  bench/stats-peers.sh             (N=100 SECS=60)
#               N=10 SECS=10 bench/stats-peers.sh
#               STACKS="berth docker" bench/stats-peers.sh
# BENCH_NO_BUILD=1 uses target/release as it is. Not a test; figures in
# docs/performance.md and docs/resources.md.
#
# What is counted (utime+stime from /proc/PID/stat over the interval; RSS
# at its end):
#   daemon   berthd | dockerd + the containerd it manages | (podman has none)
#   client   the stats client itself (berth | docker | podman stats)
#   monitors every container's monitor: berth-shim | containerd-shim | conmon
# The stats client's CPU is its whole life (it runs exactly SECS seconds).
#
# Nothing here touches the host's own daemons: dockerd gets its own
# --data-root/--exec-root/--pidfile/-H under a temp dir (--bridge=none
# --iptables=false), podman its own --root/--runroot and config files; every
# container runs with no network. On exit (trap, also on failure) every
# container is removed, dockerd is stopped by its pid, leftover mounts under
# the temp dir are unmounted and the temp dir is removed.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/.." && pwd)
N=${N:-100}
SECS=${SECS:-60}
STACKS=${STACKS:-berth docker podman}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
if [ -z "${BENCH_NO_BUILD:-}" ]; then
	(cd "$repo" && cargo build --release -q -p berthd -p berth-shim -p berth)
fi
B=$repo/target/release
tmp=$(mktemp -d /tmp/berth-stats-peers.XXXXXX)
IMG=berth-bench/busybox:latest
hz=$(getconf CLK_TCK)
client_pid=
berthd_pid=
dockerd_pid=

b() { "$B/berth" --socket "$tmp/berth.sock" "$@"; }
D() { DOCKER_CONFIG=$tmp/docker-client docker -H "unix://$tmp/docker.sock" "$@"; }
P() {
	CONTAINERS_CONF=$tmp/podman/containers.conf CONTAINERS_STORAGE_CONF=$tmp/podman/storage.conf \
		podman --root "$tmp/podman/root" --runroot "$tmp/podman/run" "$@"
}

stop_pid() { # PID: SIGTERM, then SIGKILL after 20 s
	local p=$1 i
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null || return 0
	for ((i = 0; i < 200; i++)); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

cleanup() {
	set +e
	stop_pid "$client_pid"
	if [ -n "$berthd_pid" ]; then
		b ps -aq --no-trunc 2>/dev/null | xargs -r "$B/berth" --socket "$tmp/berth.sock" rm -f >/dev/null 2>&1
		stop_pid "$berthd_pid"
	fi
	if [ -n "$dockerd_pid" ]; then
		D ps -aq 2>/dev/null | xargs -r -n 20 env DOCKER_CONFIG="$tmp/docker-client" \
			docker -H "unix://$tmp/docker.sock" rm -f >/dev/null 2>&1
		stop_pid "$dockerd_pid"
	fi
	if [ -d "$tmp/podman" ]; then
		P ps -aq 2>/dev/null | xargs -r -n 20 env CONTAINERS_CONF="$tmp/podman/containers.conf" \
			CONTAINERS_STORAGE_CONF="$tmp/podman/storage.conf" podman --root "$tmp/podman/root" \
			--runroot "$tmp/podman/run" rm -f -t 0 >/dev/null 2>&1
		P system prune -f >/dev/null 2>&1
	fi
	# The parent cgroups dockerd and podman made (cgroupfs), if this run
	# made them: rmdir removes only empty ones.
	local c d
	for d in $made_cgroups; do
		for c in /sys/fs/cgroup/*/; do
			[ -d "$c$d" ] || continue
			find "$c$d" -depth -type d -exec rmdir {} \; 2>/dev/null
		done
	done
	# Mounts the stacks left under the temp dir, deepest first.
	awk -v t="${tmp:?}/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	rm -rf "${tmp:?}"
}
made_cgroups=
for d in docker libpod_parent; do
	[ -d "/sys/fs/cgroup/memory/$d" ] || made_cgroups="$made_cgroups $d"
done
trap cleanup EXIT

# Sum of utime+stime (ticks) and of VmRSS (KiB) of the given pids.
ticks_of() {
	local s=0 p f
	for p in "$@"; do
		f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
		s=$((s + ${f% *} + ${f#* }))
	done
	echo "$s"
}
rss_of() {
	local s=0 p r
	for p in "$@"; do
		r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
		s=$((s + ${r:-0}))
	done
	echo "$s"
}
pids_named() { # COMM: pids whose comm is COMM and whose command line names
	# the temp dir (other people's shims on this machine are not ours)
	local p
	for p in /proc/[0-9]*; do
		[ "$(cat "$p/comm" 2>/dev/null)" = "$1" ] || continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$tmp" && echo "${p#/proc/}"
	done
	return 0
}

# A docker-archive tarball of a busybox rootfs, for docker and podman.
bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs" >/dev/null
docker_archive "$tmp/rootfs" "$IMG" "$tmp/image.tar"

echo "# $N idle containers per stack, ${SECS}s per phase, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg) at start"
echo
echo "| stack | phase | daemon CPU % | daemon RSS MiB | client CPU % | client RSS MiB | monitors CPU % | monitors RSS MiB | samples |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"

# measure STACK DAEMON_PIDS MONITOR_COMM CLIENT_CMD...: the two phases.
measure() {
	local stack=$1 daemons=$2 mon=$3 out=$tmp/$1.stats
	shift 3
	local mons t0 m0 t1 m1
	mons=$(pids_named "$mon")
	# shellcheck disable=SC2086
	t0=$(ticks_of $daemons)
	# shellcheck disable=SC2086
	m0=$(ticks_of $mons)
	sleep "$SECS"
	# shellcheck disable=SC2086
	t1=$(ticks_of $daemons)
	# shellcheck disable=SC2086
	m1=$(ticks_of $mons)
	# shellcheck disable=SC2086
	row "$stack" idle "$t0" "$t1" "$(rss_of $daemons)" "" "" "$m0" "$m1" "$(rss_of $mons)" ""
	# shellcheck disable=SC2086
	t0=$(ticks_of $daemons)
	# shellcheck disable=SC2086
	m0=$(ticks_of $mons)
	"$@" >"$out" 2>&1 </dev/null &
	client_pid=$!
	sleep "$SECS"
	local c crss
	c=$(ticks_of "$client_pid")
	crss=$(rss_of "$client_pid")
	# shellcheck disable=SC2086
	t1=$(ticks_of $daemons)
	# shellcheck disable=SC2086
	m1=$(ticks_of $mons)
	local drss mrss
	# shellcheck disable=SC2086
	drss=$(rss_of $daemons)
	# shellcheck disable=SC2086
	mrss=$(rss_of $mons)
	stop_pid "$client_pid"
	client_pid=
	row "$stack" "stats streaming" "$t0" "$t1" "$drss" "$c" "$crss" "$m0" "$m1" "$mrss" "$(samples "$stack" "$out")"
}
row() { # stack phase t0 t1 drss client_ticks client_rss m0 m1 mrss samples
	awk -v s="$1" -v ph="$2" -v a="$3" -v b="$4" -v dr="$5" -v c="$6" -v cr="$7" \
		-v m0="$8" -v m1="$9" -v mr="${10}" -v n="${11}" -v hz="$hz" -v secs="$SECS" 'BEGIN {
		cc = (c == "") ? "–" : sprintf("%.2f", c / hz / secs * 100)
		crr = (cr == "") ? "–" : sprintf("%.1f", cr / 1024)
		dd = (s == "podman") ? "–" : sprintf("%.2f", (b - a) / hz / secs * 100)
		ddr = (s == "podman") ? "–" : sprintf("%.1f", dr / 1024)
		printf "| %s | %s | %s | %s | %s | %s | %.2f | %.1f | %s |\n", s, ph, dd, ddr, cc, crr,
			(m1 - m0) / hz / secs * 100, mr / 1024, (n == "") ? "–" : n }'
}
samples() { # STACK OUT: per-container samples the client printed
	case $1 in
	berth) wc -l <"$2" ;;
	docker) grep -c '"Name"' "$2" || true ;;
	podman) grep -c '"id"' "$2" || true ;;
	esac
}

for stack in $STACKS; do
	case $stack in
	berth)
		"$B/berthd" --default-network none --root "$tmp/berth" --socket "$tmp/berth.sock" --shim "$B/berth-shim" \
			--log-level warn 2>"$tmp/berthd.log" &
		berthd_pid=$!
		for _ in $(seq 200); do [ -S "$tmp/berth.sock" ] && break; sleep 0.1; done
		for i in $(seq "$N"); do
			b run -d --name "idle$i" --rootfs "$tmp/rootfs" sleep 1000000 >/dev/null
		done
		measure berth "$berthd_pid" berth-shim "$B/berth" --socket "$tmp/berth.sock" stats --format json
		b ps -aq --no-trunc | xargs -r "$B/berth" --socket "$tmp/berth.sock" rm -f >/dev/null
		stop_pid "$berthd_pid"
		berthd_pid=
		;;
	docker)
		mkdir -p "$tmp/docker-client" "$tmp/docker-exec"
		echo '{}' >"$tmp/daemon.json"
		dockerd --data-root "$tmp/docker" --exec-root "$tmp/docker-exec" \
			--pidfile "$tmp/docker.pid" -H "unix://$tmp/docker.sock" \
			--bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
			--config-file "$tmp/daemon.json" --log-level warn </dev/null >>"$tmp/dockerd.log" 2>&1 &
		dockerd_pid=$!
		for _ in $(seq 400); do D version >/dev/null 2>&1 && break; sleep 0.05; done
		D load -i "$tmp/image.tar" >/dev/null
		for i in $(seq "$N"); do
			D run -d --network none --name "idle$i" "$IMG" /bin/sleep 1000000 </dev/null >/dev/null
		done
		daemons="$dockerd_pid"
		for p in $(ps -o pid= --ppid "$dockerd_pid"); do
			[ "$(cat "/proc/$p/comm" 2>/dev/null)" = containerd ] && daemons="$daemons $p"
		done
		measure docker "$daemons" containerd-shim \
			env DOCKER_CONFIG="$tmp/docker-client" docker -H "unix://$tmp/docker.sock" stats --format '{{json .}}'
		D ps -aq | xargs -r -n 20 env DOCKER_CONFIG="$tmp/docker-client" \
			docker -H "unix://$tmp/docker.sock" rm -f >/dev/null
		stop_pid "$dockerd_pid"
		dockerd_pid=
		;;
	podman)
		podman_conf "$tmp/podman" none
		P load -i "$tmp/image.tar" >/dev/null 2>&1
		for i in $(seq "$N"); do
			P run -d --name "idle$i" "$IMG" /bin/sleep 1000000 </dev/null >/dev/null
		done
		measure podman "" conmon env CONTAINERS_CONF="$tmp/podman/containers.conf" \
			CONTAINERS_STORAGE_CONF="$tmp/podman/storage.conf" podman --root "$tmp/podman/root" \
			--runroot "$tmp/podman/run" stats --format json
		;;
	*) echo "unknown stack $stack" >&2 ;;
	esac
done
