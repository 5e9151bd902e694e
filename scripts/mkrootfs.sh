#!/usr/bin/env bash
# mkrootfs.sh DIR — build a minimal busybox root filesystem in DIR.
#
# Uses Debian's statically linked busybox (package busybox-static, /bin/busybox):
# DIR/bin/busybox plus one relative symlink per applet, a tiny /etc
# (passwd, group, hostname) and the usual empty mount points.
# Idempotent: re-running on an existing DIR refreshes it. Quiet on success.
set -euo pipefail

usage() {
	echo "usage: $0 DIR" >&2
	exit 2
}

[ "$#" -eq 1 ] || usage
dir=$1
[ -n "$dir" ] || usage

busybox=/bin/busybox
if [ ! -x "$busybox" ]; then
	echo "mkrootfs: $busybox not found; install it with: apt-get install busybox-static" >&2
	exit 1
fi
# A dynamically linked busybox (Debian's plain 'busybox' package) cannot run
# inside the rootfs, which has no libc.
if command -v ldd >/dev/null 2>&1 && LC_ALL=C ldd "$busybox" 2>/dev/null | grep -q '=>'; then
	echo "mkrootfs: $busybox is dynamically linked; install the static one with: apt-get install busybox-static" >&2
	exit 1
fi

mkdir -p "$dir/bin" "$dir/etc" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/tmp" "$dir/root" "$dir/run"
chmod 1777 "$dir/tmp"
chmod 0700 "$dir/root"

# Replace atomically so re-running while a container uses the rootfs is safe.
cp -f "$busybox" "$dir/bin/.busybox.new"
chmod 0755 "$dir/bin/.busybox.new"
mv -f "$dir/bin/.busybox.new" "$dir/bin/busybox"

"$busybox" --list | while IFS= read -r applet; do
	case $applet in
	'' | busybox | */*) continue ;;
	esac
	ln -sfn busybox "$dir/bin/$applet"
done

cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$dir/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo berth >"$dir/etc/hostname"
chmod 0644 "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/hostname"
