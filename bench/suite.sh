#!/usr/bin/env bash
# bench/suite.sh — berth side by side with the other container stacks, on the
# same machine, in the same run, on the same busybox rootfs / image.
#
# Run as root:   bench/suite.sh                 (full run, ~15-30 min)
#                QUICK=1 bench/suite.sh         (smoke run, a few minutes)
#                BENCH_INSTALL=1 bench/suite.sh (apt-get install the peers first)
#
# Stacks (each skipped with a note when absent):
#   berth       berthd --runtime embedded (a private --root/--socket)
#   crun, runc  the OCI runtimes directly (private --root, one bundle)
#   containerd  containerd + ctr (private --root/--state/--address, config)
#   docker      dockerd + docker (private --data-root/--exec-root/-H, its own
#               managed containerd, --bridge=none --iptables=false)
#   podman      podman + conmon (private --root/--runroot, containers.conf and
#               storage.conf, --network none, cgroupfs, runc)
#
# Metrics (see docs/performance.md for what each number means):
#   1. run /bin/true to completion and remove it (cold; N rounds)
#   2. exec /bin/true into a running container (N rounds)
#   3. idle memory with MEM_SMALL and MEM_LARGE sleep containers: each
#      monitor's (shim's) RSS, PSS and USS from /proc/PID/smaps_rollup, and
#      the daemon's RSS growth per container; with MEM_LARGE running, the
#      stack's own ps latency and the PSS of its daemons + monitors summed
#   4. PAR_TOTAL containers run PAR_JOBS at a time: wall time, containers/s
#   5. log throughput: LOG_MIB MiB of 128-byte lines to stdout, MiB/s, against
#      the same writer in the same stack redirected to a plain file; bytes on
#      disk per byte written
#   6. stop latency of a container whose init exits on SIGTERM (N rounds)
#
# The latency metrics alternate the stacks round by round (the order rotates
# every round), and every figure is paired with crun's figure of the same
# round: the "× crun" column is the median of the per-round ratios.
#
# The whole suite runs in one private mount namespace (it re-executes itself
# under `unshare -m`), where an empty file is bind-mounted over
# /sys/fs/cgroup/unified/cgroup.controllers: crun refuses this host's hybrid
# cgroup layout otherwise. Every stack sees the same namespace. The mounts
# vanish with the namespace. Nothing here touches the host's own daemons or
# sockets: each daemon gets private state under a temp dir and is stopped by
# its pid on exit (trap); the temp dir is removed.
#
# Environment:
#   STACKS="berth crun runc containerd docker podman"   which stacks to try
#   N=30          rounds for run, exec and stop (QUICK: 5)
#   PAR_TOTAL=50 PAR_JOBS=8 PAR_ROUNDS=3                (QUICK: 1 round)
#   MEM_SMALL=20 MEM_LARGE=100                          (QUICK: 5 and 10)
#   LOG_MIB=1024 LOG_ROUNDS=2                           (QUICK: 64 MiB, 1)
#   QUICK=1       all of the QUICK values above
#   BENCH_INSTALL=1  apt-get install the peers (containerd docker.io podman
#                    conmon runc crun gcc libc6-dev) before the run; policy-rc.d
#                    decides whether their services start; the suite never
#                    uses them
#   BENCH_NO_BUILD=1 use the binaries already in target/release
#   BENCH_OUT=FILE   summary (default bench/results/suite-latest.md); the
#                    raw per-round samples go beside it (.tsv)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/.." && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"

