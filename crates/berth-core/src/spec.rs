//! OCI runtime spec generation from Docker-style `run` flags.
//!
//! [`generate`] turns a [`SpecOptions`] (what `berth run -e … -w … -u …` asked
//! for) into an [`oci_spec::runtime::Spec`] that matches what Docker (moby's
//! `oci/defaults.go` plus the daemon's spec options) produces for a
//! non-privileged container: the same 14 capabilities, mounts, masked and
//! read-only paths, namespaces and device cgroup rules. [`adapt_bundle`]
//! adjusts an existing OCI bundle (`--bundle DIR`) instead, touching only what
//! the supervisor needs. `docs/spec-defaults.md` lists every default and where
//! berth differs from Docker.
//!
//! Everything here is pure logic except [`read_user_db`] and the rootfs check
//! in [`adapt_bundle`], which only read the filesystem.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder, Process,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;

mod security;
pub use security::{HostInfo, SecurityOptions};
mod init;
pub use init::{apply_init, INIT_TARGET};
mod resources;
pub use resources::{parse_cpuset, summary as resources_summary, DeviceRate, Limits, MIN_MEMORY};
pub mod image;

/// `PATH` given to every container process unless `-e PATH=…` overrides it
/// (the same value as Docker's default).
pub const DEFAULT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set for a non-privileged container.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths hidden from the container (Docker's `maskedPaths`).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only inside the container (Docker's `readonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Extra read-only paths, after [`READONLY_PATHS`]: the cgroup v1 hierarchies.
///
/// Docker's `/sys/fs/cgroup` mount is read-only, but youki (libcontainer 0.7)
/// bind-mounts each cgroup v1 hierarchy read-write whatever the mount
/// options say, which would let root in the container raise its own limits
/// (`pids.max`, `memory.limit_in_bytes`). Listing them here remounts each one
/// read-only; runtimes skip paths that do not exist (a cgroup v2 host, or a
/// hierarchy the host lacks), and on runc they are already read-only.
pub const CGROUP_READONLY_PATHS: [&str; 19] = [
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/blkio",
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpuacct",
    "/sys/fs/cgroup/cpu,cpuacct",
    "/sys/fs/cgroup/cpuset",
    "/sys/fs/cgroup/devices",
    "/sys/fs/cgroup/freezer",
    "/sys/fs/cgroup/hugetlb",
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/misc",
    "/sys/fs/cgroup/net_cls",
    "/sys/fs/cgroup/net_prio",
    "/sys/fs/cgroup/net_cls,net_prio",
    "/sys/fs/cgroup/perf_event",
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/rdma",
    "/sys/fs/cgroup/systemd",
    "/sys/fs/cgroup/unified",
];

/// Longest accepted hostname (Linux `HOST_NAME_MAX`).
const HOSTNAME_MAX: usize = 64;
/// Default hostname length taken from the container id (as Docker does).
const HOSTNAME_FROM_ID: usize = 12;
/// Upper bound on how much of the rootfs' `/etc/passwd` or `/etc/group` is read.
const MAX_USER_DB_BYTES: u64 = 4 << 20;
/// Symlinks followed while resolving a path inside the rootfs (as Linux' MAXSYMLINKS).
const MAX_SYMLINK_HOPS: u32 = 40;

/// What the user asked for on the command line, plus what the daemon decides
/// (`id`, `cgroups_path`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecOptions {
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    /// The command and its arguments; must not be empty.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries from `-e`, applied in order over the defaults.
    pub env: Vec<String>,
    /// Working directory (`-w`); must be absolute. Default `/`.
    pub cwd: Option<String>,
    /// `-u`: `UID`, `UID:GID`, `NAME` or `NAME:GROUP` (`GROUP` may be a GID).
    /// Default: root (uid 0).
    pub user: Option<String>,
    /// `--hostname`; default: the first 12 characters of `id`.
    pub hostname: Option<String>,
    /// `--read-only`: mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// `-t`: give the process a pseudo-terminal.
    pub terminal: bool,
    /// `linux.cgroupsPath`, set by the daemon (e.g. `/berth/<id>`); empty
    /// leaves it to the runtime.
    pub cgroups_path: String,
    /// Container id.
    pub id: String,
    /// Resource limits (`--memory`, `--cpus`, `--pids-limit`).
    pub limits: Limits,
    /// Security flags (`--cap-add`, `--privileged`, `--security-opt` …) and
    /// what the host can grant; see `spec/security.rs`.
    pub security: SecurityOptions,
    /// `--userns=auto`: a user namespace whose ids `0..size` are the host's
    /// `host..host + size` (the daemon allocates the range). `None`: the
    /// host's user namespace.
    pub userns: Option<IdRange>,
}

/// A range of host ids given to a container's user namespace: container
/// id `x` is host id `host + x` for `x < size` (uids and gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub host: u32,
    pub size: u32,
}

impl IdRange {
    /// The range a spec maps for its user namespace (the first uid
    /// mapping's), if it has one.
    pub fn of_spec(spec: &Spec) -> Option<IdRange> {
        let linux = spec.linux().as_ref()?;
        let has_userns = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User);
        if !has_userns {
            return None;
        }
        let m = linux.uid_mappings().as_ref()?.first()?;
        Some(IdRange {
            host: m.host_id(),
            size: m.size(),
        })
    }
}

/// Why a spec could not be generated or adapted. Every message is one line
/// saying what was wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The command is empty.
    #[error("no command given: pass the command to run (for example `sh -c 'echo hi'`)")]
    NoCommand,
    /// The command or one of its arguments cannot be passed to execve.
    #[error("invalid command argument {0:?}: the program name must not be empty and no argument may contain a NUL byte")]
    InvalidArg(String),
    /// The rootfs path is relative.
    #[error("invalid rootfs {0:?}: the root filesystem path must be absolute")]
    RelativeRootfs(PathBuf),
    /// `-w` is not absolute.
    #[error("invalid working directory {0:?} (-w): it must be an absolute path such as /app")]
    RelativeCwd(String),
    /// `-e` entry without `=` or with an empty name.
    #[error("invalid environment variable {0:?} (-e): use NAME=VALUE with a non-empty NAME")]
    InvalidEnv(String),
    /// Bad `--hostname` (or a container id that does not make a valid default).
    #[error("invalid hostname {name:?}: {reason}; pass --hostname with at most 64 letters, digits, '.' or '-', not starting with '-'")]
    InvalidHostname {
        /// The rejected hostname.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `-u` does not have the form `UID`, `UID:GID`, `NAME` or `NAME:GROUP`.
    #[error("invalid user {0:?} (-u): use UID, UID:GID, NAME or NAME:GROUP")]
    InvalidUser(String),
    /// `-u NAME` where NAME is not in the rootfs' `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in the container's /etc/passwd; use a numeric UID or add the user to the image")]
    UnknownUser(String),
    /// `-u …:GROUP` where GROUP is not in the rootfs' `/etc/group`.
    #[error("unable to find group {0}: no matching entries in the container's /etc/group; use a numeric GID or add the group to the image")]
    UnknownGroup(String),
    /// The bundle's `config.json` has no `process`.
    #[error("bundle config.json has no \"process\" section: add one with \"args\", \"cwd\" and \"user\"")]
    BundleNoProcess,
    /// The bundle's `config.json` has no `root`.
    #[error("bundle config.json has no \"root\" section: add \"root\": {{\"path\": \"rootfs\"}}")]
    BundleNoRoot,
    /// The bundle directory cannot be made absolute.
    #[error("cannot resolve bundle directory {path:?}: {source}")]
    BundleDir {
        /// The bundle directory as given.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The bundle's root filesystem is missing.
    #[error("bundle root filesystem {0:?} is not a directory: create it or fix \"root.path\" in config.json")]
    BundleRootfsMissing(PathBuf),
    /// A resource limit is out of range.
    #[error("{0}")]
    InvalidLimit(String),
    /// A security flag is invalid or asks for what the host cannot grant.
    #[error("{0}")]
    InvalidSecurity(String),
    /// An oci-spec builder refused a value (a bug in this module).
    #[error("internal error while building the OCI spec: {0}")]
    Build(#[from] OciSpecError),
}

/// Builds the OCI runtime spec for a new container.
///
/// `passwd` and `group` are the contents of the rootfs' `/etc/passwd` and
/// `/etc/group` (see [`read_user_db`]); `None` when the rootfs has none, in
/// which case only numeric users and groups resolve.
pub fn generate(
    opts: &SpecOptions,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Spec, SpecError> {
    validate_args(&opts.args)?;
    if !opts.rootfs.is_absolute() {
        return Err(SpecError::RelativeRootfs(opts.rootfs.clone()));
    }
    let cwd = match opts.cwd.as_deref() {
        None => "/",
        Some(c) if c.starts_with('/') && !c.contains('\0') => c,
        Some(c) => return Err(SpecError::RelativeCwd(c.to_string())),
    };
    let hostname = match &opts.hostname {
        Some(h) => h.clone(),
        None => opts.id.chars().take(HOSTNAME_FROM_ID).collect(),
    };
    validate_hostname(&hostname)?;
    let user = resolve_user(opts.user.as_deref(), passwd, group)?;
    let env = build_env(&hostname, opts.terminal, &user.home, &opts.env)?;

    let process = build_process(opts, cwd, env, &user)?;

    let root = RootBuilder::default()
        .path(opts.rootfs.clone())
        .readonly(opts.readonly_rootfs)
        .build()?;

    let mut resources = LinuxResourcesBuilder::default()
        .devices(default_device_rules()?)
        .build()?;
    opts.limits.apply(&mut resources)?;

    let mut linux = LinuxBuilder::default()
        .resources(resources)
        .namespaces(default_namespaces()?)
        .masked_paths(to_strings(&MASKED_PATHS))
        .readonly_paths(to_strings(
            &[&READONLY_PATHS[..], &CGROUP_READONLY_PATHS[..]].concat(),
        ))
        .build()?;
    // The builder fills unset fields from `Linux::default()`; state them.
    linux.set_devices(None);
    linux.set_sysctl(None);
    linux.set_cgroups_path(if opts.cgroups_path.is_empty() {
        None
    } else {
        Some(PathBuf::from(&opts.cgroups_path))
    });

    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(root)
        .mounts(default_mounts()?)
        .process(process)
        .hostname(hostname)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    security::apply(&mut spec, &opts.security, user.uid, group)?;
    if let Some(range) = opts.userns {
        apply_userns(&mut spec, range, opts.security.privileged)?;
    }
    Ok(spec)
}

/// A user namespace mapping `range`: the namespace joins the others and
/// uids and gids are mapped alike. The process' user and groups must be
/// inside the range (ids beyond it do not exist in the namespace).
fn apply_userns(spec: &mut Spec, range: IdRange, privileged: bool) -> Result<(), SpecError> {
    if privileged {
        return Err(SpecError::InvalidSecurity(
            "--privileged cannot run in a user namespace (its root would not hold the host's devices and capabilities): add --userns=host".into(),
        ));
    }
    if range.size == 0 || range.host.checked_add(range.size).is_none() {
        return Err(SpecError::InvalidSecurity(format!(
            "invalid user namespace range {}+{}: it must be non-empty and end below 2^32",
            range.host, range.size
        )));
    }
    if let Some(p) = spec.process() {
        let u = p.user();
        let ids = std::iter::once(("user", u.uid()))
            .chain(std::iter::once(("group", u.gid())))
            .chain(u.additional_gids().iter().flatten().map(|g| ("group", *g)));
        for (what, id) in ids {
            if id >= range.size {
                return Err(SpecError::InvalidSecurity(format!(
                    "{what} id {id} is outside the container's user namespace (ids 0-{}): use a smaller id or a larger --userns=auto:size=N",
                    range.size - 1
                )));
            }
        }
    }
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(range.host)
        .size(range.size)
        .build()?;
    if let Some(linux) = spec.linux_mut() {
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        ns.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
        linux.set_namespaces(Some(ns));
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    // /sys stays a sysfs mount of the container's own network namespace:
    // berthd makes that namespace inside the container's user namespace,
    // which the kernel requires for a sysfs mount. A container that joins
    // another's network namespace gets `bind_host_sys` instead.
    Ok(())
}

/// `/sys` as a read-only recursive bind of the host's instead of a sysfs
/// mount, for a container in a user namespace whose network namespace
/// another user namespace owns (`--network container:X` with runc): the
/// kernel refuses a sysfs mount there (EPERM), a bind it allows. The host's
/// `/sys` then shows the host's network devices, not the container's.
pub fn bind_host_sys(spec: &mut Spec) -> Result<(), SpecError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in mounts.iter_mut() {
        if m.destination() == Path::new("/sys") && m.typ().as_deref() == Some("sysfs") {
            *m = mount(
                "/sys",
                "bind",
                "/sys",
                &["rbind", "nosuid", "noexec", "nodev", "ro"],
            )?;
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Reads `etc/passwd` and `etc/group` from `rootfs`, resolving symlinks inside
/// the rootfs (an absolute link target is taken relative to `rootfs`, never
/// the host). A missing, unreadable or non-regular file gives `None`.
pub fn read_user_db(rootfs: &Path) -> (Option<String>, Option<String>) {
    (
        read_rootfs_file(rootfs, Path::new("etc/passwd")),
        read_rootfs_file(rootfs, Path::new("etc/group")),
    )
}

/// Adapts the spec of an existing OCI bundle (`--bundle DIR`), used as given
/// otherwise:
///
/// * a relative `root.path` is made absolute against `bundle_dir` (which is
///   itself made absolute against the current directory), and the root
///   filesystem must be a directory;
/// * `linux.cgroupsPath` is set to `cgroups_path` only when the spec has none;
/// * `process.args` is replaced when `args` is `Some` (a command given on the
///   command line).
pub fn adapt_bundle(
    mut spec: Spec,
    bundle_dir: &Path,
    cgroups_path: &str,
    args: Option<Vec<String>>,
) -> Result<Spec, SpecError> {
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or(SpecError::BundleNoProcess)?;
    if let Some(args) = args {
        validate_args(&args)?;
        process.set_args(Some(args));
    }
    // `false` means unset; libcontainer 0.7 takes any value as set and
    // would then load a seccomp filter too late (see spec/security.rs).
    if process.no_new_privileges() == Some(false) {
        process.set_no_new_privileges(None);
    }

    let root = spec.root_mut().as_mut().ok_or(SpecError::BundleNoRoot)?;
    if !root.path().is_absolute() {
        let bundle = std::path::absolute(bundle_dir).map_err(|source| SpecError::BundleDir {
            path: bundle_dir.to_path_buf(),
            source,
        })?;
        let joined = bundle.join(root.path());
        root.set_path(joined);
    }
    if !root.path().is_dir() {
        return Err(SpecError::BundleRootfsMissing(root.path().clone()));
    }

    if !cgroups_path.is_empty() {
        match spec.linux_mut() {
            Some(linux) => {
                if linux.cgroups_path().is_none() {
                    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
                }
            }
            None => {
                let mut linux = LinuxBuilder::default()
                    .cgroups_path(PathBuf::from(cgroups_path))
                    .build()?;
                // Only the cgroup path: no namespaces or paths the bundle did not ask for.
                linux.set_resources(None);
                linux.set_namespaces(None);
                linux.set_masked_paths(None);
                linux.set_readonly_paths(None);
                spec.set_linux(Some(linux));
            }
        }
    }
    Ok(spec)
}

/// What `exec` may change of the container's process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub args: Vec<String>,
    /// `K=V` entries applied over the container's environment.
    pub env: Vec<String>,
    /// Absolute working directory; default: the container's.
    pub cwd: Option<String>,
    /// `-u` for the exec; default: the container's user.
    pub user: Option<String>,
    /// `-t`: a pseudo-terminal (and `TERM=xterm` unless the environment
    /// sets `TERM`), of this size (rows, columns) when known.
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
}

/// The process for `exec`: the container's own process (environment, user,
/// capabilities, working directory) with the exec's options applied, as
/// `docker exec` does.
pub fn exec_process(
    base: &Process,
    opts: &ExecOptions,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Process, SpecError> {
    validate_args(&opts.args)?;
    let mut process = base.clone();
    process.set_args(Some(opts.args.clone()));
    process.set_terminal(Some(opts.terminal));
    process.set_console_size(None);
    if let (true, Some((rows, cols))) = (opts.terminal, opts.console_size) {
        process.set_console_size(Some(
            oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(rows))
                .width(u64::from(cols))
                .build()?,
        ));
    }
    if let Some(cwd) = &opts.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(SpecError::RelativeCwd(cwd.clone()));
        }
        process.set_cwd(PathBuf::from(cwd));
    }
    let mut env = base.env().clone().unwrap_or_default();
    if let Some(u) = &opts.user {
        let user = resolve_user(Some(u), passwd, group)?;
        let oci_user = UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids.clone())
            .build()?;
        process.set_user(oci_user);
        // The container's own capability set (after --cap-add/--cap-drop),
        // held as root or only bounding for another user.
        let set: HashSet<Capability> = base
            .capabilities()
            .as_ref()
            .and_then(|c| c.bounding().clone())
            .unwrap_or_else(|| DEFAULT_CAPABILITIES.iter().copied().collect());
        process.set_capabilities(Some(capabilities_with(&set, user.uid)?));
        let home = format!("HOME={}", user.home);
        match env.iter_mut().find(|e| e.starts_with("HOME=")) {
            Some(slot) => *slot = home,
            None => env.push(home),
        }
    }
    for entry in &opts.env {
        let key = match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => key,
            _ => return Err(SpecError::InvalidEnv(entry.clone())),
        };
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
        {
            Some(slot) => slot.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
    if opts.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    process.set_env(Some(env));
    Ok(process)
}

// ---------------------------------------------------------------------------
// Process

/// User and groups resolved from `-u` and the rootfs' user database.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResolvedUser {
    uid: u32,
    gid: u32,
    /// Primary gid first (CVE-2022-36109), then the groups listing the user.
    additional_gids: Vec<u32>,
    home: String,
}

fn build_process(
    opts: &SpecOptions,
    cwd: &str,
    env: Vec<String>,
    user: &ResolvedUser,
) -> Result<Process, SpecError> {
    let oci_user = UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .additional_gids(user.additional_gids.clone())
        .build()?;
    let mut process = ProcessBuilder::default()
        .terminal(opts.terminal)
        .user(oci_user)
        .args(opts.args.clone())
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities_for(user.uid)?)
        .no_new_privileges(false)
        .build()?;
    // The builder fills unset fields from `Process::default()` (which has a
    // 1024 RLIMIT_NOFILE); raising rlimits needs CAP_SYS_RESOURCE, so none.
    process.set_rlimits(None);
    process.set_oom_score_adj(None);
    Ok(process)
}

/// Docker's capabilities: bounding, effective and permitted for uid 0; only
/// bounding for other users (moby `oci.SetCapabilities`, matching what execve
/// does for a non-root user). No inheritable or ambient set (CVE-2022-24769).
fn capabilities_for(uid: u32) -> Result<LinuxCapabilities, SpecError> {
    let set: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    capabilities_with(&set, uid)
}

/// `set` as the process's capabilities, by the rule of [`capabilities_for`].
fn capabilities_with(set: &HashSet<Capability>, uid: u32) -> Result<LinuxCapabilities, SpecError> {
    let set = set.clone();
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .build()?;
    caps.set_inheritable(None);
    caps.set_ambient(None);
    if uid == 0 {
        caps.set_effective(Some(set.clone()));
        caps.set_permitted(Some(set));
    } else {
        caps.set_effective(None);
        caps.set_permitted(None);
    }
    Ok(caps)
}

fn validate_args(args: &[String]) -> Result<(), SpecError> {
    let first = args.first().ok_or(SpecError::NoCommand)?;
    if first.is_empty() {
        return Err(SpecError::InvalidArg(first.clone()));
    }
    if let Some(bad) = args.iter().find(|a| a.contains('\0')) {
        return Err(SpecError::InvalidArg(bad.clone()));
    }
    Ok(())
}

fn validate_hostname(name: &str) -> Result<(), SpecError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > HOSTNAME_MAX {
        Some("it is longer than 64 characters")
    } else if name.starts_with('-') {
        Some("it starts with '-'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        Some("it contains a character other than a letter, digit, '.' or '-'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(SpecError::InvalidHostname {
            name: name.to_string(),
            reason,
        }),
    }
}

/// Docker's order: `PATH`, `HOSTNAME`, `TERM=xterm` (with a terminal), then
/// `HOME` from the user database, then each `-e` replacing the variable of
/// the same name in place or appending a new one.
fn build_env(
    hostname: &str,
    terminal: bool,
    home: &str,
    user_env: &[String],
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH_ENV}"),
        format!("HOSTNAME={hostname}"),
    ];
    if terminal {
        env.push("TERM=xterm".to_string());
    }
    env.push(format!("HOME={home}"));
    for entry in user_env {
        let key = match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => key,
            _ => return Err(SpecError::InvalidEnv(entry.clone())),
        };
        let existing = env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key));
        match existing {
            Some(slot) => slot.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
    Ok(env)
}

