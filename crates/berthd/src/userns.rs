//! User namespaces (`--userns`, berthd's `userns` and `userns-pool`
//! settings): which containers get one, and the range of host ids each is
//! given.
//!
//! A container with `--userns=auto` gets a range of its own (65536 ids
//! unless `auto:size=N`) from berthd's pool, first fit, never overlapping
//! another container's. The truth of who holds what is the container
//! records themselves: a record's spec carries its uid and gid mappings,
//! and the records are in the store, so after a crash (even a SIGKILL
//! between allocating and recording) the ranges in use are exactly those
//! of the containers restored: none lost, none given twice. Between the
//! choice and the record being written, a [`Lease`] keeps the range from
//! being chosen by a create running beside it; removing a container frees
//! its range with its record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_core::spec::IdRange;
use tonic::Status;

/// The range size `auto` gives without `size=`: Docker's and Podman's
/// 65536 (every 16-bit id).
pub const DEFAULT_SIZE: u32 = 65536;
/// The pool without a `berth` entry in /etc/subuid and /etc/subgid, nor
/// `userns-pool`: high above any id a host gives its users.
pub const DEFAULT_POOL: IdRange = IdRange {
    host: 100_000_000,
    size: 1_000_000_000,
};

/// What a request (or the daemon default) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The host's user namespace.
    Host,
    /// A range of `size` ids of its own.
    Auto { size: u32 },
}

/// Parses `host`, `auto` or `auto:size=N`.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    const HELP: &str = "use host, auto or auto:size=N";
    match s {
        "host" => return Ok(Mode::Host),
        "auto" => return Ok(Mode::Auto { size: DEFAULT_SIZE }),
        _ => {}
    }
    let Some(opts) = s.strip_prefix("auto:") else {
        return Err(format!("invalid --userns {s:?}: {HELP}"));
    };
    let mut size = DEFAULT_SIZE;
    for opt in opts.split(',') {
        match opt.split_once('=') {
            Some(("size", n)) => {
                size = n
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        format!("invalid --userns {s:?}: size must be a number of ids from 1 to 4294967295, as in auto:size=65536")
                    })?;
            }
            _ => {
                return Err(format!(
                    "invalid --userns {s:?}: unknown option {opt:?}; auto takes only size=N"
                ))
            }
        }
    }
    Ok(Mode::Auto { size })
}

/// Parses `userns-pool`: `START:SIZE`.
pub fn parse_pool(s: &str) -> Result<IdRange, String> {
    let bad = || {
        format!("invalid user namespace pool {s:?}: use START:SIZE with START at least 1 and START+SIZE at most 4294967295, e.g. 100000000:1000000000")
    };
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let host: u32 = a.parse().map_err(|_| bad())?;
    let size: u32 = b.parse().map_err(|_| bad())?;
    if host == 0 || size == 0 || host.checked_add(size).is_none() {
        return Err(bad());
    }
    Ok(IdRange { host, size })
}

/// The `berth` user's entries of /etc/subuid and /etc/subgid (`NAME:START:COUNT`
/// lines): the ids both files give it (the first entry of each, intersected).
pub fn pool_from_subid(subuid: &str, subgid: &str) -> Option<IdRange> {
    fn entry(text: &str) -> Option<(u64, u64)> {
        text.lines().find_map(|l| {
            let mut f = l.trim().split(':');
            if f.next()? != "berth" {
                return None;
            }
            let start: u64 = f.next()?.parse().ok()?;
            let count: u64 = f.next()?.parse().ok()?;
            Some((start, start + count))
        })
    }
    let (u0, u1) = entry(subuid)?;
    let (g0, g1) = entry(subgid)?;
    let (lo, hi) = (u0.max(g0).max(1), u1.min(g1).min(u64::from(u32::MAX)));
    (hi > lo).then(|| IdRange {
        host: lo as u32,
        size: (hi - lo) as u32,
    })
}

/// The pool in force: `userns-pool` if set, else the `berth` user's
/// subordinate ids, else [`DEFAULT_POOL`].
pub fn pool(setting: Option<&str>, etc: &Path) -> Result<IdRange, String> {
    if let Some(s) = setting.filter(|s| !s.is_empty()) {
        return parse_pool(s);
    }
    let read = |f: &str| std::fs::read_to_string(etc.join(f)).unwrap_or_default();
    Ok(pool_from_subid(&read("subuid"), &read("subgid")).unwrap_or(DEFAULT_POOL))
}

