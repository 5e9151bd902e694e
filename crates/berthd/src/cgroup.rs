//! The host's cgroups, as berthd sees them: which kind (v1, hybrid, v2) and
//! which controllers, detected once at start; whether a container's limits
//! can be applied (checked at create and update, so that a limit the host
//! cannot enforce is an error, never a silently unlimited container); and
//! the numbers `stats` shows, read straight from a container's cgroup files.
//!
//! berthd reads the files itself rather than asking the shims: a shim stays
//! a small, idle process (its memory is a tested budget) and one sampler in
//! berthd reads every container once per tick whatever the number of
//! clients (see `stats.rs`). Every path is the mount point joined with the
//! container's `linux.cgroupsPath`, which is how runc and libcontainer lay
//! them out (no systemd driver).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_core::spec::parse_cpuset;
use oci_spec::runtime::LinuxResources;

/// Which cgroup hierarchy the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only v1 hierarchies (or v1 beside a cgroup2 mount that holds no
    /// controller berth uses: "hybrid"; runtimes use v1 there).
    V1,
    /// The unified hierarchy at the cgroup root.
    V2,
}

/// The host's cgroup layout.
#[derive(Debug, Clone)]
pub struct Host {
    pub kind: Kind,
    /// v1: controller name → its mount point (`cpu` and `cpuacct` both map to
    /// `/sys/fs/cgroup/cpu,cpuacct` when mounted together).
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount, if any (the root on v2, `unified` on hybrid).
    pub v2: Option<PathBuf>,
    /// Controllers enabled in the cgroup2 mount's root.
    pub v2_controllers: BTreeSet<String>,
}

static HOST: OnceLock<Host> = OnceLock::new();

