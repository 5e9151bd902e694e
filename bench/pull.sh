#!/usr/bin/env bash
# bench/pull.sh — pull and unpack of a 5-layer image from a loopback registry,
# cold, for berth beside skopeo (copy to a directory), containerd (ctr pull),
# podman pull and docker pull, in the same run; the time from the pull's start
# to the first container's output (pull, then `run --rm IMAGE echo hi`); and
# the disk's sequential write rate (dd ... conv=fdatasync of the image's
# uncompressed size, in the same filesystem as the stacks' stores).
#
# Run as root:   bench/pull.sh                  (5 rounds, ~200 MiB image)
#                QUICK=1 bench/pull.sh          (2 rounds, ~40 MiB image)
#                BENCH_INSTALL=1 bench/pull.sh  (apt-get install the peers first)
#
# The image is made here, deterministically: layer 1 is the busybox rootfs
# (scripts/mkrootfs.sh) plus data, layers 2-5 data only. Each layer holds 60%
# incompressible bytes (AES-CTR of zeros, keyed by the layer number) in 1 MiB
# files, 30% compressible text in 256 KiB files and 10% in 4 KiB files (many
# small files). tar (sorted, mtime 0, uid 0) + gzip -n -6, written as an OCI
# layout and pushed with skopeo to Debian's docker-registry, started here on
# 127.0.0.1 (a free port) with a config file and storage of its own.
#
# Cold: before every timed pull the stack's store is emptied (berth: rmi +
# image prune -a; ctr: images rm --sync, which garbage-collects content and
# snapshots; podman: rmi -a -f; docker: rmi -f + image prune -a -f; skopeo: the
# target directory removed). The store's size after that is recorded
# (metric "store-after-clean") to show it is empty. The host's page cache is
# not dropped (a shared machine): the registry's blobs are likely cached, so
# "cold" means an empty store, not cold disks.
#
# Stacks alternate round by round (the order rotates every round); "× berth"
# is the median of the per-round ratios of a stack's time to berth's time in
# the same round (above 1: slower than berth). Everything runs in a private
# mount namespace (unshare -m) with private roots and sockets under a temp
# dir; every daemon is stopped by its pid in an exit trap, the temp dir is
# removed.
#
# Environment:
#   STACKS="berth skopeo containerd podman docker"   (each skipped when absent)
#   ROUNDS=5        rounds (QUICK: 2)
#   LAYER_MIB=40    uncompressed MiB of data per layer (QUICK: 8)
#   QUICK=1         the QUICK values above
#   BENCH_INSTALL=1 apt-get install containerd docker.io podman conmon runc
#                   skopeo docker-registry busybox-static first
#   BENCH_NO_BUILD=1 use the binaries already in target/release
#   BENCH_OUT=FILE  summary (default bench/results/pull-latest.md); the raw
#                   samples go beside it (.tsv)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/.." && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"

