//! `Stats`: one sampler for every client.
//!
//! While at least one client streams, one task reads the cgroup of every
//! running container once per [`INTERVAL`] and broadcasts the sample; each
//! client's stream keeps the containers it asked for. So the cost is one
//! read of each container's few cgroup files per second, whatever the
//! number of clients, and nothing at all when nobody watches (the task ends
//! with its last receiver). The shims take no part: they stay idle.
//!
//! Network I/O is read from `/proc/<init pid>/net/dev`, which shows the
//! interfaces of the init's network namespace: the sum over all but `lo`.
//! A container in the host's namespace (`--network host`) reports none,
//! as Docker does, rather than the host's traffic.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::v1;
use berth_core::container::State;
use berth_core::Supervisor;
use tokio::sync::broadcast;

use crate::cgroup::{self, Sample};

/// How often the sampler reads the cgroups.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One round of readings, for every running container.
pub type Tick = Arc<v1::StatsResponse>;

#[derive(Clone)]
pub struct Sampler {
    inner: Arc<Mutex<Option<broadcast::Sender<Tick>>>>,
    sup: Supervisor,
}

impl Sampler {
    pub fn new(sup: Supervisor) -> Self {
        Sampler {
            inner: Arc::new(Mutex::new(None)),
            sup,
        }
    }

    /// A receiver of the samples; starts the sampling task if none runs.
    pub fn subscribe(&self) -> broadcast::Receiver<Tick> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = g.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(4);
        *g = Some(tx.clone());
        let this = self.clone();
        tokio::spawn(async move { this.run(tx).await });
        rx
    }

    async fn run(self, tx: broadcast::Sender<Tick>) {
        let mut prev: HashMap<String, (Sample, u64)> = HashMap::new();
        let mut first = true;
        loop {
            let targets: Vec<(String, String, PathBuf, i32)> = self
                .sup
                .list(false)
                .into_iter()
                .filter(|r| matches!(r.state, State::Running | State::Paused))
                .filter_map(|r| {
                    let path = r.spec.linux().as_ref()?.cgroups_path().clone()?;
                    Some((r.id, r.name, path, r.pid))
                })
                .collect();
            let readings = tokio::task::spawn_blocking(move || {
                let host = cgroup::host();
                let system = cgroup::system_cpu_ns().unwrap_or(0);
                let host_netns = netns_inode(std::process::id() as i32);
                let read: Vec<_> = targets
                    .into_iter()
                    .filter_map(|(id, name, path, pid)| {
                        let s = host.sample(&path).ok()?;
                        let net = if pid > 0 && netns_inode(pid) != host_netns {
                            net_io(pid)
                        } else {
                            (0, 0)
                        };
                        Some((id, name, s, net))
                    })
                    .collect();
                (system, read)
            })
            .await;
            let Ok((system, readings)) = readings else {
                break;
            };
            let cpus = host_cpus();
            let host_mem = cgroup::host_memory();
            let mut stats = Vec::with_capacity(readings.len());
            let mut next = HashMap::with_capacity(readings.len());
            for (id, name, s, (net_rx, net_tx)) in readings {
                let cpu_percent = match prev.get(&id) {
                    Some((p, psys)) => cpu_percent(p.cpu_ns, s.cpu_ns, *psys, system, cpus),
                    None => 0.0,
                };
                let limit = s.memory_limit.unwrap_or(host_mem).min(host_mem.max(1));
                stats.push(v1::ContainerStats {
                    id: id.clone(),
                    name,
                    cpu_percent,
                    memory_usage: s.memory,
                    memory_limit: limit,
                    memory_percent: if limit > 0 {
                        s.memory as f64 * 100.0 / limit as f64
                    } else {
                        0.0
                    },
                    blkio_read: s.blkio_read,
                    blkio_write: s.blkio_write,
                    pids: s.pids,
                    net_rx,
                    net_tx,
                    stopped: false,
                    oom_kills: s.oom_kills,
                });
                next.insert(id, (s, system));
            }
            // The first round only sets the baseline: a CPU % needs two.
            if !first {
                let tick = Arc::new(v1::StatsResponse {
                    time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
                    stats,
                });
                let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if tx.receiver_count() == 0 {
                    // Nobody left: end, under the lock so that a new
                    // subscriber starts a new task instead.
                    *g = None;
                    return;
                }
                let _ = tx.send(tick);
            }
            first = false;
            prev = next;
            tokio::time::sleep(INTERVAL).await;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = None;
    }
}

