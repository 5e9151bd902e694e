#!/usr/bin/env bash
# bench/docker-api.sh: `docker run --rm IMAGE /bin/true` latency through the
# Docker Engine API, berthd (--docker-socket) beside Debian's dockerd, in
# one run, with the same docker CLI, the same image and the same machine.
#
#   sudo bench/docker-api.sh            # N=30 runs each, release binaries
#   N=50 BIN_DIR=target/debug bench/docker-api.sh
#
# Each daemon gets its own root, sockets and data dirs under one temp dir;
# everything it started is stopped by pid and the dir removed on exit.
# dockerd runs with --bridge=none and no iptables: no host network is
# touched, and both run the container with --network none.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
N=${N:-30}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
DOCKER=${DOCKER:-$(command -v /usr/local/bin/docker || command -v docker)}
IMG=berth-bench/busybox:latest
log() { echo "docker-api: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
for b in berthd berth berth-shim; do
	[ -x "$BIN_DIR/$b" ] || { log "no $BIN_DIR/$b: cargo build --release, or set BIN_DIR"; exit 1; }
done
command -v dockerd >/dev/null || { log "no dockerd: apt-get install docker.io"; exit 1; }

tmp=$(mktemp -d /tmp/berth-dockerapi.XXXXXX)
chmod 0711 "$tmp"
pids=()
cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	set +e
	DB ps -aq 2>/dev/null | xargs -r "$DOCKER" -H "unix://$tmp/berth-docker.sock" rm -f >/dev/null 2>&1
	DD ps -aq 2>/dev/null | xargs -r "$DOCKER" -H "unix://$tmp/docker.sock" rm -f >/dev/null 2>&1
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do
		for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	awk -v t="$tmp/" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	case $tmp in /tmp/berth-dockerapi.*) rm -rf "${tmp:?}" ;; esac
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DB() { DOCKER_CONFIG=$tmp/client "$DOCKER" -H "unix://$tmp/berth-docker.sock" "$@"; }
DD() { DOCKER_CONFIG=$tmp/client "$DOCKER" -H "unix://$tmp/docker.sock" "$@"; }
wait_for() { local i; for ((i = 0; i < 400; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

# The image: the busybox-static rootfs as a docker-save archive.
R=$tmp/rootfs
bash "$repo/scripts/mkrootfs.sh" "$R" >/dev/null
mkdir -p "$tmp/client"
docker_archive "$R" "$IMG" "$tmp/image.tar"

log "starting berthd and dockerd"
"$BIN_DIR/berthd" --default-network none --root "$tmp/berth" --socket "$tmp/berth.sock" \
	--docker-socket "$tmp/berth-docker.sock" --shim "$BIN_DIR/berth-shim" \
	--log-level warn </dev/null >>"$tmp/berthd.log" 2>&1 &
pids+=($!)
dockerd --data-root "$tmp/docker" --exec-root "$tmp/docker-exec" \
	--pidfile "$tmp/docker.pid" -H "unix://$tmp/docker.sock" \
	--bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
	--log-level warn </dev/null >>"$tmp/dockerd.log" 2>&1 &
pids+=($!)
wait_for DB version || { log "berthd did not come up: $(tail -3 "$tmp/berthd.log")"; exit 1; }
wait_for DD version || { log "dockerd did not come up: $(tail -3 "$tmp/dockerd.log")"; exit 1; }
"$BIN_DIR/berth" --socket "$tmp/berth.sock" load -i "$tmp/image.tar" >/dev/null
DD load -i "$tmp/image.tar" >/dev/null

# One warm-up run each, then N timed runs each, interleaved so that load
# from elsewhere hits both alike.
DB run --rm --network none "$IMG" /bin/true
DD run --rm --network none "$IMG" /bin/true
: >"$tmp/berth.ms"
: >"$tmp/docker.ms"
ms() { local t0 t1; t0=$(date +%s%N); "$@" </dev/null >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
for ((i = 0; i < N; i++)); do
	ms DB run --rm --network none "$IMG" /bin/true >>"$tmp/berth.ms"
	ms DD run --rm --network none "$IMG" /bin/true >>"$tmp/docker.ms"
done
stats() { sort -n "$1" | awk '{a[NR]=$1; s+=$1} END {printf "%d %d %d %d", a[int((NR+1)/2)], s/NR, a[1], a[int(NR*0.9+0.5)]}'; }
read -r bmed bmean bmin bp90 <<<"$(stats "$tmp/berth.ms")"
read -r dmed dmean dmin dp90 <<<"$(stats "$tmp/docker.ms")"
echo "docker run --rm --network none $IMG /bin/true, $N runs each ($("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null) CLI; berth from $BIN_DIR; $(dockerd --version | cut -d, -f1)); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| daemon | median ms | mean ms | min ms | p90 ms |"
echo "| --- | --- | --- | --- | --- |"
echo "| berthd --docker-socket | $bmed | $bmean | $bmin | $bp90 |"
echo "| dockerd | $dmed | $dmean | $dmin | $dp90 |"
awk -v b="$bmed" -v d="$dmed" 'BEGIN {printf "berthd is %.1fx faster (median)\n", d / b}'
