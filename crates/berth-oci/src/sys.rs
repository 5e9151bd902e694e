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

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`: install the classic BPF
/// program `bpf` (whole `struct sock_filter`s, as libseccomp exports them)
/// on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN.
pub fn seccomp_set_mode_filter(flags: u32, bpf: &[u8]) -> io::Result<()> {
    let insns = bpf.len() / std::mem::size_of::<libc::sock_filter>();
    if insns == 0
        || !bpf
            .len()
            .is_multiple_of(std::mem::size_of::<libc::sock_filter>())
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let len = u16::try_from(insns).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // The bytes are not necessarily aligned for sock_filter: copy them into
    // a properly typed buffer (the layout is the kernel's, native endian).
    let prog: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `len` valid instructions that outlive the
    // call; the kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        // With TSYNC, a positive value is the thread that could not sync.
        r if r > 0 => Err(io::Error::other(format!(
            "thread {r} could not take the filter"
        ))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The first seccomp filter of the stopped tracee `pid`, as the kernel holds
/// it (`PTRACE_SECCOMP_GET_FILTER`), in the layout libseccomp exports.
#[cfg(test)]
pub fn seccomp_filter_of(pid: Pid) -> io::Result<Vec<u8>> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    let mut prog = vec![
        libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0
        };
        4096
    ];
    // SAFETY: the buffer holds BPF_MAXINSNS instructions, the most the
    // kernel can write; index 0 is the filter installed first.
    let n = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            pid.as_raw(),
            0 as libc::c_ulong,
            prog.as_mut_ptr(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok(prog[..n.min(prog.len())]
        .iter()
        .flat_map(|i| {
            let mut b = Vec::with_capacity(8);
            b.extend_from_slice(&i.code.to_ne_bytes());
            b.push(i.jt);
            b.push(i.jf);
            b.extend_from_slice(&i.k.to_ne_bytes());
            b
        })
        .collect())
}

/// `ptrace(PTRACE_TRACEME)`: let the parent trace (and inspect) this child.
#[cfg(test)]
pub fn trace_me() -> io::Result<()> {
    // SAFETY: PTRACE_TRACEME takes no pointers.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_TRACEME,
            0,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
