//! Container roots for user namespaces: the image's files must appear with
//! their owners inside a container whose ids are shifted (container id `x`
//! is host id `host + x`).
//!
//! Two ways, the first where the kernel allows it:
//!
//! * **idmapped lowers**: overlayfs refuses to be idmapped itself, but it
//!   accepts idmapped layers. The shared `layers/` directory is cloned as
//!   an idmapped mount (a user namespace with the container's mapping,
//!   `mount_setattr(MOUNT_ATTR_IDMAP)`), the overlay is mounted with its
//!   lowers taken through that clone, and the clone is detached again (the
//!   overlay keeps private references to its layers). Nothing is copied;
//!   the layers stay as unpacked, shared with every other container. The
//!   upper directory is not idmapped (overlayfs creates its work files as
//!   the mounter, host root, which an idmapped upper could not map), so what
//!   the container writes, and what copy-up copies, is stored with host ids.
//! * **a chowned copy**: every entry of the root gets `host + its id` (on
//!   an overlay that copies each file up into the container's upper
//!   directory; for the copy snapshotter the copy is the container's own).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

/// Container ids `0..size` are host ids `host..host + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdShift {
    pub host: u32,
    pub size: u32,
}

impl IdShift {
    /// The host id of container id `id`; ids outside the range are left
    /// alone (they show as the overflow id, nobody, inside).
    fn map(self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.host.saturating_add(id))
    }

    /// Whether `id` is a host id of this range already.
    fn holds(self, id: u32) -> bool {
        id >= self.host && id - self.host < self.size
    }
}

/// How a container's root was given its shifted owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapMethod {
    /// Overlay over idmapped layers: nothing copied.
    Idmapped,
    /// Every file's owner changed (a copy, or copied up into the upper).
    Chowned,
}

impl MapMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MapMethod::Idmapped => "idmapped",
            MapMethod::Chowned => "chowned",
        }
    }
}

/// A user namespace whose uid and gid maps are `shift`, as a file
/// descriptor (what `MOUNT_ATTR_IDMAP` takes). A child is cloned straight
/// into a new user namespace, its maps written, the namespace opened, and
/// the child killed: the descriptor keeps the namespace alive.
pub fn userns_fd(shift: IdShift) -> io::Result<OwnedFd> {
    // SAFETY: a raw clone without CLONE_VM is a fork; the child runs only
    // pause(2) and never returns from the loop, so nothing in it can touch
    // a lock another thread of ours held (sound in a multi-threaded parent).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        loop {
            // SAFETY: pause has no arguments; the child waits for SIGKILL.
            unsafe { libc::pause() };
        }
    }
    let pid = pid as libc::pid_t;
    let res = (|| {
        let map = format!("0 {} {}\n", shift.host, shift.size);
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        let f = fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    // SAFETY: plain syscalls on the child we just made.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    res
}

/// Attaches at `target` (an empty directory) a non-recursive clone of the
/// mount at or above `src`, rooted at `src`, idmapped by `userns`.
/// `Errno::INVAL`/`PERM`/`NOSYS`/`OPNOTSUPP`: the file system or kernel
/// refuses idmapped mounts.
pub fn attach_idmapped(src: &Path, target: &Path, userns: BorrowedFd<'_>) -> Result<(), Errno> {
    use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
    let tree = open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `attr` (of the size given) and the empty
    // path; both outlive the call. rustix has no wrapper for it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// Gives every entry under `root` (and `root` itself) the host owner of
/// its id, never following a symlink: descriptors all the way down, so a
/// link in the image cannot point the walk at the host. Set-id bits, which
/// chown clears, are put back; file capabilities (`security.capability`)
/// are lost, as the kernel drops them on chown. An entry already owned by
/// the range (a hard link seen twice) is left as it is.
pub fn chown_tree(root: &Path, shift: IdShift) -> io::Result<()> {
    let top = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    shift_at(top.as_fd(), c".", shift)?;
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        // A fresh descriptor for the listing; `dir` stays for the *at calls.
        let list = rustix::fs::openat(
            &dir,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&list)? {
            let e = e?;
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            names.push((name.to_owned(), e.file_type()));
        }
        for (name, ft) in names {
            shift_at(dir.as_fd(), &name, shift)?;
            if ft == FileType::Directory || ft == FileType::Unknown {
                match rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => stack.push(fd),
                    Err(Errno::NOTDIR) | Err(Errno::LOOP) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

fn shift_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr, shift: IdShift) -> io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let (uid, gid) = (st.st_uid, st.st_gid);
    if shift.holds(uid) && shift.holds(gid) {
        return Ok(());
    }
    let new_uid = shift.map(uid).unwrap_or(uid);
    let new_gid = shift.map(gid).unwrap_or(gid);
    let (u, g) = (
        rustix::fs::Uid::from_raw(new_uid),
        rustix::fs::Gid::from_raw(new_gid),
    );
    rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    let setid = st.st_mode & 0o6000;
    if ft == FileType::RegularFile && setid != 0 {
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    Ok(())
}

/// Whether `e` means "this kernel or file system does not do idmapped
/// mounts" (fall back to a chowned copy) rather than a real failure.
pub fn refused(e: Errno) -> bool {
    matches!(
        e,
        Errno::INVAL | Errno::PERM | Errno::NOSYS | Errno::OPNOTSUPP | Errno::ACCESS
    )
}
