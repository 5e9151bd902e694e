//! Resource limits: Docker's `run`/`update` flags (`--memory`, `--cpus`,
//! `--cpuset-cpus`, `--blkio-weight`, ...) as `linux.resources` of the OCI
//! spec, with Docker's ranges. What the host can apply (controllers, CPUs)
//! is checked by the daemon, which knows the host; here is only the logic.
//! `docs/resources.md` lists every flag, its range and its cgroup file.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources, LinuxThrottleDevice,
    LinuxThrottleDeviceBuilder,
};
use serde_json::{json, Value};

use super::SpecError;

/// The smallest memory limit accepted (Docker's: a runtime needs some).
pub const MIN_MEMORY: i64 = 6 << 20;
/// The CFS period the `--cpus` quota is a share of (100 ms, as Docker).
pub(super) const CPU_PERIOD: u64 = 100_000;
/// `--cpu-shares` range (the kernel's, cgroup v1 `cpu.shares`).
const SHARES_MIN: u64 = 2;
const SHARES_MAX: u64 = 262_144;
/// `--cpu-period` range in µs: 1 ms to 1 s (the kernel's CFS bounds).
const PERIOD_MIN: u64 = 1_000;
const PERIOD_MAX: u64 = 1_000_000;
/// The smallest `--cpu-quota` in µs.
const QUOTA_MIN: i64 = 1_000;
/// `--blkio-weight` range.
const WEIGHT_MIN: u16 = 10;
const WEIGHT_MAX: u16 = 1_000;
/// The highest CPU or memory node number a cpuset may name (bounds parsing).
const CPUSET_MAX: u32 = 8_191;

/// Resource limits from the command line, as Docker's flags mean them.
/// Every field is optional: [`Limits::apply`] changes only what is set, which
/// is what `update` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (`--memory`); at least [`MIN_MEMORY`].
    pub memory: Option<i64>,
    /// CPUs' worth of time per period (`--cpus 1.5`).
    pub cpus: Option<f64>,
    /// Most processes at once (`--pids-limit`); -1 means no limit.
    pub pids: Option<i64>,
    /// Memory plus swap (`--memory-swap`); -1: unlimited swap.
    pub memory_swap: Option<i64>,
    /// Soft limit (`--memory-reservation`).
    pub memory_reservation: Option<i64>,
    /// `--kernel-memory`: always refused (the kernel dropped the knob).
    pub kernel_memory: Option<i64>,
    /// Relative CPU weight (`--cpu-shares`, default 1024).
    pub cpu_shares: Option<u64>,
    /// CFS period in µs (`--cpu-period`).
    pub cpu_period: Option<u64>,
    /// CFS quota in µs per period (`--cpu-quota`); -1: none.
    pub cpu_quota: Option<i64>,
    /// CPUs the container may run on (`--cpuset-cpus 0-2,4`).
    pub cpuset_cpus: Option<String>,
    /// Memory nodes (`--cpuset-mems 0`).
    pub cpuset_mems: Option<String>,
    /// Relative block I/O weight (`--blkio-weight`, 10 to 1000).
    pub blkio_weight: Option<u16>,
    /// Read rate limits per device (`--device-read-bps /dev/sda:1mb`).
    pub device_read_bps: Vec<DeviceRate>,
    /// Write rate limits per device.
    pub device_write_bps: Vec<DeviceRate>,
}

/// A bytes-per-second limit on one block device (its numbers, resolved from
/// the path by the daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRate {
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

