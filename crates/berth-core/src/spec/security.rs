//! Docker's security flags applied to a generated spec: `--cap-add`,
//! `--cap-drop`, `--privileged`, `--security-opt`, `--device`,
//! `--group-add`, `--sysctl`, `--ulimit`, `--oom-score-adj`, and the
//! default seccomp profile. `docs/security.md` describes each one.
//!
//! Everything is validated here, before anything is created, with a
//! one-line error; what depends on the host (its capabilities, rlimits and
//! oom score, its device nodes) comes from [`HostInfo`] or, for `--device`
//! and `--privileged`, from stat'ing the host's device nodes.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Spec,
};

use super::{device_rule, SpecError};
use crate::seccomp::{self, Profile};

/// Every capability by its bit number (linux/capability.h).
const CAPS_BY_BIT: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// `--ulimit` names (Docker's) and the rlimit each one sets.
const ULIMITS: [(&str, PosixRlimitType); 16] = [
    ("as", PosixRlimitType::RlimitAs),
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// The row of `/proc/self/limits` for each `--ulimit` name.
const LIMITS_ROWS: [(&str, &str); 16] = [
    ("as", "Max address space"),
    ("core", "Max core file size"),
    ("cpu", "Max cpu time"),
    ("data", "Max data size"),
    ("fsize", "Max file size"),
    ("locks", "Max file locks"),
    ("memlock", "Max locked memory"),
    ("msgqueue", "Max msgqueue size"),
    ("nice", "Max nice priority"),
    ("nofile", "Max open files"),
    ("nproc", "Max processes"),
    ("rss", "Max resident set"),
    ("rtprio", "Max realtime priority"),
    ("rttime", "Max realtime timeout"),
    ("sigpending", "Max pending signals"),
    ("stack", "Max stack size"),
];

/// Sysctls that belong to a namespace the container has of its own (Docker's
/// list): the IPC namespace's, and with a private network namespace (always,
/// in berth) `net.*`.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Device nodes the runtime creates in every container (runtime-spec
/// "default devices"): `--privileged` does not list them again.
const RUNTIME_DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/ptmx",
];

/// Longest sysctl value, and most entries per list flag.
const MAX_SYSCTL_VALUE: usize = 4096;
const MAX_ENTRIES: usize = 256;

/// What the daemon can grant: its own capabilities, rlimits and oom score.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// Architecture and kernel, for the seccomp profile's conditions.
    pub seccomp: seccomp::Host,
    /// The daemon's bounding set: what "all capabilities" means here.
    pub bounding: HashSet<Capability>,
    /// The daemon's (soft, hard) limit per `--ulimit` name; `u64::MAX` is
    /// unlimited. A name missing here is not checked.
    pub rlimits: BTreeMap<String, (u64, u64)>,
    /// The daemon's own `oom_score_adj`.
    pub oom_score_adj: i32,
}

impl Default for HostInfo {
    /// A host that can grant everything (for tests and pure callers).
    fn default() -> Self {
        HostInfo {
            seccomp: seccomp::Host {
                arch: "amd64".into(),
                kernel: (6, 1),
                x32_abi: true,
            },
            bounding: CAPS_BY_BIT.iter().copied().collect(),
            rlimits: BTreeMap::new(),
            oom_score_adj: 0,
        }
    }
}

impl HostInfo {
    /// The running process (berthd): `/proc/self/status`, `/proc/self/limits`
    /// and `/proc/self/oom_score_adj`. What cannot be read is taken as the
    /// most restrictive value (no capability, no raising).
    pub fn current() -> HostInfo {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let bnd = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        let bounding = CAPS_BY_BIT
            .iter()
            .enumerate()
            .filter(|(bit, _)| bnd & (1u64 << bit) != 0)
            .map(|(_, c)| *c)
            .collect();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        HostInfo {
            seccomp: seccomp::Host::current(),
            bounding,
            rlimits: parse_proc_limits(&limits),
            oom_score_adj,
        }
    }
}

/// `/proc/PID/limits` rows → (soft, hard) per `--ulimit` name.
fn parse_proc_limits(text: &str) -> BTreeMap<String, (u64, u64)> {
    let value = |s: &str| {
        if s == "unlimited" {
            Some(u64::MAX)
        } else {
            s.parse().ok()
        }
    };
    let mut out = BTreeMap::new();
    for line in text.lines() {
        for (name, row) in LIMITS_ROWS {
            if let Some(rest) = line.strip_prefix(row) {
                let mut f = rest.split_whitespace();
                if let (Some(soft), Some(hard)) =
                    (f.next().and_then(value), f.next().and_then(value))
                {
                    out.insert(name.to_string(), (soft, hard));
                }
            }
        }
    }
    out
}

