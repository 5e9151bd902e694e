//! The production [`Runtime`]: one `berth-shim` per container, spoken to over
//! the private protocol of `berth-shim-proto`.
//!
//! Files of a container, in two places ([`Dirs`]): under
//! `<root>/containers/<id>/` what outlives a boot, `container.log` (CRI
//! format) and `execs/<exec id>.{log,exit}` (made at the first exec); under
//! `<run root>/containers/<id>/` what a reboot ends, the bundle
//! (`config.json`), `shim.json`, `shim.sock`, `shim.log` (the shim's
//! diagnostics), `exit` (the init's exit record) and the network's `hosts`,
//! `hostname` and `resolv.conf` (written before each run), beside the
//! runtime's own state in `<run root>/runtime/<id>/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::exit::{Exit, ExitStatus};
use berth_core::runtime::{
    AttachIo, AttachOptions, CreateTask, ExecTask, Restored, Runtime, RuntimeError,
    RuntimeErrorKind, Task, TaskEvent, TaskState,
};
use berth_shim_proto as proto;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Bound on creating a container (shim start to ready).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one request to a shim.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the one-shot `berth-shim cleanup`.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default log rotation: 16 MiB per file, the live file plus 2 rotated.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 16 << 20;
pub const DEFAULT_LOG_MAX_FILES: u32 = 2;

pub struct ShimRuntime {
    dirs: Dirs,
    shim_bin: PathBuf,
    kind: proto::RuntimeKind,
    /// Log rotation when a container sets none (changed live by a config
    /// reload, SIGHUP).
    log_max_size: AtomicU64,
    log_max_files: AtomicU32,
    /// The containers' root filesystems that berthd provides (image
    /// snapshots), kept in step with the containers' files.
    rootfs: Option<Arc<dyn RootfsProvider>>,
    /// The shim that forks new shims (`Zygote`): started at the first
    /// create, again when it is gone.
    zygote: tokio::sync::Mutex<Option<Zygote>>,
    /// Its argument (`zygote_placeholder`).
    zygote_arg: PathBuf,
}

/// A `berth-shim start` that berthd keeps waiting (berth-shim's `zygote`)
/// and asks, over a SOCK_SEQPACKET socket, to fork each new shim: a fork of
/// a process that has started costs a fraction of an exec and a start-up
/// (the dynamic loader on a VM, ~7 µs per CPUID and it asks dozens;
/// docs/performance.md, "Shims forked from a zygote"). A forked shim is the
/// same program in the same state a started one reaches, shows the same
/// command line, and detaches from the zygote at once; the zygote holds no
/// container's files. It ends when berthd closes the socket (or dies).
struct Zygote {
    sock: std::os::fd::OwnedFd,
    _child: tokio::process::Child,
}

/// The zygote's argument: a path of the length of every container's
/// `shim.json` under the run root (a shim forked from it writes its own
/// over it), which names no container.
fn zygote_placeholder(dirs: &Dirs) -> PathBuf {
    let real = Layout::new(dirs, &"0".repeat(64)).config();
    let mut p = dirs.run.join("shim-zygote").into_os_string();
    while p.len() < real.as_os_str().len() {
        p.push("/");
    }
    PathBuf::from(p)
}

/// Who owns the root filesystems of containers made from images: mounted
/// again before each run when a reboot took the mount away, released when
/// the container is removed (also as an orphan of a crash).
pub trait RootfsProvider: Send + Sync {
    /// Make sure the container's root is mounted (a no-op for a container
    /// that has no root of ours), and what else its run needs.
    fn ensure(&self, id: &str) -> Result<Prepared, String>;
    /// Unmount and delete the container's root, if it has one of ours.
    fn release(&self, id: &str);
    /// The container's init has exited, or its run failed to be made:
    /// free what a run holds (its network attachments); the root stays.
    fn stopped(&self, _id: &str) {}
}

/// What [`RootfsProvider::ensure`] prepared, which the run's spec follows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Nothing is bound at the spec's network namespace path: the runtime
    /// makes this run's namespace (the path goes from the spec it gets).
    pub fresh_netns: bool,
}

/// berthd's two directories. `root` holds what must outlive a boot: the
/// database, logs, images, volumes, network settings. `run` holds what a
/// container's run makes and a reboot ends anyway: bundles, shim sockets
/// and exit files, the runtime's state. By default `run` is `/run/berth`,
/// a tmpfs, as containerd's `/run/containerd` and runc's `/run/runc`: a
/// run creates and deletes ten files there, which on this VM's ext4 cost
/// ~4 ms of CPU per container in inode allocation alone
/// (docs/performance.md). `run == root` is the layout of a berthd from
/// before the split, which still works.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub root: PathBuf,
    pub run: PathBuf,
}

impl Dirs {
    /// Where containers' bundles and sockets live: `<dir>/containers`.
    fn containers(dir: &Path) -> PathBuf {
        dir.join("containers")
    }

    /// The run root for `root` when none is given: `/run/berth` for the
    /// default root, `<root>/run` for any other, so that daemons on
    /// different roots never share one.
    pub fn default_run(root: &Path) -> PathBuf {
        if root == Path::new(berth_api::DEFAULT_ROOT) {
            PathBuf::from(DEFAULT_RUN_ROOT)
        } else {
            root.join("run")
        }
    }

    /// Take `run` as the run root. The one in use last is kept in
    /// `<root>/run-root` (none: the root itself, the layout from before
    /// the run root): its shims are found only there, so a change while
    /// one of them lives is refused, and the containers keep running.
    pub fn adopt(&self) -> Result<(), String> {
        let file = self.root.join("run-root");
        let last = match std::fs::read_to_string(&file) {
            Ok(s) => PathBuf::from(s.trim_end_matches('\n')),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.root.clone(),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        if last == self.run {
            return Ok(());
        }
        let live = live_shims(&last);
        if !live.is_empty() {
            return Err(format!(
                "{} container(s) started with the run root {} still run (e.g. {}): start berthd with --run-root {} (and stop them first to move it)",
                live.len(),
                last.display(),
                live[0],
                last.display()
            ));
        }
        let mut text = self.run.as_os_str().as_encoded_bytes().to_vec();
        text.push(b'\n');
        proto::write_atomic(&file, &text)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))
    }
}

