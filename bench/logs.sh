#!/usr/bin/env bash
# bench/logs.sh — the log path alone, quickly: a static writer
# (bench/logwriter.c) prints MIB MiB
# of 128-byte lines in a berth container, once to its stdout (the shim's CRI
# log) and once redirected to a plain file in the same container; each run
# is timed whole (start to exit), alternating, ROUNDS times. Also prints the
# bytes on disk per byte written and the prefix bytes per line. For the
# side-by-side with the other stacks, use bench/suite.sh (section 5).
#
#   bench/logs.sh                 MIB=1024 ROUNDS=3 by default
#   BENCH_NO_BUILD=1 bench/logs.sh  use target/release as it is
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
MIB=${MIB:-1024}
ROUNDS=${ROUNDS:-3}
BYTES=$((MIB * 1024 * 1024))
for tool in gcc bc; do
	command -v "$tool" >/dev/null || { echo "bench/logs.sh: needs $tool (apt-get install gcc libc6-dev bc)" >&2; exit 1; }
done
[ -n "${BENCH_NO_BUILD:-}" ] || (cd "$repo" && cargo build --release --bins >&2)
tmp=$(mktemp -d /tmp/berth-logs-XXXXXX)
bin="$tmp/bin"
mkdir -p "$bin"
cp "$repo"/target/release/{berth,berthd,berth-shim} "$bin/"
dpid=""
cleanup() {
	if [ -n "$dpid" ]; then
		for id in $("$bin/berth" --socket "$tmp/s.sock" ps -aq 2>/dev/null); do
			"$bin/berth" --socket "$tmp/s.sock" rm -f "$id" >/dev/null 2>&1 || true
		done
		kill "$dpid" 2>/dev/null || true
		wait "$dpid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs" >&2
gcc -O2 -static -o "$tmp/rootfs/bin/logwriter" "$repo/bench/logwriter.c"
"$bin/berthd" --default-network none --root "$tmp/root" --socket "$tmp/s.sock" --shim "$bin/berth-shim" \
	--log-level warn 2>"$tmp/berthd.log" &
dpid=$!
B() { "$bin/berth" --socket "$tmp/s.sock" "$@"; }
for _ in $(seq 100); do [ -S "$tmp/s.sock" ] && break; sleep 0.05; done
now() { date +%s.%N; }
rate() { echo "scale=1; $MIB / ($2 - $1)" | bc; }
printf '| round | plain file MiB/s | berth log MiB/s | log / file | disk bytes per byte | prefix bytes per line |\n'
printf '| ---: | ---: | ---: | ---: | ---: | ---: |\n'
for r in $(seq "$ROUNDS"); do
	t0=$(now)
	B run --rm --rootfs "$tmp/rootfs" sh -c "/bin/logwriter $BYTES > /tmp/out" >/dev/null
	t1=$(now)
	rm -f "$tmp/rootfs/tmp/out"
	t2=$(now)
	id=$(B run -d --log-max-size 64g --rootfs "$tmp/rootfs" /bin/logwriter "$BYTES")
	B wait "$id" >/dev/null
	t3=$(now)
	size=$(stat -c %s "$tmp/root/containers/$id/container.log")
	B rm "$id" >/dev/null
	file=$(rate "$t0" "$t1")
	log=$(rate "$t2" "$t3")
	printf '| %s | %s | %s | %.2f× | %.4f | %.1f |\n' "$r" "$file" "$log" \
		"$(echo "scale=4; $log / $file" | bc)" "$(echo "scale=4; $size / $BYTES" | bc)" \
		"$(echo "scale=1; ($size - $BYTES) * 128 / $BYTES" | bc)"
done
