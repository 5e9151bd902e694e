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

/// Detach from berthd: new session, one fork. Returns in the child (the
/// shim); the process berthd started exits 0, so berthd only has to reap it.
///
/// The process berthd started is not a process-group leader (berthd's
/// child, in berthd's group), so `setsid` succeeds in it directly; its child
/// is then in the new session without leading it (it can never acquire a
/// controlling terminal) and is not berthd's child: what the classic double
/// fork gives, with one fork less on every container's create. Started as
/// a group leader (say by a shell's job control), it double-forks.
pub fn daemonize() -> io::Result<()> {
    match nix::unistd::setsid() {
        Ok(_) => {}
        Err(nix::errno::Errno::EPERM) => {
            if let Some(middle) = fork()? {
                let code = match nix::sys::wait::waitpid(middle, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => 0,
                    _ => 1,
                };
                exit_now(code);
            }
            nix::unistd::setsid().map_err(io::Error::from)?;
        }
        Err(e) => return Err(e.into()),
    }
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
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
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

/// An inotify descriptor watching `path` for modifications (cgroup v2's
/// `memory.events` is "modified" when its counters change).
pub fn inotify_modify(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: plain syscall wrapper with integer arguments.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this fd; we are its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is a live inotify descriptor and `c` a NUL-terminated path
    // that outlives the call.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
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

/// Unmap this process's clean pages of read-only file mappings: the text
/// and read-only data of the shim binary and of libc; and drop the stack
/// pages below the current frame ([`trim_stack`]).
///
/// Why: VmRSS counts every page of the binary that is mapped, and the kernel
/// maps up to 64 KiB around each page fault ("fault-around"). A shim that
/// touched a few scattered functions while creating the container would
/// keep ~2 MB "resident" (5 MB for a debug build) that it does not use while
/// idle. These pages are shared page cache, not the shim's memory; dropping
/// the mappings after a burst of work makes the idle shim's RSS what it
/// really uses. A later access refaults the same page-cache page (a minor
/// fault, microseconds).
///
/// Only private mappings that are not writable and hold no anonymous
/// (copy-on-write) page qualify: dropping them loses nothing. The RELRO
/// segment, which the dynamic loader wrote before making it read-only, has
/// anonymous pages and is left alone.
pub fn trim_file_pages() {
    use std::io::BufRead;
    let Ok(f) = File::open("/proc/self/smaps") else {
        return;
    };
    let mut reader = io::BufReader::with_capacity(4096, f);
    let mut line = String::new();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut candidate: Option<(usize, usize)> = None;
    let mut stack_low: Option<usize> = None;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.ends_with(':') {
            if first == "Anonymous:" {
                if let Some(range) = candidate.take() {
                    if fields.next() == Some("0") {
                        ranges.push(range);
                    }
                }
            }
            continue;
        }
        // A mapping header: "start-end perms offset dev inode [path]".
        candidate = None;
        let (Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if fields.next() == Some("[stack]") {
            stack_low = first
                .split_once('-')
                .and_then(|(s, _)| usize::from_str_radix(s, 16).ok());
            continue;
        }
        let p = perms.as_bytes();
        let private_ro = p.len() == 4 && p[0] == b'r' && p[1] == b'-' && p[3] == b'p';
        if !private_ro || inode == "0" {
            continue;
        }
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) {
                candidate = Some((s, e));
            }
        }
    }
    for (start, end) in ranges {
        // SAFETY: [start, end) is a whole private, read-only, file-backed
        // mapping of this process without anonymous pages (checked above,
        // and nothing can write to it): MADV_DONTNEED only drops page-table
        // entries that the next access restores from the same file pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
    if let Some(low) = stack_low {
        trim_stack(low);
    }
}

/// Room left below the caller's frame when the stack is trimmed: more
/// than the x86-64 red zone (128 bytes) and `madvise`'s own frame; what
/// the shim calls next (`poll`) faults back in the page or two it needs.
const STACK_KEEP: usize = 4 << 10;

/// Drop the main thread's stack pages below the current frame: the deep
/// calls of the container's create (JSON, the runtime's setup) leave
/// dirty stack pages that an idle shim never touches again, ~16 KiB per
/// container. Nothing lives below the stack pointer (the shim has no
/// signal handlers: signals come through a signalfd), and a page touched
/// again later is a fresh zero page, as a new stack page always is.
fn trim_stack(low: usize) {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    let page = 4096;
    let top = (sp.saturating_sub(STACK_KEEP)) & !(page - 1);
    if top <= low || sp < low {
        return;
    }
    // SAFETY: [low, top) is the part of this thread's own stack mapping
    // more than STACK_KEEP below the live frames (checked above): no live
    // data is there, and MADV_DONTNEED on private anonymous memory only
    // makes the next access see a zero page.
    unsafe {
        libc::madvise(low as *mut libc::c_void, top - low, libc::MADV_DONTNEED);
    }
}

/// Receive one fd sent with SCM_RIGHTS on `stream` (the runtime sends the
/// pty master this way; any bytes beside it, e.g. runc's "/dev/ptmx", are
/// ignored). Blocks until a message arrives: the caller polls first.
pub fn recv_fd(stream: &std::os::unix::net::UnixStream) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut data = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    // SAFETY: the kernel just installed these fds in our table for us; each
    // is owned exactly once here.
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the console socket message carried no fd",
        ));
    }
    // One fd is expected; extra ones are closed by dropping them.
    Ok(owned.swap_remove(0))
}

