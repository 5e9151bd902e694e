#!/usr/bin/env bash
# bench/run.sh — berth beside runc and crun: run latency, exec latency, memory.
#
# Run as root from anywhere:   bench/run.sh
#
# It builds the release binaries (and copies them, so a rebuild in the shared
# target dir cannot swap them mid-run), makes a busybox rootfs, starts two
# private daemons (berthd --runtime embedded and --runtime runc, each with its
# own --root and --socket under a temp dir) and measures with hyperfine:
#
#   1. `berth run --rm --rootfs R /bin/true` (embedded, runc) against
#      `runc run` and `crun run` of a bundle with the same rootfs;
#   2. `berth exec ID /bin/true` into a running container (embedded, runc)
#      against `runc exec` (and `crun exec`);
#   3. where berth's time goes: the CLI and one gRPC call (`berth version`),
#      and `create` / `start -a` / `rm` timed one by one;
#   4. memory: VmRSS and Pss/Private/Anonymous (smaps_rollup) of an idle
#      berth-shim supervising `sleep` (read from the shim's pid: the parent
#      of the init that `berth inspect` reports), and berthd's, fresh, after
#      the latency runs, and with 20 running containers.
#
# crun 1.8 refuses a cgroup v1 "hybrid" host ("cgroups in hybrid mode not
# supported") because cgroup2's cgroup.controllers is not empty. If plain
# `crun run` fails, crun is measured inside `unshare -m` with an empty file
# bind-mounted over /sys/fs/cgroup/unified/cgroup.controllers (see
# shared/design/crates.md); runc is measured there too, as a control. If that
# fails as well, crun is reported as unavailable.
#
# Output: a markdown summary on stdout and in bench/results/latest.md; the
# hyperfine JSON exports in bench/results/json/ (beside the summary; both are
# written only when the run completes). Progress goes to stderr.
# Everything it starts is stopped and its temp dir removed on exit (trap).
#
# Environment:
#   RUNS=20            hyperfine runs per command and round (at least 20)
#   WARMUP=3           hyperfine warm-up runs per command and round
#   ROUNDS=2           rounds per group of commands (order reversed in every
#                      other round); statistics over all ROUNDS × RUNS runs
#   IDLE_CONTAINERS=20 running containers for berthd's "loaded" RSS
#   BENCH_NO_BUILD=1   use the binaries already in target/release
#   BENCH_ALT_SHIMS="label=/path/berth-shim ..."  also measure these shim
#                      binaries (an extra embedded daemon each, --shim PATH):
#                      run latency and idle memory, e.g. a PIE build
#   BENCH_OUT=FILE     where to write the summary (default bench/results/latest.md)
set -euo pipefail