/// The host's cgroups, detected on first use (berthd calls it at start).
pub fn host() -> &'static Host {
    HOST.get_or_init(|| {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Host::from_mountinfo(&info)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            if let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(d), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Host {
    /// Parse `/proc/self/mountinfo`. The v2 controllers are read from the
    /// cgroup2 mount's `cgroup.controllers`.
    pub fn from_mountinfo(info: &str) -> Host {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let _source = r.next();
            let opts = r.next().unwrap_or("");
            let Some(mp) = left.split(' ').nth(4).map(unescape) else {
                continue;
            };
            match fstype {
                "cgroup" => {
                    for o in opts.split(',') {
                        if !matches!(o, "rw" | "ro") && !o.contains('=') {
                            v1.entry(o.to_string())
                                .or_insert_with(|| PathBuf::from(&mp));
                        }
                    }
                }
                "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(&mp)),
                _ => {}
            }
        }
        let v2_controllers = v2
            .as_ref()
            .and_then(|p| fs::read_to_string(p.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let kind = if v1.is_empty() && v2.is_some() {
            Kind::V2
        } else {
            Kind::V1
        };
        Host {
            kind,
            v1,
            v2,
            v2_controllers,
        }
    }

    /// "v1", "v1 (hybrid: cgroup2 at …)" or "v2", for `berth info`.
    pub fn describe(&self) -> String {
        match (self.kind, &self.v2) {
            (Kind::V2, _) => "v2".into(),
            (Kind::V1, Some(p)) => format!("v1 (hybrid: cgroup2 at {})", p.display()),
            (Kind::V1, None) => "v1".into(),
        }
    }

    /// The controllers berth can use.
    pub fn controllers(&self) -> Vec<String> {
        match self.kind {
            Kind::V1 => self
                .v1
                .keys()
                .filter(|k| !k.starts_with("name="))
                .cloned()
                .collect(),
            Kind::V2 => self.v2_controllers.iter().cloned().collect(),
        }
    }

    fn v1_has(&self, controller: &str, file: &str) -> bool {
        self.v1
            .get(controller)
            .is_some_and(|m| m.join(file).exists())
    }

    fn v2_has(&self, controller: &str) -> bool {
        self.v2_controllers.contains(controller)
    }

    /// Needs `controller` (v1: with `file` in its root; v2: enabled).
    fn need(&self, flag: &str, controller: &str, file: &str, why: &str) -> Result<(), String> {
        let ok = match self.kind {
            Kind::V1 => self.v1_has(controller, file),
            Kind::V2 => self.v2_has(if controller == "blkio" {
                "io"
            } else {
                controller
            }),
        };
        if ok {
            return Ok(());
        }
        let what = match self.kind {
            Kind::V1 => format!("the cgroup v1 {controller} controller has no {file}"),
            Kind::V2 => format!(
                "the cgroup v2 {} controller is not enabled",
                if controller == "blkio" {
                    "io"
                } else {
                    controller
                }
            ),
        };
        Err(format!(
            "{flag} cannot be applied on this host: {what}{why}; drop the flag or enable the controller"
        ))
    }

    /// The CPUs containers may use (the root cpuset's), for `--cpuset-cpus`
    /// and `--cpus`.
    pub fn cpus(&self) -> BTreeSet<u32> {
        self.root_cpuset("cpus")
    }

    fn root_cpuset(&self, which: &str) -> BTreeSet<u32> {
        let from_cgroup = match self.kind {
            Kind::V1 => self
                .v1
                .get("cpuset")
                .map(|m| m.join(format!("cpuset.effective_{which}"))),
            Kind::V2 => self
                .v2
                .as_ref()
                .map(|m| m.join(format!("cpuset.{which}.effective"))),
        };
        let fallback = if which == "cpus" {
            "/sys/devices/system/cpu/online"
        } else {
            "/sys/devices/system/node/online"
        };
        from_cgroup
            .and_then(|p| fs::read_to_string(p).ok())
            .filter(|s| !s.trim().is_empty())
            .or_else(|| fs::read_to_string(fallback).ok())
            .and_then(|s| parse_cpuset(&s).ok())
            .unwrap_or_else(|| {
                if which == "cpus" {
                    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                    (0..u32::try_from(n).unwrap_or(1)).collect()
                } else {
                    [0].into()
                }
            })
    }

    /// Can the host apply `r`? One line saying which flag cannot, and why.
    pub fn check(&self, r: &LinuxResources) -> Result<(), String> {
        if let Some(m) = r.memory() {
            if m.limit().is_some() {
                self.need("--memory", "memory", "memory.limit_in_bytes", "")?;
            }
            if m.swap().is_some() {
                self.need(
                    "--memory-swap",
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    " (swap accounting is off: boot with swapaccount=1)",
                )?;
            }
            if m.reservation().is_some() {
                self.need(
                    "--memory-reservation",
                    "memory",
                    "memory.soft_limit_in_bytes",
                    "",
                )?;
            }
            if m.kernel().is_some() {
                return Err("--kernel-memory is not supported: Linux deprecated kernel memory limits; drop it (linux.resources.memory.kernel)".into());
            }
        }
        if let Some(c) = r.cpu() {
            if c.quota().is_some() || c.period().is_some() {
                self.need("--cpus/--cpu-quota", "cpu", "cpu.cfs_quota_us", "")?;
            }
            if c.shares().is_some() {
                self.need("--cpu-shares", "cpu", "cpu.shares", "")?;
            }
            let avail = self.cpus();
            if let (Some(q), Some(p)) = (c.quota(), c.period()) {
                let n = avail.len().max(1) as f64;
                let want = q as f64 / p as f64;
                if q > 0 && p > 0 && want > n + 1e-9 {
                    return Err(format!(
                        "--cpus {want} is more than this host has: give at most {n} (it has {} CPUs)",
                        avail.len()
                    ));
                }
            }
            for (flag, list, which) in [
                ("--cpuset-cpus", c.cpus(), "cpus"),
                ("--cpuset-mems", c.mems(), "mems"),
            ] {
                let Some(list) = list else { continue };
                self.need(flag, "cpuset", "cpuset.cpus", "")?;
                let want = parse_cpuset(list).map_err(|e| format!("{flag} {list:?}: {e}"))?;
                let have = self.root_cpuset(which);
                if !want.is_subset(&have) {
                    return Err(format!(
                        "{flag} {list} asks for {which} this host does not have: it has {}",
                        show_set(&have)
                    ));
                }
            }
        }
        if let Some(p) = r.pids() {
            if p.limit() > 0 {
                // The root of the hierarchy has no pids.max: the controller is enough.
                self.need("--pids-limit", "pids", "cgroup.procs", "")?;
            }
        }
        if let Some(io) = r.block_io() {
            if io.weight().is_some() {
                let ok = match self.kind {
                    Kind::V1 => {
                        self.v1_has("blkio", "blkio.weight")
                            || self.v1_has("blkio", "blkio.bfq.weight")
                    }
                    Kind::V2 => self.v2_has("io"),
                };
                if !ok {
                    return Err("--blkio-weight cannot be applied on this host: the block I/O scheduler has no weights (no blkio.weight or blkio.bfq.weight: the disk does not use BFQ); drop the flag".into());
                }
            }
            let throttled = io
                .throttle_read_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
                || io
                    .throttle_write_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty());
            if throttled {
                self.need(
                    "--device-read-bps/--device-write-bps",
                    "blkio",
                    "blkio.throttle.read_bps_device",
                    "",
                )?;
            }
        }
        Ok(())
    }

    /// Read the numbers of the cgroup at `cgroups_path` (`/berth/<id>`).
    pub fn sample(&self, cgroups_path: &Path) -> io::Result<Sample> {
        let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
        match self.kind {
            Kind::V1 => {
                let dir = |c: &str| -> io::Result<PathBuf> {
                    self.v1
                        .get(c)
                        .map(|m| m.join(rel))
                        .ok_or_else(|| io::Error::other(format!("no {c} cgroup")))
                };
                sample_v1(
                    &dir("cpuacct")?,
                    &dir("memory")?,
                    dir("blkio").ok(),
                    dir("pids").ok(),
                )
            }
            Kind::V2 => {
                let root = self
                    .v2
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no cgroup2 mount"))?;
                sample_v2(&root.join(rel))
            }
        }
    }
}

impl Host {
    /// The processes (thread group ids) in the cgroup at `cgroups_path`,
    /// from its `cgroup.procs` (on v1, in the first of the pids, memory,
    /// cpuacct and freezer hierarchies that has it).
    pub fn procs(&self, cgroups_path: &Path) -> io::Result<Vec<i32>> {
        let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
        let dir = match self.kind {
            Kind::V1 => ["pids", "memory", "cpuacct", "freezer"]
                .iter()
                .filter_map(|c| self.v1.get(*c))
                .map(|m| m.join(rel))
                .find(|d| d.is_dir())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no cgroup {}", cgroups_path.display()),
                    )
                })?,
            Kind::V2 => self
                .v2
                .as_ref()
                .ok_or_else(|| io::Error::other("no cgroup2 mount"))?
                .join(rel),
        };
        Ok(read(&dir.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }
}

fn show_set(s: &BTreeSet<u32>) -> String {
    let v: Vec<String> = s.iter().map(u32::to_string).collect();
    v.join(",")
}

/// One reading of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU time used, all CPUs, in ns.
    pub cpu_ns: u64,
    /// Memory in use without the inactive page cache (as Docker counts it).
    pub memory: u64,
    /// The memory limit; None: unlimited.
    pub memory_limit: Option<u64>,
    /// Bytes read from and written to block devices.
    pub blkio_read: u64,
    pub blkio_write: u64,
    /// Processes (tasks) in the cgroup.
    pub pids: u64,
    pub pids_limit: Option<u64>,
    /// Times the OOM killer acted in the cgroup (v1 `memory.oom_control`,
    /// v2 `memory.events`).
    pub oom_kills: u64,
}

