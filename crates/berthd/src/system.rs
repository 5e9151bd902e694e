//! The everyday commands that look at or tidy up the whole daemon: `top`
//! (a container's processes), container `prune`, `system df` and the sizes
//! of `ps -s`. Nothing here knows about gRPC beyond returning a `Status`:
//! the `berth.v1` service and the Docker API both call these.
//!
//! Sizes are counted as Docker counts them (its `directory.Size`): the
//! apparent sizes of everything but directories, hard links once, symlinks
//! not followed; so `ps -s` and `system df` print what `docker` prints for
//! the same files. Image layers never change, so their sizes are computed
//! once and kept.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use berth_api::v1;
use berth_core::container::{ContainerRecord, State};
use berth_image::digest::Digest;
use berth_image::images::ImageSummary;
use berth_image::snapshot::SnapshotterKind;
use tonic::Status;

use crate::images::Images;

/// How long `ps` may run for `top`.
const PS_TIMEOUT: Duration = Duration::from_secs(10);

/// Docker's directory size: apparent bytes of every non-directory entry,
/// hard links once, symlinks not followed. Entries that vanish while it
/// walks are skipped (a running container writes as we count).
pub fn tree_size(root: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                walk(&e.path(), seen, total);
                continue;
            }
            if md.len() == 0 {
                continue;
            }
            if md.nlink() > 1 && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            *total += md.len();
        }
    }
    let mut total = 0;
    walk(root, &mut HashSet::new(), &mut total);
    total
}

/// Sizes of image layers (by chain id), computed once: layers are
/// immutable.
#[derive(Default)]
pub struct LayerSizes {
    known: Mutex<HashMap<Digest, u64>>,
}

impl LayerSizes {
    /// Chain id → unpacked size of every layer the snapshotter has.
    /// Blocking (walks new layers).
    pub fn all(&self, images: &Images) -> HashMap<Digest, u64> {
        let layers = images.snaps.layers().unwrap_or_default();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::with_capacity(layers.len());
        for l in layers {
            let size = *known
                .entry(l.chain_id.clone())
                .or_insert_with(|| tree_size(&l.path));
            out.insert(l.chain_id, size);
        }
        // Forget removed layers.
        known.retain(|k, _| out.contains_key(k));
        out
    }
}

/// An image's unpacked size: its layers' sizes (a layer not unpacked
/// counts its blob's size as stored).
fn image_size(s: &ImageSummary, layers: &HashMap<Digest, u64>) -> u64 {
    let r = &s.record;
    r.chain_ids
        .iter()
        .zip(r.layers.iter())
        .map(|(c, l)| layers.get(c).copied().unwrap_or(l.size))
        .sum()
}

/// The bytes a container wrote to its root (0 without an image snapshot).
pub fn container_size_rw(images: &Images, id: &str) -> u64 {
    images
        .snaps
        .container_layer(id)
        .map(|p| tree_size(&p))
        .unwrap_or(0)
}

