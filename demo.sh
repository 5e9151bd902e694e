#!/usr/bin/env bash
# A first look at berth on a fresh Debian machine (run as root): installs
# what it needs, builds, starts berthd in a private root (.demo/), runs a
# busybox container that prints a greeting, shows ps, logs, the exit code and
# the events, then stops the daemon and removes the container.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: berth creates containers and needs root" >&2
  exit 1
fi
bash scripts/setup.sh
echo "building berth (release)..."
cargo build --release --bins --quiet

demo="$PWD/.demo"
rm -rf "$demo"
mkdir -p "$demo"
bash scripts/mkrootfs.sh "$demo/rootfs"

target/release/berthd --root "$demo/state" --socket "$demo/berth.sock" 2>"$demo/berthd.log" &
daemon=$!
stop_daemon() {
  if kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    wait "$daemon" || true
  fi
}
trap stop_daemon EXIT
for _ in $(seq 1 200); do
  [ -S "$demo/berth.sock" ] && break
  kill -0 "$daemon" 2>/dev/null || { cat "$demo/berthd.log" >&2; exit 1; }
  sleep 0.05
done

berth() { target/release/berth --socket "$demo/berth.sock" "$@"; }
show() { printf '\n\033[1m$ berth %s\033[0m\n' "$*"; }

show run --name hello --rootfs .demo/rootfs /bin/sh -c "'echo Hello from berth!; echo from \$(hostname) >&2; exit 3'"
set +e
berth run --name hello --rootfs "$demo/rootfs" /bin/sh -c 'echo Hello from berth!; echo from $(hostname) >&2; exit 3'
code=$?
set -e
echo "(exit code: $code)"

show ps -a
berth ps -a
show logs hello
berth logs hello
show ps -a --format json
berth ps -a --format json
until=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
show events --since 0 --until "$until"
berth events --since 0 --until "$until"
show rm hello
berth rm hello

stop_daemon
trap - EXIT
echo
echo "berthd stopped; its log is in .demo/berthd.log"