fn read(p: &Path) -> io::Result<String> {
    fs::read_to_string(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

fn read_u64(p: &Path) -> io::Result<u64> {
    read(p)?
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("{}: {e}", p.display())))
}

/// "max" (v2) or a v1 value near `i64::MAX` (page-rounded) is no limit.
fn read_limit(p: &Path) -> Option<u64> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| *v < (1u64 << 62))
}

/// `key value` lines (memory.stat, cpu.stat).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn sample_v1(
    cpuacct: &Path,
    memory: &Path,
    blkio: Option<PathBuf>,
    pids: Option<PathBuf>,
) -> io::Result<Sample> {
    let cpu_ns = read_u64(&cpuacct.join("cpuacct.usage"))?;
    let usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
    let stat = read(&memory.join("memory.stat")).unwrap_or_default();
    let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
    let (mut blkio_read, mut blkio_write) = (0, 0);
    if let Some(b) = blkio {
        // The throttle counters see every I/O whatever the scheduler; the
        // CFQ/BFQ ones only what that scheduler did.
        let text = fs::read_to_string(b.join("blkio.throttle.io_service_bytes_recursive"))
            .or_else(|_| fs::read_to_string(b.join("blkio.io_service_bytes_recursive")))
            .unwrap_or_default();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let [_, op, v] = f[..] {
                let v: u64 = v.parse().unwrap_or(0);
                match op {
                    "Read" => blkio_read += v,
                    "Write" => blkio_write += v,
                    _ => {}
                }
            }
        }
    }
    let (pids_n, pids_limit) = match pids {
        Some(p) => (
            read_u64(&p.join("pids.current")).unwrap_or(0),
            read_limit(&p.join("pids.max")),
        ),
        None => (0, None),
    };
    Ok(Sample {
        cpu_ns,
        memory: usage.saturating_sub(inactive),
        memory_limit: read_limit(&memory.join("memory.limit_in_bytes")),
        blkio_read,
        blkio_write,
        pids: pids_n,
        pids_limit,
        oom_kills: fs::read_to_string(memory.join("memory.oom_control"))
            .ok()
            .and_then(|t| stat_field(&t, "oom_kill"))
            .unwrap_or(0),
    })
}

