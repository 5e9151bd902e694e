//! berth's container records in Docker's shapes: `GET /containers/{id}/json`
//! (ContainerInspectResponse) and `GET /containers/json` (ContainerSummary).
//! Docker clients index keys directly (docker-py reads
//! `HostConfig.LogConfig.Type`, compose reads `NetworkSettings.Networks`),
//! so the objects they read are always present, empty when berth has
//! nothing to put in them.

use std::collections::HashMap;

use berth_api::v1;
use bollard_stubs::models::{
    ContainerConfig, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummary, ContainerSummaryHostConfig, ContainerSummaryNetworkSettings,
    ContainerSummaryStateEnum, Health, HealthStatusEnum, HealthcheckResult, HostConfig,
    HostConfigLogConfig, MountPoint, MountPointTypeEnum, NetworkSettings, RestartPolicy,
    RestartPolicyNameEnum,
};
use serde_json::Value;

/// Go's zero time, which Docker shows for times that never happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The image as the user would have written it: Docker shows `busybox`,
/// not `docker.io/library/busybox:latest`.
pub fn short_image(reference: &str) -> String {
    let r = reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference);
    r.strip_suffix(":latest").unwrap_or(r).to_string()
}

/// Docker's state word: `stopped` is `exited`; a stopped container the
/// restart policy will start again is `restarting`.
pub fn docker_state(c: &v1::Container) -> &'static str {
    match c.state.as_str() {
        "created" => "created",
        "running" => "running",
        "paused" => "paused",
        _ if c.restarting => "restarting",
        _ => "exited",
    }
}

pub fn exit_code(c: &v1::Container) -> i64 {
    c.exit.as_ref().map_or(0, |e| i64::from(e.exit_code))
}

fn time_or_zero(t: &str) -> String {
    if t.is_empty() {
        ZERO_TIME.to_string()
    } else {
        t.to_string()
    }
}

/// Signal names for numbers (Linux x86 and arm numbering of the classic
/// signals; the real-time ones as Docker writes them).
pub fn signal_name(n: i64) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .map(|s| s.to_string())
        .unwrap_or_else(|| n.to_string())
}

/// Seconds since the epoch of an RFC 3339 time (UTC `Z` or an offset);
/// 0 when it does not parse.
pub fn unix_seconds(t: &str) -> i64 {
    fn num(s: &str) -> Option<i64> {
        s.parse().ok()
    }
    let parse = || -> Option<i64> {
        let (date, rest) = t.split_once('T')?;
        let mut d = date.splitn(3, '-');
        let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
        let hms = rest.get(0..8)?;
        let mut h = hms.splitn(3, ':');
        let (hh, mm, ss) = (num(h.next()?)?, num(h.next()?)?, num(h.next()?)?);
        // The offset, after any fraction.
        let tail = &rest[8..];
        let tail = tail.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
        let offset = match tail {
            "" | "Z" | "z" => 0,
            o => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let o = &o[1..];
                let (oh, om) = o.split_once(':').unwrap_or((o.get(0..2)?, o.get(2..4)?));
                sign * (num(oh)? * 3600 + num(om)? * 60)
            }
        };
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
    };
    parse().unwrap_or(0)
}