log() { printf '[suite %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------------------
# Outer part: checks, optional install, build; then re-exec in a private
# mount namespace.
# ---------------------------------------------------------------------------
if [ "${1:-}" != __inner ]; then
	[ "$(id -u)" = 0 ] || die "run as root (containers need it)"
	if [ -n "${BENCH_INSTALL:-}" ]; then
		log "apt-get install the peers"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			runc crun containerd docker.io podman conmon gcc libc6-dev jq busybox-static >&2
	fi
	for tool in jq unshare mount cargo; do
		command -v "$tool" >/dev/null || die "$tool not found"
	done
	cd "$repo"
	if [ -z "${BENCH_NO_BUILD:-}" ]; then
		log "cargo build --release --bins"
		cargo build --release --bins --quiet >&2
	fi
	exec unshare -m --propagation private bash "$self" __inner
fi

# ---------------------------------------------------------------------------
# Inner part: settings
# ---------------------------------------------------------------------------
if [ -n "${QUICK:-}" ]; then
	N=${N:-5} PAR_ROUNDS=${PAR_ROUNDS:-1} MEM_SMALL=${MEM_SMALL:-5} MEM_LARGE=${MEM_LARGE:-10}
	LOG_MIB=${LOG_MIB:-64} LOG_ROUNDS=${LOG_ROUNDS:-1}
fi
N=${N:-30}
PAR_TOTAL=${PAR_TOTAL:-50}
PAR_JOBS=${PAR_JOBS:-8}
PAR_ROUNDS=${PAR_ROUNDS:-3}
MEM_SMALL=${MEM_SMALL:-20}
MEM_LARGE=${MEM_LARGE:-100}
LOG_MIB=${LOG_MIB:-1024}
LOG_ROUNDS=${LOG_ROUNDS:-2}
STACKS=${STACKS:-berth crun runc containerd docker podman}
OUT=${BENCH_OUT:-$here/results/suite-latest.md}
LOG_BYTES=$((LOG_MIB * 1024 * 1024))

run_containerd_existed=""
[ ! -e /run/containerd ] || run_containerd_existed=1
tmp=$(mktemp -d /tmp/berth-suite.XXXXXX)
chmod 0711 "$tmp"
BIN=$tmp/bin
R=$tmp/rootfs
RES=$tmp/samples.tsv # metric stack round value
: >"$RES"
notes=()      # printed under the table
started=()    # stacks that came up
daemon_pids=() # every daemon we started (stopped in the trap)

# Every process whose command line mentions our temp dir is ours.

cleanup() {
	local rc=$? s pid i
	trap - EXIT INT TERM
	set +e
	log "cleaning up"
	for s in "${started[@]}"; do
		"${s}_clean" >/dev/null 2>&1
	done
	stop_pids 100 "${daemon_pids[@]}"
	# Whatever survived: shims and containers started from our temp dir.
	for pid in $(our_pids); do
		kill -KILL "$pid" 2>/dev/null
	done
	# Mounts under the temp dir (overlays of the daemons) live in this
	# namespace only, but unmount them before removing the dir.
	awk -v t="$tmp/" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	# cgroups of containers named bench-* that are left.
	for d in /sys/fs/cgroup/*/berth/* /sys/fs/cgroup/*/bench-* /sys/fs/cgroup/*/suite-*; do
		[ -d "$d" ] || continue
		case $d in */berth/*) grep -qx "${d##*/}" "$tmp/berth-ids" 2>/dev/null || continue ;; esac
		rmdir "$d" 2>/dev/null
	done
	case $tmp in /tmp/berth-suite.*) rm -rf "$tmp" ;; esac
	# containerd's shims keep their sockets and runc state under
	# /run/containerd whatever its --state: remove the dirs if we made them
	# (rmdir: only when empty).
	if [ -z "$run_containerd_existed" ]; then
		rmdir /run/containerd/runc/suite /run/containerd/runc /run/containerd/s \
			/run/containerd/fifo /run/containerd 2>/dev/null
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# crun's hybrid-cgroup workaround, for every stack alike.
if [ -e /sys/fs/cgroup/unified/cgroup.controllers ] &&
	[ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers)" ]; then
	: >"$tmp/empty"
	mount --bind "$tmp/empty" /sys/fs/cgroup/unified/cgroup.controllers
	notes+=("All stacks ran in one private mount namespace with an empty file bind-mounted over /sys/fs/cgroup/unified/cgroup.controllers (crun refuses this host's hybrid cgroup layout otherwise).")
fi