/// The security flags of `run`/`create`, as given (validated by [`apply`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityOptions {
    /// `--cap-add` (`NAME`, `CAP_NAME`, any case, or `ALL`).
    pub cap_add: Vec<String>,
    /// `--cap-drop`, same forms.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--security-opt`: `no-new-privileges[=true|false]`,
    /// `seccomp=unconfined`, `seccomp=<profile JSON>`,
    /// `systempaths=unconfined`; also `apparmor=unconfined` and
    /// `label=disable`, which change nothing on a host berth does not
    /// confine with AppArmor or SELinux.
    pub security_opt: Vec<String>,
    /// `--device HOST[:CONTAINER][:PERMISSIONS]`.
    pub devices: Vec<String>,
    /// `--group-add`: group names (from the rootfs' /etc/group) or gids.
    pub group_add: Vec<String>,
    /// `--sysctl NAME=VALUE`, by name.
    pub sysctls: BTreeMap<String, String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<String>,
    /// `--oom-score-adj` (-1000 to 1000).
    pub oom_score_adj: Option<i32>,
    /// What the host can grant.
    pub host: HostInfo,
}

/// How the container's syscalls are filtered.
#[derive(Debug, Clone, PartialEq)]
enum SeccompChoice {
    Default,
    Unconfined,
    Custom(Box<Profile>),
}

/// `--security-opt` entries, parsed.
#[derive(Debug, Clone, PartialEq)]
struct SecurityOpts {
    no_new_privileges: bool,
    seccomp: SeccompChoice,
    systempaths_unconfined: bool,
}

fn invalid(msg: String) -> SpecError {
    SpecError::InvalidSecurity(msg)
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, SpecError> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(format!(
            "invalid --security-opt {flag}={}: use {flag}, {flag}=true or {flag}=false",
            quoted(v)
        ))),
    }
}

fn parse_security_opts(opts: &[String]) -> Result<SecurityOpts, SpecError> {
    let mut out = SecurityOpts {
        no_new_privileges: false,
        seccomp: SeccompChoice::Default,
        systempaths_unconfined: false,
    };
    for opt in opts {
        // Docker's forms: KEY=VALUE, the older KEY:VALUE, and a bare key.
        let (key, value) = match (opt.split_once('='), opt.split_once(':')) {
            (Some((k, v)), Some((k2, _))) if k.len() <= k2.len() => (k, v),
            (_, Some((k, v))) => (k, v),
            (Some((k, v)), None) => (k, v),
            (None, None) => (opt.as_str(), ""),
        };
        match key {
            "no-new-privileges" => out.no_new_privileges = parse_bool(key, value)?,
            "seccomp" => {
                out.seccomp = match value {
                    "unconfined" => SeccompChoice::Unconfined,
                    v if v.trim_start().starts_with('{') => SeccompChoice::Custom(Box::new(
                        Profile::parse(v).map_err(|e| invalid(e.to_string()))?,
                    )),
                    "" => return Err(invalid(
                        "--security-opt seccomp needs a value: seccomp=unconfined or seccomp=PROFILE.json".into(),
                    )),
                    _ => return Err(invalid(
                        "--security-opt seccomp=… must be \"unconfined\" or a profile's JSON content (the berth CLI reads seccomp=PROFILE.json for you)".into(),
                    )),
                }
            }
            "systempaths" => {
                if value != "unconfined" {
                    return Err(invalid(format!(
                        "invalid --security-opt systempaths={}: the only value is systempaths=unconfined",
                        quoted(value)
                    )));
                }
                out.systempaths_unconfined = true;
            }
            // berth never applies AppArmor or SELinux: asking for none is fine.
            "apparmor" if value == "unconfined" => {}
            "label" if value == "disable" => {}
            "apparmor" | "label" => {
                return Err(invalid(format!(
                    "--security-opt {opt:?}: berth does not apply AppArmor or SELinux profiles; only apparmor=unconfined and label=disable are accepted"
                )))
            }
            _ => {
                return Err(invalid(format!(
                    "unknown --security-opt {:?}: use no-new-privileges, seccomp=unconfined|PROFILE.json or systempaths=unconfined",
                    truncate(opt)
                )))
            }
        }
    }
    Ok(out)
}

