//! `POST /containers/create`: Docker's Config, HostConfig and
//! NetworkingConfig onto `v1::CreateRequest`. Every field berth supports is
//! mapped; every field set to something berth does not do becomes a
//! `Warnings` entry, never dropped silently. Values berth refuses (a bad
//! signal, a bad mount) are checked by berthd and come back as 400s.

use berth_api::v1;
use bollard_stubs::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum};

/// Fields that are set, as Docker sends "unset": None, empty, zero, false.
trait Set {
    fn is_set(&self) -> bool;
}
impl Set for Option<bool> {
    fn is_set(&self) -> bool {
        *self == Some(true)
    }
}
impl Set for Option<i64> {
    fn is_set(&self) -> bool {
        self.is_some_and(|v| v != 0)
    }
}
impl Set for Option<String> {
    fn is_set(&self) -> bool {
        self.as_deref().is_some_and(|v| !v.is_empty())
    }
}
impl<T> Set for Option<Vec<T>> {
    fn is_set(&self) -> bool {
        self.as_ref().is_some_and(|v| !v.is_empty())
    }
}
impl<K, V> Set for Option<std::collections::HashMap<K, V>> {
    fn is_set(&self) -> bool {
        self.as_ref().is_some_and(|v| !v.is_empty())
    }
}

struct Warn(Vec<String>);

impl Warn {
    fn unsupported(&mut self, field: &str, set: bool) {
        if set {
            self.0
                .push(format!("{field} is not supported by berth and was ignored"));
        }
    }
}