/// The run root with the default root.
pub const DEFAULT_RUN_ROOT: &str = "/run/berth";

/// The containers under run root `run` whose shim still holds its lock.
fn live_shims(run: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(Dirs::containers(run)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| {
            ShimLock::held(&Layout {
                dir: PathBuf::new(),
                run: container_files(run, id),
            })
        })
        .collect()
}

/// Paths of one container's files.
pub struct Layout {
    /// Under the root: what outlives a boot.
    pub dir: PathBuf,
    /// Under the run root: the bundle, the shim's config, socket and the
    /// exit file.
    pub run: PathBuf,
}

impl Layout {
    pub fn new(dirs: &Dirs, id: &str) -> Self {
        Self {
            dir: container_files(&dirs.root, id),
            run: container_files(&dirs.run, id),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.run.join("shim.json")
    }
    pub fn socket(&self) -> PathBuf {
        self.run.join("shim.sock")
    }
    pub fn exit_file(&self) -> PathBuf {
        self.run.join("exit")
    }
    pub fn log(&self) -> PathBuf {
        log_path(&self.dir)
    }
    pub fn exec_dir(&self) -> PathBuf {
        exec_dir(&self.dir)
    }
    /// The shim's diagnostics: a run's, as its socket.
    pub fn shim_log(&self) -> PathBuf {
        self.run.join("shim.log")
    }
    /// Both directories, each once (they are one in the old layout).
    fn dirs(&self) -> Vec<&Path> {
        if self.run == self.dir {
            vec![&self.dir]
        } else {
            vec![&self.run, &self.dir]
        }
    }
}

/// A container's own directory under `dir`, the root or the run root.
pub fn container_files(dir: &Path, id: &str) -> PathBuf {
    Dirs::containers(dir).join(id)
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

fn exec_dir(dir: &Path) -> PathBuf {
    dir.join("execs")
}

fn exec_log_path(dir: &Path, exec_id: &str) -> PathBuf {
    exec_dir(dir).join(format!("{exec_id}.log"))
}

/// The exit record of container `id`'s exec `exec_id`, under the root.
pub fn exec_exit_path(root: &Path, id: &str, exec_id: &str) -> PathBuf {
    exec_dir(&container_files(root, id)).join(format!("{exec_id}.exit"))
}

/// The log of container `id`'s init (`process` empty or the init) or of
/// one of its execs, under the root.
pub fn process_log(root: &Path, id: &str, process: &str) -> PathBuf {
    let dir = container_files(root, id);
    if process.is_empty() || process == berth_core::runtime::INIT_PROCESS {
        log_path(&dir)
    } else {
        exec_log_path(&dir, process)
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::other(format!("{what} {}: {e}", path.display()))
}

pub(crate) fn kind_of(k: proto::ErrorKind) -> RuntimeErrorKind {
    match k {
        proto::ErrorKind::CommandNotFound => RuntimeErrorKind::CommandNotFound,
        proto::ErrorKind::CommandNotExecutable => RuntimeErrorKind::CommandNotExecutable,
        proto::ErrorKind::InvalidState => RuntimeErrorKind::InvalidState,
        proto::ErrorKind::NotFound => RuntimeErrorKind::NotFound,
        proto::ErrorKind::Other => RuntimeErrorKind::Other,
    }
}

fn exit_of(rec: &proto::ExitRecord) -> Exit {
    Exit {
        status: match &rec.exit {
            proto::WireExit::Exited { code } => ExitStatus::Exited { code: *code },
            proto::WireExit::Signaled { signal } => ExitStatus::Signaled { signal: *signal },
            proto::WireExit::Unknown { reason } => ExitStatus::unknown(reason.clone()),
        },
        at: rec.exited_at.clone(),
        oom_killed: rec.oom_killed,
    }
}

fn read_exit_file(path: &Path) -> Option<proto::ExitRecord> {
    let data = std::fs::read(path).ok()?;
    match serde_json::from_slice(&data) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "unreadable exit file");
            None
        }
    }
}

/// Create `dir` if needed, with mode 0700.
fn private_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("cannot set the mode of", dir, e)),
        Err(e) => Err(io_err("cannot create", dir, e)),
    }
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("cannot set the mode of", dir, e))
}

/// A container's directory: 0700; with a user namespace, 0710 and the
/// group of the range's root, whose only right is to cross it. A runtime
/// that mounts from inside the user namespace (libcontainer) opens the
/// bind sources there (`hosts`, `hostname`, `resolv.conf`) as that root.
fn container_dir(
    dir: &Path,
    userns: Option<berth_core::spec::IdRange>,
) -> Result<(), RuntimeError> {
    let gid = userns.map(|r| nix::unistd::Gid::from_raw(r.host));
    nix::unistd::chown(
        dir,
        None,
        Some(gid.unwrap_or(nix::unistd::Gid::from_raw(0))),
    )
    .map_err(|e| io_err("cannot set the group of", dir, std::io::Error::from(e)))?;
    set_mode(dir, if gid.is_some() { 0o710 } else { 0o700 })
}

/// A container directory an older berthd made (0755) is made private as
/// `container_dir` would make it, at the daemon's start rather than at the
/// container's next create: 0710 when its group is a user namespace range's
/// root (set only for those), else 0700. Anything else (a symlink, a file,
/// a directory already private) is left alone; a failure is logged, since
/// the container still works.
fn tighten_container_dir(dir: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let want = if meta.gid() == 0 { 0o700 } else { 0o710 };
    if meta.mode() & 0o777 & !want == 0 {
        return;
    }
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want)) {
        warn!(dir = %dir.display(), error = %e, "cannot make a container's directory private");
    }
}