/// User input quoted for an error message: escaped (never a newline),
/// at most 64 characters.
fn quoted(s: &str) -> String {
    format!("{:?}", truncate(s))
}

/// At most 64 characters of user input in an error message.
fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}

/// A capability name as Docker accepts it: `net_admin`, `CAP_NET_ADMIN`,
/// `Net_Admin`; `None` for `ALL`.
fn parse_cap(flag: &str, name: &str) -> Result<Option<Capability>, SpecError> {
    if name.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPS_BY_BIT
        .iter()
        .find(|c| seccomp::cap_name(**c).strip_prefix("CAP_") == Some(bare))
        .copied()
        .map(Some)
        .ok_or_else(|| {
            invalid(format!(
                "unknown capability {:?} ({flag}): use a name like NET_ADMIN or CAP_NET_ADMIN, or ALL",
                truncate(name)
            ))
        })
}

/// Docker's capability arithmetic (moby `caps.TweakCapabilities`):
/// privileged → all; `--cap-add ALL` → all but the drops; `--cap-drop ALL`
/// → only the adds; otherwise the defaults minus the drops plus the adds.
/// "All" is what the daemon itself holds; asking explicitly for a
/// capability the daemon lacks is an error, not a silent no-op.
fn capabilities(
    opts: &SecurityOptions,
    defaults: &[Capability],
) -> Result<HashSet<Capability>, SpecError> {
    let host = &opts.host.bounding;
    if opts.privileged {
        return Ok(host.clone());
    }
    let (mut add_all, mut drop_all) = (false, false);
    let mut adds = Vec::new();
    let mut drops = Vec::new();
    for a in &opts.cap_add {
        match parse_cap("--cap-add", a)? {
            None => add_all = true,
            Some(c) => adds.push(c),
        }
    }
    for d in &opts.cap_drop {
        match parse_cap("--cap-drop", d)? {
            None => drop_all = true,
            Some(c) => drops.push(c),
        }
    }
    if let Some(missing) = adds.iter().find(|c| !host.contains(c)) {
        return Err(invalid(format!(
            "--cap-add {}: berthd itself does not hold this capability (it is not in its bounding set), so no container can have it",
            seccomp::cap_name(*missing)
        )));
    }
    let set = if add_all {
        host.iter()
            .filter(|c| !drops.contains(c))
            .copied()
            .collect()
    } else if drop_all {
        adds.into_iter().collect()
    } else {
        let mut s: HashSet<Capability> = defaults
            .iter()
            .filter(|c| !drops.contains(c))
            .copied()
            .collect();
        s.extend(adds);
        s
    };
    Ok(set)
}

/// One `--device`, checked and stat'ed.
struct Device {
    node: LinuxDevice,
    access: String,
}

fn parse_device(spec: &str) -> Result<Device, SpecError> {
    let bad = |why: &str| {
        invalid(format!(
            "invalid --device {:?}: {why}; use HOST[:CONTAINER][:PERMISSIONS], e.g. /dev/fuse or /dev/sdb:/dev/xvdb:rw",
            truncate(spec)
        ))
    };
    if spec.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let is_perms = |p: &str| {
        !p.is_empty()
            && p.len() <= 3
            && p.chars().all(|c| "rwm".contains(c))
            && p.chars().collect::<HashSet<_>>().len() == p.len()
    };
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad("too many ':'")),
    };
    if !is_perms(perms) {
        return Err(bad("the permissions are a combination of r, w and m"));
    }
    for p in [host, ctr] {
        if !p.starts_with('/') {
            return Err(bad("paths must be absolute"));
        }
        if Path::new(p)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(bad("paths must not contain '..'"));
        }
    }
    let meta =
        std::fs::metadata(host).map_err(|e| bad(&format!("cannot stat {}: {e}", quoted(host))))?;
    let typ = if meta.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(bad(&format!(
            "{} is not a character or block device",
            quoted(host)
        )));
    };
    Ok(Device {
        node: device_node(ctr, typ, &meta)?,
        access: perms.to_string(),
    })
}

