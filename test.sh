#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests (the model against a
# fake runtime) and end-to-end tests (the real CLI and daemon against real
# containers, with the embedded runtime and with runc). Run as root.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests create containers and need root" >&2
  exit 1
fi
bash scripts/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== build"
cargo build --workspace --bins --quiet
# The shim as shipped (release profile), for its memory budget test
# (tests/e2e/tests/budget.rs).
cargo build --release -p berth-shim --quiet
export BERTH_BUDGET_SHIM="${CARGO_TARGET_DIR:-$PWD/target}/release/berth-shim"
export BERTH_TEST_ROOTFS="$PWD/target/e2e-rootfs"
bash scripts/mkrootfs.sh "$BERTH_TEST_ROOTFS"

echo "== tests"
cargo test --workspace --quiet -- --test-threads 4