log() { printf '[pull %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

if [ "${1:-}" != __inner ]; then
	[ "$(id -u)" = 0 ] || die "run as root (containers need it)"
	if [ -n "${BENCH_INSTALL:-}" ]; then
		log "apt-get install the peers"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			containerd docker.io podman conmon runc skopeo docker-registry busybox-static \
			jq curl openssl >&2
	fi
	for tool in jq unshare curl openssl skopeo docker-registry gzip tar; do
		command -v "$tool" >/dev/null || die "$tool not found (BENCH_INSTALL=1 installs it)"
	done
	cd "$repo"
	if [ -z "${BENCH_NO_BUILD:-}" ]; then
		log "cargo build --release --bins"
		cargo build --release --bins --quiet >&2
	fi
	BERTH_PULL_NS=$$ exec unshare -m --propagation private bash "$self" __inner
fi
# The inner part mounts over a host file: only ever in the namespace above.
[ "${BERTH_PULL_NS:-}" = "$$" ] || die "run bench/pull.sh without arguments"

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
if [ -n "${QUICK:-}" ]; then
	ROUNDS=${ROUNDS:-2} LAYER_MIB=${LAYER_MIB:-8}
fi
ROUNDS=${ROUNDS:-5}
LAYER_MIB=${LAYER_MIB:-40}
STACKS=${STACKS:-berth skopeo containerd podman docker}
OUT=${BENCH_OUT:-$here/results/pull-latest.md}

run_containerd_existed=""
[ ! -e /run/containerd ] || run_containerd_existed=1
# Under /var/tmp: on disk (not a tmpfs), and the same filesystem for every
# store and for dd.
tmp=$(mktemp -d /var/tmp/berth-pull.XXXXXX)
chmod 0711 "$tmp"
BIN=$tmp/bin
RES=$tmp/samples.tsv # metric stack round value
: >"$RES"
notes=()
started=()
daemon_pids=()
registry_pid=""


cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	set +e
	log "cleaning up"
	[ -z "$registry_pid" ] || daemon_pids+=("$registry_pid")
	stop_pids 100 "${daemon_pids[@]}"
	for pid in $(our_pids); do
		kill -KILL "$pid" 2>/dev/null
	done
	awk -v t="$tmp/" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	case $tmp in /var/tmp/berth-pull.*) rm -rf "${tmp:?}" ;; esac
	if [ -z "$run_containerd_existed" ]; then
		rmdir /run/containerd/runc/pull /run/containerd/runc /run/containerd/s \
			/run/containerd/fifo /run/containerd 2>/dev/null
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The same hybrid-cgroup workaround as bench/suite.sh (crun refuses this
# host's layout otherwise), so the conditions match the suite's.
if [ -e /sys/fs/cgroup/unified/cgroup.controllers ] &&
	[ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers)" ]; then
	: >"$tmp/empty"
	mount --bind "$tmp/empty" /sys/fs/cgroup/unified/cgroup.controllers
fi

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }
timed_ms() {
	local t0 t1
	t0=$EPOCHREALTIME
	"$@" >>"$tmp/cmd.log" 2>&1 || return 1
	t1=$EPOCHREALTIME
	echo $((${t1/./} - ${t0/./})) | awk '{printf "%.3f", $1 / 1000}'
}
rotate() {
	local r=$1
	shift
	local -a a=("$@")
	local n=${#a[@]} i
	for ((i = 0; i < n; i++)); do echo "${a[$(((i + r) % n))]}"; done
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
fail() { # what: say so, with the last lines of the commands' output
	log "$1 failed:"
	tail -n 4 "$tmp/cmd.log" >&2
}
du_bytes() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

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

# ---------------------------------------------------------------------------
# The image: an OCI layout made here
# ---------------------------------------------------------------------------
L=$tmp/layout
mkimage() {
	local i d key inc txt small diff dgz sz diffs=() layers=() cfg cfgd man mand
	mkdir -p "$L/blobs/sha256"
	UNC_BYTES=0 GZ_BYTES=0
	for i in 1 2 3 4 5; do
		d=$tmp/gen/l$i
		mkdir -p "$d/data$i/big" "$d/data$i/text" "$d/data$i/small"
		[ "$i" != 1 ] || bash "$repo/scripts/mkrootfs.sh" "$d"
		inc=$((LAYER_MIB * 1048576 * 6 / 10))
		txt=$((LAYER_MIB * 1048576 * 3 / 10))
		small=$((LAYER_MIB * 1048576 / 10))
		key=$(printf '%032x' "$i")
		head -c "$inc" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$key" -iv "$key" |
			split -b 1M -a 4 - "$d/data$i/big/f"
		# seq writes more than head takes: its SIGPIPE is expected.
		{ seq -f "line %.0f of layer $i: compressible text for the berth pull bench" 1 $((txt / 40)) || true; } |
			head -c "$txt" | split -b 256K -a 4 - "$d/data$i/text/t"
		{ seq -f "small file line %.0f, layer $i" 1 $((small / 20)) || true; } |
			head -c "$small" | split -b 4K -a 5 - "$d/data$i/small/s"
		tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$tmp/gen/l$i.tar" .
		rm -rf "${d:?}"
		diff=$(sha256sum "$tmp/gen/l$i.tar" | cut -d' ' -f1)
		UNC_BYTES=$((UNC_BYTES + $(stat -c %s "$tmp/gen/l$i.tar")))
		gzip -n -6 "$tmp/gen/l$i.tar"
		dgz=$(sha256sum "$tmp/gen/l$i.tar.gz" | cut -d' ' -f1)
		sz=$(stat -c %s "$tmp/gen/l$i.tar.gz")
		GZ_BYTES=$((GZ_BYTES + sz))
		mv "$tmp/gen/l$i.tar.gz" "$L/blobs/sha256/$dgz"
		diffs+=("\"sha256:$diff\"")
		layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dgz\",\"size\":$sz}")
	done
	cfg=$(jq -cn --argjson d "[$(
		IFS=,
		echo "${diffs[*]}"
	)]" '{architecture: "amd64", os: "linux",
		config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"]},
		rootfs: {type: "layers", diff_ids: $d}}')
	printf '%s' "$cfg" >"$tmp/gen/config"
	cfgd=$(sha256sum "$tmp/gen/config" | cut -d' ' -f1)
	man=$(jq -cn --arg c "sha256:$cfgd" --argjson cs "${#cfg}" --argjson l "[$(
		IFS=,
		echo "${layers[*]}"
	)]" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs}, layers: $l}')
	mv "$tmp/gen/config" "$L/blobs/sha256/$cfgd"
	printf '%s' "$man" >"$tmp/gen/manifest"
	mand=$(sha256sum "$tmp/gen/manifest" | cut -d' ' -f1)
	mv "$tmp/gen/manifest" "$L/blobs/sha256/$mand"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
	jq -cn --arg d "sha256:$mand" --argjson s "${#man}" '{schemaVersion: 2, manifests: [{mediaType:
		"application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
		annotations: {"org.opencontainers.image.ref.name": "1"}}]}' >"$L/index.json"
	rm -rf "${tmp:?}/gen"
}