fn device_node(
    path: &str,
    typ: LinuxDeviceType,
    meta: &std::fs::Metadata,
) -> Result<LinuxDevice, SpecError> {
    let rdev = meta.rdev();
    // glibc's major()/minor() bit layout.
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    Ok(LinuxDeviceBuilder::default()
        .path(PathBuf::from(path))
        .typ(typ)
        .major(major as i64)
        .minor(minor as i64)
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()?)
}

/// Every device node under the host's `/dev`, for `--privileged` (as
/// Docker's `HostDevices`): skipping pseudo-terminals, shared memory and
/// message queues (the container has its own) and the nodes the runtime
/// creates anyway. Bounded in depth and count.
fn host_devices() -> Vec<LinuxDevice> {
    fn walk(dir: &Path, depth: u32, out: &mut Vec<LinuxDevice>) {
        if depth > 4 || out.len() > 4096 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                if !matches!(
                    name.to_str(),
                    Some("pts" | "shm" | "mqueue" | "fd" | ".lxc" | ".lxd-mounts" | ".udev")
                ) {
                    walk(&path, depth + 1, out);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            let Some(p) = path.to_str() else { continue };
            if RUNTIME_DEVICES.contains(&p) {
                continue;
            }
            if let Ok(d) = device_node(p, typ, &meta) {
                out.push(d);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), 0, &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

fn parse_group_add(entries: &[String], group_db: Option<&str>) -> Result<Vec<u32>, SpecError> {
    let groups = group_db.map(super::parse_group).unwrap_or_default();
    entries
        .iter()
        .map(|g| {
            if g.is_empty() || g.contains(|c: char| c.is_control() || c.is_whitespace() || c == ':')
            {
                return Err(invalid(format!(
                    "invalid --group-add {}: give a group name or a gid",
                    quoted(g)
                )));
            }
            if let Ok(Some(gid)) = super::parse_id(g) {
                return Ok(gid);
            }
            groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SpecError::UnknownGroup(truncate(g)))
        })
        .collect()
}

fn check_sysctl(key: &str, value: &str) -> Result<(), SpecError> {
    let valid_key = !key.is_empty()
        && key.len() <= 256
        && key.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid_key {
        return Err(invalid(format!(
            "invalid --sysctl name {:?}: use dotted names like net.ipv4.ip_forward",
            truncate(key)
        )));
    }
    let namespaced =
        IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") || key.starts_with("net.");
    if !namespaced {
        return Err(invalid(format!(
            "--sysctl {key} is not namespaced: it would change the host; only kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* and net.* can be set per container"
        )));
    }
    if value.len() > MAX_SYSCTL_VALUE || value.contains(['\0', '\n']) {
        return Err(invalid(format!(
            "invalid --sysctl {key} value: at most {MAX_SYSCTL_VALUE} bytes on one line"
        )));
    }
    Ok(())
}

fn parse_ulimit(spec: &str, host: &HostInfo) -> Result<PosixRlimit, SpecError> {
    let bad = |why: String| {
        invalid(format!(
            "invalid --ulimit {:?}: {why}; use NAME=SOFT[:HARD], e.g. nofile=1024:2048",
            truncate(spec)
        ))
    };
    let (name, values) = spec.split_once('=').ok_or_else(|| bad("no '='".into()))?;
    let typ = ULIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| bad(format!("unknown limit {name:?}")))?;
    let num = |s: &str| -> Result<u64, SpecError> {
        match s {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => s
                .parse::<u64>()
                .map_err(|_| bad(format!("{s:?} is not a number"))),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => {
            let v = num(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard limit".into()));
    }
    if let Some(&(_, host_hard)) = host.rlimits.get(name) {
        if hard > host_hard && !host.bounding.contains(&Capability::SysResource) {
            let shown = |v: u64| {
                if v == u64::MAX {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            };
            return Err(invalid(format!(
                "--ulimit {name}: hard limit {} is above berthd's own ({}) and berthd lacks CAP_SYS_RESOURCE to raise it; give at most {name}={}",
                shown(hard),
                shown(host_hard),
                shown(host_hard)
            )));
        }
    }
    Ok(PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()?)
}

/// Applies the security flags to `spec`, as `generate` built it with
/// Docker's defaults. `uid` is the container user's; `group_db` the
/// rootfs' `/etc/group` (for `--group-add NAME`).
pub(super) fn apply(
    spec: &mut Spec,
    opts: &SecurityOptions,
    uid: u32,
    group_db: Option<&str>,
) -> Result<(), SpecError> {
    for (flag, n) in [
        ("--cap-add", opts.cap_add.len()),
        ("--cap-drop", opts.cap_drop.len()),
        ("--security-opt", opts.security_opt.len()),
        ("--device", opts.devices.len()),
        ("--group-add", opts.group_add.len()),
        ("--sysctl", opts.sysctls.len()),
        ("--ulimit", opts.ulimits.len()),
    ] {
        if n > MAX_ENTRIES {
            return Err(invalid(format!(
                "{n} {flag} entries: at most {MAX_ENTRIES}"
            )));
        }
    }
    let sec = parse_security_opts(&opts.security_opt)?;
    let caps = capabilities(opts, &super::DEFAULT_CAPABILITIES)?;
    let devices = opts
        .devices
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let extra_gids = parse_group_add(&opts.group_add, group_db)?;
    for (k, v) in &opts.sysctls {
        check_sysctl(k, v)?;
    }
    let mut rlimits: Vec<PosixRlimit> = Vec::new();
    for u in &opts.ulimits {
        let r = parse_ulimit(u, &opts.host)?;
        // A later --ulimit of the same name wins.
        rlimits.retain(|o| o.typ() != r.typ());
        rlimits.push(r);
    }
    if let Some(adj) = opts.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(format!(
                "--oom-score-adj {adj} is out of range: give a number from -1000 to 1000"
            )));
        }
        if adj < opts.host.oom_score_adj && !opts.host.bounding.contains(&Capability::SysResource) {
            return Err(invalid(format!(
                "--oom-score-adj {adj} is below berthd's own ({}) and berthd lacks CAP_SYS_RESOURCE to lower it; give {} or more",
                opts.host.oom_score_adj, opts.host.oom_score_adj
            )));
        }
    }

    // Process: capabilities, no_new_privileges, groups, rlimits, oom score.
    if let Some(process) = spec.process_mut().as_mut() {
        process.set_capabilities(Some(super::capabilities_with(&caps, uid)?));
        // Omitted unless true, as Docker writes it: libcontainer 0.7 takes
        // any value, even false, as "set", and then loads the seccomp filter
        // after dropping CAP_SYS_ADMIN, which fails without the flag.
        process.set_no_new_privileges(sec.no_new_privileges.then_some(true));
        if !extra_gids.is_empty() {
            let mut user = process.user().clone();
            let mut gids = user.additional_gids().clone().unwrap_or_default();
            for g in extra_gids {
                if !gids.contains(&g) {
                    gids.push(g);
                }
            }
            user.set_additional_gids(Some(gids));
            process.set_user(user);
        }
        process.set_rlimits((!rlimits.is_empty()).then_some(rlimits));
        process.set_oom_score_adj(opts.oom_score_adj);
    }

    let privileged = opts.privileged;
    if privileged {
        // Writable /sys and cgroup mounts, as Docker's privileged spec.
        if let Some(mounts) = spec.mounts_mut().as_mut() {
            for m in mounts.iter_mut() {
                if matches!(m.typ().as_deref(), Some("sysfs" | "cgroup")) {
                    let opts: Vec<String> = m
                        .options()
                        .iter()
                        .flatten()
                        .filter(|o| *o != "ro")
                        .cloned()
                        .chain(std::iter::once("rw".to_string()))
                        .collect();
                    m.set_options(Some(opts));
                }
            }
        }
    }

    let Some(linux) = spec.linux_mut().as_mut() else {
        return Ok(());
    };
    let seccomp = match (&sec.seccomp, privileged) {
        // Docker: a privileged container runs unconfined unless a profile
        // is given explicitly.
        (SeccompChoice::Default, true) | (SeccompChoice::Unconfined, _) => None,
        (SeccompChoice::Default, false) => Some(
            seccomp::default_filter(&caps, &opts.host.seccomp)
                .map_err(|e| invalid(e.to_string()))?,
        ),
        (SeccompChoice::Custom(p), _) => Some(
            p.to_oci(&caps, &opts.host.seccomp)
                .map_err(|e| invalid(e.to_string()))?,
        ),
    };
    linux.set_seccomp(seccomp);

    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else if sec.systempaths_unconfined {
        // Docker's lists go; the cgroup hierarchies stay read-only, as the
        // cgroup mount itself does in Docker.
        linux.set_masked_paths(None);
        linux.set_readonly_paths(Some(
            super::CGROUP_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ));
    }

    if !opts.sysctls.is_empty() {
        linux.set_sysctl(Some(opts.sysctls.clone().into_iter().collect()));
    }

    let mut nodes: Vec<LinuxDevice> = if privileged {
        host_devices()
    } else {
        Vec::new()
    };
    let mut rules = Vec::new();
    for d in devices {
        rules.push(device_rule(
            true,
            d.node.typ(),
            Some(d.node.major()),
            Some(d.node.minor()),
            &d.access,
        )?);
        nodes.retain(|n| n.path() != d.node.path());
        nodes.push(d.node);
    }
    if !nodes.is_empty() {
        linux.set_devices(Some(nodes));
    }
    if let Some(resources) = linux.resources_mut().as_mut() {
        if privileged {
            resources.set_devices(Some(vec![device_rule(
                true,
                LinuxDeviceType::A,
                None,
                None,
                "rwm",
            )?]));
        } else if !rules.is_empty() {
            let mut all = resources.devices().clone().unwrap_or_default();
            all.extend(rules);
            resources.set_devices(Some(all));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_without(caps: &[Capability]) -> HostInfo {
        let mut h = HostInfo::default();
        for c in caps {
            h.bounding.remove(c);
        }
        h
    }

    fn opts() -> SecurityOptions {
        SecurityOptions {
            host: host_without(&[Capability::SysResource]),
            ..Default::default()
        }
    }

    fn caps_of(o: &SecurityOptions) -> Result<HashSet<Capability>, SpecError> {
        capabilities(o, &crate::spec::DEFAULT_CAPABILITIES)
    }

    #[test]
    fn cap_add_and_drop_follow_docker() {
        let d: HashSet<Capability> = crate::spec::DEFAULT_CAPABILITIES.iter().copied().collect();
        assert_eq!(caps_of(&opts()).unwrap(), d);
        let mut o = opts();
        o.cap_add = vec!["net_admin".into(), "CAP_SYS_PTRACE".into()];
        o.cap_drop = vec!["Chown".into(), "cap_kill".into()];
        let c = caps_of(&o).unwrap();
        assert!(c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysPtrace));
        assert!(!c.contains(&Capability::Chown) && !c.contains(&Capability::Kill));
        assert_eq!(c.len(), 14);

        let mut o = opts();
        o.cap_drop = vec!["ALL".into()];
        assert!(caps_of(&o).unwrap().is_empty());
        o.cap_add = vec!["NET_BIND_SERVICE".into()];
        assert_eq!(
            caps_of(&o).unwrap(),
            HashSet::from([Capability::NetBindService])
        );

        let mut o = opts();
        o.cap_add = vec!["all".into()];
        o.cap_drop = vec!["SYS_ADMIN".into()];
        let c = caps_of(&o).unwrap();
        assert!(!c.contains(&Capability::SysAdmin));
        assert!(
            !c.contains(&Capability::SysResource),
            "not held by the host"
        );
        assert_eq!(c.len(), 39);

        let mut o = opts();
        o.privileged = true;
        assert_eq!(caps_of(&o).unwrap(), o.host.bounding);

        let mut o = opts();
        o.cap_add = vec!["SYS_RESOURCE".into()];
        let e = caps_of(&o).unwrap_err().to_string();
        assert!(
            e.contains("CAP_SYS_RESOURCE") && e.contains("bounding"),
            "{e}"
        );
        o.cap_add = vec!["NOPE".into()];
        let e = caps_of(&o).unwrap_err().to_string();
        assert!(e.contains("unknown capability \"NOPE\""), "{e}");
    }

    #[test]
    fn security_opts_parse() {
        let p =
            |v: &[&str]| parse_security_opts(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let d = p(&[]).unwrap();
        assert!(!d.no_new_privileges && d.seccomp == SeccompChoice::Default);
        assert!(p(&["no-new-privileges"]).unwrap().no_new_privileges);
        assert!(p(&["no-new-privileges=true"]).unwrap().no_new_privileges);
        assert!(p(&["no-new-privileges:true"]).unwrap().no_new_privileges);
        assert!(!p(&["no-new-privileges=false"]).unwrap().no_new_privileges);
        assert!(p(&["no-new-privileges=maybe"]).is_err());
        assert_eq!(
            p(&["seccomp=unconfined"]).unwrap().seccomp,
            SeccompChoice::Unconfined
        );
        assert!(matches!(
            p(&[r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#])
                .unwrap()
                .seccomp,
            SeccompChoice::Custom(_)
        ));
        let e = p(&["seccomp=/etc/profile.json"]).unwrap_err().to_string();
        assert!(e.contains("JSON content"), "{e}");
        let e = p(&[r#"seccomp={"defaultAction":1}"#])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        assert!(
            p(&["systempaths=unconfined"])
                .unwrap()
                .systempaths_unconfined
        );
        assert!(p(&["systempaths=confined"]).is_err());
        assert!(p(&["apparmor=unconfined", "label=disable"]).is_ok());
        assert!(p(&["apparmor=docker-default"]).is_err());
        let e = p(&["bogus"]).unwrap_err().to_string();
        assert!(e.contains("unknown --security-opt"), "{e}");
    }

    #[test]
    fn devices_are_checked() {
        let d = parse_device("/dev/null:/dev/mynull:rw").unwrap();
        assert_eq!(d.node.path(), Path::new("/dev/mynull"));
        assert_eq!((d.node.major(), d.node.minor()), (1, 3));
        assert_eq!(d.node.typ(), LinuxDeviceType::C);
        assert_eq!(d.access, "rw");
        let d = parse_device("/dev/zero:r").unwrap();
        assert_eq!(d.node.path(), Path::new("/dev/zero"));
        assert_eq!(d.access, "r");
        for (bad, why) in [
            ("dev/null", "absolute"),
            ("/dev/null:rwx", "absolute"),
            ("/dev/null:/x:rwx", "permissions"),
            ("/dev/null:/a:/b:rw", "too many"),
            ("/etc/passwd", "not a character"),
            ("/dev/nope-not-here", "cannot stat"),
            ("/dev/../dev/null", "'..'"),
            ("/dev/null:/dev/x:rr", "permissions"),
        ] {
            let e = parse_device(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        for ok in [
            "kernel.shmmax",
            "kernel.msgmnb",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
        ] {
            check_sysctl(ok, "1").unwrap();
        }
        for bad in [
            "kernel.hostname_x",
            "vm.swappiness",
            "kernel.domainname",
            "fs.file-max",
        ] {
            let e = check_sysctl(bad, "1").unwrap_err().to_string();
            assert!(e.contains("not namespaced"), "{bad}: {e}");
        }
        for bad in ["net/ipv4/../../x", "", "net..x", "net.ipv4.a b"] {
            let e = check_sysctl(bad, "1").unwrap_err().to_string();
            assert!(e.contains("invalid --sysctl name"), "{bad}: {e}");
        }
        assert!(check_sysctl("net.ipv4.ip_forward", "1\n2").is_err());
    }

    #[test]
    fn ulimits_and_the_host_hard_limit() {
        let mut host = host_without(&[Capability::SysResource]);
        host.rlimits.insert("nofile".into(), (1024, 4096));
        let r = parse_ulimit("nofile=100:200", &host).unwrap();
        assert_eq!(
            (r.typ(), r.soft(), r.hard()),
            (PosixRlimitType::RlimitNofile, 100, 200)
        );
        let r = parse_ulimit("nproc=50", &host).unwrap();
        assert_eq!((r.soft(), r.hard()), (50, 50));
        let r = parse_ulimit("core=-1", &host).unwrap();
        assert_eq!(r.hard(), u64::MAX);
        let e = parse_ulimit("nofile=100:8192", &host)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CAP_SYS_RESOURCE") && e.contains("nofile=4096"),
            "{e}"
        );
        for (bad, why) in [
            ("nofile", "no '='"),
            ("bogus=1", "unknown limit"),
            ("nofile=x", "not a number"),
            ("nofile=-5", "not a number"),
            ("nofile=10:5", "soft limit is above"),
        ] {
            let e = parse_ulimit(bad, &host).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        host.bounding.insert(Capability::SysResource);
        parse_ulimit("nofile=100:8192", &host).unwrap();
    }

    #[test]
    fn proc_limits_parse() {
        let t = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            1024                 524288               files     \n";
        let l = parse_proc_limits(t);
        assert_eq!(l["cpu"], (u64::MAX, u64::MAX));
        assert_eq!(l["nofile"], (1024, 524288));
        assert!(!HostInfo::current().rlimits.is_empty());
    }

    fn gen(security: SecurityOptions, user: Option<&str>) -> Spec {
        let o = crate::spec::SpecOptions {
            rootfs: PathBuf::from("/rootfs"),
            args: vec!["true".into()],
            id: "0123456789abcdef".into(),
            user: user.map(String::from),
            security,
            ..Default::default()
        };
        crate::spec::generate(&o, None, Some("root:x:0:\nstaff:x:50:\n")).unwrap()
    }

    #[test]
    fn privileged_spec_is_dockers() {
        let spec = gen(
            SecurityOptions {
                privileged: true,
                ..opts()
            },
            None,
        );
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none());
        assert!(linux.readonly_paths().is_none());
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        assert!(rules[0].allow());
        for m in spec.mounts().as_ref().unwrap() {
            if matches!(m.typ().as_deref(), Some("sysfs" | "cgroup")) {
                let o = m.options().clone().unwrap();
                assert!(o.contains(&"rw".to_string()) && !o.contains(&"ro".to_string()));
            }
        }
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(caps.effective().clone().unwrap(), opts().host.bounding);
    }

    #[test]
    fn seccomp_follows_the_final_capabilities() {
        let allowed = |spec: &Spec, name: &str| {
            spec.linux()
                .as_ref()
                .unwrap()
                .seccomp()
                .as_ref()
                .unwrap()
                .syscalls()
                .iter()
                .flatten()
                .any(|s| {
                    s.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                        && s.args().is_none()
                        && s.names().iter().any(|n| n == name)
                })
        };
        let plain = gen(opts(), None);
        assert!(!allowed(&plain, "unshare") && allowed(&plain, "chroot"));
        let more = gen(
            SecurityOptions {
                cap_add: vec!["SYS_ADMIN".into()],
                cap_drop: vec!["SYS_CHROOT".into()],
                ..opts()
            },
            None,
        );
        assert!(allowed(&more, "unshare") && !allowed(&more, "chroot"));
    }

    #[test]
    fn flags_land_in_the_spec() {
        let mut o = opts();
        o.security_opt = vec!["no-new-privileges".into(), "systempaths=unconfined".into()];
        o.group_add = vec!["staff".into(), "777".into()];
        o.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        o.ulimits = vec!["nofile=10:20".into(), "nofile=30:40".into()];
        o.oom_score_adj = Some(100);
        o.devices = vec!["/dev/null:/dev/n2:r".into()];
        let spec = gen(o, Some("0"));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(
            p.user().additional_gids().clone().unwrap(),
            vec![0, 50, 777]
        );
        let r = p.rlimits().clone().unwrap();
        assert_eq!(r.len(), 1, "the later --ulimit nofile wins");
        assert_eq!((r[0].soft(), r[0].hard()), (30, 40));
        assert_eq!(p.oom_score_adj(), Some(100));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().is_none());
        assert_eq!(
            linux.readonly_paths().clone().unwrap(),
            crate::spec::CGROUP_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(linux.sysctl().clone().unwrap()["net.ipv4.ip_forward"], "1");
        let dev = &linux.devices().clone().unwrap()[0];
        assert_eq!(dev.path(), Path::new("/dev/n2"));
        let last = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(last.to_string(), "c 1:3 r");
    }

    #[test]
    fn exec_as_another_user_keeps_the_containers_capabilities() {
        let spec = gen(
            SecurityOptions {
                cap_drop: vec!["ALL".into()],
                cap_add: vec!["KILL".into()],
                ..opts()
            },
            None,
        );
        let base = spec.process().clone().unwrap();
        let p = crate::spec::exec_process(
            &base,
            &crate::spec::ExecOptions {
                args: vec!["true".into()],
                user: Some("0".into()),
                ..Default::default()
            },
            None,
            None,
        )
        .unwrap();
        let caps = p.capabilities().clone().unwrap();
        assert_eq!(
            caps.effective().clone().unwrap(),
            HashSet::from([Capability::Kill])
        );
    }

    #[test]
    fn caps_by_bit_is_complete() {
        let set: HashSet<Capability> = CAPS_BY_BIT.iter().copied().collect();
        assert_eq!(set.len(), 41);
        assert_eq!(CAPS_BY_BIT[21], Capability::SysAdmin);
        assert_eq!(CAPS_BY_BIT[24], Capability::SysResource);
        assert_eq!(CAPS_BY_BIT[40], Capability::CheckpointRestore);
    }
}