/// The create request for `body`, named `name` (Docker's `?name=`, a
/// leading `/` allowed), and the warnings to return.
pub fn create_request(
    body: ContainerCreateBody,
    name: &str,
    platform: &str,
    has_bridge: bool,
) -> (v1::CreateRequest, Vec<String>) {
    let mut w = Warn(Vec::new());
    let b = body;
    let mut r = v1::CreateRequest {
        name: name.trim_start_matches('/').to_string(),
        platform: platform.to_string(),
        ..Default::default()
    };
    if let Some(image) = b.image.clone().filter(|i| !i.is_empty()) {
        r.source = Some(v1::create_request::Source::Image(image));
    }
    r.args = b.cmd.clone().unwrap_or_default();
    r.entrypoint = b.entrypoint.as_ref().map(|e| {
        // [] and [""] clear the image's entrypoint; null keeps it.
        if e.iter().all(String::is_empty) {
            String::new()
        } else {
            // berth's entrypoint is one program; the rest go before the
            // command, as Docker runs entrypoint + cmd.
            e[0].clone()
        }
    });
    if let Some(e) = &b.entrypoint {
        if e.len() > 1 {
            let mut args = e[1..].to_vec();
            args.extend(std::mem::take(&mut r.args));
            r.args = args;
        }
    }
    r.env = b.env.clone().unwrap_or_default();
    r.workdir = b.working_dir.clone().unwrap_or_default();
    r.user = b.user.clone().unwrap_or_default();
    r.hostname = b.hostname.clone().unwrap_or_default();
    r.labels = b.labels.clone().unwrap_or_default().into_iter().collect();
    r.stop_signal = b.stop_signal.clone().unwrap_or_default();
    if let Some(t) = b.stop_timeout {
        r.stop_timeout = Some(u32::try_from(t.max(0)).unwrap_or(u32::MAX));
    }
    r.interactive = b.open_stdin.unwrap_or(false);
    r.tty = b.tty.unwrap_or(false);
    if let Some(h) = &b.healthcheck {
        let ns = |v: Option<i64>| u64::try_from(v.unwrap_or(0).max(0)).unwrap_or(0);
        r.health = Some(v1::HealthCheck {
            test: h.test.clone().unwrap_or_default(),
            interval: ns(h.interval),
            timeout: ns(h.timeout),
            start_period: ns(h.start_period),
            retries: u32::try_from(h.retries.unwrap_or(0).max(0)).unwrap_or(u32::MAX),
        });
        w.unsupported("Healthcheck.StartInterval", h.start_interval.is_set());
    }
    w.unsupported("Domainname", b.domainname.is_set());
    w.unsupported("MacAddress", b.mac_address.is_set());
    w.unsupported("NetworkDisabled", b.network_disabled.is_set());
    w.unsupported("OnBuild", b.on_build.is_set());
    // ExposedPorts is metadata (berth's -P takes the image's); the CLI and
    // compose send the published ones too, which PortBindings covers.
    if let Some(exposed) = &b.exposed_ports {
        let bound = b
            .host_config
            .as_ref()
            .and_then(|h| h.port_bindings.as_ref());
        let mut extra: Vec<&String> = exposed
            .iter()
            .filter(|p| !bound.is_some_and(|m| m.contains_key(*p)))
            .collect();
        extra.sort();
        if !extra.is_empty() {
            w.0.push(format!(
                "ExposedPorts {}: berth records the image's only; publish them with PortBindings",
                extra
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let anonymous: Vec<String> = b.volumes.clone().unwrap_or_default();
    if let Some(hc) = b.host_config.clone() {
        host_config(hc, &mut r, &mut w, has_bridge);
    }
    // Anonymous volumes (Config.Volumes) not already a mount target: compose
    // sends both.
    for dst in anonymous {
        let taken = r
            .binds
            .iter()
            .any(|b| b.split(':').nth(1) == Some(dst.as_str()))
            || r.mounts.iter().any(|m| m.contains(&format!("dst={dst}")));
        if !taken {
            r.binds.push(dst);
        }
    }
    // The endpoint of the container's network (compose: its aliases, the
    // service name among them): on the network NetworkMode names, or the
    // one network EndpointsConfig names when NetworkMode does not.
    if let Some(eps) = b
        .networking_config
        .as_ref()
        .and_then(|nc| nc.endpoints_config.as_ref())
    {
        let named: Vec<&String> = eps
            .keys()
            .filter(|k| !matches!(k.as_str(), "" | "default" | "none" | "host"))
            .collect();
        if r.network.is_empty() && named.len() == 1 {
            r.network = named[0].clone();
        }
        for (name, ep) in eps {
            if *name != r.network && !(r.network.is_empty() && name == "bridge") {
                if named.contains(&name) {
                    w.0.push(format!(
                        "NetworkingConfig.EndpointsConfig {name}: berth joins one network at create; connect the others after"
                    ));
                }
                continue;
            }
            r.network_aliases = ep.aliases.clone().unwrap_or_default();
            if let Some(ip) = ep.ipam_config.as_ref().and_then(|c| c.ipv4_address.clone()) {
                r.ip = ip;
            }
            if let Some(mac) = ep.mac_address.clone().filter(|m| !m.is_empty()) {
                r.mac_address = mac;
            }
        }
    }
    (r, w.0)
}

/// Docker's restart policy as berth's string; empty for none (`no`).
pub(crate) fn restart_policy(p: &bollard_stubs::models::RestartPolicy) -> String {
    use bollard_stubs::models::RestartPolicyNameEnum as N;
    match p.name {
        None | Some(N::EMPTY) | Some(N::NO) => String::new(),
        Some(N::ALWAYS) => "always".into(),
        Some(N::UNLESS_STOPPED) => "unless-stopped".into(),
        Some(N::ON_FAILURE) => match p.maximum_retry_count.filter(|n| *n > 0) {
            Some(n) => format!("on-failure:{n}"),
            None => "on-failure".into(),
        },
    }
}

fn host_config(h: HostConfig, r: &mut v1::CreateRequest, w: &mut Warn, has_bridge: bool) {
    r.auto_remove = h.auto_remove.unwrap_or(false);
    r.read_only = h.readonly_rootfs.unwrap_or(false);
    r.privileged = h.privileged.unwrap_or(false);
    r.init = h.init.unwrap_or(false);
    r.cap_add = h.cap_add.clone().unwrap_or_default();
    r.cap_drop = h.cap_drop.clone().unwrap_or_default();
    r.security_opt = h.security_opt.clone().unwrap_or_default();
    r.group_add = h.group_add.clone().unwrap_or_default();
    r.sysctls = h.sysctls.clone().unwrap_or_default().into_iter().collect();
    r.dns = h.dns.clone().unwrap_or_default();
    r.dns_search = h.dns_search.clone().unwrap_or_default();
    r.dns_option = h.dns_options.clone().unwrap_or_default();
    r.add_host = h.extra_hosts.clone().unwrap_or_default();
    r.binds = h.binds.clone().unwrap_or_default();
    r.oom_score_adj = h
        .oom_score_adj
        .filter(|v| *v != 0)
        .map(|v| i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX }));
    if let Some(devs) = &h.devices {
        for d in devs {
            let host = d.path_on_host.clone().unwrap_or_default();
            let ctr = d.path_in_container.clone().filter(|p| !p.is_empty());
            let perms = d.cgroup_permissions.clone().filter(|p| !p.is_empty());
            let mut s = host.clone();
            if ctr.is_some() || perms.is_some() {
                s.push(':');
                s.push_str(ctr.as_deref().unwrap_or(&host));
            }
            if let Some(p) = perms {
                s.push(':');
                s.push_str(&p);
            }
            r.devices.push(s);
        }
    }
    if let Some(uls) = &h.ulimits {
        for u in uls {
            let name = u.name.clone().unwrap_or_default();
            let soft = u.soft.unwrap_or(0);
            let hard = u.hard.unwrap_or(soft);
            r.ulimits.push(format!("{name}={soft}:{hard}"));
        }
    }
    if let Some(tmpfs) = &h.tmpfs {
        for (path, opts) in tmpfs {
            r.tmpfs.push(if opts.is_empty() {
                path.clone()
            } else {
                format!("{path}:{opts}")
            });
        }
    }
    if let Some(mounts) = &h.mounts {
        for m in mounts {
            mount(m, r, w);
        }
    }
    r.shm_size = h.shm_size.filter(|v| *v > 0);
    // Resources.
    r.memory = h.memory.filter(|v| *v > 0);
    if let Some(n) = h.nano_cpus.filter(|v| *v > 0) {
        r.cpus = Some(n as f64 / 1e9);
    }
    r.pids_limit = h.pids_limit.filter(|v| *v != 0);
    let mut res = v1::Resources {
        memory_swap: h.memory_swap.filter(|v| *v != 0),
        memory_reservation: h.memory_reservation.filter(|v| *v > 0),
        cpu_shares: h.cpu_shares.filter(|v| *v > 0).map(|v| v as u64),
        cpu_period: h.cpu_period.filter(|v| *v > 0).map(|v| v as u64),
        cpu_quota: h.cpu_quota.filter(|v| *v != 0),
        cpuset_cpus: h.cpuset_cpus.clone().filter(|v| !v.is_empty()),
        cpuset_mems: h.cpuset_mems.clone().filter(|v| !v.is_empty()),
        blkio_weight: h.blkio_weight.filter(|v| *v > 0).map(u32::from),
        ..Default::default()
    };
    for d in h.blkio_device_read_bps.iter().flatten() {
        res.device_read_bps.push(format!(
            "{}:{}",
            d.path.clone().unwrap_or_default(),
            d.rate.unwrap_or(0)
        ));
    }
    for d in h.blkio_device_write_bps.iter().flatten() {
        res.device_write_bps.push(format!(
            "{}:{}",
            d.path.clone().unwrap_or_default(),
            d.rate.unwrap_or(0)
        ));
    }
    if res != v1::Resources::default() {
        r.resources = Some(res);
    }
    // Restart policy.
    if let Some(p) = &h.restart_policy {
        r.restart = restart_policy(p);
    }
    // Logging: berth's own json-lines log; Docker's json-file options map.
    if let Some(lc) = &h.log_config {
        let typ = lc.typ.clone().unwrap_or_default();
        match typ.as_str() {
            "" | "json-file" | "local" => {
                let cfg = lc.config.clone().unwrap_or_default();
                for (k, v) in cfg {
                    match k.as_str() {
                        "max-size" => match berth_api::parse_size(&v) {
                            Some(n) => r.log_max_size = n,
                            None => w.0.push(format!(
                                "LogConfig max-size {v:?} is not a size and was ignored"
                            )),
                        },
                        "max-file" => match v.parse() {
                            Ok(n) => r.log_max_files = n,
                            Err(_) => w.0.push(format!(
                                "LogConfig max-file {v:?} is not a number and was ignored"
                            )),
                        },
                        other => w.0.push(format!(
                            "LogConfig option {other:?} is not supported by berth and was ignored"
                        )),
                    }
                }
            }
            other => w.0.push(format!(
                "LogConfig.Type {other:?} is not supported: berth keeps its own log (json-file)"
            )),
        }
    }
    // Networking.
    match h.network_mode.as_deref().unwrap_or("") {
        "" | "default" => {}
        "bridge" if !has_bridge => w.0.push(
            "NetworkMode bridge: berth has no bridge network yet; the container has loopback only"
                .into(),
        ),
        mode => r.network = mode.to_string(),
    }
    // PortBindings {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} as
    // berth's -p [IP:][HOSTPORT:]CTRPORT/PROTO (an empty host port: a free
    // one).
    if let Some(pb) = &h.port_bindings {
        let mut keys: Vec<&String> = pb.keys().collect();
        keys.sort();
        for port in keys {
            let binds = pb.get(port).cloned().flatten().unwrap_or_default();
            if binds.is_empty() {
                r.publish.push(port.clone());
            }
            for bnd in binds {
                let ip = bnd.host_ip.unwrap_or_default();
                let hp = bnd.host_port.unwrap_or_default();
                r.publish.push(match (ip.is_empty(), hp.is_empty()) {
                    (true, true) => port.clone(),
                    (true, false) => format!("{hp}:{port}"),
                    (false, _) => format!("{ip}:{hp}:{port}"),
                });
            }
        }
    }
    if h.publish_all_ports == Some(true) {
        r.publish_all = true;
    }
    w.unsupported("Links", h.links.is_set());
    w.unsupported("CgroupParent", h.cgroup_parent.is_set());
    w.unsupported("BlkioWeightDevice", h.blkio_weight_device.is_set());
    w.unsupported("BlkioDeviceReadIOps", h.blkio_device_read_iops.is_set());
    w.unsupported("BlkioDeviceWriteIOps", h.blkio_device_write_iops.is_set());
    w.unsupported("CpuRealtimePeriod", h.cpu_realtime_period.is_set());
    w.unsupported("CpuRealtimeRuntime", h.cpu_realtime_runtime.is_set());
    w.unsupported("DeviceCgroupRules", h.device_cgroup_rules.is_set());
    w.unsupported("DeviceRequests", h.device_requests.is_set());
    w.unsupported("KernelMemoryTCP", h.kernel_memory_tcp.is_set());
    w.unsupported(
        "MemorySwappiness",
        h.memory_swappiness.is_some_and(|v| v >= 0),
    );
    w.unsupported("OomKillDisable", h.oom_kill_disable.is_set());
    w.unsupported("CpuCount", h.cpu_count.is_set());
    w.unsupported("CpuPercent", h.cpu_percent.is_set());
    w.unsupported("IOMaximumIOps", h.io_maximum_iops.is_set());
    w.unsupported("IOMaximumBandwidth", h.io_maximum_bandwidth.is_set());
    w.unsupported("VolumeDriver", h.volume_driver.is_set());
    w.unsupported("VolumesFrom", h.volumes_from.is_set());
    w.unsupported("Annotations", h.annotations.is_set());
    w.unsupported("StorageOpt", h.storage_opt.is_set());
    w.unsupported("Runtime", h.runtime.is_set());
    w.unsupported("MaskedPaths", h.masked_paths.is_set());
    w.unsupported("ReadonlyPaths", h.readonly_paths.is_set());
    w.unsupported("Cgroup", h.cgroup.is_set());
    w.unsupported("UsernsMode", h.userns_mode.is_set());
    for (field, v) in [
        ("IpcMode", &h.ipc_mode),
        ("PidMode", &h.pid_mode),
        ("UTSMode", &h.uts_mode),
    ] {
        // Private namespaces are berth's (and Docker's) default.
        w.unsupported(
            field,
            v.as_deref()
                .is_some_and(|m| !matches!(m, "" | "private" | "shareable")),
        );
    }
    if let Some(m) = &h.cgroupns_mode {
        use bollard_stubs::models::HostConfigCgroupnsModeEnum as C;
        w.unsupported("CgroupnsMode", matches!(m, C::HOST));
    }
    if let Some(i) = &h.isolation {
        use bollard_stubs::models::HostConfigIsolationEnum as I;
        w.unsupported("Isolation", !matches!(i, I::EMPTY | I::DEFAULT));
    }
}

/// One `HostConfig.Mounts` entry: bind and tmpfs as berth's `--mount`,
/// a volume as a `-v NAME:DST` bind.
fn mount(m: &Mount, r: &mut v1::CreateRequest, w: &mut Warn) {
    let dst = m.target.clone().unwrap_or_default();
    let src = m.source.clone().unwrap_or_default();
    let ro = m.read_only.unwrap_or(false);
    match m.typ {
        Some(MountTypeEnum::BIND) | None => {
            let mut s = format!("type=bind,src={src},dst={dst}");
            if ro {
                s.push_str(",readonly");
            }
            if let Some(p) = m.bind_options.as_ref().and_then(|o| o.propagation.as_ref()) {
                let p = p.to_string();
                if !p.is_empty() {
                    s.push_str(&format!(",bind-propagation={p}"));
                }
            }
            r.mounts.push(s);
        }
        Some(MountTypeEnum::TMPFS) => {
            let mut s = format!("type=tmpfs,dst={dst}");
            if let Some(o) = &m.tmpfs_options {
                if let Some(size) = o.size_bytes.filter(|v| *v > 0) {
                    s.push_str(&format!(",tmpfs-size={size}"));
                }
                if let Some(mode) = o.mode.filter(|v| *v > 0) {
                    s.push_str(&format!(",tmpfs-mode={mode:o}"));
                }
            }
            if ro {
                s.push_str(",readonly");
            }
            r.mounts.push(s);
        }
        Some(MountTypeEnum::VOLUME) => {
            let mut s = if src.is_empty() {
                dst.clone()
            } else {
                format!("{src}:{dst}")
            };
            if ro {
                s.push_str(":ro");
            }
            r.binds.push(s);
        }
        Some(ref other) => w.0.push(format!(
            "Mounts: type {other:?} is not supported by berth; the mount at {dst} was ignored"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ContainerCreateBody {
        serde_json::from_str(json).expect("body")
    }

    #[test]
    fn maps_a_docker_run_body() {
        let b = body(
            r#"{"Image":"busybox","Cmd":["sh","-c","exit 3"],"Env":["A=1"],"Tty":true,
            "OpenStdin":true,"Labels":{"k":"v"},"WorkingDir":"/tmp","User":"1000",
            "StopSignal":"SIGINT","StopTimeout":3,
            "HostConfig":{"AutoRemove":true,"Memory":67108864,"NanoCpus":500000000,
              "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":2},
              "LogConfig":{"Type":"json-file","Config":{"max-size":"10m","max-file":"3"}},
              "Binds":["/h:/c:ro"],"NetworkMode":"default","PidMode":"","IpcMode":"private",
              "ConsoleSize":[24,80],"CgroupnsMode":"private","Isolation":"",
              "Mounts":[{"Type":"volume","Source":"data","Target":"/data"},
                        {"Type":"tmpfs","Target":"/run","TmpfsOptions":{"SizeBytes":1048576}}],
              "Ulimits":[{"Name":"nofile","Soft":1024,"Hard":2048}]}}"#,
        );
        let (r, warnings) = create_request(b, "/web", "", false);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(r.name, "web");
        assert_eq!(
            r.source,
            Some(v1::create_request::Source::Image("busybox".into()))
        );
        assert_eq!(r.args, ["sh", "-c", "exit 3"]);
        assert!(r.tty && r.interactive && r.auto_remove);
        assert_eq!(r.memory, Some(64 << 20));
        assert_eq!(r.cpus, Some(0.5));
        assert_eq!(r.restart, "on-failure:2");
        assert_eq!(r.log_max_size, 10 << 20);
        assert_eq!(r.log_max_files, 3);
        assert_eq!(r.stop_timeout, Some(3));
        assert_eq!(r.binds, ["/h:/c:ro", "data:/data"]);
        assert_eq!(r.mounts, ["type=tmpfs,dst=/run,tmpfs-size=1048576"]);
        assert_eq!(r.ulimits, ["nofile=1024:2048"]);
        assert_eq!(r.network, "");
    }

    #[test]
    fn unsupported_fields_warn() {
        let b = body(
            r#"{"Image":"busybox","Domainname":"x","ExposedPorts":{"80/tcp":{},"81/tcp":{}},
            "HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}],"53/udp":[{"HostIp":"127.0.0.1","HostPort":""}]},"PidMode":"host",
              "Links":["a:b"],"LogConfig":{"Type":"syslog"},"NetworkMode":"bridge"}}"#,
        );
        let (r, warnings) = create_request(b, "", "", false);
        assert_eq!(r.publish, ["127.0.0.1::53/udp", "8080:80/tcp"]);
        let all = warnings.join("\n");
        for needle in [
            "Domainname",
            "ExposedPorts 81/tcp",
            "PidMode",
            "Links",
            "syslog",
            "bridge",
        ] {
            assert!(all.contains(needle), "{needle} not warned: {all}");
        }
    }

    #[test]
    fn user_network_endpoint() {
        let b = body(
            r#"{"Image":"busybox","HostConfig":{"NetworkMode":"proj_default"},
            "NetworkingConfig":{"EndpointsConfig":{"proj_default":{"Aliases":["server","abc"]}}}}"#,
        );
        let (r, warnings) = create_request(b, "", "", true);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(r.network, "proj_default");
        assert_eq!(r.network_aliases, ["server", "abc"]);
    }

    #[test]
    fn entrypoint_forms() {
        let (r, _) = create_request(body(r#"{"Image":"i","Entrypoint":[""]}"#), "", "", false);
        assert_eq!(r.entrypoint.as_deref(), Some(""));
        let (r, _) = create_request(
            body(r#"{"Image":"i","Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"]}"#),
            "",
            "",
            false,
        );
        assert_eq!(r.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(r.args, ["-c", "echo hi"]);
        let (r, _) = create_request(body(r#"{"Image":"i"}"#), "", "", false);
        assert_eq!(r.entrypoint, None);
    }

    #[test]
    fn anonymous_volumes_are_not_doubled() {
        let (r, _) = create_request(
            body(
                r#"{"Image":"i","Volumes":{"/data":{},"/cache":{}},"HostConfig":{"Binds":["v:/data"]}}"#,
            ),
            "",
            "",
            false,
        );
        assert_eq!(r.binds, ["v:/data", "/cache"]);
    }
}
