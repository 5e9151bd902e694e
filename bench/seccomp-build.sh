#!/usr/bin/env bash
# bench/seccomp-build.sh — how long libseccomp takes to compile the filter
# berth gives the runtime, without the runtime around it
# (bench/seccomp-build.c). The rules are those of a real container's
# config.json: berthd (target/release unless BENCH_BIN=DIR) creates one with
# the default profile and capabilities on this host and the script reads its
# linux.seccomp, or SPEC=config.json names one.
#
#   bench/seccomp-build.sh                    system libseccomp, 60 builds
#   LIBSECCOMP_VERSION=2.6.0 bench/seccomp-build.sh
#         also against that release, built from Debian's source in the temp
#         dir (the download is checked against the sha256 below; needs gperf)
#   SHAPES=1 bench/seccomp-build.sh
#         also the same rules in other shapes: one name per rule in
#         ascending / descending syscall-number order, x86_64 alone
#
# Prints, per libseccomp and shape, the median thread CPU ms of adding the
# rules, exporting the BPF and releasing the context, and the sha256 of the
# BPF program (equal across shapes: the order changes the work, not the
# filter). Everything it starts
# is stopped and its temp dir removed on exit (trap).
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-60}
B=${BENCH_BIN:-$repo/target/release}
tmp=$(mktemp -d /tmp/berth-seccomp-build-XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "${tmp:?}"
}
trap cleanup EXIT

# Debian's source of the releases this knows (the .dsc's Checksums-Sha256).
declare -A SHA256=(
	[2.6.0]=83b6085232d1588c379dc9b9cae47bb37407cf262e6e74993c61ba72d2a784dc
)

spec=${SPEC:-}
if [ -z "$spec" ]; then
	bash "$repo/scripts/mkrootfs.sh" "$tmp/rootfs" >&2
	"$B/berthd" --default-network none --root "$tmp/root" --socket "$tmp/s.sock" --runtime embedded \
		--shim "$B/berth-shim" --log-level warn 2>"$tmp/berthd.log" &
	pid=$!
	for _ in $(seq 200); do [ -S "$tmp/s.sock" ] && break; sleep 0.05; done
	id=$("$B/berth" --socket "$tmp/s.sock" create --rootfs "$tmp/rootfs" true)
	cp "$tmp/root/containers/$id/config.json" "$tmp/config.json"
	"$B/berth" --socket "$tmp/s.sock" rm -f "$id" >/dev/null
	spec=$tmp/config.json
fi

# rules.h from a spec's linux.seccomp, in one of the shapes. Names are added
# one by one, as libcontainer's initialize_seccomp adds them.
gen() { # SHAPE SPEC > rules.h
	python3 - "$1" "$2" <<'PY'
import ctypes, json, sys
shape, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))["linux"]["seccomp"]
arches = [a for a in s.get("architectures") or [] if a != "SCMP_ARCH_X86_64"]
if shape == "x86_64":
    arches = []
rules = s["syscalls"]
if shape in ("ascending", "descending"):
    lib = ctypes.CDLL("libseccomp.so.2")
    def num(name):  # the x86_64 number, else x86's; pseudo numbers are < 0
        for arch in (0xC000003E, 0x40000003):
            n = lib.seccomp_syscall_resolve_name_arch(arch, name.encode())
            if n >= 0:
                return n
        return -1
    rules = [dict(r, names=[n]) for r in rules for n in r["names"]]
    rules.sort(key=lambda r: num(r["names"][0]), reverse=shape == "descending")
print("static int arches(scmp_filter_ctx c) {")
for a in arches:
    print("  if (seccomp_arch_add(c, %s)) return -1;" % a)
print("  return 0;\n}\nstatic int rules(scmp_filter_ctx c) {\n  int n;")
for r in rules:
    act = "SCMP_ACT_ALLOW" if r["action"] == "SCMP_ACT_ALLOW" else \
        "SCMP_ACT_ERRNO(%d)" % r.get("errnoRet", 1)
    cmps = []
    for a in r.get("args") or []:
        two = ", %dULL" % a.get("valueTwo", 0) if a["op"] == "SCMP_CMP_MASKED_EQ" else ""
        cmps.append("SCMP_CMP64(%d, %s, %dULL%s)" % (a["index"], a["op"], a["value"], two))
    for name in r["names"]:
        print('  n = seccomp_syscall_resolve_name("%s");' % name)
        print("  if (n != __NR_SCMP_ERROR) {")
        if cmps:
            print("    struct scmp_arg_cmp a[] = {%s};" % ", ".join(cmps))
            call = "seccomp_rule_add_array(c, %s, n, %d, a)" % (act, len(cmps))
        else:
            call = "seccomp_rule_add(c, %s, n, 0)" % act
        print('    if (%s) { fprintf(stderr, "rule %s failed\\n"); return -1; }' % (call, name))
        print("  }")
print("  return 0;\n}")
PY
}

libs=("system:-lseccomp")
if [ -n "${LIBSECCOMP_VERSION:-}" ]; then
	v=$LIBSECCOMP_VERSION
	[ -n "${SHA256[$v]:-}" ] || { echo "no checksum for libseccomp $v (known: ${!SHA256[*]})" >&2; exit 1; }
	command -v gperf >/dev/null || { echo "libseccomp $v needs gperf (apt-get install gperf)" >&2; exit 1; }
	tar_gz="$tmp/libseccomp_$v.orig.tar.gz"
	curl -fsS --max-time 120 -o "$tar_gz" \
		"http://deb.debian.org/debian/pool/main/libs/libseccomp/libseccomp_$v.orig.tar.gz"
	echo "${SHA256[$v]}  $tar_gz" | sha256sum -c --quiet -
	tar -xzf "$tar_gz" -C "$tmp"
	(cd "$tmp/libseccomp-$v" &&
		./configure -q --prefix="$tmp/libseccomp" --enable-static --disable-shared \
			--disable-python CFLAGS=-O2 >/dev/null &&
		make -s -j2 >/dev/null 2>&1 && make -s install >/dev/null)
	libs+=("$v:-I$tmp/libseccomp/include $tmp/libseccomp/lib/libseccomp.a")
fi

shapes=(as-is)
[ -z "${SHAPES:-}" ] || shapes+=(descending ascending x86_64)
echo "rules of $(basename "$spec"): $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["linux"]["seccomp"]; print(sum(len(r["names"]) for r in s["syscalls"]), "names in", len(s["syscalls"]), "rules,", " + ".join(s.get("architectures") or []))' "$spec")"
for shape in "${shapes[@]}"; do
	mkdir -p "$tmp/$shape"
	gen "$shape" "$spec" >"$tmp/$shape/rules.h"
	for lib in "${libs[@]}"; do
		name=${lib%%:*}
		# shellcheck disable=SC2086 # the flags are words
		gcc -O2 -I"$tmp/$shape" -o "$tmp/$shape/build-$name" "$repo/bench/seccomp-build.c" ${lib#*:}
		t=$("$tmp/$shape/build-$name" "$RUNS" "$tmp/$shape/$name.bpf")
		printf '%-10s libseccomp %-6s %s, bpf %.12s\n' "$shape" "$name" "$t" "$(sha256sum <"$tmp/$shape/$name.bpf")"
	done
done