/// Hands out ranges from the pool.
pub struct Userns {
    pool: IdRange,
    default: Mode,
    /// Ranges chosen but not yet in a record, by lease number.
    pending: Mutex<(u64, BTreeMap<u64, IdRange>)>,
}

/// A range chosen for a create in progress; dropping it (once the record
/// holds the range, or when the create failed) lets the range go.
pub struct Lease {
    owner: Arc<Userns>,
    key: u64,
    pub range: IdRange,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("range", &self.range)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut p = self.owner.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.1.remove(&self.key);
    }
}

impl Userns {
    pub fn new(pool: IdRange, default: Mode) -> Arc<Userns> {
        Arc::new(Userns {
            pool,
            default,
            pending: Mutex::new((0, BTreeMap::new())),
        })
    }

    pub fn pool(&self) -> IdRange {
        self.pool
    }

    /// The mode of a request: its own, else the daemon's default.
    pub fn mode(&self, requested: &str) -> Result<Mode, Status> {
        if requested.is_empty() {
            return Ok(self.default);
        }
        parse_mode(requested).map_err(Status::invalid_argument)
    }

    /// Chooses the lowest free range of `size` ids: free of `in_use` (the
    /// records' ranges) and of every pending lease.
    pub fn allocate(
        self: &Arc<Self>,
        size: u32,
        in_use: impl IntoIterator<Item = IdRange>,
    ) -> Result<Lease, Status> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken: Vec<(u64, u64)> = in_use
            .into_iter()
            .chain(p.1.values().copied())
            .map(|r| (u64::from(r.host), u64::from(r.host) + u64::from(r.size)))
            .collect();
        taken.sort_unstable();
        let end = u64::from(self.pool.host) + u64::from(self.pool.size);
        let mut at = u64::from(self.pool.host);
        for (lo, hi) in taken {
            if lo >= at + u64::from(size) {
                break;
            }
            at = at.max(hi);
        }
        if at + u64::from(size) > end {
            return Err(Status::resource_exhausted(format!(
                "no free range of {size} ids left in the user namespace pool {}-{}: remove containers, ask for a smaller --userns=auto:size=N, or widen userns-pool",
                self.pool.host,
                end - 1
            )));
        }
        p.0 += 1;
        let key = p.0;
        let range = IdRange {
            host: at as u32,
            size,
        };
        p.1.insert(key, range);
        Ok(Lease {
            owner: self.clone(),
            key,
            range,
        })
    }
}

/// The spec annotation that says how the container's root got its owners
/// (`idmapped` or `chowned`): `berth inspect` shows it.
pub const ROOTFS_ANNOTATION: &str = "berth.userns.rootfs";

