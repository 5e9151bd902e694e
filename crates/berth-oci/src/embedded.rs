//! The embedded backend: youki's libcontainer, run in forked helpers.
//!
//! Why a helper per call: libcontainer clones with raw `clone3` and runs Rust
//! code in the children, so it must run in a single-threaded process; it also
//! changes the calling process for good (cwd, dumpable flag, the spec's
//! `oom_score_adj`, and it forwards `LISTEN_FDS`), and a process that ran it
//! keeps megabytes of touched code pages. A forked child takes all of that
//! with it when it exits: the caller (the long-lived shim) stays small and
//! unchanged. The cost is one `fork` of a small process per operation.
//!
//! Two operations skip the helper when the container has no hooks for them
//! (the common case): `start` and `delete` clone nothing and change nothing
//! in the caller that outlives the call (libcontainer's notify-socket write
//! `chdir`s into the state dir and back), and the hooks are the only part of
//! them that runs foreign code. Both are on every container's path (`start`
//! before the user's command runs, `delete` before its exit is reported),
//! and a fork, plus the helper's page faults on a copy of the shim, costs
//! more CPU than either operation's own work. They still go through
//! libcontainer's own `Container::start`/`delete`, so its state stays what
//! its own calls would leave.
//!
//! The helper reports one JSON line on a pipe and `_exit`s. The parent waits
//! for that line and for the helper's exit with a deadline, SIGKILLs the
//! helper when the deadline passes, and reaps exactly that pid.
//!
//! Seccomp: the create helper compiles the container's profile once per
//! profile (cached under the runtime root) and loads it through a workload
//! executor, in the init and in exec'd processes, instead of letting
//! libcontainer's init compile it for every container (see
//! [`crate::seccomp`]).
//!
//! Process tree: the container's init (and an exec'd process) is cloned by
//! libcontainer with `CLONE_PARENT`, i.e. as a child of the helper. When the
//! helper exits it is re-parented to the nearest child subreaper: the shim.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::sys::{self, Forked};
use crate::{validate_id, Backend, ErrorKind, Io, OciError, CREATE_TIMEOUT, OP_TIMEOUT};

/// libcontainer, called from a forked single-threaded helper per operation.
///
/// Use it only from a single-threaded process (see [`crate::sys`]'s `fork`).
#[derive(Debug, Clone)]
pub struct Embedded {
    root: PathBuf,
    after_create: Option<AfterCreate>,
}

/// Run in the create's helper, a single-threaded process that exits after
/// it, with the new init's pid, before the create reports success; an
/// error fails the create.
pub type AfterCreate = fn(i32) -> std::io::Result<()>;

/// What a helper reports on its pipe: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    ok: bool,
    #[serde(default)]
    pid: i32,
    #[serde(default = "other_kind")]
    kind: ErrorKind,
    #[serde(default)]
    message: String,
}

fn other_kind() -> ErrorKind {
    ErrorKind::Other
}

/// The longest result line a helper may write.
const MAX_OUTCOME: usize = 64 * 1024;

impl Embedded {
    /// A backend keeping libcontainer's state under `root` (one directory per
    /// container, like `runc --root`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            after_create: None,
        }
    }

    /// What to do in the create's helper once the init exists (see
    /// [`AfterCreate`]): the shim brings up the loopback of a network
    /// namespace libcontainer made, in the helper, where `setns` costs the
    /// shim nothing (a thread of its own would keep its stack cached).
    pub fn after_create(mut self, f: AfterCreate) -> Self {
        self.after_create = Some(f);
        self
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf, OciError> {
        validate_id(id)?;
        let dir = self.root.join(id);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(OciError::new(
                ErrorKind::NotFound,
                format!("container {id} does not exist"),
            ))
        }
    }

    /// Run `op` in a forked helper; return what it returned. `keep` lists
    /// the fds `op` hands to the container (never redirected in the helper).
    fn helper<F>(
        &self,
        what: &str,
        timeout: Duration,
        keep: &[RawFd],
        op: F,
    ) -> Result<i32, OciError>
    where
        F: FnOnce() -> Result<i32, OciError>,
    {
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| OciError::other(format!("{what} failed: pipe: {e}")))?;
        let forked =
            sys::fork().map_err(|e| OciError::other(format!("{what} failed: fork: {e}")))?;
        match forked {
            Forked::Child => {
                drop(rd);
                helper_child(wr, keep, op)
            }
            Forked::Parent(pid) => {
                drop(wr);
                // `op` (and the fds it owns, e.g. the container's stdio) is
                // dropped here in the parent: only the helper uses it.
                drop(op);
                let outcome = collect(pid, rd, Instant::now() + timeout);
                match outcome {
                    Ok(Outcome { ok: true, pid, .. }) => Ok(pid),
                    Ok(Outcome { kind, message, .. }) => Err(OciError::new(kind, message)),
                    Err(e) => Err(OciError::other(format!("{what} failed: {e}"))),
                }
            }
        }
    }
}