/// `size_rw` and `size_root_fs` of a container ("virtual": with the
/// image's layers; with the copy snapshotter the copy is the whole root).
/// Blocking.
pub fn container_sizes(
    images: &Images,
    by_id: &HashMap<String, u64>,
    rec: &ContainerRecord,
) -> (i64, i64) {
    let rw = container_size_rw(images, &rec.id);
    let base = match (images.snaps.kind(), rec.config.source.image()) {
        (SnapshotterKind::Overlay, Some(i)) => by_id.get(&i.id).copied().unwrap_or(0),
        _ => 0,
    };
    (to_i64(rw), to_i64(rw + base))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Image id → unpacked size, for every image.
pub fn image_sizes(images: &Images, layers: &HashMap<Digest, u64>) -> HashMap<String, u64> {
    images
        .db
        .list()
        .unwrap_or_default()
        .iter()
        .map(|s| (s.record.id.to_string(), image_size(s, layers)))
        .collect()
}

/// `system df`: every image, container and volume with its size.
/// Blocking.
pub fn disk_usage(
    images: &Images,
    sizes: &LayerSizes,
    vols: &crate::volumes::Volumes,
    records: &[ContainerRecord],
    users: &HashMap<String, Vec<String>>,
    container: impl Fn(&ContainerRecord) -> v1::Container,
) -> Result<v1::DiskUsageResponse, Status> {
    let layers = sizes.all(images);
    let list = images
        .db
        .list()
        .map_err(|e| Status::internal(format!("listing images: {e}")))?;
    // How many images use each layer: a layer of two is shared.
    let mut users_of: HashMap<&Digest, usize> = HashMap::new();
    for s in &list {
        for c in s.record.chain_ids.iter().collect::<HashSet<_>>() {
            *users_of.entry(c).or_default() += 1;
        }
    }
    let mut per_image: HashMap<String, i64> = HashMap::new();
    for r in records {
        if let Some(i) = r.config.source.image() {
            *per_image.entry(i.id.clone()).or_default() += 1;
        }
    }
    let mut by_id = HashMap::new();
    let mut out = v1::DiskUsageResponse::default();
    let mut distinct: HashMap<&Digest, u64> = HashMap::new();
    for s in &list {
        let r = &s.record;
        let size = image_size(s, &layers);
        let mut shared = 0;
        for (c, l) in r.chain_ids.iter().zip(r.layers.iter()) {
            let n = layers.get(c).copied().unwrap_or(l.size);
            distinct.insert(c, n);
            if users_of.get(c).copied().unwrap_or(0) > 1 {
                shared += n;
            }
        }
        by_id.insert(r.id.to_string(), size);
        out.images.push(v1::ImageUsage {
            id: r.id.to_string(),
            repo_tags: s.names.clone(),
            created: r.created.clone().unwrap_or_default(),
            size: to_i64(size),
            shared_size: to_i64(shared),
            containers: per_image.get(&r.id.to_string()).copied().unwrap_or(0),
        });
    }
    out.layers_size = to_i64(distinct.values().sum());
    for rec in records {
        let (rw, root) = container_sizes(images, &by_id, rec);
        let mut c = container(rec);
        c.size_rw = Some(rw);
        c.size_root_fs = Some(root);
        out.containers.push(v1::ContainerUsage {
            container: Some(c),
            local_volumes: u32::try_from(crate::volumes_api::volumes_of(vols, rec).len())
                .unwrap_or(u32::MAX),
        });
    }
    let vlist = vols
        .list()
        .map_err(|e| Status::internal(format!("listing volumes: {e}")))?;
    for v in vlist {
        out.volumes.push(v1::VolumeUsage {
            size: to_i64(tree_size(&vols.data(&v.name))),
            links: users.get(&v.name).map_or(0, |u| u.len() as i64),
            name: v.name,
        });
    }
    Ok(out)
}

/// `top`: run the host's `ps` with `args` (default `-ef`) and keep the
/// rows of `pids`, as Docker does: the header gives the columns, the one
/// named PID says whose row it is, the last column (the command) keeps its
/// spaces. Thread rows (`-` as PID, with `m` or `-L`) follow their process.
pub async fn top(args: &[String], pids: &[i32]) -> Result<v1::TopResponse, Status> {
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let child = tokio::process::Command::new("ps")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PS_TIMEOUT, child)
        .await
        .map_err(|_| Status::deadline_exceeded("ps did not finish within 10 s"))?
        .map_err(|e| Status::internal(format!("cannot run ps: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        return Err(Status::invalid_argument(format!(
            "ps {} failed ({}): {first}",
            args.join(" "),
            out.status
        )));
    }
    parse_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

fn parse_ps(text: &str, pids: &[i32]) -> Result<v1::TopResponse, Status> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let Some(pid_col) = titles.iter().position(|t| t == "PID") else {
        return Err(Status::invalid_argument(
            "ps's output has no PID column: give options that show it (e.g. -ef, aux, -o pid,comm)",
        ));
    };
    let want: HashSet<i32> = pids.iter().copied().collect();
    let mut processes = Vec::new();
    let mut in_container = false;
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() <= pid_col {
            continue;
        }
        let keep = if fields[pid_col] == "-" {
            in_container
        } else {
            let pid: i32 = fields[pid_col].parse().map_err(|_| {
                Status::internal(format!(
                    "ps printed an unexpected pid {:?}",
                    fields[pid_col]
                ))
            })?;
            in_container = want.contains(&pid);
            in_container
        };
        if keep {
            let n = titles.len();
            let mut row: Vec<String> = fields
                .iter()
                .take(n.saturating_sub(1))
                .map(|s| s.to_string())
                .collect();
            if fields.len() >= n {
                row.push(fields[n - 1..].join(" "));
            }
            processes.push(v1::TopRow { fields: row });
        }
    }
    Ok(v1::TopResponse { titles, processes })
}

/// Docker's container prune filters.
#[derive(Debug, Default)]
pub struct PruneFilters {
    /// Created before this.
    until: Option<SystemTime>,
    /// Every one must match.
    labels: Vec<(String, Option<String>)>,
    /// None may match.
    not_labels: Vec<(String, Option<String>)>,
}

fn label_filter(v: &str) -> (String, Option<String>) {
    match v.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (v.to_string(), None),
    }
}

