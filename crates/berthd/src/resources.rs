//! Resource limits from the API to the spec: Docker's ranges are checked by
//! `berth_core::spec::Limits`, the host (its controllers, CPUs, devices) here.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_api::v1;
use berth_core::spec::{DeviceRate, Limits};
use oci_spec::runtime::{LinuxResources, Spec};
use tonic::Status;

/// The limits a create request asks for.
pub fn create_limits(r: &v1::CreateRequest) -> Result<Limits, Status> {
    let mut l = Limits {
        memory: r.memory,
        cpus: r.cpus,
        pids: r.pids_limit,
        ..Default::default()
    };
    if let Some(res) = &r.resources {
        extra_limits(res, &mut l)?;
    }
    Ok(l)
}

/// What an update request changes.
pub fn update_of(r: &v1::UpdateRequest) -> Result<berth_core::Update, Status> {
    let mut l = Limits {
        memory: r.memory,
        cpus: r.cpus,
        pids: r.pids_limit,
        ..Default::default()
    };
    if let Some(res) = &r.resources {
        if !res.device_read_bps.is_empty() || !res.device_write_bps.is_empty() {
            return Err(Status::invalid_argument(
                "--device-read-bps and --device-write-bps cannot be updated: recreate the container",
            ));
        }
        extra_limits(res, &mut l)?;
    }
    let restart = match &r.restart {
        None => None,
        Some(p) => Some(
            p.parse::<berth_core::RestartPolicy>()
                .map_err(Status::invalid_argument)?,
        ),
    };
    if l.is_empty() && restart.is_none() {
        return Err(Status::invalid_argument(
            "nothing to update: give at least one of --memory, --memory-swap, --cpus, --cpu-shares, --cpuset-cpus, --pids-limit, --restart",
        ));
    }
    Ok(berth_core::Update {
        limits: (!l.is_empty()).then_some(l),
        restart,
    })
}

/// The fields of a `Resources` message into `l`.
pub fn extra_limits(res: &v1::Resources, l: &mut Limits) -> Result<(), Status> {
    l.memory_swap = res.memory_swap;
    l.memory_reservation = res.memory_reservation;
    l.kernel_memory = res.kernel_memory;
    l.cpu_shares = res.cpu_shares;
    l.cpu_period = res.cpu_period;
    l.cpu_quota = res.cpu_quota;
    l.cpuset_cpus = res.cpuset_cpus.clone();
    l.cpuset_mems = res.cpuset_mems.clone();
    l.blkio_weight = match res.blkio_weight {
        None => None,
        Some(w) => Some(u16::try_from(w).map_err(|_| {
            Status::invalid_argument(format!(
                "--blkio-weight {w} is out of range: give 10 to 1000"
            ))
        })?),
    };
    l.device_read_bps = res
        .device_read_bps
        .iter()
        .map(|s| device_rate(s, "--device-read-bps"))
        .collect::<Result<_, _>>()?;
    l.device_write_bps = res
        .device_write_bps
        .iter()
        .map(|s| device_rate(s, "--device-write-bps"))
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// `/dev/sda:1mb` → the device's numbers and the rate in bytes per second.
fn device_rate(s: &str, flag: &str) -> Result<DeviceRate, Status> {
    let bad = |why: String| Status::invalid_argument(format!("{flag} {s:?}: {why}"));
    let (path, rate) = s
        .rsplit_once(':')
        .ok_or_else(|| bad("use DEVICE:RATE, e.g. /dev/sda:1mb".into()))?;
    if !path.starts_with("/dev/") {
        return Err(bad(format!(
            "{path:?} is not a device path: give a block device under /dev"
        )));
    }
    let rate = berth_api::parse_size(rate).ok_or_else(|| {
        bad(format!(
            "{rate:?} is not a rate: use e.g. 1mb, 512k or 1048576"
        ))
    })?;
    let meta = std::fs::metadata(Path::new(path))
        .map_err(|e| bad(format!("cannot stat {path:?}: {e}")))?;
    if !meta.file_type().is_block_device() {
        return Err(bad(format!("{path:?} is not a block device")));
    }
    let rdev = meta.rdev();
    Ok(DeviceRate {
        major: i64::from(libc::major(rdev)),
        minor: i64::from(libc::minor(rdev)),
        rate,
    })
}

/// The init `--init` runs: `BERTH_INIT` if set, else Debian's static tini.
fn init_path() -> std::path::PathBuf {
    std::env::var_os("BERTH_INIT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/bin/tini-static"))
}