fn now() -> String {
    proto::now_rfc3339()
}

/// `remove_dir_all`, where a directory already gone is no error.
fn remove_dir_all_quietly(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl ShimRuntime {
    pub fn new(dirs: Dirs, shim_bin: PathBuf, kind: proto::RuntimeKind) -> Self {
        Self {
            zygote_arg: zygote_placeholder(&dirs),
            dirs,
            shim_bin,
            kind,
            log_max_size: AtomicU64::new(DEFAULT_LOG_MAX_SIZE),
            log_max_files: AtomicU32::new(DEFAULT_LOG_MAX_FILES),
            rootfs: None,
            zygote: tokio::sync::Mutex::new(None),
        }
    }

    fn start_zygote(&self) -> std::io::Result<Zygote> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        // The zygote blocks on its end; ours never blocks a task (a zygote
        // too busy to take a request is not used for it).
        nix::fcntl::fcntl(
            ours.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(std::io::Error::from)?;
        let child = tokio::process::Command::new(&self.shim_bin)
            .env("GLIBC_TUNABLES", shim_tunables())
            .env("BERTH_SHIM_ZYGOTE", "1")
            .arg("start")
            .arg(&self.zygote_arg)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            // What it says before a shim opens its own shim.log.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Zygote {
            sock: ours,
            _child: child,
        })
    }

    /// A new shim for `config` forked by the zygote: the read end of its
    /// ready pipe. None when the zygote cannot be used (it is started again
    /// once if it died); the caller then starts the shim itself.
    async fn fork_shim(&self, config: &Path) -> Option<tokio::net::unix::pipe::Receiver> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let path = config.as_os_str().as_bytes();
        if path.len() != self.zygote_arg.as_os_str().len() {
            return None;
        }
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let mut zygote = self.zygote.lock().await;
        for _ in 0..2 {
            if zygote.is_none() {
                match self.start_zygote() {
                    Ok(z) => *zygote = Some(z),
                    Err(e) => {
                        warn!(error = %e, "cannot start the shim zygote; starting shims one by one");
                        return None;
                    }
                }
            }
            let z = zygote.as_ref()?;
            let sent = sendmsg::<()>(
                z.sock.as_raw_fd(),
                &[std::io::IoSlice::new(path)],
                &[ControlMessage::ScmRights(&[write.as_raw_fd()])],
                MsgFlags::MSG_NOSIGNAL,
                None,
            );
            match sent {
                Ok(_) => {
                    drop(write);
                    return tokio::net::unix::pipe::Receiver::from_owned_fd(read).ok();
                }
                Err(e) => {
                    debug!(error = %e, "the shim zygote is gone; starting it again");
                    *zygote = None;
                }
            }
        }
        None
    }

    /// Root filesystems provided by berthd (the image snapshots).
    pub fn with_rootfs(mut self, provider: Arc<dyn RootfsProvider>) -> Self {
        self.rootfs = Some(provider);
        self
    }

    /// Release a container's root in a blocking task (it unmounts and
    /// deletes a tree).
    async fn release_rootfs(&self, id: &str) {
        if let Some(p) = self.rootfs.clone() {
            let id = id.to_string();
            let _ = tokio::task::spawn_blocking(move || p.release(&id)).await;
        }
    }

    /// Tell the providers a run of the container is over.
    async fn run_over(&self, id: &str) {
        run_over(self.rootfs.clone(), id).await;
    }

    /// Log rotation for containers that do not set their own.
    pub fn with_log_defaults(self, max_size: u64, max_files: u32) -> Self {
        self.set_log_defaults(max_size, max_files);
        self
    }

    /// New log rotation defaults, for containers created from now on.
    pub fn set_log_defaults(&self, max_size: u64, max_files: u32) {
        self.log_max_size.store(max_size, Ordering::Relaxed);
        self.log_max_files.store(max_files, Ordering::Relaxed);
    }

    pub fn layout(&self, id: &str) -> Layout {
        Layout::new(&self.dirs, id)
    }

    fn runtime_root(&self) -> PathBuf {
        self.dirs.run.join("runtime")
    }

    /// Before restore: if the host rebooted since the last berthd ran on
    /// this root (`<root>/boot_id` differs from the kernel's), every shim
    /// and container of that boot is gone, but their runtime state and
    /// sockets are still on disk. Remove them, so nothing acts on the pids
    /// they name (which may belong to other processes now). Returns whether
    /// a reboot was seen.
    pub fn forget_previous_boot(&self) -> std::io::Result<bool> {
        let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
        let now = now.trim();
        // On the root, not the run root: a tmpfs run root forgets with the
        // boot, and with it the proof that there was a reboot.
        let file = self.dirs.root.join("boot_id");
        let before = std::fs::read_to_string(&file).ok();
        let rebooted = before.as_deref().is_some_and(|b| b.trim() != now);
        if rebooted {
            warn!(
                "the host rebooted since berthd last ran: removing the runtime state of that boot"
            );
            if let Ok(entries) = std::fs::read_dir(self.runtime_root()) {
                for e in entries.flatten() {
                    let path = e.path();
                    let res = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if let Err(e) = res {
                        warn!(path = %path.display(), error = %e, "cannot remove stale runtime state");
                    }
                }
            }
            if let Ok(entries) = std::fs::read_dir(Dirs::containers(&self.dirs.run)) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path().join("shim.sock"));
                }
            }
        }
        if before.as_deref().map(str::trim) != Some(now) {
            proto::write_atomic(&file, format!("{now}\n").as_bytes())?;
        }
        Ok(rebooted)
    }

    /// Run `berth-shim cleanup` for a container whose shim is gone: kills
    /// what is left of it and removes its cgroups and runtime state.
    async fn cleanup(&self, layout: &Layout) {
        if !layout.config().exists() {
            return;
        }
        let mut cmd = tokio::process::Command::new(&self.shim_bin);
        cmd.arg("cleanup")
            .arg(layout.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(CLEANUP_TIMEOUT, cmd.status()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => warn!(status = %s, "berth-shim cleanup failed"),
            Ok(Err(e)) => warn!(error = %e, "cannot run berth-shim cleanup"),
            Err(_) => warn!("berth-shim cleanup timed out"),
        }
    }

    /// End a shim (and its container) that no record owns any more, e.g.
    /// created by a daemon that died before recording it, then clean up.
    /// A shim still creating its container is given the time a create may
    /// take, then told to kill it. Returns the container's lock (its shim
    /// and every fork of it are gone) to hold while removing its files, or
    /// `None` when the shim would not go.
    async fn end_stale_shim(&self, layout: &Layout) -> Option<ShimLock> {
        // A live shim tears its container down on SIGKILL of the init.
        let kill = proto::Request::Kill {
            signal: 9,
            all: true,
            process: None,
        };
        let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
        loop {
            if let Some(lock) = ShimLock::try_take(layout) {
                self.cleanup(layout).await;
                return Some(lock);
            }
            if request(&layout.socket(), &kill).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(dir = %layout.run.display(), "a shim holds the container and does not answer");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(lock) = ShimLock::try_take(layout) {
                self.cleanup(layout).await;
                return Some(lock);
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(dir = %layout.run.display(), "the shim did not exit after SIGKILL of its container");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn spawn_shim(&self, layout: &Layout) -> Result<proto::Ready, RuntimeError> {
        let (stdout, mut child): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, _) =
            match self.fork_shim(&layout.config()).await {
                Some(ready) => (Box::new(ready), None),
                None => {
                    let shim_log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(layout.shim_log())
                        .map_err(|e| io_err("cannot open", &layout.shim_log(), e))?;
                    let mut child = tokio::process::Command::new(&self.shim_bin)
                        .env("GLIBC_TUNABLES", shim_tunables())
                        .arg("start")
                        .arg(layout.config())
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(shim_log)
                        .kill_on_drop(true)
                        .spawn()
                        .map_err(|e| io_err("cannot run", &self.shim_bin, e))?;
                    let Some(stdout) = child.stdout.take() else {
                        return Err(RuntimeError::other("berth-shim has no ready pipe"));
                    };
                    (Box::new(stdout), Some(child))
                }
            };
        let read = async {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        };
        let line = match tokio::time::timeout(CREATE_TIMEOUT, read).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(RuntimeError::other(format!("reading from berth-shim: {e}"))),
            Err(_) => {
                return Err(RuntimeError::other(format!(
                    "berth-shim did not report within {}s (see {})",
                    CREATE_TIMEOUT.as_secs(),
                    layout.shim_log().display()
                )))
            }
        };
        // The process we started only detaches the shim and exits (the
        // zygote's forks are the kernel's to reap).
        if let Some(child) = child.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        if line.trim().is_empty() {
            let tail = std::fs::read_to_string(layout.shim_log()).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("no output").to_string();
            return Err(RuntimeError::other(format!("berth-shim failed: {last}")));
        }
        serde_json::from_str(&line)
            .map_err(|e| RuntimeError::other(format!("bad message from berth-shim: {e}: {line:?}")))
    }

    async fn connect_task(
        &self,
        id: &str,
        pid: i32,
        shim_pid: i32,
    ) -> Result<Arc<ShimTask>, RuntimeError> {
        let layout = self.layout(id);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Arc::new(ShimTask {
            id: id.to_string(),
            pid,
            shim_pid,
            socket: layout.socket(),
            events: Mutex::new(Some(rx)),
        });
        let stream = subscribe(&layout.socket()).await?;
        tokio::spawn(pump_events(
            stream,
            tx,
            layout.exit_file(),
            pid,
            ShimCleanup {
                shim_bin: self.shim_bin.clone(),
                config: layout.config(),
            },
            shim_pid,
            (self.rootfs.clone(), id.to_string()),
        ));
        Ok(task)
    }
}

/// The lock a shim holds on its `shim.json` for its whole life (its forks
/// inherit it). Taken by berthd, it proves no shim works on the container.
struct ShimLock(#[allow(dead_code)] Option<nix::fcntl::Flock<std::fs::File>>);

impl ShimLock {
    /// The lock, or `None` while a shim holds it. No shim.json: nothing
    /// can hold it.
    fn try_take(layout: &Layout) -> Option<ShimLock> {
        let Ok(file) = std::fs::File::open(layout.config()) else {
            return Some(ShimLock(None));
        };
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Some(ShimLock(Some(lock))),
            Err(_) => None,
        }
    }

    fn held(layout: &Layout) -> bool {
        Self::try_take(layout).is_none()
    }
}

/// The shim's `GLIBC_TUNABLES`: berthd's own, plus no per-thread malloc
/// cache. An idle shim trims its heap (`malloc_trim`), but chunks parked
/// in glibc's tcache count as in use and pin their pages: with it, an idle
/// shim kept 96 KiB of heap, without it 16 KiB (80 KiB less per container,
/// ~80 MiB at 1,000). The shim is single-threaded and allocates little
/// after its start, so the cache buys it nothing. Only glibc reads this,
/// before `main`; the container's own processes get the spec's
/// environment, not the shim's.
fn shim_tunables() -> String {
    tunables_with(std::env::var("GLIBC_TUNABLES").ok().as_deref())
}

fn tunables_with(own: Option<&str>) -> String {
    const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";
    match own {
        Some(t) if !t.is_empty() => format!("{t}:{NO_TCACHE}"),
        _ => NO_TCACHE.to_string(),
    }
}

/// The read buffer of each shim subscription (see `subscribe`).
const SUBSCRIPTION_BUF: usize = 512;

/// What `pump_events` needs to clean up after a shim that died.
struct ShimCleanup {
    shim_bin: PathBuf,
    config: PathBuf,
}

async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let short = proto::ShortPath::new(socket)?;
    UnixStream::connect(short.path()).await
}

