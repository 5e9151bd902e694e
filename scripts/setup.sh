#!/usr/bin/env bash
# Installs what building and testing berth needs on a Debian machine:
# libseccomp (seccomp in the embedded runtime), runc (the second runtime the
# tests drive), busybox-static (the test and demo rootfs), the registry
# tools of the image tests, gcc and libc6-dev (static helpers the security
# tests and benchmarks build), systemd (only for systemd-analyze, which
# checks the units; it does not become init), dpkg-dev (dpkg-shlibdeps,
# for the Debian package's Depends), tini (run --init), docker.io (the
# docker CLI and dockerd, for the Docker API tests and benchmark),
# python3-docker (docker-py) and docker-compose (for their tests) and strace
# (the fork and fsync budget test). Quiet when
# everything is already there.
set -euo pipefail
# rustup's cargo may not be on a non-interactive shell's PATH.
export PATH="$HOME/.cargo/bin:$PATH"

need=()
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || need+=(busybox-static)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# dpkg-shlibdeps, for the package's Depends (scripts/package.sh).
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
# The image tests: a real registry on loopback, skopeo to push to it, umoci
# to build OCI images, htpasswd (bcrypt) for the registry's basic auth.
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
# The Docker API tests drive a real docker CLI (the newest on the machine:
# /usr/local/bin/docker if there is one, else docker.io's), and the latency
# benchmark runs Debian's dockerd beside berthd.
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
# The docker-py test (tests/e2e/tests/docker_py.rs) imports the docker SDK
# in the python3 on PATH: Debian's python3-docker when it has none.
python3 -c 'import docker' >/dev/null 2>&1 || need+=(python3-docker)
# The compose test (tests/e2e/tests/docker_net.rs): Debian's docker-compose.
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# The fork and fsync budget test (tests/e2e/tests/budget.rs) counts with strace.
command -v strace >/dev/null 2>&1 || need+=(strace)
# run --init: the static tini becomes the container's pid 1.
[ -x /usr/bin/tini-static ] || need+=(tini)
# Container networks: the CNI plugins berthd runs (bridge, host-local,
# firewall, portmap, tuning), the iptables they call, iproute2 for the
# network tests' namespaces (ip netns).
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed: install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