/// Set a terminal's window size (`TIOCSWINSZ` on the pty master); the
/// foreground process group gets SIGWINCH from the kernel.
pub fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which is
    // valid for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make a pipe's buffer `size` bytes (best effort: fewer wake-ups for a
/// fast writer; the kernel caps it at /proc/sys/fs/pipe-max-size).
pub fn set_pipe_size(fd: &impl AsRawFd, size: i32) {
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
}

/// Give freed heap memory back to the kernel (glibc keeps it otherwise):
/// an idle shim after a burst of output should cost what an idle one does.
pub fn release_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state, under its
    // lock; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One request to the zygote (`berth-shim start` under `BERTH_SHIM_ZYGOTE`):
/// the bytes of a shim.json path and the write end of the new shim's ready
/// pipe, sent by berthd with SCM_RIGHTS on the SOCK_SEQPACKET socket `fd`.
/// `None` when berthd closed its end.
pub fn recv_request(fd: RawFd) -> io::Result<Option<(Vec<u8>, OwnedFd)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut data = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    let len = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    // SAFETY: the kernel just installed these fds in our table for us; each
    // is owned exactly once here (extra ones are closed by dropping them).
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if len == 0 && owned.is_empty() {
        return Ok(None);
    }
    if owned.is_empty() || truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a zygote request without its ready pipe, or too long",
        ));
    }
    Ok(Some((data[..len].to_vec(), owned.swap_remove(0))))
}

/// SIGCHLD ignored (the zygote: its forks are reaped by the kernel) or back
/// to its default (a shim, which reaps its children itself).
pub fn ignore_children(ignore: bool) -> io::Result<()> {
    use nix::sys::signal::{signal, SigHandler};
    let handler = if ignore {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: no handler function is installed, only a disposition.
    unsafe { signal(Signal::SIGCHLD, handler) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Where this process's arguments live, as `/proc/PID/cmdline` shows them:
/// `arg_start`..`arg_end` of `/proc/self/stat`, in its own memory (the
/// initial stack). A fork has them at the same addresses, so the zygote
/// reads them once for all its forks.
pub fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (in parentheses, which may hold
    // spaces): the state is field 3, arg_start field 48, arg_end 49.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(48 - 3)?.parse::<usize>().ok()?;
    let end = fields.get(49 - 3)?.parse::<usize>().ok()?;
    (end > start && end - start <= 1 << 20).then_some((start, end))
}

/// Overwrite the argument `old` in `area` (of [`argument_area`]) with `new`,
/// of the same length: a shim forked from the zygote shows `berth-shim
/// start <its shim.json>` as one berthd started itself, which is how
/// operators (and berth's tests) tell shims apart (what setproctitle does
/// elsewhere). False when the argument is not found or the lengths differ.
pub fn set_argument(area: (usize, usize), old: &[u8], new: &[u8]) -> bool {
    if old.len() != new.len() || old.is_empty() {
        return false;
    }
    let (start, end) = area;
    // SAFETY: [start, end) is this process's argument area (argument_area,
    // read in this process or in the zygote it was forked from, at the same
    // addresses), mapped readable and writable for its whole life; nothing
    // else holds a reference into it (std copied the arguments at startup).
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    let Some(at) = area
        .windows(old.len() + 1)
        .position(|w| w[..old.len()] == *old && w[old.len()] == 0)
    else {
        return false;
    };
    area[at..at + new.len()].copy_from_slice(new);
    true
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn inotify_sees_a_modification() {
        let dir = std::env::temp_dir().join(format!("berth-shim-ino-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory.events");
        std::fs::write(&path, "oom_kill 0\n").unwrap();
        let mut f = std::fs::File::from(super::inotify_modify(&path).unwrap());
        let mut buf = [0u8; 1024];
        // Nothing yet: non-blocking read says so.
        assert_eq!(
            f.read(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        std::fs::write(&path, "oom_kill 1\n").unwrap();
        assert!(f.read(&mut buf).unwrap() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
