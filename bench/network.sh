#!/usr/bin/env bash
# bench/network.sh — what a network costs: `run --rm IMAGE /bin/true` with
# --network none and with each engine's default bridge, for berth, podman
# (netavark) and docker (dockerd's bridge driver), interleaved in one run;
# and the docker CLI against berthd's Docker API socket (`docker→berthd`),
# the same command as against dockerd.
#
# Run as root: bench/network.sh [N]   (N timed runs per engine and mode, 20)
#
# Nothing is made in the host's network: every daemon and podman runs in a
# network namespace the script makes (ip netns add), inside a private mount
# namespace with a tmpfs of its own on /dev/shm (podman's lock segment,
# /dev/shm/libpod_lock, may be another podman's with another size). The
# bridges (berth0, podman0, docker0), their veths and iptables rules are
# made there and go with it. All three use the same image (the busybox-static
# rootfs as a docker-save archive) and runc-free paths as they ship: berth
# its embedded runtime, podman runc (crun 1.8 refuses a hybrid cgroup host),
# docker containerd + runc.
#
# Environment: BIN (berth's binaries, default target/release), DOCKER (the
# docker CLI, default docker). Output: a markdown table on stdout (median,
# mean, min, p90 in ms); progress on stderr. Everything it starts is stopped
# and its temp dir removed on exit.
set -euo pipefail
N=${1:-20}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib.sh"
BIN=${BIN:-$repo/target/release}
DOCKER=${DOCKER:-docker}
IMG=berth-bench/busybox:latest
log() { echo "network.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
for b in berthd berth berth-shim; do
	[ -x "$BIN/$b" ] || { log "no $BIN/$b: cargo build --release, or set BIN"; exit 1; }
done

tmp=$(mktemp -d /tmp/berth-netbench.XXXXXX)
NS=berth-bench-$$
pids=()
holder=
cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	set +e
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do
		for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	[ -n "$holder" ] && kill -KILL "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	awk -v t="$tmp/" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	case $tmp in /tmp/berth-netbench.*) rm -rf "${tmp:?}" ;; esac
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
# The namespaces everything runs in: the netns, and a mount namespace with
# a private /dev/shm, held by a sleeping process the script started.
nsenter --net=/run/netns/"$NS" unshare -m --propagation private \
	sh -c 'mount -t tmpfs tmpfs /dev/shm && exec sleep 100000' &
holder=$!
for _ in $(seq 100); do
	[ "$(readlink /proc/$holder/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] &&
		grep -q ' /dev/shm tmpfs' /proc/$holder/mounts 2>/dev/null && break
	sleep 0.05
done
IN() { nsenter -t "$holder" -m -n "$@"; }
# A daemon started with `IN … &` would run in a subshell, and `$!` would be
# that subshell's pid, not the daemon's: the trap's kill then missed it.
# nsenter execs its command, so `$!` of this is the daemon itself.
daemon() { nsenter -t "$holder" -m -n "$@" & }

# The image.
R=$tmp/rootfs
bash "$repo/scripts/mkrootfs.sh" "$R" >/dev/null
mkdir -p "$tmp/client"
docker_archive "$R" "$IMG" "$tmp/image.tar"

wait_for() { local i; for ((i = 0; i < 400; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }
B() { IN "$BIN/berth" --socket "$tmp/berth.sock" "$@"; }
DD() { DOCKER_CONFIG=$tmp/client IN "$DOCKER" -H "unix://$tmp/docker.sock" "$@"; }
BD() { DOCKER_CONFIG=$tmp/client IN "$DOCKER" -H "unix://$tmp/berth-docker.sock" "$@"; }
podman_conf "$tmp/podman" bridge
P() {
	CONTAINERS_CONF=$tmp/podman/containers.conf CONTAINERS_STORAGE_CONF=$tmp/podman/storage.conf \
		IN podman --root "$tmp/podman/root" --runroot "$tmp/podman/run" "$@"
}

log "starting berthd and dockerd in $NS"
daemon "$BIN/berthd" --root "$tmp/berth" --socket "$tmp/berth.sock" --shim "$BIN/berth-shim" \
	--docker-socket "$tmp/berth-docker.sock" --log-level warn </dev/null >>"$tmp/berthd.log" 2>&1
pids+=($!)
engines="berth"
if command -v dockerd >/dev/null; then
	daemon dockerd --data-root "$tmp/docker" --exec-root "$tmp/docker-exec" \
		--pidfile "$tmp/docker.pid" -H "unix://$tmp/docker.sock" --userland-proxy=false \
		--log-level warn </dev/null >>"$tmp/dockerd.log" 2>&1
	pids+=($!)
fi
wait_for B version || { log "berthd did not come up: $(tail -3 "$tmp/berthd.log")"; exit 1; }
B load -i "$tmp/image.tar" >/dev/null
if command -v podman >/dev/null && P load -i "$tmp/image.tar" >"$tmp/podman.log" 2>&1 &&
	P run --rm --network none "$IMG" /bin/true >>"$tmp/podman.log" 2>&1; then
	engines="$engines podman"
else
	log "podman left out: $(tail -1 "$tmp/podman.log" 2>/dev/null)"
fi
if command -v dockerd >/dev/null && wait_for DD version && DD load -i "$tmp/image.tar" >/dev/null; then
	engines="$engines docker"
	# The same docker CLI against berthd (its image store has the image).
	wait_for BD version && engines="$engines docker→berthd"
else
	log "docker left out: $(tail -3 "$tmp/dockerd.log" 2>/dev/null)"
fi

run_cmd() { # ENGINE MODE
	case $1 in
	berth) B run --rm --network "$2" "$IMG" /bin/true ;;
	podman) P run --rm --network "$2" "$IMG" /bin/true ;;
	docker) DD run --rm --network "$2" "$IMG" /bin/true ;;
	docker→berthd) BD run --rm --network "$2" "$IMG" /bin/true ;;
	esac
}
ms() { local t0 t1; t0=$(date +%s%N); "$@" </dev/null >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
# One warm-up run each (it makes the bridges), then N rounds, each engine
# and mode once per round, so load from elsewhere hits all alike.
for e in $engines; do for m in none bridge; do run_cmd "$e" "$m" >/dev/null; done; done
for ((i = 0; i < N; i++)); do
	for e in $engines; do for m in none bridge; do
		ms run_cmd "$e" "$m" >>"$tmp/$e-$m.ms"
	done; done
done
stats() { sort -n "$1" | awk '{a[NR]=$1; s+=$1} END {printf "%d %d %d %d", a[int((NR+1)/2)], s/NR, a[1], a[int(NR*0.9+0.5)]}'; }
echo "run --rm $IMG /bin/true, $N runs each, interleaved; berth from $BIN; $(podman --version 2>/dev/null); $(dockerd --version 2>/dev/null | cut -d, -f1); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| engine | network | median ms | mean ms | min ms | p90 ms |"
echo "| --- | --- | --- | --- | --- | --- |"
for e in $engines; do for m in none bridge; do
	read -r med mean min p90 <<<"$(stats "$tmp/$e-$m.ms")"
	echo "| $e | $m | $med | $mean | $min | $p90 |"
done; done
