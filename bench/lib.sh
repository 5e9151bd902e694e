# Shared by the bench scripts; source it: . "$(dirname "$0")/lib.sh"

# podman_conf DIR [none|bridge]: a private podman under DIR: its
# containers.conf and storage.conf (give them to podman through
# CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, with --root DIR/root
# --runroot DIR/run), so that a bench never touches the host's podman.
#   none    no network (netns "none"), events to DIR/events.log
#   bridge  netavark's default bridge, no events
# podman 4.3 asks for nofile/nproc limits it cannot set without
# CAP_SYS_RESOURCE (missing here), even when they equal our own hard limits:
# it gets modest ones (1024 open files, as berth's spec has).
podman_conf() {
	local dir=${1:?podman_conf needs a directory} mode=${2:-none}
	mkdir -p "$dir"
	{
		echo '[containers]'
		echo 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]'
		[ "$mode" = none ] && echo 'netns = "none"'
		echo 'log_driver = "k8s-file"'
		[ "$mode" = none ] && echo 'cgroupns = "private"'
		echo '[engine]'
		echo 'cgroup_manager = "cgroupfs"'
		if [ "$mode" = none ]; then
			echo 'events_logger = "file"'
			echo "events_logfile_path = \"$dir/events.log\""
		else
			echo 'events_logger = "none"'
		fi
		echo 'runtime = "runc"'
		echo "tmp_dir = \"$dir/tmp\""
		echo "static_dir = \"$dir/static\""
		echo "volume_path = \"$dir/volumes\""
		[ "$mode" = none ] && echo 'network_cmd_path = ""'
		echo 'num_locks = 512'
		echo '[network]'
		[ "$mode" = none ] || echo 'network_backend = "netavark"'
		echo "network_config_dir = \"$dir/net\""
	} >"$dir/containers.conf"
	cat >"$dir/storage.conf" <<EOC
[storage]
driver = "overlay"
runroot = "$dir/run"
graphroot = "$dir/root"
EOC
}

# our_pids: the processes whose command line names this run's temp dir
# ($tmp): what a bench started and must not leave behind (never by name).
our_pids() {
	local d args
	for d in /proc/[0-9]*; do
		[ "${d#/proc/}" = "$$" ] && continue
		args=()
		mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
		[[ " ${args[*]} " == *"$tmp/"* ]] && echo "${d#/proc/}"
	done
	return 0
}

# stop_pids TENTHS PID...: SIGTERM to each, then up to TENTHS tenths of a
# second for each to go before SIGKILL; reaps those that are our children.
# Safe under set -e (a pid already gone is no error).
stop_pids() {
	local tenths=${1:?stop_pids needs a wait} pid i
	shift
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		for ((i = 0; i < tenths; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	return 0
}

# docker_archive ROOTFS TAG OUT: a one-layer docker-save archive of ROOTFS
# named TAG, written to OUT (for `docker load`, `podman load`, `berth load`,
# `ctr images import`); its work dir beside OUT is removed.
docker_archive() {
	local root=${1:?docker_archive needs a rootfs} tag=${2:?and a tag} out=${3:?and an output file}
	local d="$out.d" diff cfg
	mkdir -p "$d/layer"
	tar --numeric-owner -C "$root" -cf "$d/layer/layer.tar" .
	diff=$(sha256sum "$d/layer/layer.tar" | cut -d' ' -f1)
	printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"scripts/mkrootfs.sh"}]}' "$diff" >"$d/config.json"
	cfg=$(sha256sum "$d/config.json" | cut -d' ' -f1)
	mv "$d/config.json" "$d/$cfg.json"
	printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer/layer.tar"]}]' "$cfg" "$tag" >"$d/manifest.json"
	tar -C "$d" -cf "$out" manifest.json "$cfg.json" layer
	rm -rf "${d:?}"
}