fn invalid(msg: String) -> SpecError {
    SpecError::InvalidLimit(msg)
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Apply the limits to `resources`: what is set replaces what was there,
    /// the rest is kept. The result is checked as a whole (a swap limit
    /// against the memory limit in force, whichever flag set it).
    pub fn apply(&self, resources: &mut LinuxResources) -> Result<(), SpecError> {
        if self.kernel_memory.is_some() {
            return Err(invalid(
                "--kernel-memory is not supported: Linux deprecated kernel memory limits (5.4) and \
                 cgroup v2 has none; kernel memory is counted in --memory, drop the flag"
                    .into(),
            ));
        }
        self.apply_memory(resources)?;
        self.apply_cpu(resources)?;
        if let Some(p) = self.pids {
            if p == 0 || p < -1 {
                return Err(invalid(format!(
                    "--pids-limit {p} is not valid: give a positive number, or -1 for no limit"
                )));
            }
            let mut pids = LinuxPids::default();
            pids.set_limit(p);
            resources.set_pids(Some(pids));
        }
        self.apply_blkio(resources)
    }

    fn apply_memory(&self, resources: &mut LinuxResources) -> Result<(), SpecError> {
        if self.memory.is_none() && self.memory_swap.is_none() && self.memory_reservation.is_none()
        {
            return Ok(());
        }
        let mut mem: LinuxMemory = resources.memory().unwrap_or_default();
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(invalid(format!(
                    "--memory {m} is below the minimum of 6 MiB: give at least 6m"
                )));
            }
            mem.set_limit(Some(m));
        }
        if let Some(s) = self.memory_swap {
            if s != -1 && s <= 0 {
                return Err(invalid(format!(
                    "--memory-swap {s} is not valid: give a size of at least --memory, or -1 for unlimited swap"
                )));
            }
            mem.set_swap(Some(s));
        }
        if let Some(r) = self.memory_reservation {
            if r < MIN_MEMORY {
                return Err(invalid(format!(
                    "--memory-reservation {r} is below the minimum of 6 MiB: give at least 6m"
                )));
            }
            mem.set_reservation(Some(r));
        }
        match (mem.limit(), mem.swap()) {
            (None, Some(s)) if s != -1 => {
                return Err(invalid(
                    "--memory-swap needs --memory: the swap limit counts memory plus swap; set both"
                        .into(),
                ))
            }
            (Some(m), Some(s)) if s != -1 && s < m => {
                return Err(invalid(format!(
                    "--memory-swap {s} is below --memory {m}: it counts memory plus swap, give at least the memory limit (or -1)"
                )))
            }
            _ => {}
        }
        if let (Some(m), Some(r)) = (mem.limit(), mem.reservation()) {
            if r > m {
                return Err(invalid(format!(
                    "--memory-reservation {r} is above --memory {m}: the soft limit must be below the hard one"
                )));
            }
        }
        resources.set_memory(Some(mem));
        Ok(())
    }

    fn apply_cpu(&self, resources: &mut LinuxResources) -> Result<(), SpecError> {
        if self.cpus.is_some() && (self.cpu_period.is_some() || self.cpu_quota.is_some()) {
            return Err(invalid(
                "--cpus conflicts with --cpu-period and --cpu-quota: give either --cpus or the period and quota"
                    .into(),
            ));
        }
        let touched = self.cpus.is_some()
            || self.cpu_period.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_shares.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some();
        if !touched {
            return Ok(());
        }
        let mut cpu: LinuxCpu = resources.cpu().clone().unwrap_or_default();
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c.is_finite()) {
                return Err(invalid(format!(
                    "--cpus {c} is not a positive number: give e.g. 0.5 or 2"
                )));
            }
            let quota = (c * CPU_PERIOD as f64).round() as i64;
            cpu.set_period(Some(CPU_PERIOD));
            cpu.set_quota(Some(quota.max(QUOTA_MIN)));
        }
        if let Some(p) = self.cpu_period {
            if !(PERIOD_MIN..=PERIOD_MAX).contains(&p) {
                return Err(invalid(format!(
                    "--cpu-period {p} is out of range: give 1000 (1 ms) to 1000000 (1 s) microseconds"
                )));
            }
            cpu.set_period(Some(p));
        }
        if let Some(q) = self.cpu_quota {
            if q != -1 && q < QUOTA_MIN {
                return Err(invalid(format!(
                    "--cpu-quota {q} is out of range: give at least 1000 microseconds, or -1 for none"
                )));
            }
            cpu.set_quota(Some(q));
        }
        if let Some(s) = self.cpu_shares {
            if !(SHARES_MIN..=SHARES_MAX).contains(&s) {
                return Err(invalid(format!(
                    "--cpu-shares {s} is out of range: give 2 to 262144 (the default weight is 1024)"
                )));
            }
            cpu.set_shares(Some(s));
        }
        if let Some(c) = &self.cpuset_cpus {
            parse_cpuset(c).map_err(|e| invalid(format!("--cpuset-cpus {c:?}: {e}")))?;
            cpu.set_cpus(Some(c.trim().to_string()));
        }
        if let Some(m) = &self.cpuset_mems {
            parse_cpuset(m).map_err(|e| invalid(format!("--cpuset-mems {m:?}: {e}")))?;
            cpu.set_mems(Some(m.trim().to_string()));
        }
        resources.set_cpu(Some(cpu));
        Ok(())
    }

    fn apply_blkio(&self, resources: &mut LinuxResources) -> Result<(), SpecError> {
        if self.blkio_weight.is_none()
            && self.device_read_bps.is_empty()
            && self.device_write_bps.is_empty()
        {
            return Ok(());
        }
        let mut io: LinuxBlockIo = resources.block_io().clone().unwrap_or_default();
        if let Some(w) = self.blkio_weight {
            if !(WEIGHT_MIN..=WEIGHT_MAX).contains(&w) {
                return Err(invalid(format!(
                    "--blkio-weight {w} is out of range: give 10 to 1000"
                )));
            }
            io.set_weight(Some(w));
        }
        if !self.device_read_bps.is_empty() {
            io.set_throttle_read_bps_device(Some(throttles(&self.device_read_bps)?));
        }
        if !self.device_write_bps.is_empty() {
            io.set_throttle_write_bps_device(Some(throttles(&self.device_write_bps)?));
        }
        resources.set_block_io(Some(io));
        Ok(())
    }
}

