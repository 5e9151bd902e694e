//! Process plumbing for the shim; every `unsafe` block of the binary is here.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

/// `fork(2)`; `Some(child)` in the parent, `None` in the child.
///
/// Only called while the shim is single-threaded (it always is: no threads
/// are ever started), so the child's copy of every lock is consistent.
pub fn fork() -> io::Result<Option<Pid>> {
    // SAFETY: single-threaded process, see above.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// `_exit(2)`: leave a forked intermediate without running exit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe; it does not return.
    unsafe { libc::_exit(code) }
}

/// Detach from berthd: new session, double fork. Returns in the grandchild
/// (the shim); the process berthd started waits for the short-lived middle
/// process and exits 0, so berthd only has to reap it.
pub fn daemonize() -> io::Result<()> {
    if let Some(middle) = fork()? {
        let code = match nix::sys::wait::waitpid(middle, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => 0,
            _ => 1,
        };
        exit_now(code);
    }
    nix::unistd::setsid().map_err(io::Error::from)?;
    if fork()?.is_some() {
        exit_now(0);
    }
    Ok(())
}

/// Put `file` on fd `target` (0, 1 or 2).
pub fn redirect(file: &File, target: RawFd) -> io::Result<()> {
    nix::unistd::dup2(file.as_raw_fd(), target).map_err(io::Error::from)?;
    Ok(())
}

/// The signals the shim handles through its signalfd.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Block the handled signals and return a nonblocking signalfd for them.
///
/// Children must not inherit the mask: the backends reset it (the embedded
/// helpers explicitly, `std::process::Command` before exec).
pub fn signalfd() -> io::Result<SignalFd> {
    let set = handled_signals();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(io::Error::from)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(io::Error::from)
}

/// A nonblocking, close-on-exec `eventfd(2)` (for cgroup v1 OOM notices).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper with integer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this fd; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether our child `pid` has exited, without reaping it (`WNOWAIT`): the
/// pid stays ours, so signalling it afterwards cannot hit a stranger.
pub fn has_exited(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
}

/// Make `fd` nonblocking.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// `waitpid(-1, WNOHANG | __WALL)` with the raw status (nix's decoding
/// fails on real-time signals, which would lose an exit): `Some` for a
/// reaped child, `None` when children remain but none has exited, and an
/// error (ECHILD) when there are no children at all.
pub fn wait_any() -> io::Result<Option<(Pid, i32)>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable c_int for the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if pid > 0 {
            return Ok(Some((Pid::from_raw(pid), status)));
        }
        if pid == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