// ---------------------------------------------------------------------------
// Users and groups (runc's `GetExecUser` semantics, as Docker uses them)

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines of a colon-separated database, skipping blanks, comments and NIS
/// (`+`/`-`) entries.
fn db_lines(db: &str) -> impl Iterator<Item = Vec<&str>> {
    db.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-')
        })
        .map(|l| l.split(':').collect())
}

fn parse_passwd(db: &str) -> Vec<PasswdEntry<'_>> {
    db_lines(db)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?,
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or(""),
            })
        })
        .collect()
}

fn parse_group(db: &str) -> Vec<GroupEntry<'_>> {
    db_lines(db)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?,
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A decimal id, `Err` when it is all digits but out of range (not a name).
fn parse_id(s: &str) -> Result<Option<u32>, ()> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| ())
}

fn resolve_user(
    spec: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let raw = spec.unwrap_or("");
    let invalid = || SpecError::InvalidUser(raw.to_string());
    let (user_part, group_part) = match raw.split_once(':') {
        Some((_, g)) if g.contains(':') => return Err(invalid()),
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (raw, None),
    };
    if raw.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    // No user given means uid 0, looked up like "-u 0" (for HOME and groups).
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let uid_arg = parse_id(user_part).map_err(|_| invalid())?;

    let users = passwd.map(parse_passwd).unwrap_or_default();
    let matched = users
        .iter()
        .find(|u| u.name == user_part || Some(u.uid) == uid_arg);
    let (uid, mut gid, name, home) = match (matched, uid_arg) {
        (Some(u), _) => (u.uid, u.gid, Some(u.name), u.home),
        (None, Some(uid)) => (uid, 0, None, "/"),
        (None, None) => return Err(SpecError::UnknownUser(user_part.to_string())),
    };
    let home = if home.is_empty() { "/" } else { home }.to_string();

    let groups = group.map(parse_group).unwrap_or_default();
    let mut additional_gids = Vec::new();
    match group_part {
        Some(g) => {
            let gid_arg = parse_id(g).map_err(|_| invalid())?;
            gid = match groups
                .iter()
                .find(|e| e.name == g || Some(e.gid) == gid_arg)
            {
                Some(e) => e.gid,
                None => gid_arg.ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?,
            };
        }
        None => {
            if let Some(name) = name {
                additional_gids.extend(
                    groups
                        .iter()
                        .filter(|e| e.members.contains(&name))
                        .map(|e| e.gid),
                );
            }
        }
    }
    // The primary group is always a supplementary group too, so it cannot be
    // shed to bypass group-deny permissions (moby CVE-2022-36109).
    additional_gids.insert(0, gid);
    let mut seen = HashSet::new();
    additional_gids.retain(|g| seen.insert(*g));

    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

// ---------------------------------------------------------------------------
// Reading the rootfs

/// A path component still to be walked while resolving inside the rootfs.
enum Step {
    Parent,
    Name(OsString),
}

fn push_steps(pending: &mut Vec<Step>, path: &Path) {
    // `pending` is a stack: push in reverse so the first component pops first.
    for comp in path.components().rev() {
        match comp {
            Component::Normal(n) => pending.push(Step::Name(n.to_os_string())),
            Component::ParentDir => pending.push(Step::Parent),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

/// Resolves `rel` inside `root` like a chroot would: symlinks are followed
/// with absolute targets re-rooted at `root`, and `..` never climbs above it.
/// `None` when a component is missing or there are too many symlinks.
fn resolve_in_root(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut pending = Vec::new();
    push_steps(&mut pending, rel);
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(step) = pending.pop() {
        let name = match step {
            Step::Parent => {
                resolved.pop();
                continue;
            }
            Step::Name(n) => n,
        };
        let candidate = resolved.join(&name);
        let meta = fs::symlink_metadata(root.join(&candidate)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return None;
            }
            let target = fs::read_link(root.join(&candidate)).ok()?;
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            push_steps(&mut pending, &target);
        } else {
            resolved = candidate;
        }
    }
    Some(root.join(resolved))
}

fn read_rootfs_file(rootfs: &Path, rel: &Path) -> Option<String> {
    let path = resolve_in_root(rootfs, rel)?;
    // Only regular files: a FIFO or device planted in the image must not block or leak.
    if !fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    fs::File::open(&path)
        .ok()?
        .take(MAX_USER_DB_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

// ---------------------------------------------------------------------------
// Docker's defaults

fn to_strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(to_strings(options))
        .build()?)
}

/// Docker's default mounts, in Docker's order. `/etc/hosts`, `/etc/hostname`
/// and `/etc/resolv.conf` bind mounts come with networking.
fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev", "relatime"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ])
}

/// Docker's namespaces. No cgroup namespace yet: Docker adds a private one on
/// cgroup v2 hosts only; berth will too once it detects the cgroup version.
fn default_namespaces() -> Result<Vec<LinuxNamespace>, SpecError> {
    [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
    ]
    .into_iter()
    .map(|typ| Ok(LinuxNamespaceBuilder::default().typ(typ).build()?))
    .collect()
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut rule = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access)
        .build()?;
    rule.set_major(major);
    rule.set_minor(minor);
    Ok(rule)
}

/// Deny everything, then allow what a Docker container gets: moby's explicit
/// list plus the rules runc adds implicitly (stated here so that any runtime
/// behaves the same). fuse is denied by the first rule; an explicit deny
/// after `c *:* m` would be a hole runc cannot punch on cgroup v1.
fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    use LinuxDeviceType::{A, B, C};
    let rwm = "rwm";
    Ok(vec![
        device_rule(false, A, None, None, rwm)?,
        device_rule(true, C, None, None, "m")?, // mknod of any char device
        device_rule(true, B, None, None, "m")?, // mknod of any block device
        device_rule(true, C, Some(1), Some(3), rwm)?, // /dev/null
        device_rule(true, C, Some(1), Some(5), rwm)?, // /dev/zero
        device_rule(true, C, Some(1), Some(7), rwm)?, // /dev/full
        device_rule(true, C, Some(1), Some(8), rwm)?, // /dev/random
        device_rule(true, C, Some(1), Some(9), rwm)?, // /dev/urandom
        device_rule(true, C, Some(5), Some(0), rwm)?, // /dev/tty
        device_rule(true, C, Some(5), Some(1), rwm)?, // /dev/console
        device_rule(true, C, Some(5), Some(2), rwm)?, // /dev/ptmx
        device_rule(true, C, Some(136), None, rwm)?, // /dev/pts/*
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
broken:x:notanumber:0::/:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,alice
alice:x:1000:
bob:x:1001:
audio:x:29:alice, bob
staff:x:50:
nogroup:x:65534:
";

    fn opts() -> SpecOptions {
        SpecOptions {
            rootfs: PathBuf::from("/var/lib/berth/c1/rootfs"),
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            id: "0123456789abcdef0123".into(),
            cgroups_path: "/berth/0123456789abcdef0123".into(),
            ..Default::default()
        }
    }

    fn gen(o: &SpecOptions) -> Spec {
        generate(o, Some(PASSWD), Some(GROUP)).unwrap()
    }

    fn user_of(spec: &str) -> ResolvedUser {
        resolve_user(Some(spec), Some(PASSWD), Some(GROUP)).unwrap()
    }

    fn env_of(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().env().clone().unwrap()
    }

    fn caps_set() -> HashSet<Capability> {
        DEFAULT_CAPABILITIES.iter().copied().collect()
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "berth-spec-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn defaults_match_docker() {
        let spec = gen(&opts());
        assert_eq!(spec.version(), oci_spec::runtime::VERSION);
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert!(spec.annotations().is_none());

        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/var/lib/berth/c1/rootfs"));
        assert_eq!(root.readonly(), Some(false));

        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &opts().args);
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), None);
        assert!(p.rlimits().is_none());
        assert!(p.oom_score_adj().is_none());
        assert!(p.apparmor_profile().is_none());
        assert_eq!(p.user().uid(), 0);
        assert_eq!(p.user().gid(), 0);
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[0, 10][..]));

        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref(), Some(&caps_set()));
        assert_eq!(caps.effective().as_ref(), Some(&caps_set()));
        assert_eq!(caps.permitted().as_ref(), Some(&caps_set()));
        assert!(caps.inheritable().is_none());
        assert!(caps.ambient().is_none());
        assert_eq!(caps_set().len(), 14);

        let mounts: Vec<(String, String, Vec<String>)> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.typ().clone().unwrap(),
                    m.options().clone().unwrap(),
                )
            })
            .collect();
        let dests: Vec<&str> = mounts.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        assert_eq!(mounts[0].1, "proc");
        assert_eq!(mounts[0].2, ["nosuid", "noexec", "nodev"]);
        assert_eq!(mounts[2].1, "devpts");
        assert!(mounts[2].2.contains(&"newinstance".to_string()));
        assert!(mounts[2].2.contains(&"gid=5".to_string()));
        assert_eq!(mounts[3].1, "sysfs");
        assert!(mounts[3].2.contains(&"ro".to_string()));
        assert_eq!(mounts[4].1, "cgroup");
        assert!(mounts[4].2.contains(&"ro".to_string()));
        assert_eq!(mounts[6].1, "tmpfs");
        assert!(mounts[6].2.contains(&"mode=1777".to_string()));
        assert!(mounts[6].2.contains(&"size=65536k".to_string()));

        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/0123456789abcdef0123"))
        );
        assert_eq!(
            linux.masked_paths().as_ref().unwrap(),
            &to_strings(&MASKED_PATHS)
        );
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        let ro = linux.readonly_paths().as_ref().unwrap();
        assert_eq!(ro[..READONLY_PATHS.len()], to_strings(&READONLY_PATHS));
        assert_eq!(
            ro[READONLY_PATHS.len()..],
            to_strings(&CGROUP_READONLY_PATHS)
        );
        assert!(ro.contains(&"/sys/fs/cgroup/pids".to_string()));
        let ns: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(ns.len(), 5);
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
        ] {
            assert!(ns.contains(&t), "{t:?} namespace missing");
        }
        assert!(!ns.contains(&LinuxNamespaceType::Cgroup));
        assert!(!ns.contains(&LinuxNamespaceType::User));
        assert!(linux.devices().is_none());
        assert!(linux.sysctl().is_none());
        let seccomp = linux
            .seccomp()
            .as_ref()
            .expect("the default seccomp profile");
        assert_eq!(
            seccomp.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(seccomp.default_errno_ret(), Some(1));

        let rules: Vec<String> = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", if r.allow() { "allow" } else { "deny" }, r))
            .collect();
        assert_eq!(rules[0], "deny a *:* rwm");
        for want in [
            "allow c *:* m",
            "allow b *:* m",
            "allow c 1:3 rwm",
            "allow c 1:5 rwm",
            "allow c 1:7 rwm",
            "allow c 1:8 rwm",
            "allow c 1:9 rwm",
            "allow c 5:0 rwm",
            "allow c 5:2 rwm",
            "allow c 136:* rwm",
        ] {
            assert!(
                rules.contains(&want.to_string()),
                "missing rule {want}: {rules:?}"
            );
        }
    }

    #[test]
    fn default_env() {
        let spec = gen(&opts());
        assert_eq!(
            env_of(&spec),
            [
                format!("PATH={DEFAULT_PATH_ENV}"),
                "HOSTNAME=0123456789ab".to_string(),
                "HOME=/root".to_string(),
            ]
        );
        // With a terminal, TERM=xterm as Docker does; no passwd, HOME=/.
        let mut o = opts();
        o.terminal = true;
        let spec = generate(&o, None, None).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
        assert_eq!(
            env_of(&spec),
            [
                format!("PATH={DEFAULT_PATH_ENV}"),
                "HOSTNAME=0123456789ab".to_string(),
                "TERM=xterm".to_string(),
                "HOME=/".to_string(),
            ]
        );
    }

    #[test]
    fn env_overrides_in_place_and_appends_in_order() {
        let mut o = opts();
        o.hostname = Some("web".into());
        o.env = vec![
            "FOO=1".into(),
            "PATH=/bin".into(),
            "HOME=/srv".into(),
            "EMPTY=".into(),
            "FOO=2".into(),
            "X=a=b".into(),
        ];
        assert_eq!(
            env_of(&gen(&o)),
            [
                "PATH=/bin",
                "HOSTNAME=web",
                "HOME=/srv",
                "FOO=2",
                "EMPTY=",
                "X=a=b"
            ]
        );
    }

    #[test]
    fn env_errors() {
        for bad in ["FOO", "=bar", "", "A=b\0c"] {
            let mut o = opts();
            o.env = vec!["OK=1".into(), bad.into()];
            let err = generate(&o, None, None).unwrap_err();
            assert!(
                matches!(err, SpecError::InvalidEnv(ref e) if e == bad),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("NAME=VALUE"));
        }
    }

    #[test]
    fn user_by_name() {
        let u = user_of("alice");
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, "/home/alice");
        // Primary gid first, then every group listing alice.
        assert_eq!(u.additional_gids, [1000, 10, 29]);

        let u = user_of("bob");
        assert_eq!((u.uid, u.gid), (1001, 1001));
        assert_eq!(u.additional_gids, [1001, 29]);

        let u = user_of("nobody");
        assert_eq!(
            (u.uid, u.gid, u.home.as_str()),
            (65534, 65534, "/nonexistent")
        );
        assert_eq!(u.additional_gids, [65534]);
    }

    #[test]
    fn user_by_uid() {
        // A uid in passwd resolves like its name.
        let u = user_of("1000");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(u.additional_gids, [1000, 10, 29]);
        // A uid not in passwd is fine: gid 0, HOME=/.
        let u = user_of("4242");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.additional_gids, [0]);
        // Without any passwd file as well.
        let u = resolve_user(Some("4242"), None, None).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        // No -u: root from passwd.
        let u = resolve_user(None, Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.additional_gids, [0, 10]);
    }

    #[test]
    fn user_with_explicit_group() {
        // uid:gid, both numeric and unknown: fine.
        let u = user_of("4242:4343");
        assert_eq!((u.uid, u.gid), (4242, 4343));
        assert_eq!(u.additional_gids, [4343]);
        // name:group: explicit group, no membership groups (runc semantics).
        let u = user_of("alice:staff");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 50, "/home/alice"));
        assert_eq!(u.additional_gids, [50]);
        // name:gid.
        let u = user_of("alice:29");
        assert_eq!((u.uid, u.gid), (1000, 29));
        // uid:name.
        let u = user_of("1001:wheel");
        assert_eq!((u.uid, u.gid), (1001, 10));
        // Trailing colon means no group.
        assert_eq!(user_of("alice:"), user_of("alice"));
        // ":GID" means root with that group.
        let u = user_of(":staff");
        assert_eq!((u.uid, u.gid), (0, 50));

        let spec = generate(
            &SpecOptions {
                user: Some("alice:staff".into()),
                ..opts()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 50));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[50][..]));
        assert!(env_of(&spec).contains(&"HOME=/home/alice".to_string()));
    }

    #[test]
    fn non_root_user_gets_bounding_caps_only() {
        let spec = generate(
            &SpecOptions {
                user: Some("1000".into()),
                ..opts()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(caps.bounding().as_ref(), Some(&caps_set()));
        assert!(caps.effective().is_none());
        assert!(caps.permitted().is_none());
        assert!(caps.inheritable().is_none());
        assert!(caps.ambient().is_none());
    }

    #[test]
    fn user_errors() {
        let err = resolve_user(Some("carol"), Some(PASSWD), Some(GROUP)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user carol: no matching entries in the container's /etc/passwd; \
             use a numeric UID or add the user to the image"
        );
        // A name never resolves without a passwd file.
        assert!(matches!(
            resolve_user(Some("root"), None, None),
            Err(SpecError::UnknownUser(_))
        ));
        // Malformed passwd lines are skipped, not matched.
        assert!(matches!(
            resolve_user(Some("broken"), Some(PASSWD), Some(GROUP)),
            Err(SpecError::UnknownUser(_))
        ));
        let err = resolve_user(Some("alice:admins"), Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(matches!(err, SpecError::UnknownGroup(ref g) if g == "admins"));
        assert!(err.to_string().contains("/etc/group"));
        for bad in ["a:b:c", "99999999999", "1:99999999999", "al ice", "-1"] {
            let err = resolve_user(Some(bad), Some(PASSWD), Some(GROUP)).unwrap_err();
            assert!(
                matches!(err, SpecError::InvalidUser(_) | SpecError::UnknownUser(_)),
                "{bad}: {err}"
            );
        }
        assert!(matches!(
            resolve_user(Some("a:b:c"), None, None),
            Err(SpecError::InvalidUser(_))
        ));
        assert!(matches!(
            resolve_user(Some("99999999999"), None, None),
            Err(SpecError::InvalidUser(_))
        ));
    }

    #[test]
    fn bad_input_errors() {
        let mut o = opts();
        o.args.clear();
        assert!(matches!(
            generate(&o, None, None),
            Err(SpecError::NoCommand)
        ));

        let mut o = opts();
        o.args = vec!["".into()];
        assert!(matches!(
            generate(&o, None, None),
            Err(SpecError::InvalidArg(_))
        ));

        let mut o = opts();
        o.args.push("a\0b".into());
        assert!(matches!(
            generate(&o, None, None),
            Err(SpecError::InvalidArg(_))
        ));

        let mut o = opts();
        o.cwd = Some("app".into());
        let err = generate(&o, None, None).unwrap_err();
        assert!(matches!(err, SpecError::RelativeCwd(_)));
        assert!(err.to_string().contains("absolute"));

        let mut o = opts();
        o.cwd = Some("/app".into());
        let spec = generate(&o, None, None).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/app"));

        let mut o = opts();
        o.rootfs = PathBuf::from("rootfs");
        assert!(matches!(
            generate(&o, None, None),
            Err(SpecError::RelativeRootfs(_))
        ));

        for bad in ["", "-web", "web_1", "wéb", "a b", "x".repeat(65).as_str()] {
            let mut o = opts();
            o.hostname = Some(bad.to_string());
            let err = generate(&o, None, None).unwrap_err();
            assert!(matches!(err, SpecError::InvalidHostname { .. }), "{bad:?}");
            assert!(!err.to_string().contains('\n'));
        }
        for good in ["web", "web-1.example.com", "A9", "x".repeat(64).as_str()] {
            let mut o = opts();
            o.hostname = Some(good.to_string());
            let spec = generate(&o, None, None).unwrap();
            assert_eq!(spec.hostname().as_deref(), Some(good));
            assert!(env_of(&spec).contains(&format!("HOSTNAME={good}")));
        }
        // A container id that cannot make a hostname.
        let mut o = opts();
        o.id = String::new();
        assert!(matches!(
            generate(&o, None, None),
            Err(SpecError::InvalidHostname { .. })
        ));
    }

    #[test]
    fn readonly_rootfs_and_empty_cgroups_path() {
        let mut o = opts();
        o.readonly_rootfs = true;
        o.cgroups_path.clear();
        let spec = gen(&o);
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert!(spec.linux().as_ref().unwrap().cgroups_path().is_none());
    }

    #[test]
    fn json_round_trip() {
        let mut o = opts();
        o.user = Some("alice".into());
        o.terminal = true;
        o.env = vec!["A=1".into()];
        let spec = gen(&o);
        let json = serde_json::to_string_pretty(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["ociVersion"], oci_spec::runtime::VERSION);
        // Omitted, as Docker writes it (and as libcontainer needs it).
        assert!(v["process"].get("noNewPrivileges").is_none());
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(v["process"].get("rlimits").is_none());
        assert!(v["process"].get("oomScoreAdj").is_none());
        assert!(v["process"]["capabilities"].get("inheritable").is_none());
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/0123456789abcdef0123");
        assert_eq!(v["root"]["path"], "/var/lib/berth/c1/rootfs");
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([1000, 10, 29])
        );
    }

    fn bundle_spec(root: &str) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": { "user": { "uid": 0, "gid": 0 }, "args": ["sh"], "cwd": "/" },
            "root": { "path": root, "readonly": true },
            "linux": { "namespaces": [ { "type": "pid" } ] }
        }))
        .unwrap()
    }

    #[test]
    fn adapt_bundle_relative_root() {
        let bundle = tempdir("bundle");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let spec = adapt_bundle(bundle_spec("rootfs"), &bundle, "/berth/b1", None).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), &bundle.join("rootfs"));
        assert_eq!(root.readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/b1"))
        );
        // Untouched otherwise.
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 1);
        assert!(linux.masked_paths().is_none());
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_deref(),
            Some(&["sh".to_string()][..])
        );

        // A relative bundle dir is made absolute too.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(&bundle, &cwd);
        let spec = adapt_bundle(bundle_spec("./rootfs"), &rel, "", None).unwrap();
        assert!(spec.root().as_ref().unwrap().path().is_absolute());
        fs::remove_dir_all(&bundle).unwrap();
    }

    /// `target` relative to `base`, with `..` (both absolute).
    fn pathdiff(target: &Path, base: &Path) -> PathBuf {
        let mut rel = PathBuf::new();
        for _ in base.components().skip(1) {
            rel.push("..");
        }
        rel.join(target.strip_prefix("/").unwrap())
    }

    #[test]
    fn adapt_bundle_keeps_cgroups_path_and_replaces_args() {
        let bundle = tempdir("bundle2");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let abs_root = bundle.join("rootfs");
        let mut spec = bundle_spec(abs_root.to_str().unwrap());
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_cgroups_path(Some(PathBuf::from("/mine")));
        let spec = adapt_bundle(
            spec,
            Path::new("/elsewhere"),
            "/berth/b2",
            Some(vec!["echo".into(), "hi".into()]),
        )
        .unwrap();
        assert_eq!(spec.root().as_ref().unwrap().path(), &abs_root);
        assert_eq!(
            spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/mine"))
        );
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_deref(),
            Some(&["echo".to_string(), "hi".to_string()][..])
        );

        // No linux section: one is added with only the cgroup path.
        let mut spec = bundle_spec("rootfs");
        spec.set_linux(None);
        let spec = adapt_bundle(spec, &bundle, "/berth/b3", None).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/b3"))
        );
        assert!(linux.namespaces().is_none());
        assert!(linux.resources().is_none());
        fs::remove_dir_all(&bundle).unwrap();
    }

    #[test]
    fn adapt_bundle_errors() {
        let bundle = tempdir("bundle3");
        let mut spec = bundle_spec("rootfs");
        spec.set_process(None);
        let err = adapt_bundle(spec, &bundle, "", None).unwrap_err();
        assert!(matches!(err, SpecError::BundleNoProcess));
        assert!(err.to_string().contains("\"process\""));

        let mut spec = bundle_spec("rootfs");
        spec.set_root(None);
        assert!(matches!(
            adapt_bundle(spec, &bundle, "", None),
            Err(SpecError::BundleNoRoot)
        ));

        // rootfs missing.
        assert!(matches!(
            adapt_bundle(bundle_spec("rootfs"), &bundle, "", None),
            Err(SpecError::BundleRootfsMissing(_))
        ));

        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        assert!(matches!(
            adapt_bundle(bundle_spec("rootfs"), &bundle, "", Some(vec![])),
            Err(SpecError::NoCommand)
        ));
        fs::remove_dir_all(&bundle).unwrap();
    }

    #[test]
    fn read_user_db_stays_inside_rootfs() {
        let dir = tempdir("userdb");
        let rootfs = dir.join("rootfs");
        assert_eq!(read_user_db(&rootfs), (None, None));

        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::create_dir_all(rootfs.join("data")).unwrap();
        assert_eq!(read_user_db(&rootfs), (None, None));
        fs::write(rootfs.join("etc/group"), GROUP).unwrap();
        fs::write(rootfs.join("data/passwd"), PASSWD).unwrap();
        // An absolute symlink resolves inside the rootfs, not on the host.
        std::os::unix::fs::symlink("/data/passwd", rootfs.join("etc/passwd")).unwrap();
        let (p, g) = read_user_db(&rootfs);
        assert_eq!(p.as_deref(), Some(PASSWD));
        assert_eq!(g.as_deref(), Some(GROUP));

        // A host file outside the rootfs is never reached through `..` or `/`.
        fs::write(dir.join("secret"), "host:x:7:7::/host:/bin/sh\n").unwrap();
        fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../../secret", rootfs.join("etc/passwd")).unwrap();
        assert_eq!(read_user_db(&rootfs).0, None);
        fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), rootfs.join("etc/passwd")).unwrap();
        assert_eq!(read_user_db(&rootfs).0, None);

        // Symlink loops and directories give None.
        fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("passwd", rootfs.join("etc/passwd")).unwrap();
        assert_eq!(read_user_db(&rootfs).0, None);
        fs::remove_file(rootfs.join("etc/passwd")).unwrap();
        fs::create_dir(rootfs.join("etc/passwd")).unwrap();
        assert_eq!(read_user_db(&rootfs).0, None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exec_process_inherits_and_overrides() {
        let opts = SpecOptions {
            rootfs: PathBuf::from("/r"),
            args: vec!["sh".into()],
            env: vec!["A=1".into()],
            cwd: Some("/srv".into()),
            cgroups_path: "/berth/x".into(),
            id: "0123456789abcdef".into(),
            ..Default::default()
        };
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        let spec = generate(&opts, Some(passwd), None).unwrap();
        let base = spec.process().clone().unwrap();
        let p = exec_process(
            &base,
            &ExecOptions {
                args: vec!["id".into()],
                env: vec!["A=2".into(), "B=3".into()],
                cwd: None,
                user: Some("nobody".into()),
                ..Default::default()
            },
            Some(passwd),
            None,
        )
        .unwrap();
        assert_eq!(p.terminal(), Some(false));
        let tty = exec_process(
            &base,
            &ExecOptions {
                args: vec!["sh".into()],
                terminal: true,
                console_size: Some((40, 120)),
                ..Default::default()
            },
            Some(passwd),
            None,
        )
        .unwrap();
        assert_eq!(tty.terminal(), Some(true));
        let size = tty.console_size().unwrap();
        assert_eq!((size.height(), size.width()), (40, 120));
        assert!(tty
            .env()
            .clone()
            .unwrap()
            .contains(&"TERM=xterm".to_string()));
        assert_eq!(p.args().clone().unwrap(), vec!["id".to_string()]);
        assert_eq!(p.cwd(), &PathBuf::from("/srv"));
        assert_eq!(p.user().uid(), 65534);
        let env = p.env().clone().unwrap();
        assert!(env.contains(&"A=2".to_string()));
        assert!(env.contains(&"B=3".to_string()));
        assert!(env.contains(&"HOME=/nonexistent".to_string()));
        assert!(!env.contains(&"A=1".to_string()));
        assert!(exec_process(&base, &ExecOptions::default(), None, None).is_err());
        let rel = ExecOptions {
            args: vec!["id".into()],
            cwd: Some("rel".into()),
            ..Default::default()
        };
        assert!(exec_process(&base, &rel, None, None).is_err());
    }

    #[test]
    fn limits_become_cgroup_resources() {
        let mut opts = SpecOptions {
            rootfs: PathBuf::from("/r"),
            args: vec!["sh".into()],
            cgroups_path: "/berth/x".into(),
            id: "0123456789abcdef".into(),
            ..Default::default()
        };
        opts.limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids: Some(100),
            ..Default::default()
        };
        let spec = generate(&opts, None, None).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(150_000));
        assert_eq!(r.cpu().as_ref().unwrap().period(), Some(100_000));
        assert_eq!(r.pids().unwrap().limit(), 100);
        for bad in [
            Limits {
                memory: Some(1 << 20),
                ..Default::default()
            },
            Limits {
                cpus: Some(0.0),
                ..Default::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Default::default()
            },
            Limits {
                pids: Some(0),
                ..Default::default()
            },
        ] {
            opts.limits = bad;
            assert!(matches!(
                generate(&opts, None, None),
                Err(SpecError::InvalidLimit(_))
            ));
        }
    }

    #[test]
    fn userns_maps_ids_and_keeps_sysfs() {
        let mut o = opts();
        o.userns = Some(IdRange {
            host: 100_000_000,
            size: 65536,
        });
        let spec = gen(&o);
        assert_eq!(
            IdRange::of_spec(&spec),
            Some(IdRange {
                host: 100_000_000,
                size: 65536
            })
        );
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.gid_mappings(), linux.uid_mappings());
        let sys = |spec: &Spec| {
            spec.mounts()
                .iter()
                .flatten()
                .find(|m| m.destination() == Path::new("/sys"))
                .cloned()
                .unwrap()
        };
        // Its own sysfs (the network namespace is the user namespace's).
        assert_eq!(sys(&spec).typ().as_deref(), Some("sysfs"));
        // The host's, read-only, when it joins another's network namespace.
        let mut joined = spec.clone();
        bind_host_sys(&mut joined).unwrap();
        assert_eq!(sys(&joined).typ().as_deref(), Some("bind"));
        assert!(sys(&joined).options().iter().flatten().any(|o| o == "ro"));
        assert_eq!(IdRange::of_spec(&gen(&opts())), None);

        o.security.privileged = true;
        let e = generate(&o, Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(e.to_string().contains("--userns=host"), "{e}");
        o.security.privileged = false;
        o.user = Some("70000".into());
        let e = generate(&o, Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        o.user = None;
        o.userns = Some(IdRange {
            host: u32::MAX - 10,
            size: 65536,
        });
        assert!(generate(&o, Some(PASSWD), Some(GROUP)).is_err());
    }
}