/// The record's stored configuration (`{"config", "spec"}`), or null.
fn config_json(c: &v1::Container) -> Value {
    serde_json::from_str(&c.config_json).unwrap_or(Value::Null)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn restart_policy(cfg: &Value) -> RestartPolicy {
    let r = &cfg["config"]["restart"];
    let (name, max) = match r["name"].as_str().unwrap_or("no") {
        "always" => (RestartPolicyNameEnum::ALWAYS, 0),
        "unless-stopped" => (RestartPolicyNameEnum::UNLESS_STOPPED, 0),
        "on-failure" => (
            RestartPolicyNameEnum::ON_FAILURE,
            r["max_retries"].as_i64().unwrap_or(0),
        ),
        _ => (RestartPolicyNameEnum::NO, 0),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: Some(max),
    }
}

/// The user's mounts (not berth's own /proc, /dev, /etc/hosts ...): bind
/// mounts and tmpfs the request asked for. A source under berth's volume
/// store is a named volume.
fn mounts(cfg: &Value) -> Vec<MountPoint> {
    let mut out = Vec::new();
    for m in cfg["spec"]["mounts"].as_array().into_iter().flatten() {
        let dst = m["destination"].as_str().unwrap_or("");
        let typ = m["type"].as_str().unwrap_or("");
        let src = m["source"].as_str().unwrap_or("");
        let opts = strings(&m["options"]);
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind || matches!(dst, "/etc/hosts" | "/etc/hostname" | "/etc/resolv.conf") {
            continue;
        }
        let rw = !opts.iter().any(|o| o == "ro");
        let propagation = opts
            .iter()
            .find(|o| {
                matches!(
                    o.as_str(),
                    "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave"
                )
            })
            .cloned()
            .unwrap_or_else(|| "rprivate".into());
        let volume = src
            .split_once("/volumes/")
            .map(|(_, rest)| rest.split('/').next().unwrap_or("").to_string())
            .filter(|n| !n.is_empty());
        out.push(MountPoint {
            typ: Some(if volume.is_some() {
                MountPointTypeEnum::VOLUME
            } else {
                MountPointTypeEnum::BIND
            }),
            name: volume.clone(),
            source: Some(src.to_string()),
            destination: Some(dst.to_string()),
            driver: volume.as_ref().map(|_| "local".to_string()),
            mode: Some(if rw { String::new() } else { "ro".into() }),
            rw: Some(rw),
            propagation: Some(propagation),
        });
    }
    out
}

/// The network mode as Docker names it.
fn network_mode(cfg: &Value) -> String {
    let namespaces = cfg["spec"]["linux"]["namespaces"].as_array();
    let net = namespaces
        .into_iter()
        .flatten()
        .find(|n| n["type"].as_str() == Some("network"));
    match net {
        None => "host".into(),
        Some(n) => match n["path"].as_str() {
            Some(p) if !p.is_empty() => "container".into(),
            _ => "none".into(),
        },
    }
}

fn health(c: &v1::Container) -> Option<Health> {
    if c.health_json.is_empty() {
        return None;
    }
    let h: Value = serde_json::from_str(&c.health_json).ok()?;
    let status = match c.health.as_str() {
        "healthy" => HealthStatusEnum::HEALTHY,
        "unhealthy" => HealthStatusEnum::UNHEALTHY,
        "starting" => HealthStatusEnum::STARTING,
        _ => HealthStatusEnum::NONE,
    };
    let log = h["log"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| HealthcheckResult {
            start: r["start"].as_str().map(String::from),
            end: r["end"].as_str().map(String::from),
            exit_code: r["exit_code"].as_i64(),
            output: r["output"].as_str().map(String::from),
        })
        .collect();
    Some(Health {
        status: Some(status),
        failing_streak: h["failing_streak"].as_i64(),
        log: Some(log),
    })
}

/// The networks and published ports berthd reports (`network_json`):
/// {"Networks": {NAME: {"IPAddress", "IPPrefixLen", "Gateway",
/// "MacAddress", "Aliases", "Interface"}}, "Ports": [{"ContainerPort",
/// "Protocol", "HostIp", "HostPort"}]}.
fn berth_networks(c: &v1::Container) -> (Vec<(String, Value)>, Vec<Value>) {
    let v: Value = serde_json::from_str(&c.network_json).unwrap_or(Value::Null);
    let nets = v["Networks"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let ports = v["Ports"].as_array().cloned().unwrap_or_default();
    (nets, ports)
}

/// `IP:HOSTPORT->PORT/PROTO` (or `PORT/PROTO`) as network_json's shape.
fn parse_port_text(p: &str) -> Option<Value> {
    let (host, ctr) = match p.split_once("->") {
        Some((h, c)) => (Some(h), c),
        None => (None, p),
    };
    let (port, proto) = ctr.split_once('/').unwrap_or((ctr, "tcp"));
    let port: u16 = port.parse().ok()?;
    let mut v = serde_json::json!({"ContainerPort": port, "Protocol": proto});
    if let Some(h) = host {
        let (ip, hp) = h.rsplit_once(':')?;
        v["HostIp"] = ip.trim_matches(['[', ']']).into();
        v["HostPort"] = hp.parse::<u16>().ok()?.into();
    }
    Some(v)
}

fn port_of(p: &Value) -> (u16, String, String, Option<u16>) {
    let num = |v: &Value| {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    (
        num(&p["ContainerPort"]).unwrap_or(0),
        p["Protocol"].as_str().unwrap_or("tcp").to_string(),
        p["HostIp"].as_str().unwrap_or("0.0.0.0").to_string(),
        num(&p["HostPort"]),
    )
}

/// Docker's summary `Ports`.
fn summary_ports(c: &v1::Container) -> Vec<bollard_stubs::models::Port> {
    use bollard_stubs::models::PortTypeEnum;
    let mut ports = berth_networks(c).1;
    if ports.is_empty() {
        // berthd's list carries the mappings as `0.0.0.0:8080->80/tcp`.
        ports = c.ports.iter().filter_map(|p| parse_port_text(p)).collect();
    }
    ports
        .iter()
        .map(|p| {
            let (port, proto, ip, host) = port_of(p);
            bollard_stubs::models::Port {
                ip: host.map(|_| ip),
                private_port: port,
                public_port: host,
                typ: Some(match proto.as_str() {
                    "udp" => PortTypeEnum::UDP,
                    "sctp" => PortTypeEnum::SCTP,
                    _ => PortTypeEnum::TCP,
                }),
            }
        })
        .collect()
}

fn network_settings(c: &v1::Container, mode: &str) -> NetworkSettings {
    let (nets, ports) = berth_networks(c);
    if nets.is_empty() && ports.is_empty() {
        return mode_settings(mode);
    }
    let mut portmap: HashMap<String, Option<Vec<bollard_stubs::models::PortBinding>>> =
        HashMap::new();
    for p in &ports {
        let (port, proto, ip, host) = port_of(p);
        let e = portmap.entry(format!("{port}/{proto}")).or_insert(None);
        if let Some(h) = host {
            e.get_or_insert_with(Vec::new)
                .push(bollard_stubs::models::PortBinding {
                    host_ip: Some(ip),
                    host_port: Some(h.to_string()),
                });
        }
    }
    let endpoint = |v: &Value| {
        // The names it answers to on the network are its aliases.
        let aliases: Vec<String> = v["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        bollard_stubs::models::EndpointSettings {
            network_id: Some(String::new()),
            endpoint_id: Some(String::new()),
            gateway: Some(v["Gateway"].as_str().unwrap_or("").to_string()),
            ip_address: Some(v["IPAddress"].as_str().unwrap_or("").to_string()),
            ip_prefix_len: Some(v["IPPrefixLen"].as_i64().unwrap_or(0)),
            mac_address: Some(v["MacAddress"].as_str().unwrap_or("").to_string()),
            dns_names: Some(aliases.clone()),
            aliases: Some(aliases),
            ..Default::default()
        }
    };
    // Docker's top-level address fields are the default bridge's.
    let first = nets
        .iter()
        .find(|(k, _)| k == "bridge")
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null);
    NetworkSettings {
        bridge: Some(String::new()),
        sandbox_id: Some(String::new()),
        sandbox_key: Some(String::new()),
        ports: Some(portmap),
        ip_address: Some(first["IPAddress"].as_str().unwrap_or("").to_string()),
        ip_prefix_len: Some(first["IPPrefixLen"].as_i64().unwrap_or(0)),
        gateway: Some(first["Gateway"].as_str().unwrap_or("").to_string()),
        mac_address: Some(first["MacAddress"].as_str().unwrap_or("").to_string()),
        endpoint_id: Some(String::new()),
        networks: Some(nets.iter().map(|(k, v)| (k.clone(), endpoint(v))).collect()),
        ..Default::default()
    }
}

fn mode_settings(mode: &str) -> NetworkSettings {
    NetworkSettings {
        bridge: Some(String::new()),
        sandbox_id: Some(String::new()),
        sandbox_key: Some(String::new()),
        ports: Some(HashMap::new()),
        ip_address: Some(String::new()),
        ip_prefix_len: Some(0),
        gateway: Some(String::new()),
        mac_address: Some(String::new()),
        endpoint_id: Some(String::new()),
        networks: Some(HashMap::from([(
            mode.to_string(),
            bollard_stubs::models::EndpointSettings {
                network_id: Some(mode.to_string()),
                endpoint_id: Some(String::new()),
                gateway: Some(String::new()),
                ip_address: Some(String::new()),
                ip_prefix_len: Some(0),
                mac_address: Some(String::new()),
                aliases: Some(Vec::new()),
                ..Default::default()
            },
        )])),
        ..Default::default()
    }
}

pub fn inspect(c: &v1::Container) -> ContainerInspectResponse {
    let cfg = config_json(c);
    let spec = &cfg["spec"];
    let process = &spec["process"];
    let status = match docker_state(c) {
        "created" => ContainerStateStatusEnum::CREATED,
        "running" => ContainerStateStatusEnum::RUNNING,
        "paused" => ContainerStateStatusEnum::PAUSED,
        "restarting" => ContainerStateStatusEnum::RESTARTING,
        _ => ContainerStateStatusEnum::EXITED,
    };
    let live = matches!(c.state.as_str(), "running" | "paused");
    let state = ContainerState {
        status: Some(status),
        running: Some(live),
        paused: Some(c.state == "paused"),
        restarting: Some(c.restarting),
        oom_killed: Some(c.oom_killed),
        dead: Some(false),
        pid: Some(if live { i64::from(c.pid) } else { 0 }),
        exit_code: Some(exit_code(c)),
        error: Some(
            c.exit
                .as_ref()
                .filter(|e| e.kind == v1::exit_status::Kind::Unknown as i32)
                .map(|e| e.reason.clone())
                .unwrap_or_default(),
        ),
        started_at: Some(time_or_zero(&c.started_at)),
        finished_at: Some(time_or_zero(&c.finished_at)),
        health: health(c),
    };
    let resources: Value = serde_json::from_str(&c.resources_json).unwrap_or(Value::Null);
    let mode = network_mode(&cfg);
    let log_cfg = {
        let mut m = HashMap::new();
        if let Some(n) = cfg["config"]["log_max_size"].as_u64().filter(|n| *n > 0) {
            m.insert("max-size".to_string(), n.to_string());
        }
        if let Some(n) = cfg["config"]["log_max_files"].as_u64().filter(|n| *n > 0) {
            m.insert("max-file".to_string(), (n + 1).to_string());
        }
        m
    };
    let host_config = HostConfig {
        auto_remove: Some(c.auto_remove),
        restart_policy: Some(restart_policy(&cfg)),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(log_cfg),
        }),
        network_mode: Some(mode.clone()),
        readonly_rootfs: Some(spec["root"]["readonly"].as_bool().unwrap_or(false)),
        memory: Some(resources["memory"].as_i64().unwrap_or(0)),
        nano_cpus: Some(
            resources["cpus"]
                .as_f64()
                .map(|c| (c * 1e9) as i64)
                .unwrap_or(0),
        ),
        pids_limit: resources["pids_limit"].as_i64(),
        cpu_shares: Some(resources["cpu_shares"].as_i64().unwrap_or(0)),
        binds: Some(Vec::new()),
        port_bindings: Some(HashMap::new()),
        cap_add: None,
        cap_drop: None,
        privileged: Some(false),
        ..Default::default()
    };
    let stop_signal = cfg["config"]["stop_signal"].as_i64().map(signal_name);
    let config = ContainerConfig {
        hostname: spec["hostname"].as_str().map(String::from),
        domainname: Some(String::new()),
        user: Some(
            c.config_json
                .is_empty()
                .then(String::new)
                .unwrap_or_else(|| {
                    let u = &process["user"];
                    match (u["uid"].as_u64(), u["gid"].as_u64()) {
                        (Some(0), Some(0)) | (None, _) => String::new(),
                        (Some(uid), Some(gid)) => format!("{uid}:{gid}"),
                        (Some(uid), None) => uid.to_string(),
                    }
                }),
        ),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(c.tty),
        open_stdin: Some(c.interactive),
        stdin_once: Some(false),
        env: Some(strings(&process["env"])),
        cmd: Some(c.command.clone()),
        image: Some(short_image(&c.image)),
        volumes: None,
        working_dir: process["cwd"].as_str().map(String::from),
        entrypoint: None,
        labels: Some(c.labels.clone().into_iter().collect()),
        stop_signal,
        stop_timeout: cfg["config"]["stop_timeout"].as_i64(),
        exposed_ports: Some(strings(&cfg["config"]["exposed_ports"])),
        ..Default::default()
    };
    ContainerInspectResponse {
        id: Some(c.id.clone()),
        created: Some(c.created_at.clone()),
        path: c.command.first().cloned().or_else(|| Some(String::new())),
        args: Some(c.command.iter().skip(1).cloned().collect()),
        state: Some(state),
        image: Some(c.image_id.clone()),
        resolv_conf_path: Some(String::new()),
        hostname_path: Some(String::new()),
        hosts_path: Some(String::new()),
        log_path: Some(c.log_path.clone()),
        name: Some(format!("/{}", c.name)),
        restart_count: Some(i64::from(c.restart_count)),
        driver: Some(String::new()),
        platform: Some("linux".into()),
        mount_label: Some(String::new()),
        process_label: Some(String::new()),
        app_armor_profile: Some(String::new()),
        exec_ids: None,
        host_config: Some(host_config),
        mounts: Some(mounts(&cfg)),
        config: Some(config),
        network_settings: Some(network_settings(c, &mode)),
        ..Default::default()
    }
}

