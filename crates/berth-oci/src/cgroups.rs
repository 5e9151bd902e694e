//! berth's own cgroup removal: for containers whose runtime state is gone,
//! and for the delete of a stopped container (`embedded::delete_stopped`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Kill every process in the cgroup `path` (as in `linux.cgroupsPath`, under
/// every mounted hierarchy, v1 and v2) and remove its directories, deepest
/// first. Retries for a few seconds while killed processes leave.
pub fn remove(path: &Path) -> io::Result<()> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return Ok(()); // never the root cgroup
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for mount in mounts()? {
        remove_tree(&mount.join(rel), deadline)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path, deadline: Instant) -> io::Result<()> {
    // An empty cgroup without children (a container whose processes are
    // all gone) goes at the first try: one system call, not eight.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path(), deadline)?;
        }
    }
    loop {
        // Thaw (v1 freezer, v2 cgroup.freeze) so that SIGKILL is delivered.
        let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("remove {}: {e}", dir.display()),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The cgroup mount points, read once per process.
static MOUNTS: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Mount points of every cgroup (v1) and cgroup2 file system. Read once:
/// mountinfo lists every mount of the namespace, one nsfs file per
/// container with a network namespace of berthd's among them, so a read per
/// delete grew with the number of containers (~1 ms at 1,000, on the exit
/// path). The shim zygote reads it before it forks ([`warm_mounts`]); a
/// hierarchy mounted after that is not seen by its shims.
fn mounts() -> io::Result<&'static [PathBuf]> {
    if let Some(m) = MOUNTS.get() {
        return Ok(m);
    }
    let m = read_mounts()?;
    Ok(MOUNTS.get_or_init(|| m))
}

/// Reads the cgroup mount points now, for the forks of this process.
pub fn warm_mounts() {
    let _ = mounts();
}

fn read_mounts() -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mp) = left.split(' ').nth(4) {
            out.push(PathBuf::from(unescape(mp)));
        }
    }
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| {
            b.get(j)
                .filter(|c| (b'0'..=b'7').contains(c))
                .map(|c| u32::from(c - b'0'))
        };
        if let (b'\\', Some(x), Some(y), Some(z)) = (b[i], octal(i + 1), octal(i + 2), octal(i + 3))
        {
            out.push(u8::try_from(x * 64 + y * 8 + z).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescape_mountinfo() {
        assert_eq!(super::unescape(r"/a\040b"), "/a b");
        assert_eq!(super::unescape(r"/plain"), "/plain");
    }
}