/// `--init`: the command runs under tini (rootfs containers only).
pub fn with_init(
    init: bool,
    mut spec: Spec,
    source: &berth_core::container::Source,
) -> Result<Spec, Status> {
    if !init {
        return Ok(spec);
    }
    if matches!(source, berth_core::container::Source::Bundle(_)) {
        return Err(Status::invalid_argument(
            "--init does not apply to a --bundle: put an init in its process.args",
        ));
    }
    let path = init_path();
    if !path.is_file() {
        return Err(Status::failed_precondition(format!(
            "--init needs a static init at {}: install Debian's tini (apt-get install tini) or set BERTH_INIT for berthd",
            path.display()
        )));
    }
    berth_core::spec::apply_init(&mut spec, &path)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(spec)
}

/// The health check of a create request, checked as Docker does.
pub fn health_config(
    h: Option<&v1::HealthCheck>,
) -> Result<Option<berth_core::container::HealthConfig>, Status> {
    let Some(h) = h else { return Ok(None) };
    let bad = |m: String| Err(Status::invalid_argument(m));
    match h.test.first().map(String::as_str) {
        Some("NONE") if h.test.len() == 1 => {}
        Some("CMD") | Some("CMD-SHELL") if h.test.len() > 1 && !h.test[1].is_empty() => {}
        _ => {
            return bad(format!(
                "invalid health check test {:?}: use [\"CMD\", prog, args...], [\"CMD-SHELL\", command] or [\"NONE\"] (--health-cmd CMD, --no-healthcheck)",
                h.test
            ))
        }
    }
    const MIN: u64 = 1_000_000; // 1 ms, as Docker
    for (flag, v) in [
        ("--health-interval", h.interval),
        ("--health-timeout", h.timeout),
        ("--health-start-period", h.start_period),
    ] {
        if v != 0 && v < MIN {
            return bad(format!(
                "{flag} must be at least 1ms (or 0 for the default): use e.g. 10s"
            ));
        }
    }
    Ok(Some(berth_core::container::HealthConfig {
        test: h.test.clone(),
        interval: h.interval,
        timeout: h.timeout,
        start_period: h.start_period,
        retries: h.retries,
    }))
}

/// Can the host enforce the spec's limits? A limit that cannot be applied
/// is refused at create time.
pub fn check_spec(spec: &Spec) -> Result<(), Status> {
    if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        check(r)?;
    }
    Ok(())
}

pub fn check(r: &LinuxResources) -> Result<(), Status> {
    crate::cgroup::host()
        .check(r)
        .map_err(Status::failed_precondition)
}

/// The limits in force, as `inspect` shows them.
pub fn summary_json(spec: &Spec) -> String {
    berth_core::spec::resources_summary(spec.linux().as_ref().and_then(|l| l.resources().as_ref()))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rates() {
        let Ok(meta) = std::fs::metadata("/dev/loop0") else {
            return; // no block device to name here
        };
        let r = device_rate("/dev/loop0:1mb", "--device-read-bps").unwrap();
        assert_eq!(r.rate, 1 << 20);
        assert_eq!(r.major, i64::from(libc::major(meta.rdev())));
        for bad in ["/dev/loop0", "/dev/null:1m", "sda:1m", "/dev/loop0:fast"] {
            let e = device_rate(bad, "--device-read-bps").unwrap_err();
            assert!(e.message().contains("--device-read-bps"), "{bad}");
        }
    }
}