# The registry: a config file of its own, storage in the temp dir, a free
# port (a registry that exits at once, port taken, is retried on another).
registry_up() {
	local try port
	mkdir -p "$tmp/registry/storage"
	for try in 1 2 3 4 5; do
		port=$((20000 + (RANDOM * 7 + try) % 30000))
		cat >"$tmp/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/registry/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: berth-pull-bench
EOF
		docker-registry serve "$tmp/registry/config.yml" </dev/null >>"$tmp/registry.log" 2>&1 &
		registry_pid=$!
		if wait_for registry curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; then
			PORT=$port
			return 0
		fi
		kill -KILL "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
		registry_pid=""
	done
	return 1
}

log "image: 5 layers of $LAYER_MIB MiB"
mkimage
registry_up || die "docker-registry did not start (see $tmp/registry.log)"
REF=127.0.0.1:$PORT/bench:1
skopeo copy --quiet --dest-tls-verify=false "oci:$L:1" "docker://$REF" >&2
rm -rf "${L:?}"
UNC_MIB=$(awk -v b="$UNC_BYTES" 'BEGIN {printf "%.1f", b / 1048576}')
GZ_MIB=$(awk -v b="$GZ_BYTES" 'BEGIN {printf "%.1f", b / 1048576}')
log "pushed $REF: $UNC_MIB MiB uncompressed, $GZ_MIB MiB gzip"

# ---------------------------------------------------------------------------
# The stacks. Each STACK has STACK_up, STACK_clean (empty its store),
# STACK_store (the dirs of its store), STACK_pull, STACK_run (pull, then run
# `echo hi` and remove it; prints hi), STACK_version. skopeo has no _run.
# ---------------------------------------------------------------------------
# --- berth
B() { "$BIN/berth" --socket "$tmp/berth.sock" "$@"; }
berth_up() {
	"$BIN/berthd" --default-network none --root "$tmp/berth" --socket "$tmp/berth.sock" --runtime embedded \
		--log-level warn </dev/null 2>"$tmp/berthd.log" &
	daemon_pids+=("$!")
	wait_for berthd B version
}
berth_clean() {
	local id
	for id in $(B ps -aq); do B rm -f "$id"; done
	B rmi -f "$REF" || true
	B image prune -a -f
}
berth_store() { echo "$tmp/berth"; }
berth_pull() { B pull -q "$REF"; }
berth_run() { B pull -q "$REF" && B run --rm "$REF" echo hi; }
berth_version() { echo "berth $commit"; }