# Every stack's run state (what a reboot ends: berth's --run-root, crun's
# and runc's --root, containerd's state, dockerd's exec root, podman's
# runroot) on a tmpfs, as their defaults under /run are on a systemd host.
# This VM's /run is on the root disk. The mount is this namespace's only.
RUN=$tmp/run
mkdir -p "$RUN"
mount -t tmpfs -o size=1g,mode=0711 berth-suite-run "$RUN"
notes+=("Every stack's run state was on a tmpfs (berth's --run-root, crun's and runc's --root, containerd's state, dockerd's --exec-root, podman's --runroot), as under /run on a systemd host; this VM's /run is on its root disk.")

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
# record METRIC STACK ROUND VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }
# timed_ms CMD... -> the wall time of CMD in ms (3 decimals); CMD's output
# goes to the error log. Fails if CMD fails.
timed_ms() {
	local t0 t1
	t0=$EPOCHREALTIME
	"$@" >>"$tmp/cmd.log" 2>&1 || return 1
	t1=$EPOCHREALTIME
	echo $((${t1/./} - ${t0/./})) | awk '{printf "%.3f", $1 / 1000}'
}
# rotate ROUND ITEMS... -> the items, rotated by ROUND
rotate() {
	local r=$1
	shift
	local -a a=("$@")
	local n=${#a[@]} i
	for ((i = 0; i < n; i++)); do echo "${a[$(((i + r) % n))]}"; done
}
# mem PID -> "rss pss uss" in KiB (uss = Private_Clean + Private_Dirty)
mem() {
	local rss
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
	awk -v rss="$rss" '/^Pss:/ {pss=$2} /^Private_Clean:/ {pc=$2} /^Private_Dirty:/ {pd=$2}
		END {print rss, pss, pc+pd}' "/proc/$1/smaps_rollup"
}
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ppid_of() { awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
comm_of() { cat "/proc/$1/comm" 2>/dev/null; }
# wait_gone PID: until the process is gone or a zombie (bounded, 30 s)
wait_gone() {
	local st i
	for ((i = 0; i < 3000000; i++)); do
		read -r st 2>/dev/null <"/proc/$1/stat" || return 0
		st=${st##*) }
		[ "${st:0:1}" = Z ] && return 0
		((i % 1000 == 999)) && sleep 0.01
	done
	return 1
}
wait_for() { # what cmd... : retry up to 20 s
	local what=$1 i
	shift
	for ((i = 0; i < 400; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	log "timed out waiting for $what"
	return 1
}
# log_size FILES... -> total bytes
size_of() { local s=0 f; for f in "$@"; do [ -f "$f" ] && s=$((s + $(stat -c %s "$f"))); done; echo "$s"; }

# ---------------------------------------------------------------------------
# The rootfs, the log writer, the bundles and the image
# ---------------------------------------------------------------------------
mkdir -p "$BIN"
for b in berth berthd berth-shim; do
	cp "${CARGO_TARGET_DIR:-$repo/target}/release/$b" "$BIN/$b"
done
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] ||
	commit="$commit (with uncommitted changes)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_start=$SECONDS

log "rootfs, writer, bundles, image"
bash "$repo/scripts/mkrootfs.sh" "$R"
have_writer=""
if command -v gcc >/dev/null; then
	# The log writer (bench/logwriter.c), static for the busybox rootfs.
	if gcc -O2 -static -o "$R/bin/logwriter" "$repo/bench/logwriter.c" 2>>"$tmp/cmd.log"; then
		have_writer=1
	else
		notes+=("Log throughput skipped: gcc -static failed (apt-get install gcc libc6-dev).")
	fi
else
	notes+=("Log throughput skipped: no gcc to build the static writer.")
fi
STOPPER='trap "exit 0" TERM; sleep 1000000 & wait'

mkbundle() { # name args-json
	mkdir -p "$tmp/bundle-$1"
	if command -v runc >/dev/null; then
		(cd "$tmp/bundle-$1" && runc spec)
	else
		(cd "$tmp/bundle-$1" && crun spec)
	fi
	jq --arg root "$R" --argjson args "$2" \
		'.process.terminal = false | .process.args = $args | .root.path = $root | .root.readonly = false' \
		"$tmp/bundle-$1/config.json" >"$tmp/bundle-$1/c.new"
	mv "$tmp/bundle-$1/c.new" "$tmp/bundle-$1/config.json"
}
if command -v runc >/dev/null || command -v crun >/dev/null; then
	mkbundle true '["/bin/true"]'
	mkbundle sleep '["/bin/sleep","1000000"]'
	mkbundle stopper "$(jq -cn --arg s "$STOPPER" '["/bin/sh","-c",$s]')"
	mkbundle logout "$(jq -cn --arg n "$LOG_BYTES" '["/bin/logwriter",$n]')"
	mkbundle logfile "$(jq -cn --arg n "$LOG_BYTES" '["/bin/sh","-c","/bin/logwriter \($n) > /tmp/suite-baseline"]')"
fi

# A docker-archive tarball of the same rootfs, for docker, podman and ctr.
IMG=berth-bench/busybox:latest
mkimage() {
	docker_archive "$R" "$IMG" "$tmp/image.tar"
}

# ---------------------------------------------------------------------------
# The stacks. Each STACK has:
#   STACK_up             start its daemon (fails: the stack is skipped)
#   STACK_true NAME      run /bin/true to completion and remove it
#   STACK_sleep NAME     start a sleep container (detached)
#   STACK_stopper NAME   start a container whose init exits on SIGTERM
#   STACK_exec NAME      exec /bin/true into it
#   STACK_stop NAME      stop it (returns when the init is gone)
#   STACK_rm NAME        remove it (forced)
#   STACK_pid NAME       its init's pid
#   STACK_logrun NAME MODE  run the writer to completion (MODE: out = to
#                        stdout, i.e. the stack's log; file = redirected to a
#                        plain file in the container) and remove it; prints
#                        the bytes the stack kept on disk for it
#   STACK_daemons        pids whose RSS is the stack's daemon (may be empty)
#   STACK_clean          remove everything left
#   STACK_version        one line
# ---------------------------------------------------------------------------

# --- berth -------------------------------------------------------------------
B() { "$BIN/berth" --socket "$tmp/berth.sock" "$@"; }
berth_up() {
	"$BIN/berthd" --default-network none --root "$tmp/berth" --run-root "$RUN/berth" --socket "$tmp/berth.sock" --runtime embedded \
		--log-level warn </dev/null 2>"$tmp/berthd.log" &
	berthd_pid=$!
	daemon_pids+=("$berthd_pid")
	wait_for berthd B version
}
# --network none, as docker's DRUN and podman's netns = "none": the bridge
# is berthd's default now, and no other stack here makes one.
BRUN=(--network none)
berth_true() { B run --rm "${BRUN[@]}" --rootfs "$R" /bin/true; }
berth_sleep() { B run -d "${BRUN[@]}" --name "$1" --rootfs "$R" sleep 1000000 >>"$tmp/berth-ids"; }
berth_stopper() { B run -d "${BRUN[@]}" --name "$1" --rootfs "$R" sh -c "$STOPPER" >>"$tmp/berth-ids"; }
berth_exec() { B exec "$1" /bin/true; }
berth_stop() { B stop -t 10 "$1"; }
berth_rm() { B rm -f "$1"; }
berth_ps() { B ps; }
berth_pid() { B inspect "$1" | jq -r '.[0].pid'; }
berth_logrun() {
	local id f
	if [ "$2" = out ]; then
		id=$(B run -d "${BRUN[@]}" --name "$1" --log-max-size 64g --rootfs "$R" /bin/logwriter "$LOG_BYTES")
	else
		id=$(B run -d "${BRUN[@]}" --name "$1" --rootfs "$R" sh -c "/bin/logwriter $LOG_BYTES > /tmp/$1")
	fi
	echo "$id" >>"$tmp/berth-ids"
	B wait "$1" >/dev/null
	f=$(B inspect "$1" | jq -r '.[0].log_path')
	if [ "$2" = out ]; then size_of "$f" "$f".*; else size_of "$R/tmp/$1"; fi
	rm -f "$R/tmp/$1"
	B rm -f "$1" >/dev/null
}
# berthd and its shim zygote (the child berth-shim it forks new shims from).
berth_daemons() {
	echo "$berthd_pid"
	pgrep -P "$berthd_pid" -f '/shim-zygote/' || true
}
berth_clean() {
	local id
	for id in $(B ps -aq); do B rm -f "$id"; done
}
berth_version() { echo "berth $commit (berthd --runtime embedded)"; }

# --- crun / runc (the OCI runtimes directly) ----------------------------------
# A detached container has no monitor and no daemon: no shim memory, no
# daemon memory. "Logs": the container's stdout is the file itself.
oci_true() { "$1" --root "$RUN/$1-root" run --bundle "$tmp/bundle-true" "$2" </dev/null; }
oci_detach() { "$1" --root "$RUN/$1-root" run -d --bundle "$tmp/bundle-$3" "$2" </dev/null >/dev/null 2>&1; }
oci_exec() { "$1" --root "$RUN/$1-root" exec "$2" /bin/true </dev/null; }
oci_pid() { "$1" --root "$RUN/$1-root" state "$2" | jq -r .pid; }
oci_stop() {
	local pid
	pid=$(cat "$tmp/$2.pid")
	"$1" --root "$RUN/$1-root" kill "$2" TERM && wait_gone "$pid"
}
oci_stopper() {
	oci_detach "$1" "$2" stopper
	oci_pid "$1" "$2" >"$tmp/$2.pid"
}
oci_rm() { "$1" --root "$RUN/$1-root" delete -f "$2" </dev/null; }
oci_logrun() {
	if [ "$3" = out ]; then
		"$1" --root "$RUN/$1-root" run --bundle "$tmp/bundle-logout" "$2" </dev/null >"$tmp/$2.out"
		size_of "$tmp/$2.out"
		rm -f "$tmp/$2.out"
	else
		"$1" --root "$RUN/$1-root" run --bundle "$tmp/bundle-logfile" "$2" </dev/null >/dev/null
		size_of "$R/tmp/suite-baseline"
		rm -f "$R/tmp/suite-baseline"
	fi
}
oci_clean() {
	local id
	for id in $("$1" --root "$RUN/$1-root" list -q 2>/dev/null); do oci_rm "$1" "$id"; done
}
for rt in crun runc; do
	eval "${rt}_up() { command -v $rt >/dev/null && $rt --root $tmp/$rt-root run --bundle $tmp/bundle-true suite-check </dev/null >>$tmp/cmd.log 2>&1; }"
	eval "${rt}_true() { oci_true $rt \"\$1\"; }"
	eval "${rt}_sleep() { oci_detach $rt \"\$1\" sleep; }"
	eval "${rt}_stopper() { oci_stopper $rt \"\$1\"; }"
	eval "${rt}_exec() { oci_exec $rt \"\$1\"; }"
	eval "${rt}_stop() { oci_stop $rt \"\$1\"; }"
	eval "${rt}_rm() { oci_rm $rt \"\$1\"; }"
	eval "${rt}_pid() { oci_pid $rt \"\$1\"; }"
	eval "${rt}_logrun() { oci_logrun $rt \"\$1\" \"\$2\"; }"
	eval "${rt}_daemons() { :; }"
	eval "${rt}_clean() { oci_clean $rt; }"
	eval "${rt}_version() { $rt --version | head -n1; }"
done

# --- containerd + ctr ----------------------------------------------------------
C() { ctr --address "$tmp/containerd/c.sock" --namespace suite "$@"; }
CFIFO=(--fifo-dir "$tmp/containerd/fifo")
containerd_up() {
	command -v containerd >/dev/null && command -v ctr >/dev/null || return 1
	mkdir -p "$tmp/containerd"
	cat >"$tmp/containerd/config.toml" <<EOF
version = 2
root = "$tmp/containerd/root"
state = "$RUN/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$tmp/containerd/c.sock"
[ttrpc]
  address = "$tmp/containerd/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
	containerd --config "$tmp/containerd/config.toml" --log-level warn </dev/null \
		>>"$tmp/containerd.log" 2>&1 &
	containerd_pid=$!
	daemon_pids+=("$containerd_pid")
	wait_for containerd C version || return 1
	C images import --no-unpack=false "$tmp/image.tar" >>"$tmp/cmd.log" 2>&1 || return 1
	CIMG=$(C images ls -q | head -n1)
	[ -n "$CIMG" ]
}
containerd_true() { C run "${CFIFO[@]}" --rm "$CIMG" "$1" /bin/true </dev/null; }
containerd_sleep() { C run "${CFIFO[@]}" -d "$CIMG" "$1" /bin/sleep 1000000 </dev/null >/dev/null; }
containerd_stopper() {
	C run "${CFIFO[@]}" -d "$CIMG" "$1" /bin/sh -c "$STOPPER" </dev/null >/dev/null
	containerd_pid "$1" >"$tmp/$1.pid"
}
containerd_exec() { C task exec "${CFIFO[@]}" --exec-id "e$RANDOM$RANDOM" "$1" /bin/true </dev/null; }
containerd_stop() {
	local pid
	pid=$(cat "$tmp/$1.pid")
	C task kill -s SIGTERM "$1" && wait_gone "$pid"
}
containerd_rm() {
	C task kill -s SIGKILL "$1" >/dev/null 2>&1 || true
	C task rm -f "$1" >/dev/null 2>&1 || true
	C containers rm "$1"
}
containerd_ps() { C task ls; }
containerd_pid() { C task ls | awk -v n="$1" '$1 == n {print $2}'; }
containerd_logrun() {
	if [ "$2" = out ]; then
		C run "${CFIFO[@]}" --rm --log-uri "file://$tmp/$1.log" "$CIMG" "$1" /bin/logwriter "$LOG_BYTES" </dev/null >/dev/null
		size_of "$tmp/$1.log"
		rm -f "$tmp/$1.log"
	else
		C run "${CFIFO[@]}" --rm "$CIMG" "$1" /bin/sh -c "/bin/logwriter $LOG_BYTES > /tmp/x" </dev/null >/dev/null
		echo "$LOG_BYTES" # the file went with the snapshot
	fi
}
containerd_daemons() { echo "$containerd_pid"; }
containerd_clean() {
	local id
	for id in $(C containers ls -q); do containerd_rm "$id"; done
}
containerd_version() { containerd --version | cut -d' ' -f1,3; }

# --- dockerd + docker -----------------------------------------------------------
D() { DOCKER_CONFIG=$tmp/docker-client docker -H "unix://$tmp/docker.sock" "$@"; }
docker_up() {
	command -v dockerd >/dev/null && command -v docker >/dev/null || return 1
	mkdir -p "$tmp/docker-client" "$tmp/docker-exec"
	dockerd --data-root "$tmp/docker" --exec-root "$RUN/docker-exec" \
		--pidfile "$tmp/docker.pid" -H "unix://$tmp/docker.sock" \
		--bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
		--config-file "$tmp/daemon.json" --log-level warn </dev/null >>"$tmp/dockerd.log" 2>&1 &
	dockerd_pid=$!
	daemon_pids+=("$dockerd_pid")
	wait_for dockerd D version || return 1
	D load -i "$tmp/image.tar" >>"$tmp/cmd.log" 2>&1
}
DRUN=(--network none)
docker_true() { D run --rm "${DRUN[@]}" "$IMG" /bin/true </dev/null; }
docker_sleep() { D run -d "${DRUN[@]}" --name "$1" "$IMG" /bin/sleep 1000000 </dev/null >/dev/null; }
docker_stopper() { D run -d "${DRUN[@]}" --name "$1" "$IMG" /bin/sh -c "$STOPPER" </dev/null >/dev/null; }
docker_exec() { D exec "$1" /bin/true </dev/null; }
docker_stop() { D stop -t 10 "$1" >/dev/null; }
docker_rm() { D rm -f "$1" >/dev/null; }
docker_ps() { D ps; }
docker_pid() { D inspect -f '{{.State.Pid}}' "$1"; }
docker_logrun() {
	local f
	if [ "$2" = out ]; then
		D run -d "${DRUN[@]}" --name "$1" "$IMG" /bin/logwriter "$LOG_BYTES" </dev/null >/dev/null
		D wait "$1" >/dev/null
		f=$(D inspect -f '{{.LogPath}}' "$1")
		size_of "$f" "$f".*
	else
		D run -d "${DRUN[@]}" --name "$1" "$IMG" /bin/sh -c "/bin/logwriter $LOG_BYTES > /tmp/x" </dev/null >/dev/null
		D wait "$1" >/dev/null
		echo "$LOG_BYTES"
	fi
	D rm -f "$1" >/dev/null
}
docker_daemons() { # dockerd and the containerd it manages
	echo "$dockerd_pid"
	local p
	for p in $(ps -o pid= --ppid "$dockerd_pid"); do
		[ "$(comm_of "$p")" = containerd ] && echo "$p"
	done
	return 0
}
docker_clean() {
	local id
	for id in $(D ps -aq); do D rm -f "$id"; done
}
docker_version() { dockerd --version | cut -d, -f1; }
echo '{}' >"$tmp/daemon.json"

# --- podman + conmon ----------------------------------------------------------
P() {
	CONTAINERS_CONF=$tmp/podman/containers.conf CONTAINERS_STORAGE_CONF=$tmp/podman/storage.conf \
		podman --root "$tmp/podman/root" --runroot "$RUN/podman-run" "$@"
}
podman_up() {
	command -v podman >/dev/null && command -v conmon >/dev/null || return 1
	mkdir -p "$tmp/podman"
	podman_conf "$tmp/podman" none
	P load -i "$tmp/image.tar" >>"$tmp/cmd.log" 2>&1 || return 1
	P run --rm "$IMG" /bin/true >>"$tmp/cmd.log" 2>&1
}
podman_true() { P run --rm "$IMG" /bin/true </dev/null; }
podman_sleep() { P run -d --name "$1" "$IMG" /bin/sleep 1000000 </dev/null >/dev/null; }
podman_stopper() { P run -d --name "$1" "$IMG" /bin/sh -c "$STOPPER" </dev/null >/dev/null; }
podman_exec() { P exec "$1" /bin/true </dev/null; }
podman_stop() { P stop -t 10 "$1" >/dev/null; }
podman_rm() { P rm -f -t 0 "$1" >/dev/null; } # -t 0: sleep as pid 1 ignores SIGTERM
podman_ps() { P ps; }
podman_pid() { P inspect -f '{{.State.Pid}}' "$1"; }
podman_logrun() {
	local f
	if [ "$2" = out ]; then
		P run -d --name "$1" "$IMG" /bin/logwriter "$LOG_BYTES" </dev/null >/dev/null
		P wait "$1" >/dev/null
		f=$(P inspect -f '{{.HostConfig.LogConfig.Path}}' "$1")
		size_of "$f"
	else
		P run -d --name "$1" "$IMG" /bin/sh -c "/bin/logwriter $LOG_BYTES > /tmp/x" </dev/null >/dev/null
		P wait "$1" >/dev/null
		echo "$LOG_BYTES"
	fi
	P rm -f "$1" >/dev/null
}
podman_daemons() { :; }
podman_clean() {
	local id
	for id in $(P ps -aq); do P rm -f -t 0 "$id"; done
}
podman_version() { podman --version; }

# ---------------------------------------------------------------------------
# Bring the stacks up
# ---------------------------------------------------------------------------
need_image=""
for s in $STACKS; do
	case $s in containerd | docker | podman) need_image=1 ;; esac
done
[ -z "$need_image" ] || mkimage
for s in $STACKS; do
	if ! declare -F "${s}_up" >/dev/null; then
		notes+=("$s: unknown stack, skipped.")
		continue
	fi
	log "starting $s"
	if "${s}_up"; then
		started+=("$s")
	else
		notes+=("$s: absent or failed to start, skipped (see the log on stderr).")
		log "$s skipped; last lines of its logs:"
		tail -n 5 "$tmp/cmd.log" "$tmp/$s"*.log >&2 2>/dev/null || true
	fi
done
[ "${#started[@]}" -gt 0 ] || die "no stack came up"
log "stacks: ${started[*]}"

# ---------------------------------------------------------------------------
# 1. run /bin/true to completion and remove it
# ---------------------------------------------------------------------------
seq_no=0
nm() { seq_no=$((seq_no + 1)); NM="suite-$1-$seq_no"; } # sets NM (no subshell)

log "1. run /bin/true (N=$N)"
for s in "${started[@]}"; do # warm-up
	nm "$s"
	"${s}_true" "$NM" >>"$tmp/cmd.log" 2>&1 || true
done
for ((r = 1; r <= N; r++)); do
	for s in $(rotate "$r" "${started[@]}"); do
		nm "$s"
		if t=$(timed_ms "${s}_true" "$NM"); then record run "$s" "$r" "$t"; else log "$s: run failed"; fi
	done
done

# ---------------------------------------------------------------------------
# 2. exec /bin/true into a running container
# ---------------------------------------------------------------------------
log "2. exec /bin/true (N=$N)"
for s in "${started[@]}"; do
	"${s}_sleep" "suite-exec-$s" >>"$tmp/cmd.log" 2>&1 || log "$s: no sleep container"
	"${s}_exec" "suite-exec-$s" >>"$tmp/cmd.log" 2>&1 || true # warm-up
done
for ((r = 1; r <= N; r++)); do
	for s in $(rotate "$r" "${started[@]}"); do
		if t=$(timed_ms "${s}_exec" "suite-exec-$s"); then record exec "$s" "$r" "$t"; else log "$s: exec failed"; fi
	done
done
for s in "${started[@]}"; do "${s}_rm" "suite-exec-$s" >>"$tmp/cmd.log" 2>&1 || true; done

# ---------------------------------------------------------------------------
# 6. stop latency (measured here, reported last)
# ---------------------------------------------------------------------------
log "6. stop a container that exits on SIGTERM (N=$N)"
for ((r = 1; r <= N; r++)); do
	for s in "${started[@]}"; do "${s}_stopper" "suite-stop-$s-$r" >>"$tmp/cmd.log" 2>&1 || log "$s: no stopper"; done
	sleep 0.5 # let the shells install their traps
	for s in $(rotate "$r" "${started[@]}"); do
		if t=$(timed_ms "${s}_stop" "suite-stop-$s-$r"); then record stop "$s" "$r" "$t"; else log "$s: stop failed"; fi
	done
	for s in "${started[@]}"; do "${s}_rm" "suite-stop-$s-$r" >>"$tmp/cmd.log" 2>&1 || true; done
done

# ---------------------------------------------------------------------------
# 4. PAR_TOTAL containers, PAR_JOBS at a time
# ---------------------------------------------------------------------------
log "4. $PAR_TOTAL containers, $PAR_JOBS at a time (rounds: $PAR_ROUNDS)"
par_one() { # stack: runs PAR_TOTAL true containers, PAR_JOBS at a time
	local s=$1 i
	local -a pids=()
	for ((i = 0; i < PAR_TOTAL; i++)); do
		if [ "${#pids[@]}" -ge "$PAR_JOBS" ]; then
			wait -n || return 1
			local -a alive=()
			local p
			for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
			pids=("${alive[@]}")
		fi
		"${s}_true" "suite-par-$s-$seq_no-$i" >>"$tmp/cmd.log" 2>&1 &
		pids+=("$!")
	done
	local rc=0
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return "$rc"
}
for ((r = 1; r <= PAR_ROUNDS; r++)); do
	for s in $(rotate "$r" "${started[@]}"); do
		seq_no=$((seq_no + 1))
		if t=$(timed_ms par_one "$s"); then record par "$s" "$r" "$t"; else log "$s: a parallel run failed"; fi
	done
done

# ---------------------------------------------------------------------------
# 5. log throughput
# ---------------------------------------------------------------------------
if [ -n "$have_writer" ]; then
	log "5. log throughput: $LOG_MIB MiB of 128-byte lines (rounds: $LOG_ROUNDS)"
	for ((r = 1; r <= LOG_ROUNDS; r++)); do
		for s in $(rotate "$r" "${started[@]}"); do
			for mode in out file; do
				nm "$s-log"
				n=$NM
				t0=$EPOCHREALTIME
				if bytes=$("${s}_logrun" "$n" "$mode" 2>>"$tmp/cmd.log"); then
					t1=$EPOCHREALTIME
					record "log-$mode" "$s" "$r" "$(awk -v us=$((${t1/./} - ${t0/./})) -v b="$LOG_BYTES" 'BEGIN {printf "%.1f", b / 1048576 / (us / 1e6)}')"
					[ "$mode" = out ] && record log-disk "$s" "$r" "$(awk -v d="$bytes" -v b="$LOG_BYTES" 'BEGIN {printf "%.3f", d / b}')"
				else
					log "$s: log run ($mode) failed"
					"${s}_rm" "$n" >>"$tmp/cmd.log" 2>&1 || true
				fi
			done
		done
	done
fi

# ---------------------------------------------------------------------------
# 3. idle memory (one stack at a time; not alternated: a state, not a time)
# ---------------------------------------------------------------------------
log "3. idle memory with $MEM_SMALL and $MEM_LARGE sleep containers"
mem_stack() { # stack
	local s=$1 i k d0=0 d1 p pid shim
	for p in $("${s}_daemons"); do d0=$((d0 + $(rss_of "$p"))); done
	[ -z "$("${s}_daemons")" ] || record mem-daemon0 "$s" 0 "$d0"
	i=0
	for k in "$MEM_SMALL" "$MEM_LARGE"; do
		for (( ; i < k; i++)); do "${s}_sleep" "suite-mem-$s-$i" >>"$tmp/cmd.log" 2>&1 || return 1; done
		sleep 3 # settle: shims go idle
		for ((j = 0; j < k; j++)); do
			pid=$("${s}_pid" "suite-mem-$s-$j" 2>/dev/null) || continue
			shim=$(ppid_of "$pid")
			[ "${shim:-0}" -gt 1 ] || continue
			case $(comm_of "$shim") in
			berth-shim | containerd-shim* | conmon) ;;
			*) continue ;; # no monitor (runc/crun -d: the init is orphaned)
			esac
			read -r a b c < <(mem "$shim") || continue
			record "mem$k-rss" "$s" "$j" "$a"
			record "mem$k-pss" "$s" "$j" "$b"
			record "mem$k-uss" "$s" "$j" "$c"
		done
		# Listing latency with k running (median of 5 below): what the
		# stack's `ps` costs as the count grows.
		for ((j = 0; j < 5; j++)); do
			record "ps$k" "$s" "$j" "$(timed_ms "${s}_ps")"
		done
		# Everything the stack runs for its k containers (daemon, monitors):
		# PSS summed, each shared page divided among its users.
		tot=0
		for p in $("${s}_daemons") $(for ((j = 0; j < k; j++)); do ppid_of "$("${s}_pid" "suite-mem-$s-$j" 2>/dev/null)" 2>/dev/null; done); do
			case $(comm_of "$p") in berth-shim | containerd-shim* | conmon | berthd | containerd | dockerd) ;; *) continue ;; esac
			read -r a b c < <(mem "$p") || continue
			tot=$((tot + b))
		done
		record "mem$k-total-pss" "$s" 0 "$tot"
		if [ -n "$("${s}_daemons")" ]; then
			d1=0
			for p in $("${s}_daemons"); do d1=$((d1 + $(rss_of "$p"))); done
			record "mem$k-daemon" "$s" 0 "$d1"
			record "mem$k-growth" "$s" 0 "$(awk -v a="$d1" -v b="$d0" -v k="$k" 'BEGIN {printf "%.1f", (a - b) / k}')"
		fi
	done
	for ((j = 0; j < i; j++)); do "${s}_rm" "suite-mem-$s-$j" >>"$tmp/cmd.log" 2>&1 || true; done
}
for s in "${started[@]}"; do
	case $s in crun | runc) continue ;; esac # no monitor, no daemon
	log "   $s"
	mem_stack "$s" || log "$s: memory run failed"
