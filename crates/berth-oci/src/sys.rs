//! Small process-level helpers; every `unsafe` block of the crate lives here.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// Which side of a [`fork`] we are on.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// `fork(2)`.
///
/// Callers must be single-threaded (the only kind of process this crate's
/// [`crate::Embedded`] supports): the child of a multi-threaded process may
/// only call async-signal-safe functions, and the helper child runs
/// libcontainer, which allocates and takes locks.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: see above; the process is single-threaded, so the child gets a
    // consistent copy of every lock (allocator, env, stdio) it may take.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Give the calling process an empty signal mask and the default disposition
/// for every signal, so that nothing it creates inherits the caller's blocked
/// or ignored signals (a container init with SIGCHLD blocked never reaps).
pub fn reset_signals() {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL replaces no Rust handler that could be
        // running; errors (none expected for these signals) are harmless.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// `_exit(2)`: leave a forked child without running atexit handlers or
/// destructors that belong to the parent's copy of the state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(2)`: an fd that becomes readable when `pid` exits. Only
/// meaningful for a child the caller has not reaped yet (no pid reuse).
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wait until `fd` is readable (or hung up) or `deadline` passes.
/// Returns false on timeout.
pub fn wait_readable(fd: &impl AsFd, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // Round up so that a sub-millisecond remainder does not spin.
        let ms = if left > Duration::ZERO && ms == 0 {
            1
        } else {
            ms
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