/// A point in time as Docker's filters and `--since` take it: RFC 3339
/// (or a date and time without zone, UTC), Unix seconds (with a
/// fraction), or a duration before `now` (`10m`, `1h30m`, `24h`).
pub fn parse_time(v: &str, now: SystemTime) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Some(t);
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs_f64(secs));
        }
        return None;
    }
    if let Ok(d) = humantime::parse_duration(v) {
        return now.checked_sub(d);
    }
    None
}

impl PruneFilters {
    pub fn parse(filters: &[String]) -> Result<Self, Status> {
        let mut f = PruneFilters::default();
        for raw in filters {
            let bad = || {
                Status::invalid_argument(format!(
                    "invalid prune filter {raw:?}: use until=TIME (RFC 3339, Unix seconds or a duration like 24h), label=KEY[=VALUE] or label!=KEY[=VALUE]"
                ))
            };
            let (k, v) = raw.split_once('=').ok_or_else(bad)?;
            match k {
                "until" => {
                    let t = parse_time(v, SystemTime::now()).ok_or_else(bad)?;
                    // Several untils: the earliest wins (all must hold).
                    f.until = Some(f.until.map_or(t, |u| u.min(t)));
                }
                "label" if !v.is_empty() => f.labels.push(label_filter(v)),
                "label!" if !v.is_empty() => f.not_labels.push(label_filter(v)),
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    pub fn matches(&self, rec: &ContainerRecord) -> bool {
        let has = |(k, v): &(String, Option<String>)| match (rec.config.labels.get(k), v) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        };
        if let Some(until) = self.until {
            match humantime::parse_rfc3339_weak(&rec.created_at) {
                Ok(created) if created < until => {}
                _ => return false,
            }
        }
        self.labels.iter().all(has) && !self.not_labels.iter().any(has)
    }
}

/// What prune may remove: stopped (not waiting for a policy restart) or
/// created containers.
pub fn prunable(rec: &ContainerRecord) -> bool {
    matches!(rec.state, State::Stopped | State::Created) && !rec.restarting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_are_kept_by_pid_and_the_command_keeps_its_spaces() {
        let text = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                    root           1       0  0 Dec01 ?        00:00:01 /sbin/init splash\n\
                    root         100      90  0 10:00 ?        00:00:00 sleep 1000\n\
                    root         101     100  0 10:00 ?        00:00:00 sh -c echo a  b\n";
        let r = parse_ps(text, &[100, 101]).unwrap();
        assert_eq!(r.titles.len(), 8);
        assert_eq!(r.processes.len(), 2);
        assert_eq!(r.processes[0].fields[1], "100");
        assert_eq!(r.processes[0].fields[7], "sleep 1000");
        assert_eq!(r.processes[1].fields[7], "sh -c echo a b");
        assert!(parse_ps("USER COMMAND\nroot init\n", &[1]).is_err());
    }

    #[test]
    fn thread_rows_follow_their_process() {
        let text =
            "USER PID %CPU COMMAND\nroot 5 0.0 a\nroot - 0.0 -\nroot 6 0.0 b\nroot - 0.0 -\n";
        let r = parse_ps(text, &[5]).unwrap();
        assert_eq!(r.processes.len(), 2);
        assert_eq!(r.processes[1].fields[1], "-");
    }

    #[test]
    fn times_as_docker_filters_take_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        assert_eq!(
            parse_time("1h30m", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100_000 - 5400))
        );
        assert_eq!(
            parse_time("10m", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(99_400))
        );
        assert_eq!(
            parse_time("1700000000", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            parse_time("2026-01-02T15:04:05Z", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_366_245))
        );
        assert_eq!(parse_time("yesterday", now), None);
        assert!(PruneFilters::parse(&["until=soon".into()]).is_err());
        assert!(PruneFilters::parse(&["name=x".into()]).is_err());
        assert!(PruneFilters::parse(&["label=".into()]).is_err());
        assert!(
            PruneFilters::parse(&["until=24h".into(), "label=a=b".into(), "label!=c".into()])
                .is_ok()
        );
    }

    #[test]
    fn tree_size_counts_apparent_bytes_and_hard_links_once() {
        let dir = std::env::temp_dir().join(format!("berthd-treesize-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), b"12345").unwrap();
        std::fs::write(dir.join("sub/b"), b"123").unwrap();
        std::fs::hard_link(dir.join("a"), dir.join("sub/a2")).unwrap();
        std::os::unix::fs::symlink("a", dir.join("l")).unwrap();
        assert_eq!(tree_size(&dir), 5 + 3 + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
