//! Resource flags of `run`/`create`, and the commands about resources.

use berth_api::v1;
use clap::Args;

use crate::Failure;

/// Resource limits beyond --memory, --cpus and --pids-limit (Docker's flags;
/// docs/resources.md). berthd checks the ranges and whether this host's
/// cgroups can apply each one: a limit it cannot apply is an error.
#[derive(Args, Debug, Clone, Default)]
pub struct ResourceArgs {
    /// Memory plus swap (e.g. 128m; -1: unlimited swap); needs --memory.
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Soft memory limit, reclaimed first under pressure (e.g. 32m).
    #[arg(long, value_name = "BYTES")]
    pub memory_reservation: Option<String>,
    /// Refused: Linux deprecated kernel memory limits (count it in --memory).
    #[arg(long, value_name = "BYTES")]
    pub kernel_memory: Option<String>,
    /// Relative CPU weight, 2 to 262144 (default 1024; e.g. -c 512).
    #[arg(short = 'c', long, value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CFS period in microseconds, 1000 to 1000000 (with --cpu-quota).
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (e.g. 50000 of 100000 = half a CPU; -1: none).
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPUs the container may run on (e.g. 0-2,4).
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (e.g. 0).
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Relative block I/O weight, 10 to 1000 (needs the BFQ scheduler).
    #[arg(long, value_name = "N")]
    pub blkio_weight: Option<u32>,
    /// Limit reads from a device (e.g. /dev/sda:1mb; repeatable).
    #[arg(long, value_name = "DEVICE:RATE")]
    pub device_read_bps: Vec<String>,
    /// Limit writes to a device (e.g. /dev/sda:1mb; repeatable).
    #[arg(long, value_name = "DEVICE:RATE")]
    pub device_write_bps: Vec<String>,
}

/// The health check flags of `run`/`create` (Docker's).
#[derive(Args, Debug, Clone, Default)]
pub struct HealthArgs {
    /// Command that checks health, run by /bin/sh -c in the container
    /// (e.g. 'wget -q -O- localhost:8080/health'); exit 0 is healthy.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between checks (e.g. 30s, 1m; default 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub health_interval: Option<u64>,
    /// A check running longer is killed and counts as failed (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub health_timeout: Option<u64>,
    /// Consecutive failures that make the container unhealthy (default 3).
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Failures in this time after the start do not count (default 0s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub health_start_period: Option<u64>,
    /// No health check (also none of the image's).
    #[arg(long, conflicts_with = "health_cmd")]
    pub no_healthcheck: bool,
}

/// A duration flag ("30s", "1m30s", "500ms") in nanoseconds.
fn duration(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): use e.g. 30s, 1m30s or 500ms"))
        .and_then(|d| u64::try_from(d.as_nanos()).map_err(|_| format!("{s:?} is too long")))
}

impl HealthArgs {
    pub fn request(&self) -> Option<v1::HealthCheck> {
        let test = if self.no_healthcheck {
            vec!["NONE".to_string()]
        } else if let Some(cmd) = &self.health_cmd {
            vec!["CMD-SHELL".to_string(), cmd.clone()]
        } else if self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
        {
            // Timing without a command: the daemon says what is missing
            // (an image's check would take these once images exist).
            Vec::new()
        } else {
            return None;
        };
        Some(v1::HealthCheck {
            test,
            interval: self.health_interval.unwrap_or(0),
            timeout: self.health_timeout.unwrap_or(0),
            start_period: self.health_start_period.unwrap_or(0),
            retries: self.health_retries.unwrap_or(0),
        })
    }
}

/// A size flag in bytes ("64m", "1g"); `allow_unlimited` takes -1 too.
pub fn size_flag(
    v: &Option<String>,
    flag: &str,
    allow_unlimited: bool,
) -> Result<Option<i64>, Failure> {
    let Some(s) = v else { return Ok(None) };
    if allow_unlimited && s.trim() == "-1" {
        return Ok(Some(-1));
    }
    berth_api::parse_size(s)
        .and_then(|n| i64::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            Failure::own(format!(
                "invalid {flag} {s:?}: use a size like 64m or 1g{}",
                if allow_unlimited { " (or -1)" } else { "" }
            ))
        })
}