done

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$((SECONDS - t_start))
base=crun
printf '%s\n' "${started[@]}" | grep -qx crun || base=""

# table METRIC UNIT: one row per stack: median, min–max, × crun (median of
# the per-round ratios), samples
table() {
	local metric=$1 s
	echo "| stack | median | min – max | × crun (paired) | n |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	for s in "${started[@]}"; do
		awk -F'\t' -v m="$metric" -v s="$s" -v base="$base" '
			function med(a, n,   i, j, t) {
				for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
				return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
			}
			$1 == m && $2 == s { n++; v[n] = $4; by[$3] = $4; if (n == 1 || $4 < lo) lo = $4; if (n == 1 || $4 > hi) hi = $4 }
			$1 == m && $2 == base { b[$3] = $4 }
			END {
				if (!n) { printf "| %s | — | | | 0 |\n", s; exit }
				k = 0
				for (r in by) if (r in b && b[r] > 0) { k++; q[k] = by[r] / b[r] }
				ratio = k ? sprintf("%.2f×", med(q, k)) : "—"
				printf "| %s | %.1f | %.1f – %.1f | %s | %d |\n", s, med(v, n), lo, hi, ratio, n
			}' "$RES"
	done
}
# one_stat METRIC STACK -> median over the samples (or —)
one_stat() {
	awk -F'\t' -v m="$1" -v s="$2" '$1 == m && $2 == s {print $4}' "$RES" | sort -g |
		awk '{v[NR] = $1} END {if (!NR) print "—"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mkdir -p "$(dirname "$OUT")"
{
	echo "# berth beside the other stacks: $started_at"
	echo
	echo "berth $commit; $(uname -r), $(nproc) CPUs ($cpu), $(awk '/^MemTotal:/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM."
	echo -n "Stacks: "
	for s in "${started[@]}"; do echo -n "$s ($("${s}_version" 2>/dev/null | head -n1)); "; done
	echo
	echo "Load average $load_before before, $load_after after; the run took ${elapsed}s."
	echo "Settings: N=$N, PAR_TOTAL=$PAR_TOTAL, PAR_JOBS=$PAR_JOBS, PAR_ROUNDS=$PAR_ROUNDS, MEM_SMALL=$MEM_SMALL, MEM_LARGE=$MEM_LARGE, LOG_MIB=$LOG_MIB, LOG_ROUNDS=$LOG_ROUNDS${QUICK:+ (QUICK)}."
	echo "Stacks alternate round by round; \"× crun\" is the median of the per-round ratios to crun."
	echo
	echo "## 1. Run /bin/true to completion and remove it (ms)"
	echo
	table run
	echo
	echo "## 2. Exec /bin/true into a running container (ms)"
	echo
	table exec
	echo
	echo "## 3. Idle memory per container (KiB; medians over the containers' monitors)"
	echo
	echo "| stack | monitor | RSS @$MEM_SMALL | PSS @$MEM_SMALL | USS @$MEM_SMALL | RSS @$MEM_LARGE | PSS @$MEM_LARGE | USS @$MEM_LARGE | daemon RSS idle | daemon growth / container @$MEM_SMALL | @$MEM_LARGE |"
	echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for s in "${started[@]}"; do
		case $s in
		crun | runc) echo "| $s | none (\`run -d\`: the init is orphaned) | — | — | — | — | — | — | no daemon | — | — |"; continue ;;
		berth) mon=berth-shim ;; podman) mon=conmon ;; *) mon=containerd-shim-runc-v2 ;;
		esac
		echo "| $s | $mon | $(one_stat "mem$MEM_SMALL-rss" "$s") | $(one_stat "mem$MEM_SMALL-pss" "$s") | $(one_stat "mem$MEM_SMALL-uss" "$s") | $(one_stat "mem$MEM_LARGE-rss" "$s") | $(one_stat "mem$MEM_LARGE-pss" "$s") | $(one_stat "mem$MEM_LARGE-uss" "$s") | $(one_stat mem-daemon0 "$s") | $(one_stat "mem$MEM_SMALL-growth" "$s") | $(one_stat "mem$MEM_LARGE-growth" "$s") |"
	done
	echo
	echo "With $MEM_LARGE running: the stack's \`ps\` (median of 5; crun and runc have no monitor here, so no ratio) and the PSS of everything it runs for them (daemons and monitors, each shared page divided among its users):"
	echo
	echo "| stack | \`ps\` ms @$MEM_LARGE | ps command | daemons + monitors PSS @$MEM_LARGE, MiB | per container, KiB |"
	echo "| --- | ---: | --- | ---: | ---: |"
	for s in "${started[@]}"; do
		case $s in
		crun | runc) continue ;;
		berth) pc='berth ps' ;; containerd) pc='ctr task ls' ;; docker) pc='docker ps' ;; podman) pc='podman ps' ;;
		esac
		t=$(one_stat "mem$MEM_LARGE-total-pss" "$s")
		echo "| $s | $(one_stat "ps$MEM_LARGE" "$s") | \`$pc\` | $(awk -v t="$t" 'BEGIN {if (t + 0 > 0) printf "%.1f", t / 1024; else print "—"}') | $(awk -v t="$t" -v k="$MEM_LARGE" 'BEGIN {if (t + 0 > 0) printf "%.0f", t / k; else print "—"}') |"
	done
	echo
	echo "## 4. $PAR_TOTAL containers (run /bin/true, remove), $PAR_JOBS at a time"
	echo
	echo "Wall time (ms):"
	echo
	table par
	echo
	echo "| stack | containers/s (median) |"
	echo "| --- | ---: |"
	for s in "${started[@]}"; do
		m=$(one_stat par "$s")
		echo "| $s | $(awk -v m="$m" -v n="$PAR_TOTAL" 'BEGIN {if (m + 0 > 0) printf "%.1f", n / (m / 1000); else print "—"}') |"
	done
	echo
	if [ -n "$have_writer" ]; then
		echo "## 5. Log throughput: $LOG_MIB MiB of 128-byte lines (MiB/s, whole run of the container)"
		echo
		echo "| stack | to the stack's log | same writer to a plain file | log / file | bytes on disk per byte written | where the log goes |"
		echo "| --- | ---: | ---: | ---: | ---: | --- |"
		for s in "${started[@]}"; do
			o=$(one_stat log-out "$s") f=$(one_stat log-file "$s")
			case $s in
			berth) w="shim → CRI file" ;; crun | runc) w="stdout is the file (no log driver)" ;;
			containerd) w="shim → \`--log-uri file://\` (raw)" ;; docker) w="shim → dockerd → json-file" ;;
			podman) w="conmon → k8s-file" ;; *) w="?" ;;
			esac
			echo "| $s | $o | $f | $(awk -v a="$o" -v b="$f" 'BEGIN {if (b + 0 > 0) printf "%.2f×", a / b; else print "—"}') | $(one_stat log-disk "$s") | $w |"
		done
		echo
	fi
	echo "## 6. Stop a container whose init exits on SIGTERM (ms)"
	echo
	table stop
	echo
	echo "crun, runc, containerd (\`ctr task kill\`): SIGTERM, then until the init is gone (no stop command); berth, docker, podman: their \`stop -t 10\`."
	for n in "${notes[@]}"; do
		echo
		echo "Note: $n"
	done
} >"$OUT"
cp "$RES" "${OUT%.md}.tsv"
cat "$OUT"
log "summary in $OUT, samples in ${OUT%.md}.tsv"