/// One request, one response, on a fresh connection.
async fn request(socket: &Path, req: &proto::Request) -> Result<proto::Response, RuntimeError> {
    let run = async {
        crate::attach::handshake(socket, req)
            .await
            .map(|(resp, _, _)| resp)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(Ok(proto::Response::Error(e))) => Err(RuntimeError::new(kind_of(e.kind), e.message)),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e))
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                "the container's shim is gone (the container has exited)",
            ))
        }
        Ok(Err(e)) => Err(RuntimeError::other(format!("talking to berth-shim: {e}"))),
        Err(_) => Err(RuntimeError::other(format!(
            "berth-shim did not answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

async fn subscribe(socket: &Path) -> Result<BufReader<UnixStream>, RuntimeError> {
    let run = async {
        let mut stream = connect(socket).await?;
        let mut line =
            serde_json::to_vec(&proto::Request::Subscribe).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        // The subscription lives as long as the container and carries a
        // few short JSON lines: a small buffer (`read_line` loops over
        // longer ones), not the default 8 KiB, which was 8 MiB of berthd
        // at 1,000 containers.
        let mut reader = BufReader::with_capacity(SUBSCRIPTION_BUF, stream);
        let mut resp = String::new();
        reader.read_line(&mut resp).await?;
        match serde_json::from_str::<proto::Response>(&resp) {
            Ok(proto::Response::Ok) => Ok(reader),
            Ok(other) => Err(std::io::Error::other(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(RuntimeError::other(format!(
            "subscribing to berth-shim: {e}"
        ))),
        Err(_) => Err(RuntimeError::other(
            "berth-shim did not accept the subscription",
        )),
    }
}

/// The process exists and has not exited (a zombie has: a SIGKILLed shim
/// waits as one until whoever inherited it reaps it).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesized command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Forward a shim's events until the init's exit. If the connection ends
/// without it, the exit file tells; without an exit file the status is
/// unknown (never success), and whatever is left of the container is
/// cleaned up.
async fn pump_events(
    mut reader: BufReader<UnixStream>,
    tx: mpsc::UnboundedSender<TaskEvent>,
    exit_file: PathBuf,
    pid: i32,
    cleanup: ShimCleanup,
    shim_pid: i32,
    (rootfs, id): (Option<Arc<dyn RootfsProvider>>, String),
) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match serde_json::from_str::<proto::ShimEvent>(&line) {
            Ok(proto::ShimEvent::Exit(rec)) => {
                let init = rec.process == proto::INIT_PROCESS;
                if init {
                    // Before the exit is known: a restart finds the run's
                    // network released.
                    run_over(rootfs.clone(), &id).await;
                }
                let _ = tx.send(TaskEvent::Exit {
                    process: rec.process.clone(),
                    pid: rec.pid,
                    exit: exit_of(&rec),
                });
                if init {
                    return;
                }
            }
            Ok(proto::ShimEvent::Oom) => {
                let _ = tx.send(TaskEvent::Oom);
            }
            Err(e) => warn!(error = %e, "bad event from berth-shim"),
        }
    }
    // The connection ended without the init's exit. The shim writes the
    // exit file before it exits, so give a shim that is exiting a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while process_alive(shim_pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = match read_exit_file(&exit_file) {
        Some(rec) => exit_of(&rec),
        None => {
            warn!(
                shim_pid,
                "berth-shim ended without an exit status; cleaning up"
            );
            let mut cmd = tokio::process::Command::new(&cleanup.shim_bin);
            cmd.arg("cleanup")
                .arg(&cleanup.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let _ = tokio::time::timeout(CLEANUP_TIMEOUT, cmd.status()).await;
            Exit {
                status: ExitStatus::unknown("berth-shim died before the container exited"),
                at: now(),
                oom_killed: false,
            }
        }
    };
    run_over(rootfs, &id).await;
    let _ = tx.send(TaskEvent::Exit {
        process: proto::INIT_PROCESS.into(),
        pid,
        exit,
    });
}

/// [`RootfsProvider::stopped`] in a blocking task (it runs CNI plugins).
async fn run_over(rootfs: Option<Arc<dyn RootfsProvider>>, id: &str) {
    if let Some(p) = rootfs {
        let id = id.to_string();
        let _ = tokio::task::spawn_blocking(move || p.stopped(&id)).await;
    }
}

#[async_trait]
impl Runtime for ShimRuntime {
    async fn create(&self, req: CreateTask) -> Result<Arc<dyn Task>, RuntimeError> {
        // The runtime's attach of the init comes a few ms from now. A new
        // container's request has warmed already (the service's `params`,
        // earlier, so the grace period overlaps the snapshot and the spec):
        // this call is for the runs that do not pass there, a stopped
        // container started again and a restart by policy, and for a new
        // container it only moves the window's end (a lock and a notify).
        crate::cgroup::warm_attach();
        let layout = self.layout(&req.id);
        let fresh = !layout.dir.exists();
        let id = req.id.clone();
        let res = self.create_in(&layout, req).await;
        if res.is_err() {
            self.run_over(&id).await;
            if fresh {
                for dir in layout.dirs() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        res
    }

    async fn restore(&self, id: &str) -> Restored {
        let layout = self.layout(id);
        match request(&layout.socket(), &proto::Request::Hello).await {
            Ok(proto::Response::Hello {
                version,
                pid,
                shim_pid,
                state,
                ..
            }) if state != proto::ShimState::Stopping => {
                if version != proto::PROTOCOL_VERSION {
                    warn!(
                        shim = version,
                        ours = proto::PROTOCOL_VERSION,
                        "berth-shim speaks another protocol version; reconnecting anyway"
                    );
                }
                let state = match state {
                    proto::ShimState::Created => TaskState::Created,
                    proto::ShimState::Paused => TaskState::Paused,
                    _ => TaskState::Running,
                };
                match self.connect_task(id, pid, shim_pid).await {
                    Ok(task) => return Restored::Alive { task, state },
                    Err(e) => debug!(error = %e, "shim went away while reconnecting"),
                }
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "no shim to reconnect to"),
        }
        // Let a shim that is tearing down finish writing its exit file. A
        // shim that holds no lock is gone: no wait.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !layout.exit_file().exists()
            && ShimLock::held(&layout)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The run ended while no berthd watched: free what it held.
        self.run_over(id).await;
        match read_exit_file(&layout.exit_file()) {
            Some(rec) => Restored::Gone(exit_of(&rec)),
            None => {
                self.cleanup(&layout).await;
                Restored::Gone(Exit {
                    status: ExitStatus::unknown("berth-shim is gone and left no exit status"),
                    at: now(),
                    oom_killed: false,
                })
            }
        }
    }

    async fn exec_exit(&self, id: &str, exec_id: &str) -> Option<Exit> {
        let path = exec_exit_path(&self.dirs.root, id, exec_id);
        read_exit_file(&path).map(|rec| exit_of(&rec))
    }

    async fn collect_orphans(&self, known: &[String]) -> Vec<String> {
        // A container's files may be in either directory, or both.
        let mut ids = std::collections::BTreeSet::new();
        for dir in [&self.dirs.root, &self.dirs.run] {
            let Ok(entries) = std::fs::read_dir(Dirs::containers(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if known.contains(&id) {
                    tighten_container_dir(&entry.path());
                } else {
                    ids.insert(id);
                }
            }
        }
        let mut removed = Vec::new();
        for id in ids {
            let layout = self.layout(&id);
            let Some(lock) = self.end_stale_shim(&layout).await else {
                continue; // kept for the next start
            };
            // Under the lock: a shim starting now finds its files gone.
            for dir in layout.dirs() {
                if let Err(e) = remove_dir_all_quietly(dir) {
                    warn!(id = %id, error = %e, "cannot remove an orphaned container's files");
                }
            }
            self.release_rootfs(&id).await;
            drop(lock);
            removed.push(id);
        }
        removed
    }

    async fn end_stale(&self, id: &str) {
        let layout = self.layout(id);
        if layout.socket().exists() || ShimLock::held(&layout) {
            warn!(id, "a stopped container still has a shim; ending it");
            drop(self.end_stale_shim(&layout).await);
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let layout = self.layout(id);
        let removed = layout.dirs().into_iter().try_for_each(|dir| {
            remove_dir_all_quietly(dir).map_err(|e| io_err("cannot remove", dir, e))
        });
        // Then the root: a crash in between leaves a snapshot no container
        // owns, which the next berthd's snapshot cleanup removes.
        self.release_rootfs(id).await;
        removed
    }
}

impl ShimRuntime {
    /// The bundle's `config.json`. For the embedded runtime, the spec
    /// prepared for it (`berth_core::embedded`): without the seccomp
    /// profile, which berth loads itself and keeps once under the runtime
    /// root, so that the shim's freshly forked create helper parses no
    /// profile and writes no second bundle (that measured ten times what
    /// the same work costs here). Compact JSON: only runtimes read it, and
    /// pretty-printing a profile doubled the bytes and the time.
    fn bundle_spec(
        &self,
        bundle: &Path,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<Vec<u8>, RuntimeError> {
        use berth_core::embedded;
        let ser = |s: &oci_spec::runtime::Spec| {
            serde_json::to_vec(s)
                .map_err(|e| RuntimeError::other(format!("cannot serialize the spec: {e}")))
        };
        if self.kind != proto::RuntimeKind::Embedded {
            return ser(spec);
        }
        if let Some(p) = embedded::prepare(spec, bundle) {
            let root = self.runtime_root();
            embedded::save_profile(&root, &p.record.profile, &p.seccomp).map_err(|e| {
                io_err(
                    "cannot keep the seccomp profile in",
                    &embedded::profile_path(&root, &p.record.profile),
                    e,
                )
            })?;
            return ser(&p.spec);
        }
        // Only berth prepares a spec: a record a client put in its own
        // spec's annotations would choose the filter the backend loads.
        match spec.annotations() {
            Some(a) if a.contains_key(embedded::ANNOTATION) => {
                let mut own = spec.clone();
                let mut a = a.clone();
                a.remove(embedded::ANNOTATION);
                own.set_annotations(Some(a));
                ser(&own)
            }
            _ => ser(spec),
        }
    }

    async fn create_in(
        &self,
        layout: &Layout,
        req: CreateTask,
    ) -> Result<Arc<dyn Task>, RuntimeError> {
        // Logs and specs are root's alone (the container dirs' paths show
        // in every shim's command line): `containers` can be crossed but
        // not listed, and each container's directory is private.
        let range = berth_core::spec::IdRange::of_spec(&req.spec);
        for dir in [&self.dirs.root, &self.dirs.run] {
            private_dir(&Dirs::containers(dir))?;
            set_mode(&Dirs::containers(dir), 0o711)?;
        }
        private_dir(&self.runtime_root())?;
        // `execs` is the shim's to make, at the first exec.
        std::fs::create_dir_all(&layout.dir)
            .map_err(|e| io_err("cannot create", &layout.dir, e))?;
        container_dir(&layout.dir, range)?;
        if layout.run != layout.dir {
            std::fs::create_dir_all(&layout.run)
                .map_err(|e| io_err("cannot create", &layout.run, e))?;
            container_dir(&layout.run, range)?;
        }
        // A shim of an earlier run can still be there when a daemon died
        // between creating a new run and recording it: end it first.
        if layout.socket().exists() || ShimLock::held(layout) {
            warn!(id = %req.id, "a shim of an earlier run is still there; ending it");
            if self.end_stale_shim(layout).await.is_none() {
                return Err(RuntimeError::other(
                    "a shim of an earlier run of this container does not go away",
                ));
            }
        }
        // After a reboot an image container's root is no longer mounted.
        let mut prepared = Prepared::default();
        if let Some(p) = self.rootfs.clone() {
            let id = req.id.clone();
            prepared = tokio::task::spawn_blocking(move || p.ensure(&id))
                .await
                .map_err(|e| RuntimeError::other(format!("mounting the root failed: {e}")))?
                .map_err(|e| {
                    RuntimeError::other(format!("cannot mount the container's root: {e}"))
                })?;
        }
        let fresh;
        let run_spec = if prepared.fresh_netns {
            fresh = without_netns_path(&req.spec);
            &fresh
        } else {
            &req.spec
        };
        // A previous run's leftovers would be mistaken for this run's.
        for stale in [layout.exit_file(), layout.socket()] {
            let _ = std::fs::remove_file(stale);
        }
        let spec = self.bundle_spec(&layout.run, run_spec)?;
        let spec_path = layout.run.join("config.json");
        std::fs::write(&spec_path, spec).map_err(|e| io_err("cannot write", &spec_path, e))?;
        // The log exists before the container does, so a reader can open it
        // (and keep it open) before the first byte is written.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.log())
            .map_err(|e| io_err("cannot create", &layout.log(), e))?;
        let config = proto::ShimConfig {
            id: req.id.clone(),
            bundle: layout.run.clone(),
            runtime: self.kind.clone(),
            runtime_root: self.runtime_root(),
            socket: layout.socket(),
            log_path: layout.log(),
            log_max_size: if req.log_max_size == 0 {
                self.log_max_size.load(Ordering::Relaxed)
            } else {
                req.log_max_size
            },
            log_max_files: if req.log_max_files == 0 {
                self.log_max_files.load(Ordering::Relaxed)
            } else {
                req.log_max_files
            },
            exit_file: layout.exit_file(),
            exec_dir: layout.exec_dir(),
            shim_log: layout.shim_log(),
            open_stdin: req.open_stdin,
            facts: Some(spec_facts(run_spec)),
        };
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| RuntimeError::other(format!("cannot serialize the shim config: {e}")))?;
        std::fs::write(layout.config(), json)
            .map_err(|e| io_err("cannot write", &layout.config(), e))?;

        let ready = self.spawn_shim(layout).await?;
        if let Some(e) = ready.error {
            return Err(RuntimeError::new(kind_of(e.kind), e.message));
        }
        match self.connect_task(&req.id, ready.pid, ready.shim_pid).await {
            Ok(task) => Ok(task),
            Err(e) => {
                // The shim is up but unusable: end it and its container.
                if ready.shim_pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(ready.shim_pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                // An init that died before its start (runc's own init is
                // a Go program whose threads count against --pids-limit)
                // leaves the shim nothing to watch: say that, not how the
                // subscription broke.
                let e = if process_alive(ready.pid) {
                    e
                } else {
                    RuntimeError::other(format!(
                        "the container's init exited during create, before it was started \
                         (is --pids-limit below what the runtime's own init needs? see {})",
                        layout.shim_log().display()
                    ))
                };
                self.cleanup(layout).await;
                Err(e)
            }
        }
    }
}

/// `spec` with its network namespace made by the runtime (no path).
fn without_netns_path(spec: &oci_spec::runtime::Spec) -> oci_spec::runtime::Spec {
    use oci_spec::runtime::LinuxNamespaceType;
    let mut spec = spec.clone();
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            for n in ns
                .iter_mut()
                .filter(|n| n.typ() == LinuxNamespaceType::Network)
            {
                n.set_path(None);
            }
        }
    }
    spec
}

/// The spec asks the runtime for a namespace of type `typ` of its own (one
/// without a path to join).
fn own_namespace(
    spec: &oci_spec::runtime::Spec,
    typ: oci_spec::runtime::LinuxNamespaceType,
) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == typ && n.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())
            })
        })
}

/// What the shim acts on in the spec, handed to it in its config (it would
/// otherwise parse all of `config.json`, seccomp profile and all, for
/// these); the same facts `SpecFacts::from_config_json` reads.
fn spec_facts(spec: &oci_spec::runtime::Spec) -> proto::SpecFacts {
    let process = spec.process().as_ref();
    let linux = spec.linux().as_ref();
    proto::SpecFacts {
        cgroup: linux
            .and_then(|l| l.cgroups_path().clone())
            .filter(|p| p.is_absolute()),
        own_pid_ns: own_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Pid),
        own_net_ns: own_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Network),
        terminal: process.and_then(|p| p.terminal()).unwrap_or(false),
        console_size: process.and_then(|p| p.console_size()).and_then(|b| {
            Some((
                u16::try_from(b.height()).ok()?,
                u16::try_from(b.width()).ok()?,
            ))
        }),
    }
}