impl ResourceArgs {
    pub fn request(&self) -> Result<Option<v1::Resources>, Failure> {
        let r = v1::Resources {
            memory_swap: size_flag(&self.memory_swap, "--memory-swap", true)?,
            memory_reservation: size_flag(&self.memory_reservation, "--memory-reservation", false)?,
            kernel_memory: size_flag(&self.kernel_memory, "--kernel-memory", false)?,
            cpu_shares: self.cpu_shares,
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            blkio_weight: self.blkio_weight,
            device_read_bps: self.device_read_bps.clone(),
            device_write_bps: self.device_write_bps.clone(),
        };
        Ok((r != v1::Resources::default()).then_some(r))
    }
}

type Client = berth_api::ContainersClient<tonic::transport::Channel>;

/// `berth update`'s flags.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 128m; at least 6m).
    #[arg(short, long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// Memory plus swap (e.g. 256m; -1: unlimited swap).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Soft memory limit (e.g. 64m).
    #[arg(long, value_name = "BYTES")]
    pub memory_reservation: Option<String>,
    /// CPUs' worth of time (e.g. 0.5, 2).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Relative CPU weight, 2 to 262144.
    #[arg(short = 'c', long, value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CFS period in microseconds.
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (-1: none).
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPUs the container may run on (e.g. 0-1).
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Most processes at once (-1: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Relative block I/O weight, 10 to 1000.
    #[arg(long, value_name = "N")]
    pub blkio_weight: Option<u32>,
    /// Restart policy: no, always, on-failure[:MAX-RETRIES], unless-stopped.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub ids: Vec<String>,
}

impl UpdateArgs {
    fn request(&self, id: String) -> Result<v1::UpdateRequest, Failure> {
        let extra = ResourceArgs {
            memory_swap: self.memory_swap.clone(),
            memory_reservation: self.memory_reservation.clone(),
            cpu_shares: self.cpu_shares,
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            blkio_weight: self.blkio_weight,
            ..Default::default()
        };
        Ok(v1::UpdateRequest {
            id,
            memory: size_flag(&self.memory, "--memory", false)?,
            cpus: self.cpus,
            pids_limit: self.pids_limit,
            resources: extra.request()?,
            restart: self.restart.clone(),
        })
    }
}

/// Update each container; print its name as given on success, one error
/// line per failure (exit 1 when the daemon refused one, as Docker).
pub async fn update(client: &mut Client, a: UpdateArgs) -> crate::CmdResult {
    let mut code = 0;
    for id in a.ids.clone() {
        let req = a.request(id.clone())?;
        match client.update(req).await {
            Ok(_) => println!("{id}"),
            Err(s) => {
                let refused = matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                );
                let f = Failure::from(s);
                eprintln!("berth: {}", f.message);
                code = code.max(if refused { 1 } else { f.code });
            }
        }
    }
    Ok(code)
}

/// Docker's memory sizes: binary units, 4 significant digits ("1.5MiB").
pub fn binary_size(v: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = v as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < UNITS.len() {
        x /= 1024.0;
        i += 1;
    }
    format!("{}{}", sig(x, 4), UNITS[i])
}

/// Docker's I/O sizes: decimal units, 3 significant digits ("4.1kB").
pub fn decimal_size(v: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut x = v as f64;
    let mut i = 0;
    while x >= 1000.0 && i + 1 < UNITS.len() {
        x /= 1000.0;
        i += 1;
    }
    format!("{}{}", sig(x, 3), UNITS[i])
}