/// "Up 3 minutes", "Exited (3) 2 seconds ago", "Created", as `docker ps`
/// shows them.
fn status_text(c: &v1::Container, now: i64) -> String {
    let ago = |secs: i64| berth_api::display::human_duration(u64::try_from(secs).unwrap_or(0));
    match docker_state(c) {
        "created" => "Created".into(),
        "running" => format!("Up {}", ago(now - unix_seconds(&c.started_at))),
        "paused" => format!("Up {} (Paused)", ago(now - unix_seconds(&c.started_at))),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            exit_code(c),
            ago(now - unix_seconds(&c.finished_at))
        ),
        _ => format!(
            "Exited ({}) {} ago",
            exit_code(c),
            ago(now - unix_seconds(&c.finished_at))
        ),
    }
}

pub fn summary(c: &v1::Container, now: i64) -> ContainerSummary {
    let cfg = config_json(c);
    let mode = network_mode(&cfg);
    let state = match docker_state(c) {
        "created" => ContainerSummaryStateEnum::CREATED,
        "running" => ContainerSummaryStateEnum::RUNNING,
        "paused" => ContainerSummaryStateEnum::PAUSED,
        "restarting" => ContainerSummaryStateEnum::RESTARTING,
        _ => ContainerSummaryStateEnum::EXITED,
    };
    ContainerSummary {
        id: Some(c.id.clone()),
        names: Some(vec![format!("/{}", c.name)]),
        image: Some(short_image(&c.image)),
        image_id: Some(c.image_id.clone()),
        command: Some(c.command.join(" ")),
        created: Some(unix_seconds(&c.created_at)),
        ports: Some(summary_ports(c)),
        labels: Some(c.labels.clone().into_iter().collect()),
        state: Some(state),
        status: Some(status_text(c, now)),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: Some(mode.clone()),
            annotations: None,
        }),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: network_settings(c, &mode).networks,
        }),
        mounts: Some(mounts(&cfg)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_texts() {
        let v = parse_port_text("0.0.0.0:8080->80/tcp").unwrap();
        assert_eq!(
            port_of(&v),
            (80, "tcp".into(), "0.0.0.0".into(), Some(8080))
        );
        let v = parse_port_text("53/udp").unwrap();
        assert_eq!(port_of(&v).3, None);
        assert!(parse_port_text("junk").is_none());
    }

    #[test]
    fn times() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), 0);
        assert_eq!(
            unix_seconds("2026-12-01T23:14:54.123456789Z"),
            1_796_166_894
        );
        assert_eq!(unix_seconds("1970-01-01T01:00:00+01:00"), 0);
        assert_eq!(unix_seconds("garbage"), 0);
    }

    #[test]
    fn names() {
        assert_eq!(short_image("docker.io/library/busybox:latest"), "busybox");
        assert_eq!(short_image("docker.io/x/y:1"), "x/y:1");
        assert_eq!(short_image("localhost:5000/a:latest"), "localhost:5000/a");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "40");
    }

    #[test]
    fn inspect_shape() {
        let c = v1::Container {
            id: "abc".into(),
            name: "web".into(),
            state: "stopped".into(),
            exit: Some(v1::ExitStatus {
                kind: v1::exit_status::Kind::Exited as i32,
                exit_code: 3,
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            image: "docker.io/library/busybox:latest".into(),
            config_json: r#"{"config":{"stop_signal":15,"stop_timeout":10,"restart":{"name":"on-failure","max_retries":2}},
              "spec":{"process":{"env":["A=1"],"cwd":"/","user":{"uid":0,"gid":0}},
              "linux":{"namespaces":[{"type":"network"}]},
              "mounts":[{"destination":"/data","type":"bind","source":"/r/volumes/v/_data","options":["rbind","ro"]},
                        {"destination":"/etc/hosts","type":"bind","source":"/x","options":["rbind"]}]}}"#
                .into(),
            ..Default::default()
        };
        let j = serde_json::to_value(inspect(&c)).expect("json");
        assert_eq!(j["State"]["Status"], "exited");
        assert_eq!(j["State"]["ExitCode"], 3);
        assert_eq!(j["State"]["StartedAt"], ZERO_TIME);
        assert_eq!(j["Name"], "/web");
        assert_eq!(j["Path"], "sh");
        assert_eq!(j["Config"]["Image"], "busybox");
        assert_eq!(j["Config"]["StopSignal"], "SIGTERM");
        assert_eq!(j["HostConfig"]["LogConfig"]["Type"], "json-file");
        assert_eq!(j["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(j["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
        assert_eq!(j["HostConfig"]["NetworkMode"], "none");
        assert!(j["NetworkSettings"]["Networks"]["none"].is_object());
        assert_eq!(j["Mounts"].as_array().map(Vec::len), Some(1));
        assert_eq!(j["Mounts"][0]["Type"], "volume");
        assert_eq!(j["Mounts"][0]["Name"], "v");
        assert_eq!(j["Mounts"][0]["RW"], false);
        let s = serde_json::to_value(summary(&c, 0)).expect("json");
        assert_eq!(s["Names"][0], "/web");
        assert_eq!(s["State"], "exited");
    }
}