/// A live container behind its shim.
pub struct ShimTask {
    id: String,
    pid: i32,
    shim_pid: i32,
    socket: PathBuf,
    events: Mutex<Option<mpsc::UnboundedReceiver<TaskEvent>>>,
}

impl ShimTask {
    async fn ok(&self, req: proto::Request) -> Result<(), RuntimeError> {
        match request(&self.socket, &req).await? {
            proto::Response::Ok | proto::Response::Started { .. } => Ok(()),
            other => Err(RuntimeError::other(format!(
                "unexpected answer from berth-shim of {}: {other:?}",
                self.id
            ))),
        }
    }
}

#[async_trait]
impl Task for ShimTask {
    fn pid(&self) -> i32 {
        self.pid
    }

    async fn start(&self) -> Result<(), RuntimeError> {
        self.ok(proto::Request::Start).await
    }

    async fn kill(&self, signal: i32, all: bool) -> Result<(), RuntimeError> {
        self.ok(proto::Request::Kill {
            signal,
            all,
            process: None,
        })
        .await
    }

    async fn kill_exec(&self, exec_id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.ok(proto::Request::Kill {
            signal,
            all: false,
            process: Some(exec_id.to_string()),
        })
        .await
    }

    async fn pause(&self) -> Result<(), RuntimeError> {
        self.ok(proto::Request::Pause).await
    }