# bench OUT.json NAME CMD [NAME CMD ...]: hyperfine -N for each command, in
# $B_ROUNDS rounds of $B_WARMUP + $B_RUNS runs each (the order reversed in
# every other round, so that a burst of load from elsewhere does not land on
# one command only), merged into OUT.json with the times of all rounds and
# median/mean/stddev/min/max recomputed over them. Reports go to stderr.
bench() {
	local out=$1 r i
	shift
	local -a pairs=("$@") args
	local n=$((${#pairs[@]} / 2))
	for r in $(seq "$B_ROUNDS"); do
		args=()
		for i in $(seq 0 $((n - 1))); do
			local k=$i
			[ $((r % 2)) = 0 ] && k=$((n - 1 - i))
			args+=(-n "${pairs[$((2 * k))]}" "${pairs[$((2 * k + 1))]}")
		done
		hyperfine -N --style basic --warmup "$B_WARMUP" --runs "$B_RUNS" \
			--export-json "$out.round$r" "${args[@]}" >&2
	done
	jq -s '
		def median: sort | if length % 2 == 1 then .[length / 2 | floor]
			else (.[length / 2 - 1] + .[length / 2]) / 2 end;
		{results: ([.[].results[]] | group_by(.command) | map(
			(map(.times) | add) as $t
			| ($t | add / length) as $mean
			| {command: .[0].command, times: $t, median: ($t | median), mean: $mean,
			   stddev: (if ($t | length) > 1
				then ($t | map((. - $mean) * (. - $mean)) | add / (length - 1) | sqrt)
				else 0 end),
			   min: ($t | min), max: ($t | max)}))}' "$out".round* >"$out"
	rm -f "$out".round*
}

# ---------------------------------------------------------------------------
# Internal mode: crun inside a private mount namespace (the script re-invokes
# itself under `unshare -m`). Arguments come from the environment (B_*).
# ---------------------------------------------------------------------------
crun_ns_setup() {
	mount --make-rprivate /
	if [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then
		: >"$B_TMP/empty"
		mount --bind "$B_TMP/empty" /sys/fs/cgroup/unified/cgroup.controllers
	fi
}

if [ "${1:-}" = __crun_ns ]; then
	crun_ns_setup
	# Check once, quietly, that crun works here at all.
	if ! crun --root "$B_CRUN_ROOT" run --bundle "$B_TMP/bundle-true" bench-crun-check \
		</dev/null >"$B_TMP/crun-check.log" 2>&1; then
		exit 3
	fi
	bench "$B_JSON/run-crun-ns.json" \
		"crun run" "crun --root $B_CRUN_ROOT run --bundle $B_TMP/bundle-true bench-crun-run" \
		"runc run (crun's namespace)" "runc --root $B_TMP/runc-ns-root run --bundle $B_TMP/bundle-true bench-runc-ns"
	crun --root "$B_CRUN_ROOT" run -d --bundle "$B_TMP/bundle-sleep" bench-crun-exec \
		</dev/null >/dev/null 2>&1
	rc=0
	bench "$B_JSON/exec-crun-ns.json" \
		"crun exec" "crun --root $B_CRUN_ROOT exec bench-crun-exec /bin/true" || rc=$?
	crun --root "$B_CRUN_ROOT" delete -f bench-crun-exec >/dev/null 2>&1 || true
	exit "$rc"
fi
if [ "${1:-}" = __crun_ns_cleanup ]; then
	crun_ns_setup
	for id in $(crun --root "$B_CRUN_ROOT" list -q 2>/dev/null); do
		crun --root "$B_CRUN_ROOT" delete -f "$id" >/dev/null 2>&1 || true
	done
	exit 0
fi

# ---------------------------------------------------------------------------
# Settings and checks
# ---------------------------------------------------------------------------
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/.." && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-2}
IDLE_CONTAINERS=${IDLE_CONTAINERS:-20}
OUT=${BENCH_OUT:-$here/results/latest.md}
OUT_JSON=$(dirname "$OUT")/json

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (containers need it)"
[ "$RUNS" -ge 20 ] || die "RUNS must be at least 20"
[ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1"
for tool in hyperfine runc jq cargo unshare; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install hyperfine runc jq util-linux)"
done

# ---------------------------------------------------------------------------
# Temp dir, the processes we start, and the cleanup trap
# ---------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
case $tmp in
*[[:space:]]*) rmdir "$tmp"; die "temp dir $tmp contains whitespace; set TMPDIR" ;;
esac
BIN=$tmp/bin
JSON=$tmp/json   # copied to $OUT_JSON at the end
daemon_pids=()   # berthd processes we started
daemon_socks=()  # and their sockets

# Every process whose command line mentions our temp dir is ours (shims run
# as "$tmp/bin/berth-shim start $tmp/...", container inits run from $tmp).

cleanup() {
	local rc=$? s pid id i
	trap - EXIT INT TERM
	set +e
	log "cleaning up"
	# Containers first, through their daemons, so shims tear them down.
	for s in "${daemon_socks[@]}"; do
		[ -S "$s" ] || continue
		for id in $(timeout 10 "$BIN/berth" --socket "$s" ps -aq 2>/dev/null); do
			timeout 20 "$BIN/berth" --socket "$s" rm -f "$id" >/dev/null 2>&1
		done
	done
	for id in $(runc --root "$tmp/runc-root" list -q 2>/dev/null); do
		runc --root "$tmp/runc-root" delete -f "$id" >/dev/null 2>&1
	done
	for id in $(runc --root "$tmp/runc-ns-root" list -q 2>/dev/null); do
		runc --root "$tmp/runc-ns-root" delete -f "$id" >/dev/null 2>&1
	done
	if [ -d "$tmp/crun-root" ] && [ -n "$(ls -A "$tmp/crun-root" 2>/dev/null)" ]; then
		B_TMP=$tmp B_CRUN_ROOT=$tmp/crun-root unshare -m bash "$self" __crun_ns_cleanup >/dev/null 2>&1
	fi
	stop_pids 50 "${daemon_pids[@]}"
	# Whatever survived (a shim whose daemon could not remove it).
	for pid in $(our_pids); do
		kill -KILL "$pid" 2>/dev/null
	done
	# berth's cgroups of containers that were not removed cleanly.
	if [ -f "$tmp/ids" ]; then
		while read -r id; do
			for d in /sys/fs/cgroup/*/berth/"$id"; do
				[ -d "$d" ] || continue
				for pid in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
				rmdir "$d" 2>/dev/null
			done
		done <"$tmp/ids"
	fi
	case $tmp in
	"${TMPDIR:-/tmp}"/berth-bench.*) rm -rf "$tmp" ;;
	esac
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
B_RUNS=$RUNS
B_WARMUP=$WARMUP
B_ROUNDS=$ROUNDS
export B_TMP=$tmp B_JSON=$JSON B_RUNS B_WARMUP B_ROUNDS B_CRUN_ROOT=$tmp/crun-root


start_daemon() { # name runtime [extra berthd args...]; sets $sock
	local name=$1 runtime=$2
	shift 2
	sock=$tmp/$name.sock
	"$BIN/berthd" --default-network none --root "$tmp/$name" --socket "$sock" --runtime "$runtime" --log-level warn "$@" \
		</dev/null 2>"$tmp/$name.log" &
	local pid=$!
	daemon_pids+=("$pid")
	daemon_socks+=("$sock")
	eval "pid_$name=$pid"
	for _ in $(seq 200); do
		[ -S "$sock" ] && "$BIN/berth" --socket "$sock" version >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	cat "$tmp/$name.log" >&2
	die "berthd ($name) did not start"
}

# mem PID -> "rss pss private anon" in KiB
mem() {
	local pid=$1 rss
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
	awk -v rss="$rss" '
		/^Pss:/ {pss=$2} /^Private_Clean:/ {pc=$2} /^Private_Dirty:/ {pd=$2} /^Anonymous:/ {an=$2}
		END {print rss, pss, pc+pd, an}' "/proc/$pid/smaps_rollup"
}

shim_of() { # socket id -> the shim's pid (the init's parent)
	local init
	init=$("$BIN/berth" --socket "$1" inspect "$2" | jq -r '.[0].pid')
	[ -n "$init" ] && [ "$init" -gt 0 ] || die "no init pid for $2"
	awk '/^PPid:/ {print $2}' "/proc/$init/status"
}

run_detached() { # socket name -> starts `sleep` in a container, prints its id
	local id
	id=$("$BIN/berth" --socket "$1" run -d --name "$2" --rootfs "$tmp/rootfs" sleep 1000000)
	echo "$id" >>"$tmp/ids"
	echo "$id"
}

# Settle: let shims go idle (they trim touched file pages before sleeping).
settle() { sleep "${1:-1}"; }

median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# ---------------------------------------------------------------------------
# Build, rootfs, bundles, daemons
# ---------------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_start=$SECONDS
mkdir -p "$JSON" "$BIN"

cd "$repo"
if [ -z "${BENCH_NO_BUILD:-}" ]; then
	log "cargo build --release --bins"
	cargo build --release --bins --quiet >&2
fi
target=${CARGO_TARGET_DIR:-$repo/target}
for b in berth berthd berth-shim; do
	cp "$target/release/$b" "$BIN/$b"
done
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit="$commit (with uncommitted changes)"
fi

alt_labels=()
alt_bins=()
for spec in ${BENCH_ALT_SHIMS:-}; do
	label=${spec%%=*}
	path=${spec#*=}
	[ -x "$path" ] || die "BENCH_ALT_SHIMS: $path is not executable"
	[[ $label =~ ^[a-z0-9-]+$ ]] || die "BENCH_ALT_SHIMS: label $label must be [a-z0-9-]"
	mkdir -p "$tmp/alt-$label"
	cp "$path" "$tmp/alt-$label/berth-shim"
	alt_labels+=("$label")
	alt_bins+=("$tmp/alt-$label/berth-shim")
done

log "rootfs and bundles"
bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs"
for b in true sleep; do
	mkdir -p "$tmp/bundle-$b"
	(cd "$tmp/bundle-$b" && runc spec)
	if [ "$b" = true ]; then args='["/bin/true"]'; else args='["/bin/sleep","1000000"]'; fi
	jq --arg root "$tmp/rootfs" --argjson args "$args" \
		'.process.terminal = false | .process.args = $args | .root.path = $root | .root.readonly = false' \
		"$tmp/bundle-$b/config.json" >"$tmp/bundle-$b/config.json.new"
	mv "$tmp/bundle-$b/config.json.new" "$tmp/bundle-$b/config.json"
done

log "starting daemons"
start_daemon emb embedded
sock_emb=$sock
start_daemon runcd runc
sock_runc=$sock
alt_socks=()
for i in "${!alt_labels[@]}"; do
	start_daemon "alt$i" embedded --shim "${alt_bins[$i]}"
	alt_socks+=("$sock")
done
settle 0.5
read -r d_emb_fresh_rss d_emb_fresh_pss _ _ < <(mem "$pid_emb")
read -r d_runc_fresh_rss d_runc_fresh_pss _ _ < <(mem "$pid_runcd")

R=$tmp/rootfs
E="$BIN/berth --socket $sock_emb"
C="$BIN/berth --socket $sock_runc"

# ---------------------------------------------------------------------------
# 1. run latency
# ---------------------------------------------------------------------------
log "1. run latency (berth embedded, berth runc, runc)"
alt_run=()
for i in "${!alt_labels[@]}"; do
	alt_run+=("berth run --rm (embedded, shim: ${alt_labels[$i]})"
		"$BIN/berth --socket ${alt_socks[$i]} run --rm --rootfs $R /bin/true")
done
bench "$JSON/run.json" \
	"berth run --rm (embedded)" "$E run --rm --rootfs $R /bin/true" \
	"berth run --rm (runc)" "$C run --rm --rootfs $R /bin/true" \
	"runc run" "runc --root $tmp/runc-root run --bundle $tmp/bundle-true bench-runc-run" \
	"${alt_run[@]}"

log "1b. crun"
crun_status=unavailable
crun_note=""
if ! command -v crun >/dev/null; then
	crun_note="crun is not installed"
elif crun --root "$tmp/crun-root" run --bundle "$tmp/bundle-true" bench-crun-check \
	</dev/null >"$tmp/crun-plain.log" 2>&1; then
	# crun works on this host as it is: measure it beside the rest.
	crun_status=host
	bench "$JSON/run-crun.json" \
		"crun run" "crun --root $tmp/crun-root run --bundle $tmp/bundle-true bench-crun-run"
	crun --root "$tmp/crun-root" run -d --bundle "$tmp/bundle-sleep" bench-crun-exec </dev/null >/dev/null 2>&1
	bench "$JSON/exec-crun.json" \
		"crun exec" "crun --root $tmp/crun-root exec bench-crun-exec /bin/true"
	crun --root "$tmp/crun-root" delete -f bench-crun-exec >/dev/null 2>&1 || true
else
	log "plain crun failed ($(head -c 200 "$tmp/crun-plain.log")); trying the hybrid-cgroup workaround"
	rc=0
	unshare -m bash "$self" __crun_ns || rc=$?
	if [ "$rc" = 0 ]; then
		crun_status=ns
		crun_note="crun refuses this host as it is (\"$(head -n1 "$tmp/crun-plain.log")\"); it ran in a private mount namespace with an empty file bind-mounted over /sys/fs/cgroup/unified/cgroup.controllers. runc was measured in the same namespace as a control."
	else
		ns_msg=$(head -n1 "$tmp/crun-check.log" 2>/dev/null || true)
		crun_note="crun failed on this host: $(head -n1 "$tmp/crun-plain.log"); with the hybrid-cgroup workaround: ${ns_msg:-exit status $rc}"
		log "crun unavailable: $crun_note"
	fi
fi

# ---------------------------------------------------------------------------
# 2. exec latency
# ---------------------------------------------------------------------------
log "2. exec latency"
id_emb_exec=$(run_detached "$sock_emb" bench-exec)
id_runc_exec=$(run_detached "$sock_runc" bench-exec)
runc --root "$tmp/runc-root" run -d --bundle "$tmp/bundle-sleep" bench-runc-exec </dev/null >/dev/null 2>&1
bench "$JSON/exec.json" \
	"berth exec (embedded)" "$E exec bench-exec /bin/true" \
	"berth exec (runc)" "$C exec bench-exec /bin/true" \
	"runc exec" "runc --root $tmp/runc-root exec bench-runc-exec /bin/true"
execs_done=$(((WARMUP + RUNS) * ROUNDS))

# ---------------------------------------------------------------------------
# 3. where berth's time goes
# ---------------------------------------------------------------------------
log "3. breakdown"
bench "$JSON/fixed.json" \
	"berth version (CLI start + connect + 1 unary RPC)" "$E version" \
	"runc --version (process start of a Go binary)" "runc --version"

phases() { # socket label -> appends "label create start rm" medians (ms)
	local s=$1 label=$2 i t0 t1 t2 t3 id
	: >"$tmp/ph-$label"
	for i in $(seq "$((WARMUP + RUNS * ROUNDS))"); do
		t0=$EPOCHREALTIME
		"$BIN/berth" --socket "$s" create --rootfs "$R" /bin/true >"$tmp/id"
		t1=$EPOCHREALTIME
		read -r id <"$tmp/id"
		"$BIN/berth" --socket "$s" start -a "$id"
		t2=$EPOCHREALTIME
		"$BIN/berth" --socket "$s" rm "$id" >/dev/null
		t3=$EPOCHREALTIME
		[ "$i" -gt "$WARMUP" ] || continue
		echo "$t0 $t1 $t2 $t3" >>"$tmp/ph-$label"
	done
	local c s_ r
	c=$(awk '{printf "%.3f\n", ($2-$1)*1000}' "$tmp/ph-$label" | median)
	s_=$(awk '{printf "%.3f\n", ($3-$2)*1000}' "$tmp/ph-$label" | median)
	r=$(awk '{printf "%.3f\n", ($4-$3)*1000}' "$tmp/ph-$label" | median)
	echo "$label $c $s_ $r"
}
phase_emb=$(phases "$sock_emb" berth-embedded)
phase_runc=$(phases "$sock_runc" berth-runc)

# runc's own phases, for comparison: create, start (returns at once) plus
# waiting for the init to be gone (watched through /proc, no extra process),
# and delete.
: >"$tmp/ph-runc-raw"
for i in $(seq "$((WARMUP + RUNS * ROUNDS))"); do
	t0=$EPOCHREALTIME
	runc --root "$tmp/runc-root" create --bundle "$tmp/bundle-true" bench-runc-ph </dev/null >/dev/null 2>&1
	t1=$EPOCHREALTIME
	init=$(jq -r .init_process_pid "$tmp/runc-root/bench-runc-ph/state.json")
	t1b=$EPOCHREALTIME
	runc --root "$tmp/runc-root" start bench-runc-ph
	while read -r st 2>/dev/null <"/proc/$init/stat"; do
		st=${st##*) }
		[ "${st:0:1}" = Z ] && break
	done
	t2=$EPOCHREALTIME
	runc --root "$tmp/runc-root" delete bench-runc-ph
	t3=$EPOCHREALTIME
	[ "$i" -gt "$WARMUP" ] || continue
	echo "$t0 $t1 $t1b $t2 $t3" >>"$tmp/ph-runc-raw"
done
phase_rawrunc="runc $(awk '{printf "%.3f\n", ($2-$1)*1000}' "$tmp/ph-runc-raw" | median) \
$(awk '{printf "%.3f\n", ($4-$3)*1000}' "$tmp/ph-runc-raw" | median) \
$(awk '{printf "%.3f\n", ($5-$4)*1000}' "$tmp/ph-runc-raw" | median)"

# ---------------------------------------------------------------------------
# 4. memory
# ---------------------------------------------------------------------------
log "4. memory"
read -r shim_emb_exec_rss shim_emb_exec_pss shim_emb_exec_priv shim_emb_exec_anon < <(mem "$(shim_of "$sock_emb" "$id_emb_exec")")
read -r shim_runc_exec_rss shim_runc_exec_pss shim_runc_exec_priv shim_runc_exec_anon < <(mem "$(shim_of "$sock_runc" "$id_runc_exec")")
"$BIN/berth" --socket "$sock_emb" rm -f bench-exec >/dev/null
"$BIN/berth" --socket "$sock_runc" rm -f bench-exec >/dev/null
runc --root "$tmp/runc-root" delete -f bench-runc-exec
settle 0.5
read -r d_emb_after_rss d_emb_after_pss _ _ < <(mem "$pid_emb")
read -r d_runc_after_rss d_runc_after_pss _ _ < <(mem "$pid_runcd")

# One idle shim alone (Pss depends on how many processes share the pages,
# so it is read while this is the only shim of its binary), then
# IDLE_CONTAINERS in all: the Pss of all shims and berthd's RSS. Removes them.
loaded() { # socket -> "rss pss private anon" of the lone shim, then the Pss sum
	local s=$1 i id0 one sum=0 p
	id0=$(run_detached "$s" "idle-0")
	settle 1.5
	one=$(mem "$(shim_of "$s" "$id0")")
	for i in $(seq 1 $((IDLE_CONTAINERS - 1))); do
		run_detached "$s" "idle-$i" >/dev/null
	done
	settle 1.5
	for i in $(seq 0 $((IDLE_CONTAINERS - 1))); do
		p=$(mem "$(shim_of "$s" "idle-$i")" | cut -d' ' -f2)
		sum=$((sum + p))
	done
	echo "$one $sum"
}
unload() { # socket
	local i
	for i in $(seq 0 $((IDLE_CONTAINERS - 1))); do
		"$BIN/berth" --socket "$1" rm -f "idle-$i" >/dev/null
	done
}
read -r shim_emb_rss shim_emb_pss shim_emb_priv shim_emb_anon shim_emb_sum < <(loaded "$sock_emb")
read -r d_emb_20_rss d_emb_20_pss _ _ < <(mem "$pid_emb")
unload "$sock_emb"
read -r shim_runc_rss shim_runc_pss shim_runc_priv shim_runc_anon shim_runc_sum < <(loaded "$sock_runc")
read -r d_runc_20_rss d_runc_20_pss _ _ < <(mem "$pid_runcd")
unload "$sock_runc"

alt_mem=()
for i in "${!alt_labels[@]}"; do
	alt_mem+=("$(loaded "${alt_socks[$i]}")")
	unload "${alt_socks[$i]}"
done

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$((SECONDS - t_start))

# stat FILE NAME FIELD -> seconds as ms with 1 decimal
stat_ms() {
	jq -r --arg n "$2" --arg f "$3" \
		'.results[] | select(.command == $n) | .[$f] * 1000 | . * 10 | round / 10' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "—" }'; }
row() { # file name -> markdown cells: median | mean ± σ | min | max | runs
	jq -r --arg n "$2" '.results[] | select(.command == $n) |
		[(.median*10000|round/10), (.mean*10000|round/10), (.stddev*10000|round/10),
		 (.min*10000|round/10), (.max*10000|round/10), (.times|length)] |
		"\(.[0]) | \(.[1]) ± \(.[2]) | \(.[3]) | \(.[4]) | \(.[5])"' "$1"
}
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; }

cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
memtotal=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
if [ -e /sys/fs/cgroup/unified ]; then cg="cgroup v1 (hybrid, cgroup2 at /sys/fs/cgroup/unified)"
elif [ -e /sys/fs/cgroup/cgroup.controllers ]; then cg="cgroup v2 (unified)"
else cg="cgroup v1"; fi
fsinfo=$(findmnt -no FSTYPE -T "$tmp" 2>/dev/null || echo "?")

m_emb=$(stat_ms "$JSON/run.json" "berth run --rm (embedded)" median)
m_brunc=$(stat_ms "$JSON/run.json" "berth run --rm (runc)" median)
m_runc=$(stat_ms "$JSON/run.json" "runc run" median)
x_emb=$(stat_ms "$JSON/exec.json" "berth exec (embedded)" median)
x_brunc=$(stat_ms "$JSON/exec.json" "berth exec (runc)" median)
x_runc=$(stat_ms "$JSON/exec.json" "runc exec" median)
m_crun="" x_crun=""
case $crun_status in
host) m_crun=$(stat_ms "$JSON/run-crun.json" "crun run" median)
	x_crun=$(stat_ms "$JSON/exec-crun.json" "crun exec" median) ;;
ns) m_crun=$(stat_ms "$JSON/run-crun-ns.json" "crun run" median)
	x_crun=$(stat_ms "$JSON/exec-crun-ns.json" "crun exec" median) ;;
esac

mkdir -p "$(dirname "$OUT")"
{
	echo "# berth benchmark: $started_at"
	echo
	echo "berth $commit; $(uname -r), $(nproc) CPUs ($cpu), $memtotal RAM, $cg;"
	echo "state dirs on $fsinfo; $(runc --version | head -n1); $(command -v crun >/dev/null && crun --version | head -n1 || echo 'no crun'); $(hyperfine --version)."
	echo "Load average $load_before before, $load_after after; the run took ${elapsed}s."
	echo "hyperfine -N; per command $ROUNDS rounds of $WARMUP warm-up + $RUNS runs (order reversed every other round), statistics over all $((ROUNDS * RUNS)) runs; times in ms."
	echo
	echo "## 1. Run a container: create, start, wait for /bin/true, delete"
	echo
	echo "| command | median | mean ± σ | min | max | runs |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	echo "| \`berth run --rm\` (embedded) | $(row "$JSON/run.json" "berth run --rm (embedded)") |"
	echo "| \`berth run --rm\` (berthd --runtime runc) | $(row "$JSON/run.json" "berth run --rm (runc)") |"
	echo "| \`runc run\` | $(row "$JSON/run.json" "runc run") |"
	for i in "${!alt_labels[@]}"; do
		n="berth run --rm (embedded, shim: ${alt_labels[$i]})"
		echo "| \`berth run --rm\` (embedded, shim: ${alt_labels[$i]}) | $(row "$JSON/run.json" "$n") |"
	done
	case $crun_status in
	host) echo "| \`crun run\` | $(row "$JSON/run-crun.json" "crun run") |" ;;
	ns) echo "| \`crun run\` (private mount ns, see note) | $(row "$JSON/run-crun-ns.json" "crun run") |"
		echo "| \`runc run\` (same ns, control) | $(row "$JSON/run-crun-ns.json" "runc run (crun's namespace)") |" ;;
	*) echo "| \`crun run\` | unavailable | | | | |" ;;
	esac
	echo
	echo "## 2. Exec /bin/true in a running container"
	echo
	echo "| command | median | mean ± σ | min | max | runs |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	echo "| \`berth exec\` (embedded) | $(row "$JSON/exec.json" "berth exec (embedded)") |"
	echo "| \`berth exec\` (berthd --runtime runc) | $(row "$JSON/exec.json" "berth exec (runc)") |"
	echo "| \`runc exec\` | $(row "$JSON/exec.json" "runc exec") |"
	case $crun_status in
	host) echo "| \`crun exec\` | $(row "$JSON/exec-crun.json" "crun exec") |" ;;
	ns) echo "| \`crun exec\` (private mount ns) | $(row "$JSON/exec-crun-ns.json" "crun exec") |" ;;
	*) echo "| \`crun exec\` | unavailable | | | | |" ;;
	esac
	echo
	echo "## Ratios of medians"
	echo
	echo "| | run | exec |"
	echo "| --- | ---: | ---: |"
	echo "| berth (embedded) / runc | $(ratio "$m_emb" "$m_runc") | $(ratio "$x_emb" "$x_runc") |"
	echo "| berth (runc) / runc | $(ratio "$m_brunc" "$m_runc") | $(ratio "$x_brunc" "$x_runc") |"
	echo "| berth (embedded) / berth (runc) | $(ratio "$m_emb" "$m_brunc") | $(ratio "$x_emb" "$x_brunc") |"
	if [ -n "$m_crun" ]; then
		echo "| berth (embedded) / crun | $(ratio "$m_emb" "$m_crun") | $(ratio "$x_emb" "$x_crun") |"
		echo "| runc / crun | $(ratio "$m_runc" "$m_crun") | $(ratio "$x_runc" "$x_crun") |"
	else
		echo "| berth (embedded) / crun | crun unavailable | |"
	fi
	echo
	echo "## 3. Where berth's time goes (medians, ms)"
	echo
	echo "| | median | min |"
	echo "| --- | ---: | ---: |"
	for n in "berth version (CLI start + connect + 1 unary RPC)" "runc --version (process start of a Go binary)"; do
		echo "| $n | $(stat_ms "$JSON/fixed.json" "$n" median) | $(stat_ms "$JSON/fixed.json" "$n" min) |"
	done
	echo
	echo "Each phase as its own CLI call, timed from the shell ($((RUNS * ROUNDS)) runs after $WARMUP warm-up; each berth phase includes one CLI start):"
	echo
	echo "| | create | start + wait (\`start -a\`; runc: \`start\`, then until the init is gone) | rm / delete |"
	echo "| --- | ---: | ---: | ---: |"
	for p in "$phase_emb" "$phase_runc" "$phase_rawrunc"; do
		read -r l c s r <<<"$p"
		case $l in
		berth-embedded) l="berth (embedded)" ;; berth-runc) l="berth (berthd --runtime runc)" ;;
		runc) l="runc (\`create\`, \`start\` + wait, \`delete\`)" ;;
		esac
		printf '| %s | %.1f | %.1f | %.1f |\n' "$l" "$c" "$s" "$r"
	done
	echo
	echo "## 4. Memory (KiB)"
	echo
	echo "Private = Private_Clean + Private_Dirty, from /proc/PID/smaps_rollup."
	echo
	echo "| process | VmRSS | Pss | Private | Anonymous |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	echo "| berth-shim, idle, supervising \`sleep\`, the only shim (embedded) | $shim_emb_rss | $shim_emb_pss | $shim_emb_priv | $shim_emb_anon |"
	echo "| berth-shim, idle, supervising \`sleep\`, the only shim (runc) | $shim_runc_rss | $shim_runc_pss | $shim_runc_priv | $shim_runc_anon |"
	echo "| berth-shim after $execs_done execs, 2 shims alive (embedded) | $shim_emb_exec_rss | $shim_emb_exec_pss | $shim_emb_exec_priv | $shim_emb_exec_anon |"
	echo "| berth-shim after $execs_done execs, 2 shims alive (runc) | $shim_runc_exec_rss | $shim_runc_exec_pss | $shim_runc_exec_priv | $shim_runc_exec_anon |"
	for i in "${!alt_labels[@]}"; do
		read -r a b c d _ <<<"${alt_mem[$i]}"
		echo "| berth-shim, idle, the only shim (embedded, shim: ${alt_labels[$i]}) | $a | $b | $c | $d |"
	done
	echo
	echo "| berthd | VmRSS | Pss |"
	echo "| --- | ---: | ---: |"
	echo "| embedded: fresh, 0 containers | $d_emb_fresh_rss | $d_emb_fresh_pss |"
	echo "| embedded: after the runs above, 0 containers | $d_emb_after_rss | $d_emb_after_pss |"
	echo "| embedded: $IDLE_CONTAINERS running containers | $d_emb_20_rss | $d_emb_20_pss |"
	echo "| runc: fresh, 0 containers | $d_runc_fresh_rss | $d_runc_fresh_pss |"
	echo "| runc: after the runs above, 0 containers | $d_runc_after_rss | $d_runc_after_pss |"
	echo "| runc: $IDLE_CONTAINERS running containers | $d_runc_20_rss | $d_runc_20_pss |"
	echo
	echo "$IDLE_CONTAINERS idle containers, the shims' Pss in total (what the shims cost together):"
	echo
	echo "| shims | total Pss (MiB) | per container (KiB) |"
	echo "| --- | ---: | ---: |"
	echo "| $IDLE_CONTAINERS × embedded | $(kib_to_mib "$shim_emb_sum") | $((shim_emb_sum / IDLE_CONTAINERS)) |"
	echo "| $IDLE_CONTAINERS × runc | $(kib_to_mib "$shim_runc_sum") | $((shim_runc_sum / IDLE_CONTAINERS)) |"
	for i in "${!alt_labels[@]}"; do
		read -r _ _ _ _ sum <<<"${alt_mem[$i]}"
		echo "| $IDLE_CONTAINERS × embedded, shim: ${alt_labels[$i]} | $(kib_to_mib "$sum") | $((sum / IDLE_CONTAINERS)) |"
	done
	if [ -n "$crun_note" ]; then
		echo
		echo "Note: $crun_note"
	fi
} >"$OUT"
cat "$OUT"
mkdir -p "$OUT_JSON"
rm -f "$OUT_JSON"/*.json
cp "$JSON"/*.json "$OUT_JSON"/
log "summary written to $OUT (hyperfine JSON in $OUT_JSON)"