# --- skopeo copy to a directory (download only: no unpack, no store)
skopeo_up() { command -v skopeo >/dev/null; }
skopeo_clean() { rm -rf "${tmp:?}/skopeo"; }
skopeo_store() { echo "$tmp/skopeo"; }
skopeo_pull() { skopeo copy --quiet --src-tls-verify=false "docker://$REF" "dir:$tmp/skopeo"; }
skopeo_version() { skopeo --version; }

# --- containerd + ctr
C() { ctr --address "$tmp/containerd/c.sock" --namespace pull "$@"; }
containerd_up() {
	command -v containerd >/dev/null && command -v ctr >/dev/null || return 1
	mkdir -p "$tmp/containerd"
	cat >"$tmp/containerd/config.toml" <<EOF
version = 2
root = "$tmp/containerd/root"
state = "$tmp/containerd/state"
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
	daemon_pids+=("$!")
	wait_for containerd C version
}
containerd_clean() {
	local id
	for id in $(C containers ls -q); do
		C task rm -f "$id" >/dev/null 2>&1 || true
		C containers rm "$id" || true
	done
	C images rm --sync "$REF" || true
}
containerd_store() { echo "$tmp/containerd/root"; }
containerd_pull() { C images pull --plain-http "$REF"; }
containerd_run() {
	C images pull --plain-http "$REF" >/dev/null &&
		C run --rm --fifo-dir "$tmp/containerd/fifo" "$REF" "pull-$RANDOM" echo hi </dev/null
}
containerd_version() { containerd --version | cut -d' ' -f1,3; }

# --- podman
P() {
	CONTAINERS_CONF=$tmp/podman/containers.conf CONTAINERS_STORAGE_CONF=$tmp/podman/storage.conf \
		CONTAINERS_REGISTRIES_CONF=$tmp/podman/registries.conf \
		podman --root "$tmp/podman/root" --runroot "$tmp/podman/run" "$@"
}
podman_up() {
	command -v podman >/dev/null && command -v conmon >/dev/null || return 1
	podman_conf "$tmp/podman" none
	: >"$tmp/podman/registries.conf"
	P images >>"$tmp/cmd.log" 2>&1
}
podman_clean() {
	P rm -a -f -t 0 || true
	P rmi -a -f || true
}
podman_store() { echo "$tmp/podman/root"; }
podman_pull() { P pull -q --tls-verify=false "$REF"; }
podman_run() { P pull -q --tls-verify=false "$REF" >/dev/null && P run --rm "$REF" echo hi </dev/null; }
podman_version() { podman --version; }

# --- dockerd + docker
D() { DOCKER_CONFIG=$tmp/docker-client docker -H "unix://$tmp/docker.sock" "$@"; }
docker_up() {
	command -v dockerd >/dev/null && command -v docker >/dev/null || return 1
	mkdir -p "$tmp/docker-client" "$tmp/docker-exec"
	echo '{}' >"$tmp/daemon.json"
	dockerd --data-root "$tmp/docker" --exec-root "$tmp/docker-exec" \
		--pidfile "$tmp/docker.pid" -H "unix://$tmp/docker.sock" \
		--bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
		--insecure-registry "127.0.0.1:$PORT" \
		--config-file "$tmp/daemon.json" --log-level warn </dev/null >>"$tmp/dockerd.log" 2>&1 &
	daemon_pids+=("$!")
	wait_for dockerd D version
}
docker_clean() {
	local id
	for id in $(D ps -aq); do D rm -f "$id"; done
	D rmi -f "$REF" || true
	D image prune -a -f
}
docker_store() { echo "$tmp/docker/overlay2" "$tmp/docker/image"; }
docker_pull() { D pull -q "$REF"; }
docker_run() { D pull -q "$REF" >/dev/null && D run --rm --network none "$REF" echo hi </dev/null; }
docker_version() { dockerd --version | cut -d, -f1; }