/// The host's online CPUs (Docker's `online_cpus`).
fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1)
}

/// The inode of a process's network namespace (None: it is gone).
fn netns_inode(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Bytes received and sent on the interfaces of `pid`'s network namespace.
fn net_io(pid: i32) -> (u64, u64) {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| parse_net_dev(&t))
        .unwrap_or((0, 0))
}

/// Sums `/proc/net/dev`'s receive and transmit bytes over every interface
/// but `lo`: two header lines, then `name: rx_bytes rx_packets … (8 receive
/// fields) tx_bytes …`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = fields
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}

/// Docker's CPU %: the container's CPU time over the host's in the same
/// interval, times the CPUs: 100 % per fully busy CPU.
pub fn cpu_percent(prev_cpu: u64, cpu: u64, prev_system: u64, system: u64, cpus: u32) -> f64 {
    let cpu_delta = cpu.saturating_sub(prev_cpu) as f64;
    let system_delta = system.saturating_sub(prev_system) as f64;
    if system_delta <= 0.0 || cpu_delta <= 0.0 {
        return 0.0;
    }
    cpu_delta / system_delta * f64::from(cpus) * 100.0
}

/// The stream of one `Stats` call: the samples of the containers it asked
/// for (resolved once, at the call).
pub fn stream(
    sampler: &Sampler,
    r: v1::StatsRequest,
) -> Result<tokio::sync::mpsc::Receiver<Result<v1::StatsResponse, tonic::Status>>, tonic::Status> {
    let sup = sampler.sup.clone();
    let wanted: Option<Vec<(String, String)>> = if r.containers.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for key in &r.containers {
            let rec = sup.inspect(key).map_err(crate::service::status)?;
            v.push((rec.id, rec.name));
        }
        Some(v)
    };
    let mut rx = sampler.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let tick = match rx.recv().await {
                Ok(t) => t,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let msg = select(&tick, wanted.as_deref(), r.all, &sup);
            if tx.send(Ok(msg)).await.is_err() || !r.stream {
                break;
            }
        }
    });
    Ok(out)
}

fn stopped(id: &str, name: &str) -> v1::ContainerStats {
    v1::ContainerStats {
        id: id.to_string(),
        name: name.to_string(),
        stopped: true,
        ..Default::default()
    }
}

/// The part of a sample one client asked for: named containers in the
/// order given (zeros for one that is not running), or every running one,
/// or with `all` every container.
fn select(
    tick: &v1::StatsResponse,
    wanted: Option<&[(String, String)]>,
    all: bool,
    sup: &Supervisor,
) -> v1::StatsResponse {
    let find = |id: &str| tick.stats.iter().find(|s| s.id == id).cloned();
    let stats = match wanted {
        Some(w) => w
            .iter()
            .map(|(id, name)| find(id).unwrap_or_else(|| stopped(id, name)))
            .collect(),
        None if all => sup
            .list(true)
            .iter()
            .map(|r| find(&r.id).unwrap_or_else(|| stopped(&r.id, &r.name)))
            .collect(),
        None => tick.stats.clone(),
    };
    v1::StatsResponse {
        time: tick.time.clone(),
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::{cpu_percent, parse_net_dev};

    #[test]
    fn net_dev_sums_all_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:    5296      48    0    0    0     0          0         0     1226      15    0    0    0     0       0          0
  eth1:     100       1    0    0    0     0          0         0       50       1    0    0    0     0       0          0
";
        assert_eq!(parse_net_dev(text), (5396, 1276));
        assert_eq!(parse_net_dev(""), (0, 0));
        assert_eq!(parse_net_dev("a\nb\nbroken line\n  x: 1 2\n"), (0, 0));
    }

    #[test]
    fn cpu_percent_counts_every_core() {
        // 2 CPUs for 1 s: the host accounts 2 s; half a CPU used = 50 %.
        assert!((cpu_percent(0, 500_000_000, 0, 2_000_000_000, 2) - 50.0).abs() < 1e-9);
        // Both CPUs busy: 200 %.
        assert!((cpu_percent(0, 2_000_000_000, 0, 2_000_000_000, 2) - 200.0).abs() < 1e-9);
        assert_eq!(cpu_percent(5, 5, 0, 0, 2), 0.0);
        // A counter that went backwards (a new cgroup) is no usage.
        assert_eq!(cpu_percent(10, 5, 0, 100, 2), 0.0);
    }
}