fn throttles(rates: &[DeviceRate]) -> Result<Vec<LinuxThrottleDevice>, SpecError> {
    rates
        .iter()
        .map(|r| {
            Ok(LinuxThrottleDeviceBuilder::default()
                .major(r.major)
                .minor(r.minor)
                .rate(r.rate)
                .build()?)
        })
        .collect()
}

/// Parse a cpuset list ("0-3,6", as the kernel writes them) into its
/// numbers. Errors say what is wrong with the list.
pub fn parse_cpuset(s: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    let s = s.trim();
    if s.is_empty() {
        return Err("the list is empty: give numbers and ranges like 0-2,4".into());
    }
    for part in s.split(',') {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= CPUSET_MAX)
                .ok_or_else(|| format!("{t:?} is not a number: give numbers and ranges like 0-2,4"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range {part:?} goes backwards: write it low-high"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(out)
}

/// The limits of `resources` (as in a container's spec) for people and
/// scripts: `inspect`'s `resources`. Unset limits are left out; device
/// rules are not limits and are never shown.
pub fn summary(resources: Option<&LinuxResources>) -> Value {
    let mut m = serde_json::Map::new();
    let Some(r) = resources else {
        return Value::Object(m);
    };
    if let Some(mem) = r.memory() {
        for (k, v) in [
            ("memory", mem.limit()),
            ("memory_swap", mem.swap()),
            ("memory_reservation", mem.reservation()),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
    }
    if let Some(cpu) = r.cpu() {
        if let (Some(q), Some(p)) = (cpu.quota(), cpu.period()) {
            if q > 0 && p > 0 {
                m.insert("cpus".into(), json!(q as f64 / p as f64));
            }
        }
        if let Some(v) = cpu.period() {
            m.insert("cpu_period".into(), json!(v));
        }
        if let Some(v) = cpu.quota() {
            m.insert("cpu_quota".into(), json!(v));
        }
        if let Some(v) = cpu.shares() {
            m.insert("cpu_shares".into(), json!(v));
        }
        if let Some(v) = cpu.cpus() {
            m.insert("cpuset_cpus".into(), json!(v));
        }
        if let Some(v) = cpu.mems() {
            m.insert("cpuset_mems".into(), json!(v));
        }
    }
    if let Some(p) = r.pids() {
        m.insert("pids_limit".into(), json!(p.limit()));
    }
    if let Some(io) = r.block_io() {
        if let Some(w) = io.weight() {
            m.insert("blkio_weight".into(), json!(w));
        }
        let rates = |v: &Option<Vec<LinuxThrottleDevice>>| {
            v.as_ref().map(|v| {
                v.iter()
                    .map(|d| json!({"major": d.major(), "minor": d.minor(), "rate": d.rate()}))
                    .collect::<Vec<_>>()
            })
        };
        if let Some(v) = rates(io.throttle_read_bps_device()) {
            m.insert("device_read_bps".into(), json!(v));
        }
        if let Some(v) = rates(io.throttle_write_bps_device()) {
            m.insert("device_write_bps".into(), json!(v));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(l: Limits) -> Result<LinuxResources, SpecError> {
        let mut r = LinuxResources::default();
        l.apply(&mut r)?;
        Ok(r)
    }

    fn msg(l: Limits) -> String {
        let e = applied(l).unwrap_err();
        assert!(matches!(e, SpecError::InvalidLimit(_)));
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    }

    #[test]
    fn all_limits_map_to_resources() {
        let r = applied(Limits {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            memory_reservation: Some(32 << 20),
            cpu_shares: Some(512),
            cpu_period: Some(50_000),
            cpu_quota: Some(25_000),
            cpuset_cpus: Some("0-1".into()),
            cpuset_mems: Some("0".into()),
            blkio_weight: Some(300),
            device_read_bps: vec![DeviceRate {
                major: 8,
                minor: 0,
                rate: 1 << 20,
            }],
            pids: Some(50),
            ..Default::default()
        })
        .unwrap();
        let m = r.memory().unwrap();
        assert_eq!(
            (m.limit(), m.swap(), m.reservation()),
            (Some(64 << 20), Some(128 << 20), Some(32 << 20))
        );
        let c = r.cpu().as_ref().unwrap();
        assert_eq!(c.shares(), Some(512));
        assert_eq!((c.period(), c.quota()), (Some(50_000), Some(25_000)));
        assert_eq!(c.cpus().as_deref(), Some("0-1"));
        assert_eq!(c.mems().as_deref(), Some("0"));
        let io = r.block_io().as_ref().unwrap();
        assert_eq!(io.weight(), Some(300));
        let d = &io.throttle_read_bps_device().as_ref().unwrap()[0];
        assert_eq!((d.major(), d.minor(), d.rate()), (8, 0, 1 << 20));
        assert!(io.throttle_write_bps_device().is_none());
        let s = summary(Some(&r));
        assert_eq!(s["cpus"], json!(0.5));
        assert_eq!(s["memory_swap"], json!(128 << 20));
        assert_eq!(s["pids_limit"], json!(50));
        assert_eq!(s["device_read_bps"][0]["rate"], json!(1 << 20));
    }

    #[test]
    fn update_keeps_what_it_does_not_set() {
        let mut r = applied(Limits {
            memory: Some(64 << 20),
            memory_swap: Some(64 << 20),
            cpus: Some(1.0),
            ..Default::default()
        })
        .unwrap();
        // Raising memory above the old swap limit is checked against it.
        let raise = Limits {
            memory: Some(128 << 20),
            ..Default::default()
        };
        assert!(raise.clone().apply(&mut r.clone()).is_err());
        Limits {
            memory: Some(128 << 20),
            memory_swap: Some(-1),
            ..Default::default()
        }
        .apply(&mut r)
        .unwrap();
        Limits {
            cpu_shares: Some(100),
            ..Default::default()
        }
        .apply(&mut r)
        .unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(128 << 20));
        assert_eq!(r.memory().unwrap().swap(), Some(-1));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!((c.quota(), c.shares()), (Some(100_000), Some(100)));
    }

    #[test]
    fn docker_ranges_are_enforced() {
        let cases = [
            (
                Limits {
                    kernel_memory: Some(1 << 30),
                    ..Default::default()
                },
                "--kernel-memory is not supported",
            ),
            (
                Limits {
                    memory_swap: Some(1 << 30),
                    ..Default::default()
                },
                "needs --memory",
            ),
            (
                Limits {
                    memory: Some(64 << 20),
                    memory_swap: Some(32 << 20),
                    ..Default::default()
                },
                "is below --memory",
            ),
            (
                Limits {
                    memory: Some(64 << 20),
                    memory_reservation: Some(128 << 20),
                    ..Default::default()
                },
                "above --memory",
            ),
            (
                Limits {
                    memory_reservation: Some(1),
                    ..Default::default()
                },
                "minimum of 6 MiB",
            ),
            (
                Limits {
                    cpu_shares: Some(1),
                    ..Default::default()
                },
                "2 to 262144",
            ),
            (
                Limits {
                    cpu_period: Some(999),
                    ..Default::default()
                },
                "1000 (1 ms)",
            ),
            (
                Limits {
                    cpu_period: Some(1_000_001),
                    ..Default::default()
                },
                "1000 (1 ms)",
            ),
            (
                Limits {
                    cpu_quota: Some(10),
                    ..Default::default()
                },
                "at least 1000",
            ),
            (
                Limits {
                    cpus: Some(1.0),
                    cpu_quota: Some(10_000),
                    ..Default::default()
                },
                "conflicts",
            ),
            (
                Limits {
                    blkio_weight: Some(5),
                    ..Default::default()
                },
                "10 to 1000",
            ),
            (
                Limits {
                    cpuset_cpus: Some("1-0".into()),
                    ..Default::default()
                },
                "backwards",
            ),
            (
                Limits {
                    cpuset_mems: Some("a".into()),
                    ..Default::default()
                },
                "not a number",
            ),
        ];
        for (l, want) in cases {
            let m = msg(l);
            assert!(m.contains(want), "{m} lacks {want}");
        }
        // -1 means unlimited swap and no quota.
        applied(Limits {
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            cpu_quota: Some(-1),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn cpusets_parse() {
        assert_eq!(
            parse_cpuset("0-2,4")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 4]
        );
        assert_eq!(parse_cpuset(" 1 ").unwrap().len(), 1);
        for bad in ["", "0-", "-1", "x", "1,,2", "99999"] {
            assert!(parse_cpuset(bad).is_err(), "{bad}");
        }
    }
}