for s in $STACKS; do
	if ! declare -F "${s}_up" >/dev/null; then
		notes+=("$s: unknown stack, skipped.")
		continue
	fi
	log "starting $s"
	if "${s}_up" >>"$tmp/cmd.log" 2>&1; then
		started+=("$s")
	else
		notes+=("$s: absent or failed to start, skipped.")
		log "$s skipped; last lines of its logs:"
		tail -n 5 "$tmp/cmd.log" "$tmp/$s"*.log >&2 2>/dev/null || true
	fi
done
[ "${#started[@]}" -gt 0 ] || die "no stack came up"
log "stacks: ${started[*]}"

# ---------------------------------------------------------------------------
# The rounds: in each, every stack's cold pull, every stack's cold pull+run,
# and dd, in a rotating order.
# ---------------------------------------------------------------------------
items=(disk)
for s in "${started[@]}"; do
	items+=("pull:$s")
	declare -F "${s}_run" >/dev/null && items+=("run:$s")
done
MIB_COUNT=$(((UNC_BYTES + 1048575) / 1048576))
disk_once() { dd if=/dev/zero of="$tmp/dd.bin" bs=1M count="$MIB_COUNT" conv=fdatasync status=none; }
run_checked() { # stack: pull+run, and the output must be hi
	local out
	out=$("${1}_run" 2>>"$tmp/cmd.log") || return 1
	[ "$(printf '%s' "$out" | tail -n1)" = hi ] || {
		echo "$1: run printed '$out', not hi" >>"$tmp/cmd.log"
		return 1
	}
}
for ((r = 1; r <= ROUNDS; r++)); do
	log "round $r of $ROUNDS"
	for it in $(rotate "$r" "${items[@]}"); do
		case $it in
		disk)
			rm -f "$tmp/dd.bin"
			sync -f "$tmp"
			if t=$(timed_ms disk_once); then record disk dd "$r" "$t"; else log "dd failed"; fi
			rm -f "$tmp/dd.bin"
			;;
		pull:* | run:*)
			s=${it#*:}
			"${s}_clean" >>"$tmp/cmd.log" 2>&1 || log "$s: clean failed"
			# shellcheck disable=SC2046 # the store's dirs, one word each
			record store-after-clean "$s" "$r" "$(du_bytes $("${s}_store"))"
			sync -f "$tmp" # the last stack's dirty pages are not the next's cost
			if [ "${it%%:*}" = pull ]; then
				if t=$(timed_ms "${s}_pull"); then record pull "$s" "$r" "$t"; else fail "$s: pull"; fi
			else
				if t=$(timed_ms run_checked "$s"); then record run "$s" "$r" "$t"; else fail "$s: pull+run"; fi
			fi
			;;
		esac
	done
done
for s in "${started[@]}"; do "${s}_clean" >>"$tmp/cmd.log" 2>&1 || true; done

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$((SECONDS - t_start))
# table METRIC: per stack, median ms, min–max, MiB/s (uncompressed size over
# the median), × berth (median of the per-round ratios), n
table() {
	local metric=$1 s
	echo "| stack | median ms | min – max | MiB/s (uncompressed) | × berth (paired) | n |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	for s in "${started[@]}"; do
		awk -F'\t' -v m="$metric" -v s="$s" -v mib="$UNC_MIB" '
			function med(a, n,   i, j, t) {
				for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
				return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
			}
			$1 == m && $2 == s { n++; v[n] = $4; by[$3] = $4; if (n == 1 || $4 < lo) lo = $4; if (n == 1 || $4 > hi) hi = $4 }
			$1 == m && $2 == "berth" { b[$3] = $4 }
			END {
				if (!n) exit
				k = 0
				for (r in by) if (r in b && b[r] > 0) { k++; q[k] = by[r] / b[r] }
				ratio = k ? sprintf("%.2f×", med(q, k)) : "—"
				md = med(v, n)
				printf "| %s | %.0f | %.0f – %.0f | %.1f | %s | %d |\n", s, md, lo, hi, mib / (md / 1000), ratio, n
			}' "$RES"
	done
}
# per_round METRIC: one row per round, each stack's time over berth's
per_round() {
	local s
	echo -n "| round |"
	for s in "${started[@]}"; do echo -n " $s |"; done
	echo
	echo -n "| ---: |"
	for s in "${started[@]}"; do echo -n " ---: |"; done
	echo
	awk -F'\t' -v m="$1" -v list="${started[*]}" -v rounds="$ROUNDS" '
		$1 == m { t[$2, $3] = $4 }
		END {
			n = split(list, st, " ")
			for (r = 1; r <= rounds; r++) {
				printf "| %d |", r
				for (i = 1; i <= n; i++)
					if ((st[i], r) in t && ("berth", r) in t && t["berth", r] > 0)
						printf " %.2f× |", t[st[i], r] / t["berth", r]
					else printf " — |"
				print ""
			}
		}' "$RES"
}
disk_line() {
	awk -F'\t' -v mib="$UNC_MIB" '
		function med(a, n,   i, j, t) {
			for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		$1 == "disk" { n++; d[$3] = $4; v[n] = mib / ($4 / 1000) }
		$1 == "pull" && $2 == "berth" { p[$3] = $4 }
		END {
			if (!n) { print "dd: no sample."; exit }
			k = 0
			for (r in d) if (r in p) { k++; q[k] = d[r] / p[r] }
			printf "dd of %s MiB with conv=fdatasync: median %.1f MiB/s (n=%d).", mib, med(v, n), n
			if (k) printf " berth'"'"'s cold pull (download + gunzip + unpack) against it, per round: median %.2f× (target ≥ 0.80×).", med(q, k)
			print ""
		}' "$RES"
}
cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mkdir -p "$(dirname "$OUT")"
{
	echo "# Cold pull from a loopback registry: $started_at"
	echo
	echo "berth $commit; $(uname -r), $(nproc) CPUs ($cpu), $(awk '/^MemTotal:/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; stores on $(df -T "$tmp" | awk 'NR == 2 {print $2}')."
	echo -n "Stacks: "
	for s in "${started[@]}"; do echo -n "$s ($("${s}_version" 2>/dev/null | head -n1)); "; done
	echo
	echo "Load average $load_before before, $load_after after; the run took ${elapsed}s."
	echo "Image: 5 layers (tar+gzip, OCI), $UNC_MIB MiB uncompressed, $GZ_MIB MiB compressed. Rounds: $ROUNDS${QUICK:+ (QUICK)}."
	echo "Stacks alternate round by round; \"× berth\" is the median of the per-round ratios to berth (above 1: slower than berth)."
	awk -v n="$(nproc)" -v l="${load_before%% *}" 'BEGIN {if (l + 0 > n + 0) printf "\n**Taken on a loaded machine** (load %s on %d CPUs, shared with other work): the figures are noisy; rerun on an idle machine for real ones.\n", l, n}'
	echo
	echo "## Cold pull (ms)"
	echo
	table pull
	echo
	echo "skopeo copies to a directory: download and digest checks only, no unpack."
	echo
	echo "Per round, each stack's cold pull time over berth's in the same round:"
	echo
	per_round pull
	echo
	echo "## Cold pull, then the first container's output (ms)"
	echo
	echo "From the start of the pull to \`run --rm IMAGE echo hi\` printing hi."
	echo
	table run
	echo
	echo "Per round, over berth's:"
	echo
	per_round run
	echo
	echo "## Disk"
	echo
	disk_line
	echo
	echo "Store size after each cleaning (bytes, max over rounds): $(awk -F'\t' '$1 == "store-after-clean" {if ($4 > m[$2]) m[$2] = $4; else if (!($2 in m)) m[$2] = $4} END {for (s in m) printf "%s %d; ", s, m[s]}' "$RES")"
	for n in "${notes[@]}"; do
		echo
		echo "- $n"
	done
} >"$OUT"
cp "$RES" "${OUT%.md}.tsv"
cat "$OUT"
log "summary in $OUT, samples in ${OUT%.md}.tsv"