/// The helper's side: clean up what it inherited, run `op`, report, `_exit`.
fn helper_child<F>(wr: OwnedFd, keep: &[RawFd], op: F) -> !
where
    F: FnOnce() -> Result<i32, OciError>,
{
    // The caller blocks SIGCHLD and friends for its signalfd and ignores
    // SIGPIPE; the container's processes must not inherit either.
    sys::reset_signals();
    // libcontainer passes LISTEN_FDS fds into the container: never the
    // caller's (it is not socket-activating anything here).
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    // Do not keep the caller's stdin/stdout (e.g. the shim's ready pipe) open
    // in the helper or in the init it creates; stderr stays for diagnostics.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in [0, 1] {
            if !keep.contains(&fd) {
                let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
            }
        }
    }
    let _ = nix::sys::prctl::set_name(c"berth-oci-helper");

    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)) {
        Ok(Ok(pid)) => Outcome {
            ok: true,
            pid,
            kind: ErrorKind::Other,
            message: String::new(),
        },
        Ok(Err(e)) => Outcome {
            ok: false,
            pid: 0,
            kind: e.kind,
            message: e.message,
        },
        Err(_) => Outcome {
            ok: false,
            pid: 0,
            kind: ErrorKind::Other,
            message: "libcontainer helper panicked".into(),
        },
    };
    let mut line = serde_json::to_vec(&outcome).unwrap_or_default();
    line.truncate(MAX_OUTCOME - 1);
    line.push(b'\n');
    let _ = File::from(wr).write_all(&line);
    sys::exit_now(0)
}

/// Read the helper's result line and reap it, all before `deadline`.
///
/// The pipe is not read to EOF: the container's init inherits the write end
/// and keeps it until it execs (at start). The helper's exit is watched
/// through a pidfd instead.
fn collect(pid: Pid, rd: OwnedFd, deadline: Instant) -> io::Result<Outcome> {
    let result = read_outcome(pid, rd, deadline);
    if result.is_err() {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    }
    // The helper has exited, or it was just SIGKILLed: this wait is short.
    let status = loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let line = result?;
    if let Some(line) = line {
        return serde_json::from_slice(&line).map_err(io::Error::other);
    }
    Err(io::Error::other(match status {
        Ok(WaitStatus::Exited(_, code)) => {
            format!("libcontainer helper exited with status {code} without a result")
        }
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("libcontainer helper killed by {sig}"),
        Ok(other) => format!("libcontainer helper ended without a result: {other:?}"),
        Err(e) => format!("libcontainer helper lost: {e}"),
    }))
}