    async fn resume(&self) -> Result<(), RuntimeError> {
        self.ok(proto::Request::Resume).await
    }

    async fn update(
        &self,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError> {
        let resources = serde_json::to_value(resources)
            .map_err(|e| RuntimeError::other(format!("cannot serialize the resources: {e}")))?;
        self.ok(proto::Request::Update { resources }).await
    }

    async fn exec(&self, req: ExecTask) -> Result<(i32, Option<AttachIo>), RuntimeError> {
        let process = serde_json::to_value(&req.process)
            .map_err(|e| RuntimeError::other(format!("cannot serialize the process: {e}")))?;
        let request_line = proto::Request::Exec {
            exec_id: req.exec_id,
            process,
            attach: req.attach.map(|a| proto::AttachOptions { stdin: a.stdin }),
        };
        let (resp, io) = if req.attach.is_some() {
            let (resp, io) = crate::attach::open(&self.socket, &request_line).await?;
            (resp, Some(io))
        } else {
            (request(&self.socket, &request_line).await?, None)
        };
        match resp {
            proto::Response::Started { pid } => Ok((pid, io)),
            other => Err(RuntimeError::other(format!(
                "unexpected answer from berth-shim (pid {}): {other:?}",
                self.shim_pid
            ))),
        }
    }

    async fn attach(&self, process: &str, opts: AttachOptions) -> Result<AttachIo, RuntimeError> {
        let req = proto::Request::Attach {
            process: process.to_string(),
            options: proto::AttachOptions { stdin: opts.stdin },
        };
        crate::attach::open(&self.socket, &req)
            .await
            .map(|(_, io)| io)
    }

    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<TaskEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::{spec_facts, tighten_container_dir, tunables_with};

    /// berthd's facts of a spec are what the shim would read from the
    /// spec's JSON (its fallback for a config without them).
    #[test]
    fn the_facts_berthd_hands_the_shim_are_the_specs() {
        use oci_spec::runtime::{
            BoxBuilder, LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, ProcessBuilder,
            Spec,
        };
        let ns = |t, path: Option<&str>| {
            let mut b = LinuxNamespaceBuilder::default().typ(t);
            if let Some(p) = path {
                b = b.path(p);
            }
            b.build().unwrap()
        };
        let mut specs = vec![Spec::default()];
        for (cgroup, pid_path, net_path, terminal) in [
            ("/berth/abc", None, None, true),
            (
                "relative/path",
                Some("/proc/1/ns/pid"),
                Some("/var/lib/berth/netns/abc"),
                false,
            ),
            ("/x", Some(""), Some(""), false),
        ] {
            let mut spec = Spec::default();
            spec.set_linux(Some(
                LinuxBuilder::default()
                    .cgroups_path(cgroup)
                    .namespaces(vec![
                        ns(LinuxNamespaceType::Mount, None),
                        ns(LinuxNamespaceType::Pid, pid_path),
                        ns(LinuxNamespaceType::Network, net_path),
                    ])
                    .build()
                    .unwrap(),
            ));
            let mut p = ProcessBuilder::default().terminal(terminal);
            if terminal {
                p = p.console_size(
                    BoxBuilder::default()
                        .height(40u64)
                        .width(120u64)
                        .build()
                        .unwrap(),
                );
            }
            spec.set_process(Some(p.build().unwrap()));
            specs.push(spec);
        }
        for spec in &specs {
            let json = serde_json::to_vec(spec).unwrap();
            assert_eq!(
                spec_facts(spec),
                berth_shim_proto::SpecFacts::from_config_json(&json)
            );
        }
        let f = spec_facts(&specs[1]);
        assert_eq!(
            (
                f.cgroup.as_deref(),
                f.own_pid_ns,
                f.terminal,
                f.console_size
            ),
            (
                Some(std::path::Path::new("/berth/abc")),
                true,
                true,
                Some((40, 120))
            )
        );
        assert!(spec_facts(&specs[2]).cgroup.is_none());
        assert!(!spec_facts(&specs[2]).own_pid_ns);
        assert!(spec_facts(&specs[3]).own_pid_ns);
        let nets: Vec<bool> = specs[1..]
            .iter()
            .map(|s| spec_facts(s).own_net_ns)
            .collect();
        assert_eq!(nets, [true, false, true]);
    }

    #[test]
    fn an_old_containers_directory_becomes_private() {
        use std::os::unix::fs::PermissionsExt;
        // Removed even when an assertion fails.
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let base =
            Gone(std::env::temp_dir().join(format!("berthd-tighten-{}", std::process::id())));
        let dir = base.0.join("c1");
        std::fs::create_dir_all(&dir).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten_container_dir(&dir);
        assert_eq!(mode(&dir), 0o700);
        // A user namespace container's directory keeps its crossing group.
        nix::unistd::chown(&dir, None, Some(nix::unistd::Gid::from_raw(100_000_000))).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten_container_dir(&dir);
        assert_eq!(mode(&dir), 0o710);
        // Already private: unchanged.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        tighten_container_dir(&dir);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn the_shim_gets_no_tcache_and_keeps_the_daemons_tunables() {
        assert_eq!(tunables_with(None), "glibc.malloc.tcache_count=0");
        assert_eq!(tunables_with(Some("")), "glibc.malloc.tcache_count=0");
        assert_eq!(
            tunables_with(Some("glibc.malloc.arena_max=2")),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"
        );
    }
}