fn sample_v2(dir: &Path) -> io::Result<Sample> {
    let cpu = read(&dir.join("cpu.stat"))?;
    let cpu_ns = stat_field(&cpu, "usage_usec")
        .unwrap_or(0)
        .saturating_mul(1000);
    let usage = read_u64(&dir.join("memory.current"))?;
    let stat = read(&dir.join("memory.stat")).unwrap_or_default();
    let inactive = stat_field(&stat, "inactive_file").unwrap_or(0);
    let (mut blkio_read, mut blkio_write) = (0, 0);
    for l in fs::read_to_string(dir.join("io.stat"))
        .unwrap_or_default()
        .lines()
    {
        for kv in l.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("rbytes", v)) => blkio_read += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => blkio_write += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    Ok(Sample {
        cpu_ns,
        memory: usage.saturating_sub(inactive),
        memory_limit: read_limit(&dir.join("memory.max")),
        blkio_read,
        blkio_write,
        pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
        pids_limit: read_limit(&dir.join("pids.max")),
        oom_kills: fs::read_to_string(dir.join("memory.events"))
            .ok()
            .and_then(|t| stat_field(&t, "oom_kill"))
            .unwrap_or(0),
    })
}

/// The host's CPU time so far (all CPUs, ns) from `/proc/stat`'s `cpu` line:
/// the "system usage" of Docker's CPU % formula.
pub fn system_cpu_ns() -> Option<u64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100);
    Some(ticks.saturating_mul(1_000_000_000 / hz))
}