/// Read until a full line arrives or the helper exits; `None` if it exited
/// without writing one.
fn read_outcome(pid: Pid, rd: OwnedFd, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    let pidfd = sys::pidfd_open(pid)?;
    nix::fcntl::fcntl(
        rd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )?;
    let mut reader = File::from(rd);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut exited = false;
    loop {
        // Drain what is there.
        let mut eof = false;
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_OUTCOME {
                        return Err(io::Error::other("libcontainer helper result too long"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            // Give the helper the rest of the deadline to exit.
            if !exited && !sys::wait_readable(&pidfd, deadline)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "libcontainer helper did not exit",
                ));
            }
            return Ok(Some(buf));
        }
        if eof || exited {
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        let mut fds = [
            PollFd::new(reader.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => {
                let pid_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
                // Loop once more after the exit to read what it wrote last.
                exited = pid_ready;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// One line from a libcontainer error and its sources, without repeats.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Turn a libcontainer error into an [`OciError`] for operation `what`.
fn lc_error(what: &str, err: &(dyn std::error::Error + 'static)) -> OciError {
    let chain = describe(err);
    let kind = crate::classify(&chain);
    // For a bad command, the innermost message says it all; drop the layers
    // of "failed to create container: failed to run container process: ...".
    let detail = match kind {
        ErrorKind::CommandNotFound | ErrorKind::CommandNotExecutable => chain
            .rsplit(": ")
            .find(|p| crate::classify(p) == kind)
            .map(str::to_owned)
            .unwrap_or(chain),
        _ => chain,
    };
    OciError::new(kind, format!("{what} failed: {detail}"))
}

fn lc<T>(what: &str, r: Result<T, libcontainer::error::LibcontainerError>) -> Result<T, OciError> {
    r.map_err(|e| lc_error(what, &e))
}

/// The fds a helper hands to the new process (none for a terminal).
fn stdio_fds(io: &Io) -> Vec<RawFd> {
    match io {
        Io::Pipes(s) => vec![
            s.stdin.as_raw_fd(),
            s.stdout.as_raw_fd(),
            s.stderr.as_raw_fd(),
        ],
        Io::Console(_) => Vec::new(),
    }
}

/// Put `io` on a builder: the pipes, or the console socket.
fn with_io(builder: ContainerBuilder, io: Io) -> ContainerBuilder {
    match io {
        Io::Pipes(s) => builder
            .with_stdin(s.stdin)
            .with_stdout(s.stdout)
            .with_stderr(s.stderr),
        Io::Console(path) => builder.with_console_socket(Some(path)),
    }
}

fn base_builder(id: &str, root: &Path, what: &str) -> Result<ContainerBuilder, OciError> {
    let builder = ContainerBuilder::new(id.to_owned(), SyscallType::default());
    let builder = lc(what, builder.with_root_path(root))?;
    lc(what, builder.validate_id())
}

fn load(dir: &Path, what: &str) -> Result<Container, OciError> {
    lc(what, Container::load(dir.to_path_buf()))
}

impl Backend for Embedded {
    fn create(&self, id: &str, bundle: &Path, io: Io) -> Result<i32, OciError> {
        validate_id(id)?;
        let root = self.root.clone();
        let bundle = bundle.to_path_buf();
        let keep = stdio_fds(&io);
        let after_create = self.after_create;
        self.helper("create", CREATE_TIMEOUT, &keep, move || {
            std::fs::create_dir_all(&root)
                .map_err(|e| OciError::other(format!("create failed: {}: {e}", root.display())))?;
            // A seccomp profile berth compiles (once) and loads itself:
            // libcontainer gets the sub-bundle without it.
            let prepared = crate::seccomp::prepare(&root, &bundle)
                .map_err(|e| OciError::other(format!("create failed: {e}")))?;
            let mut builder = with_io(base_builder(id, &root, "create")?, io);
            let bundle = match prepared {
                Some(p) => {
                    builder = builder.with_executor(p.executor);
                    p.bundle
                }
                None => bundle,
            };
            let container = lc(
                "create",
                builder
                    .as_init(&bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build(),
            )?;
            let pid = container
                .pid()
                .map(|p| p.as_raw())
                .ok_or_else(|| OciError::other("create failed: no init pid in the state"))?;
            if let Some(f) = after_create {
                f(pid).map_err(|e| OciError::other(format!("create failed: {e}")))?;
            }
            Ok(pid)
        })
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        let dir = self.container_dir(id)?;
        if !has_hooks(&dir, |h| h.poststart().is_some()) {
            // No poststart hook: a state check, one write to the init's
            // notify socket and the state file; nothing worth a fork.
            return lc("start", load(&dir, "start")?.start());
        }
        self.helper("start", OP_TIMEOUT, &[], move || {
            lc("start", load(&dir, "start")?.start())?;
            Ok(0)
        })
        .map(drop)
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        let dir = self.container_dir(id)?;
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|_| OciError::other(format!("kill failed: invalid signal {signal}")))?;
        self.helper("kill", OP_TIMEOUT, &[], move || {
            let mut c = load(&dir, "kill")?;
            let before = c.status();
            lc("kill", c.kill(sig, all))?;
            // libcontainer records every container it signals as stopped,
            // whatever the signal; keep the real state for a process that
            // survived (say SIGUSR1 to a created or paused container).
            lc("kill", c.refresh_status())?;
            if before != ContainerStatus::Stopped && c.status() != ContainerStatus::Stopped {
                lc("kill", c.set_status(before).save())?;
            }
            Ok(0)
        })
        .map(drop)
    }

    fn pause(&self, id: &str) -> Result<(), OciError> {
        let dir = self.container_dir(id)?;
        self.helper("pause", OP_TIMEOUT, &[], move || {
            lc("pause", load(&dir, "pause")?.pause())?;
            Ok(0)
        })
        .map(drop)
    }

    fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), OciError> {
        use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
        let dir = self.container_dir(id)?;
        let resources = resources.clone();
        let id = id.to_string();
        self.helper("update", OP_TIMEOUT, &[], move || {
            let container = load(&dir, "update")?;
            let spec = lc("update", container.spec())?;
            // The manager libcontainer made the cgroup with, on the same path.
            let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
                cgroup_path: spec.cgroup_path,
                systemd_cgroup: container.systemd(),
                container_name: id,
            })
            .map_err(|e| OciError::other(format!("update failed: {e}")))?;
            manager
                .apply(&ControllerOpt {
                    resources: &resources,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| lc_error("update", &e))?;
            Ok(0)
        })
        .map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), OciError> {
        let dir = self.container_dir(id)?;
        self.helper("resume", OP_TIMEOUT, &[], move || {
            lc("resume", load(&dir, "resume")?.resume())?;
            Ok(0)
        })
        .map(drop)
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: Io,
    ) -> Result<i32, OciError> {
        let dir = self.container_dir(id)?;
        let mut process = process.clone();
        let root = self.root.clone();
        let keep = stdio_fds(&io);
        self.helper("exec", CREATE_TIMEOUT, &keep, move || {
            // libcontainer's tenant runs without the container's seccomp
            // filter; berth loads the one the create compiled.
            let bundle = load(&dir, "exec")?.bundle().clone();
            let executor = crate::seccomp::for_exec(&root, &bundle, &mut process)
                .map_err(|e| OciError::other(format!("exec failed: {e}")))?;
            let json = serde_json::to_vec(&process)
                .map_err(|e| OciError::other(format!("exec failed: process: {e}")))?;
            // The tenant builder reads the process from a file: hand it an
            // anonymous one, so nothing is left on disk.
            let memfd = nix::sys::memfd::memfd_create(
                c"berth-exec-process",
                nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
            )
            .map_err(|e| OciError::other(format!("exec failed: memfd: {e}")))?;
            File::from(
                memfd
                    .try_clone()
                    .map_err(|e| OciError::other(format!("exec failed: {e}")))?,
            )
            .write_all(&json)
            .map_err(|e| OciError::other(format!("exec failed: memfd: {e}")))?;
            let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
            let mut builder = with_io(base_builder(id, &root, "exec")?, io);
            if let Some(executor) = executor {
                builder = builder.with_executor(executor);
            }
            let pid = lc(
                "exec",
                builder
                    .as_tenant()
                    .with_detach(true)
                    .with_process(Some(path))
                    .build(),
            )?;
            drop(memfd);
            Ok(pid.as_raw())
        })
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        let dir = self.container_dir(id)?;
        // Without a poststop hook, libcontainer's delete kills what is left
        // in the cgroups, removes them and the state dir: nothing that needs
        // a process of its own.
        let config = libcontainer::config::YoukiConfig::load(&dir).ok();
        let poststop = config
            .as_ref()
            .is_none_or(|c| c.hooks.as_ref().is_some_and(|h| h.poststop().is_some()));
        if !poststop {
            if let Some(config) = config {
                if let Some(done) = delete_stopped(&dir, &config) {
                    return done;
                }
            }
            return delete_container(&dir, force);
        }
        self.helper("delete", OP_TIMEOUT, &[], move || {
            delete_container(&dir, force).map(|()| 0)
        })
        .map(drop)
    }
}

/// The delete of a stopped container without hooks, systemd cgroups or
/// Intel RDT, done here: its cgroup directories, its state directory, the
/// seccomp sub-bundle. What libcontainer's delete does for such a
/// container, without the cost of building its cgroup manager to find the
/// directories: libcgroups reads `/proc/self/mountinfo` and
/// `/proc/self/cgroup` once per v1 controller, each through a hardened
/// procfs handle, ~675 system calls and 1–5 ms (quiet to loaded) on the
/// exit path of every container on a hybrid host (measured in the shim,
/// 2026-12-03), where
/// one read of mountinfo finds them all. `None`: not such a container,
/// libcontainer deletes it.
fn delete_stopped(
    dir: &Path,
    config: &libcontainer::config::YoukiConfig,
) -> Option<Result<(), OciError>> {
    let mut container = Container::load(dir.to_path_buf()).ok()?;
    container.refresh_status().ok()?;
    let plain = container.status() == libcontainer::container::ContainerStatus::Stopped
        && !container.systemd()
        && container.intel_rdt_dir().is_none()
        && container.intel_rdt_monitoring_dir().is_none()
        && container.clean_up_intel_rdt_subdirectory() != Some(true);
    if !plain {
        return None;
    }
    let bundle = container.bundle().clone();
    let removed = crate::cgroups::remove(&config.cgroup_path)
        .and_then(|()| std::fs::remove_dir_all(dir))
        .map_err(|e| OciError::other(format!("delete failed: {e}")));
    if removed.is_ok() {
        crate::seccomp::remove_sub_bundle(&bundle);
    }
    Some(removed)
}

/// libcontainer's delete of the container whose state is in `dir`; with
/// `force`, retried while killed processes leave their cgroups, and done
/// without the state if that cannot be read.
fn delete_container(dir: &Path, force: bool) -> Result<(), OciError> {
    let deadline = Instant::now() + OP_TIMEOUT - Duration::from_secs(1);
    let mut container = match Container::load(dir.to_path_buf()) {
        Ok(c) => c,
        Err(e) if force => {
            // Unreadable state (say a create that was killed half way):
            // remove what can be found without it.
            return force_remove(dir)
                .map_err(|e2| OciError::other(format!("delete failed: {}; {e2}", describe(&e))));
        }
        Err(e) => return Err(lc_error("delete", &e)),
    };
    let bundle = container.bundle().clone();
    loop {
        match container.delete(force) {
            Ok(()) => {
                crate::seccomp::remove_sub_bundle(&bundle);
                return Ok(());
            }
            // Killed processes can take a moment to leave their
            // cgroups; libcontainer retries only ~100 ms.
            Err(_) if force && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
                container = match Container::load(dir.to_path_buf()) {
                    Ok(c) => c,
                    Err(_) if !dir.exists() => {
                        crate::seccomp::remove_sub_bundle(&bundle);
                        return Ok(());
                    }
                    Err(e) => return Err(lc_error("delete", &e)),
                };
            }
            Err(e) => return Err(lc_error("delete", &e)),
        }
    }
}

/// Whether the container in `dir` has hooks that `which` selects; true when
/// its config cannot be read (the helper then runs the operation, and reports
/// what is wrong).
fn has_hooks(dir: &Path, which: impl Fn(&oci_spec::runtime::Hooks) -> bool) -> bool {
    libcontainer::config::YoukiConfig::load(dir)
        .ok()
        .is_none_or(|c| c.hooks.as_ref().is_some_and(which))
}

/// Remove a container whose libcontainer state cannot be loaded: its cgroups
/// (from `youki_config.json`, if that survived) and its state directory.
fn force_remove(dir: &Path) -> io::Result<()> {
    #[derive(Deserialize)]
    struct Cfg {
        cgroup_path: PathBuf,
    }
    if let Ok(text) = std::fs::read(dir.join("youki_config.json")) {
        if let Ok(cfg) = serde_json::from_slice::<Cfg>(&text) {
            crate::cgroups::remove(&cfg.cgroup_path)?;
        }
    }
    std::fs::remove_dir_all(dir)
}