/// The volumes among `mounts` that are still empty and owned by host root
/// (new, or never written by a container in a user namespace) are given to
/// the range's root, so that the container's root can write to them. A
/// volume with content keeps its owners; so do host directories (`-v
/// /host:/dir`), which the container sees by their host ids.
pub fn own_new_volumes(
    mounts: &[oci_spec::runtime::Mount],
    vols: &crate::volumes::Volumes,
    range: IdRange,
) -> Result<(), Status> {
    use std::os::unix::fs::MetadataExt;
    for m in mounts {
        let Some(src) = m.source() else { continue };
        if vols.name_of(src).is_none() {
            continue;
        }
        let meta = std::fs::symlink_metadata(src)
            .map_err(|e| Status::internal(format!("cannot read volume {}: {e}", src.display())))?;
        let empty = std::fs::read_dir(src)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if meta.is_dir() && empty && meta.uid() == 0 && meta.gid() == 0 {
            std::os::unix::fs::lchown(src, Some(range.host), Some(range.host)).map_err(|e| {
                Status::internal(format!(
                    "cannot give volume {} to the container's root: {e}",
                    src.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// Makes a user namespace mapping `range` and a network namespace it owns,
/// bound to the files `user` and `net` (which must exist).
///
/// The network namespace must belong to the container's user namespace:
/// a runtime that enters the user namespace first and then joins the
/// network namespace (libcontainer for every process, runc for exec) has
/// no capability over one the host's user namespace owns, and the kernel
/// refuses the setns. So berthd makes both, as Podman does: a child cloned
/// into a new user and network namespace waits on a pipe while berthd
/// writes its id maps and binds its two namespaces; the runtime then joins
/// the user namespace by path instead of making one.
pub fn make_namespaces(range: IdRange, user: &Path, net: &Path) -> Result<(), String> {
    use nix::sched::CloneFlags;
    use std::os::fd::AsRawFd;

    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let rd_fd = rd.as_raw_fd();
    let mut stack = vec![0u8; 64 * 1024];
    // The child is a copy of a multi-threaded process: it makes only raw
    // system calls (read, then exit when its closure returns).
    let child = Box::new(move || {
        let mut b = [0u8; 1];
        // SAFETY: read(2) into a local buffer of the length given.
        unsafe { libc::read(rd_fd, b.as_mut_ptr().cast(), 1) };
        0
    });
    // SAFETY: the child gets its own stack and touches nothing shared (see
    // above); without CLONE_VM it has a copy of this process's memory.
    let pid = unsafe {
        nix::sched::clone(
            child,
            &mut stack,
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| format!("cannot make a user and network namespace: {e}"))?;
    let map = format!("0 {} {}\n", range.host, range.size);
    let bind = |what: &str, to: &Path| {
        nix::mount::mount(
            Some(Path::new(&format!("/proc/{pid}/ns/{what}"))),
            to,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind the {what} namespace to {}: {e}", to.display()))
    };
    let res = std::fs::write(format!("/proc/{pid}/uid_map"), &map)
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), &map))
        .map_err(|e| format!("cannot write the user namespace's id maps: {e}"))
        .and_then(|()| bind("user", user))
        .and_then(|()| bind("net", net));
    // The child ends on the byte (or at worst on SIGKILL); its namespaces
    // live on in the bound files.
    if nix::unistd::write(&wr, b"x").is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    drop(wr);
    drop(rd);
    let _ = nix::sys::wait::waitpid(pid, None);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: u32, size: u32) -> IdRange {
        IdRange { host, size }
    }

    #[test]
    fn modes_parse_and_bad_ones_say_what_to_do() {
        assert_eq!(parse_mode("host"), Ok(Mode::Host));
        assert_eq!(parse_mode("auto"), Ok(Mode::Auto { size: 65536 }));
        assert_eq!(parse_mode("auto:size=1024"), Ok(Mode::Auto { size: 1024 }));
        for bad in [
            "",
            "Auto",
            "auto:",
            "auto:size=0",
            "auto:size=-1",
            "auto:size=x",
            "auto:uidmapping=0:1:2",
            "private",
        ] {
            let e = parse_mode(bad).unwrap_err();
            assert!(e.contains("--userns"), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn pools_from_the_setting_or_subid() {
        assert_eq!(parse_pool("100000:65536"), Ok(r(100_000, 65536)));
        for bad in ["0:10", "10:0", "4294967295:2", "x:1", "1", ""] {
            assert!(parse_pool(bad).is_err(), "{bad}");
        }
        let uid = "alice:100000:65536\nberth:200000:1000000\n";
        let gid = "berth:300000:1000000\n";
        assert_eq!(pool_from_subid(uid, gid), Some(r(300_000, 900_000)));
        assert_eq!(pool_from_subid(uid, "alice:1:2\n"), None);
        assert_eq!(pool_from_subid("berth:10:5\n", "berth:20:5\n"), None);
    }

    #[test]
    fn ranges_are_disjoint_first_fit_and_come_back() {
        let u = Userns::new(r(1000, 300), Mode::Host);
        let a = u.allocate(100, []).unwrap();
        assert_eq!(a.range, r(1000, 100));
        // A pending lease is taken as well as the records' ranges.
        let b = u.allocate(100, []).unwrap();
        assert_eq!(b.range, r(1100, 100));
        let c = u.allocate(100, [a.range, b.range]).unwrap();
        assert_eq!(c.range, r(1200, 100));
        drop((a, b, c));
        // Full: the records hold everything.
        let e = u
            .allocate(1, [r(1000, 100), r(1100, 100), r(1200, 100)])
            .unwrap_err();
        assert!(e.message().contains("no free range"), "{e}");
        // The hole a removed container left is used first.
        let d = u.allocate(50, [r(1000, 100), r(1200, 100)]).unwrap();
        assert_eq!(d.range, r(1100, 50));
        // 60 do not fit before 1200 nor after 1300 (the pool's end).
        assert!(u.allocate(60, [r(1000, 100), r(1200, 100)]).is_err());
        let f = u.allocate(50, [r(1000, 100), r(1200, 100)]).unwrap();
        assert_eq!(f.range, r(1150, 50));
        // Overlapping input and a range out of the pool do no harm.
        drop((d, f));
        let g = u.allocate(10, [r(5, 1_000_000), r(1005, 10)]).unwrap_err();
        assert!(g.message().contains("no free range"));
    }
}