/// The host's memory, shown as the limit of an unlimited container (as
/// Docker does).
pub fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The `cgroup.procs` file of berthd's own cgroup: in the cgroup2 mount
/// when there is one (`0::PATH` in `/proc/self/cgroup`), else in the first
/// v1 hierarchy berthd is listed in.
fn own_procs_file(host: &Host, self_cgroup: &str) -> Option<PathBuf> {
    let mut lines = self_cgroup.lines().filter_map(|l| {
        let mut f = l.splitn(3, ':');
        Some((f.next()?, f.next()?, f.next()?))
    });
    let rel = |path: &str| PathBuf::from(path.trim_start_matches('/'));
    if let Some(mount) = &host.v2 {
        if let Some((_, _, path)) = lines.clone().find(|(n, c, _)| *n == "0" && c.is_empty()) {
            return Some(mount.join(rel(path)).join("cgroup.procs"));
        }
    }
    lines.find_map(|(_, ctrls, path)| {
        let mount = ctrls.split(',').find_map(|c| host.v1.get(c))?;
        Some(mount.join(rel(path)).join("cgroup.procs"))
    })
}

/// After the last create or exec, how long [`warm_attach`] keeps the
/// kernel's cgroup attach lock ready for writers.
const WARM_FOR: Duration = Duration::from_secs(2);
/// How often it writes meanwhile: shorter than the shortest RCU grace
/// period seen on this machine kind (~2 ms), so the lock never falls back.
const WARM_EVERY: Duration = Duration::from_millis(2);

/// Keep the kernel's cgroup attach lock ready for writers while containers
/// are being created and exec'd, so that the runtime's attach of a new
/// process does not wait an RCU grace period.
///
/// Every write to a `cgroup.procs` takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing. When nothing has written one for
/// a moment, that lock is in its fast mode for readers (every `fork` on the
/// host is one), and a writer first waits a whole RCU grace period (2–28
/// ms on this 2-core VM, ~15 typical) to switch it; for about one more
/// grace period after the last writer is done, the next writer gets in at
/// once. libcontainer's intermediate process writes the container's pid a
/// few ms into a `run` or `exec` and used to wait the whole period there.
///
/// Called at the start of each create and of each exec a client asks for
/// (not a health check's: nobody waits on those). A thread of berthd's writes
/// `0` (the writer itself) into berthd's own cgroup: the kernel moves berthd
/// into the cgroup it is already in, which changes nothing. The first write
/// waits the grace period in that thread, in parallel with the snapshot,
/// the spec and the shim; the writes after it, every [`WARM_EVERY`] until
/// [`WARM_FOR`] after the last call, keep the lock switched, at ~3 µs of
/// CPU each. The cost for the rest of the host is the cost of a busy
/// container host: forks take the lock's slower reader path meanwhile.
/// A kernel that has the lock in writer mode for good (cgroup2's
/// `favordynmods`) gains nothing and loses nothing. Best effort: a write
/// that fails is logged once and warming stops.
pub fn warm_attach() {
    static WARMER: OnceLock<Option<&'static Warmer>> = OnceLock::new();
    let warmer = WARMER.get_or_init(|| {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let path = own_procs_file(host(), &own)?;
        // Opened once: each write on the open file is ~3 µs against ~8 for
        // open, write and close, and the thread writes 1,000 times a window.
        let file = match fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                warm_failed(&path, &e);
                return None;
            }
        };
        let w: &'static Warmer = Box::leak(Box::new(Warmer {
            path,
            file,
            last: Mutex::new(None),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || w.run())
            .ok()?;
        Some(w)
    });
    if let Some(w) = warmer {
        *w.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        w.wake.notify_one();
    }
}

fn warm_failed(path: &Path, e: &io::Error) {
    tracing::warn!(
        file = %path.display(),
        error = %e,
        "cannot write berthd's own cgroup.procs; the runtime's cgroup attach will wait for the kernel"
    );
}

/// The state of [`warm_attach`]'s thread: its open `cgroup.procs`, and when
/// it was last asked.
struct Warmer {
    path: PathBuf,
    file: fs::File,
    last: Mutex<Option<Instant>>,
    wake: Condvar,
}