/// `x` with `digits` significant digits and no trailing zeros (C's `%.Ng`
/// for the values sizes take).
fn sig(x: f64, digits: i32) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let int_digits = (x.abs().log10().floor() as i32 + 1).max(1);
    let decimals = usize::try_from((digits - int_digits).max(0)).unwrap_or(0);
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub fn stats_table(s: &v1::StatsResponse) -> String {
    let rows: Vec<[String; 8]> = s
        .stats
        .iter()
        .map(|c| {
            let dash = |v: String| if c.stopped { "--".to_string() } else { v };
            [
                c.id.chars().take(12).collect(),
                c.name.clone(),
                dash(format!("{:.2}%", c.cpu_percent)),
                dash(format!(
                    "{} / {}",
                    binary_size(c.memory_usage),
                    binary_size(c.memory_limit)
                )),
                dash(format!("{:.2}%", c.memory_percent)),
                dash(format!(
                    "{} / {}",
                    decimal_size(c.net_rx),
                    decimal_size(c.net_tx)
                )),
                dash(format!(
                    "{} / {}",
                    decimal_size(c.blkio_read),
                    decimal_size(c.blkio_write)
                )),
                dash(c.pids.to_string()),
            ]
        })
        .collect();
    crate::format::table(
        &[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ],
        &rows,
    )
}

/// The `stats --format json` line of one container in one sample.
pub fn stats_json(time: &str, c: &v1::ContainerStats) -> serde_json::Value {
    serde_json::json!({
        "time": time,
        "id": c.id,
        "name": c.name,
        "cpu_percent": (c.cpu_percent * 100.0).round() / 100.0,
        "memory_usage": c.memory_usage,
        "memory_limit": c.memory_limit,
        "memory_percent": (c.memory_percent * 100.0).round() / 100.0,
        "pids": c.pids,
        "blkio_read": c.blkio_read,
        "blkio_write": c.blkio_write,
        "net_rx": c.net_rx,
        "net_tx": c.net_tx,
        "oom_kills": c.oom_kills,
        "running": !c.stopped,
    })
}

pub async fn stats(
    client: &mut Client,
    containers: Vec<String>,
    all: bool,
    no_stream: bool,
    fmt: &str,
) -> crate::CmdResult {
    use std::io::{IsTerminal, Write};
    let mut stream = client
        .stats(v1::StatsRequest {
            containers,
            all,
            stream: !no_stream,
        })
        .await?
        .into_inner();
    let live = !no_stream && fmt == "table" && std::io::stdout().is_terminal();
    while let Some(s) = stream.message().await? {
        let mut out = std::io::stdout().lock();
        if fmt == "json" {
            for c in &s.stats {
                let _ = writeln!(out, "{}", stats_json(&s.time, c));
            }
        } else {
            if live {
                // Clear and home, then the table: refreshed in place.
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = write!(out, "{}", stats_table(&s));
        }
        if out.flush().is_err() {
            return Ok(0);
        }
    }
    Ok(0)
}

pub async fn info(client: &mut Client) -> crate::CmdResult {
    let i = client.info(v1::InfoRequest {}).await?.into_inner();
    println!("Server version: {}", i.version);
    println!("Runtime: {}", i.runtime);
    println!("Root: {}", i.root);
    println!("Cgroup: {}", i.cgroup);
    println!("Cgroup controllers: {}", i.cgroup_controllers.join(" "));
    println!("Containers: {}", i.containers);
    println!(" Running: {}", i.running);
    println!(" Paused: {}", i.paused);
    println!(" Stopped: {}", i.stopped);
    println!("Images: {}", i.images);
    println!("Storage driver: {}", i.storage_driver);
    println!("Network modes: {}", i.network_modes.join(" "));
    println!("CPUs: {}", i.cpus);
    println!("Total memory: {}", binary_size(i.memory));
    println!("Kernel: {}", i.kernel);
    if !i.config.is_empty() {
        println!("Config:");
        for line in i.config.lines() {
            println!(" {line}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(binary_size(128 << 20), "128MiB");
        assert_eq!(binary_size(8_191_234_048), "7.629GiB");
        assert_eq!(decimal_size(0), "0B");
        assert_eq!(decimal_size(4096), "4.1kB");
        assert_eq!(decimal_size(12_345_678), "12.3MB");
        assert_eq!(decimal_size(999), "999B");
    }
}