impl Warmer {
    fn run(&self) {
        loop {
            {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                while !last.is_some_and(|t| t.elapsed() < WARM_FOR) {
                    last = self.wake.wait(last).unwrap_or_else(|e| e.into_inner());
                }
            }
            if let Err(e) = (&self.file).write_all(b"0") {
                warm_failed(&self.path, &e);
                return;
            }
            std::thread::sleep(WARM_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_procs_file_prefers_cgroup2_then_a_v1_hierarchy() {
        let mut host = Host {
            kind: Kind::V1,
            v1: BTreeMap::from([
                ("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory")),
                (
                    "cpu".to_string(),
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                ),
                (
                    "cpuacct".to_string(),
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                ),
            ]),
            v2: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            v2_controllers: BTreeSet::new(),
        };
        let own = "9:name=systemd:/\n4:memory:/process_api/9f5e\n1:cpu,cpuacct:/a/b\n0::/system.slice/berthd.service\n";
        assert_eq!(
            own_procs_file(&host, own),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/berthd.service/cgroup.procs"
            ))
        );
        host.v2 = None;
        // memory comes first in the file: its own path, not another's.
        assert_eq!(
            own_procs_file(&host, own),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/process_api/9f5e/cgroup.procs"
            ))
        );
        assert_eq!(
            own_procs_file(&host, "1:cpu,cpuacct:/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/cgroup.procs"))
        );
        assert_eq!(own_procs_file(&host, "9:name=systemd:/\n"), None);
        assert_eq!(own_procs_file(&host, ""), None);
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berthd-cg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
30 1 0:28 / /mnt/with\\040space rw - ext4 /dev/sda rw
";

    #[test]
    fn detects_hybrid_v1() {
        let h = Host::from_mountinfo(HYBRID);
        assert_eq!(h.kind, Kind::V1);
        assert_eq!(h.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(!h.v1.contains_key("systemd"));
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert!(h.describe().starts_with("v1 (hybrid"));
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    /// A fake cgroup2 tree: the root with its controllers, and one
    /// container's cgroup with the files berth reads.
    fn fake_v2(tag: &str) -> (PathBuf, Host) {
        let root = tempdir(tag);
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cpuset.cpus.effective"), "0-3\n").unwrap();
        fs::write(root.join("cpuset.mems.effective"), "0\n").unwrap();
        let c = root.join("berth/c1");
        fs::create_dir_all(&c).unwrap();
        fs::write(c.join("memory.max"), "134217728\n").unwrap();
        fs::write(c.join("memory.current"), "50000000\n").unwrap();
        fs::write(
            c.join("memory.stat"),
            "anon 40000000\nfile 10000000\ninactive_file 8000000\nactive_file 2000000\n",
        )
        .unwrap();
        fs::write(
            c.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\n",
        )
        .unwrap();
        fs::write(c.join("cpu.max"), "50000 100000\n").unwrap();
        fs::write(
            c.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        )
        .unwrap();
        fs::write(
            c.join("io.stat"),
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=1 wbytes=2 rios=1 wios=1\n",
        )
        .unwrap();
        fs::write(c.join("pids.max"), "max\n").unwrap();
        fs::write(c.join("pids.current"), "3\n").unwrap();
        let info = format!("30 1 0:24 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        let h = Host::from_mountinfo(&info);
        (root, h)
    }

    #[test]
    fn v2_sample_from_a_fake_tree() {
        let (root, h) = fake_v2("sample");
        assert_eq!(h.kind, Kind::V2);
        assert_eq!(h.describe(), "v2");
        assert!(h.controllers().contains(&"io".to_string()));
        let s = h.sample(Path::new("/berth/c1")).unwrap();
        assert_eq!(
            s,
            Sample {
                cpu_ns: 2_500_000_000,
                memory: 42_000_000,
                memory_limit: Some(134_217_728),
                blkio_read: 4097,
                blkio_write: 8194,
                pids: 3,
                pids_limit: None,
                oom_kills: 1,
            }
        );
        assert!(h.sample(Path::new("/berth/missing")).is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_check_controllers_and_cpus() {
        use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};
        let (root, mut h) = fake_v2("check");
        let mut r = LinuxResources::default();
        let mut cpu = LinuxCpu::default();
        cpu.set_quota(Some(200_000));
        cpu.set_period(Some(100_000));
        cpu.set_cpus(Some("1-3".into()));
        r.set_cpu(Some(cpu.clone()));
        h.check(&r).unwrap();
        cpu.set_cpus(Some("4".into()));
        r.set_cpu(Some(cpu.clone()));
        let e = h.check(&r).unwrap_err();
        assert!(
            e.contains("--cpuset-cpus 4") && e.contains("0,1,2,3"),
            "{e}"
        );
        cpu.set_cpus(None);
        cpu.set_quota(Some(500_000));
        r.set_cpu(Some(cpu));
        assert!(h.check(&r).unwrap_err().contains("at most 4"));
        // A controller that is not enabled is an error, not no limit.
        h.v2_controllers.remove("memory");
        let mut r = LinuxResources::default();
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(64 << 20));
        r.set_memory(Some(mem));
        let e = h.check(&r).unwrap_err();
        assert!(e.contains("--memory") && e.contains("v2 memory"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_sample_and_check_from_a_fake_tree() {
        use oci_spec::runtime::{LinuxBlockIo, LinuxMemory, LinuxResources};
        let root = tempdir("v1");
        let mut info = String::new();
        for (i, c) in ["cpu,cpuacct", "memory", "blkio", "pids"]
            .iter()
            .enumerate()
        {
            let m = root.join(c);
            fs::create_dir_all(m.join("berth/c1")).unwrap();
            info.push_str(&format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{c}\n",
                40 + i,
                40 + i,
                m.display()
            ));
        }
        let cg = |c: &str| root.join(c).join("berth/c1");
        fs::write(cg("cpu,cpuacct").join("cpuacct.usage"), "123456789\n").unwrap();
        fs::write(cg("memory").join("memory.usage_in_bytes"), "10000\n").unwrap();
        fs::write(
            cg("memory").join("memory.stat"),
            "cache 5000\ninactive_file 1\ntotal_inactive_file 3000\n",
        )
        .unwrap();
        fs::write(
            cg("memory").join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        fs::write(
            cg("blkio").join("blkio.throttle.io_service_bytes_recursive"),
            "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\nTotal 300\n",
        )
        .unwrap();
        fs::write(cg("pids").join("pids.current"), "2\n").unwrap();
        fs::write(cg("pids").join("pids.max"), "100\n").unwrap();
        fs::write(root.join("memory/memory.limit_in_bytes"), "0").unwrap();
        let h = Host::from_mountinfo(&info);
        assert_eq!(h.kind, Kind::V1);
        let s = h.sample(Path::new("/berth/c1")).unwrap();
        assert_eq!(s.cpu_ns, 123_456_789);
        assert_eq!(s.memory, 7000);
        assert_eq!(s.memory_limit, None);
        assert_eq!((s.blkio_read, s.blkio_write), (100, 200));
        assert_eq!((s.pids, s.pids_limit), (2, Some(100)));

        let mut r = LinuxResources::default();
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(64 << 20));
        r.set_memory(Some(mem));
        h.check(&r).unwrap();
        mem.set_swap(Some(128 << 20));
        r.set_memory(Some(mem));
        assert!(h.check(&r).unwrap_err().contains("swapaccount=1"));
        let mut r = LinuxResources::default();
        let mut io = LinuxBlockIo::default();
        io.set_weight(Some(500));
        r.set_block_io(Some(io));
        assert!(h.check(&r).unwrap_err().contains("--blkio-weight"));
        fs::write(root.join("blkio/blkio.bfq.weight"), "100").unwrap();
        h.check(&r).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn proc_stat_total() {
        let text = "cpu  10 0 10 80 0 0 0 0 5 0\ncpu0 5 0 5 40 0 0 0 0 0 0\n";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(parse_proc_stat(text), Some(100 * (1_000_000_000 / hz)));
    }
}
