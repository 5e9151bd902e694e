//! The monitor: creates the container, then serves requests, writes logs and
//! reaps processes in one poll(2) loop until the init exits.
//!
//! Everything is synchronous and single-threaded: a backend call blocks the
//! loop for its (bounded) duration, which is what makes the libcontainer
//! helpers safe (they fork this process) and keeps the shim tiny.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_oci::{Backend, OciError, Stdio};
use berth_shim_proto::{
    ErrorKind, ExitRecord, Request, Response, ShimConfig, ShimError, ShimEvent, ShimState,
    WireExit, INIT_PROCESS, MAX_LINE, PROTOCOL_VERSION,
};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use crate::crilog::CriLog;
use crate::{diag, sys};

const STREAMS: [&str; 2] = ["stdout", "stderr"];
/// How long the exit path waits for the execs to die after the init.
const EXEC_REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the exit path drains output after everything died.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may take to send its request line.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client or subscriber may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many connections waiting for their request line.
const MAX_CLIENTS: usize = 64;
/// How long to look for the OOM kill after an OOM notice.
const OOM_RECHECK: Duration = Duration::from_secs(2);
/// One read per pipe event is at most this big.
const READ_BUF: usize = 16 * 1024;

/// A process the shim watches: the init or an exec.
struct Proc {
    /// `init` or the exec id.
    id: String,
    pid: Pid,
    /// Read ends of stdout and stderr (nonblocking); `None` after EOF.
    outs: [Option<File>; 2],
    log: CriLog,
    exited: bool,
}

/// A connection that has not sent its request line yet.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// cgroup v1 OOM notifications: an eventfd registered on memory.oom_control.
struct OomWatch {
    /// cgroup v1: an eventfd registered on memory.oom_control (8-byte
    /// counter reads); cgroup v2: an inotify watch on memory.events.
    fd: File,
    _control: Option<File>,
}

pub struct Shim {
    cfg: ShimConfig,
    backend: Box<dyn Backend>,
    shim_pid: i32,
    state: ShimState,
    init: Proc,
    execs: Vec<Proc>,
    listener: UnixListener,
    clients: Vec<Option<Client>>,
    subscribers: Vec<Option<UnixStream>>,
    sigfd: SignalFd,
    /// The container's cgroup (`linux.cgroupsPath`), when absolute.
    cgroup: Option<PathBuf>,
    /// The container has its own pid namespace: when the init dies the
    /// kernel kills every other process in it, so no kill-all is needed.
    own_pid_ns: bool,
    oom: Option<OomWatch>,
    /// OOM kills already reported.
    oom_kills: u64,
    /// After an OOM notice without a kill counted yet: look again until then.
    oom_recheck: Option<Instant>,
    init_exit: Option<(WireExit, String)>,
    buf: Vec<u8>,
}

/// What the poll loop woke up for.
#[derive(Clone, Copy)]
enum Token {
    Signal,
    Listener,
    Oom,
    /// Output of the init (`None`) or of `execs[i]`, stream 0/1.
    Out(Option<usize>, usize),
    Client(usize),
    Subscriber(usize),
}

fn other(context: &str) -> impl Fn(io::Error) -> ShimError + '_ {
    move |e| ShimError::new(ErrorKind::Other, format!("{context}: {e}"))
}

/// The protocol's view of a backend error (126/127 kinds survive).
fn shim_error(e: OciError) -> ShimError {
    let kind = match e.kind {
        berth_oci::ErrorKind::CommandNotFound => ErrorKind::CommandNotFound,
        berth_oci::ErrorKind::CommandNotExecutable => ErrorKind::CommandNotExecutable,
        berth_oci::ErrorKind::NotFound | berth_oci::ErrorKind::Other => ErrorKind::Other,
    };
    ShimError::new(kind, e.message)
}

/// Pipes for a new process: the child's ends for the backend, and our
/// nonblocking read ends of stdout and stderr. Stdin's write end is closed
/// at once: the process reads EOF.
fn make_stdio() -> io::Result<(Stdio, [Option<File>; 2])> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
    let (stdin, stdin_w) = pipe()?;
    drop(stdin_w);
    let (out_r, stdout) = pipe()?;
    let (err_r, stderr) = pipe()?;
    sys::set_nonblocking(&out_r)?;
    sys::set_nonblocking(&err_r)?;
    Ok((
        Stdio {
            stdin,
            stdout,
            stderr,
        },
        [Some(File::from(out_r)), Some(File::from(err_r))],
    ))
}

/// Decode a raw wait status.
fn wire_exit(status: i32) -> Option<WireExit> {
    if libc::WIFEXITED(status) {
        Some(WireExit::Exited {
            code: libc::WEXITSTATUS(status),
        })
    } else if libc::WIFSIGNALED(status) {
        Some(WireExit::Signaled {
            signal: libc::WTERMSIG(status),
        })
    } else {
        None
    }
}

/// Read what `proc`'s stream `i` has (at most `max_reads` reads) into its log.
fn pump(proc: &mut Proc, i: usize, buf: &mut [u8], max_reads: usize) {
    for _ in 0..max_reads {
        let Some(f) = proc.outs[i].as_mut() else {
            return;
        };
        match f.read(buf) {
            Ok(0) => {
                proc.outs[i] = None;
                return;
            }
            Ok(n) => proc.log.write(STREAMS[i], &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                diag(format_args!("read {} {}: {e}", proc.id, STREAMS[i]));
                proc.outs[i] = None;
                return;
            }
        }
    }
}

/// What the shim needs from the bundle's spec: `linux.cgroupsPath` (when an
/// absolute cgroupfs path) and whether the container has a pid namespace of
/// its own (not joined by path).
fn bundle_facts(bundle: &Path) -> (Option<PathBuf>, bool) {
    let spec: Option<serde_json::Value> = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok());
    let linux = spec.as_ref().and_then(|s| s.get("linux"));
    let cgroup = linux
        .and_then(|l| l.get("cgroupsPath"))
        .and_then(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from);
    let own_pid_ns = linux
        .and_then(|l| l.get("namespaces"))
        .and_then(|n| n.as_array())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.get("type").and_then(|t| t.as_str()) == Some("pid")
                    && n.get("path")
                        .and_then(|p| p.as_str())
                        .unwrap_or("")
                        .is_empty()
            })
        });
    (cgroup, own_pid_ns)
}

/// Where the memory controller keeps the cgroup `rel`, v1 first.
fn memory_dirs(cgroup: &Path) -> [PathBuf; 3] {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    [
        Path::new("/sys/fs/cgroup/memory").join(rel),
        Path::new("/sys/fs/cgroup/unified").join(rel),
        Path::new("/sys/fs/cgroup").join(rel),
    ]
}

/// Register for cgroup v1 OOM notifications (`cgroup.event_control`).
fn watch_oom(cgroup: &Path) -> Option<OomWatch> {
    let [v1, unified, v2] = memory_dirs(cgroup);
    if let Ok(control) = File::open(v1.join("memory.oom_control")) {
        let efd = File::from(sys::eventfd().ok()?);
        use std::os::fd::AsRawFd;
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        std::fs::write(v1.join("cgroup.event_control"), line).ok()?;
        return Some(OomWatch {
            fd: efd,
            _control: Some(control),
        });
    }
    // cgroup v2: memory.events changes when oom_kill is counted.
    [unified, v2]
        .iter()
        .map(|d| d.join("memory.events"))
        .find(|p| p.exists())
        .and_then(|p| sys::inotify_modify(&p).ok())
        .map(|fd| OomWatch {
            fd: File::from(fd),
            _control: None,
        })
}

/// How many processes the OOM killer killed in the cgroup (v1 `oom_kill`
/// in memory.oom_control, v2 `oom_kill` in memory.events).
fn oom_kills(cgroup: &Path) -> Option<u64> {
    for dir in memory_dirs(cgroup) {
        for file in ["memory.oom_control", "memory.events"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if n.is_some() {
                    return n;
                }
            }
        }
    }
    None
}

/// Exec ids become file names: keep them tame.
fn validate_exec_id(id: &str) -> Result<(), ShimError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != INIT_PROCESS
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ShimError::new(
            ErrorKind::Other,
            format!("invalid exec id {id:?}"),
        ))
    }
}

fn remove_socket(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Tear down whatever a failed create may have left (ignoring errors: the
/// original error is what gets reported), then reap what died.
fn undo_create(backend: &dyn Backend, cfg: &ShimConfig, sigfd: &SignalFd) {
    let _ = backend.kill(&cfg.id, Signal::SIGKILL as i32, true);
    match backend.delete(&cfg.id, true) {
        Ok(()) => {}
        Err(e) if e.kind == berth_oci::ErrorKind::NotFound => {}
        Err(e) => diag(format_args!("cleanup after failed create: {e}")),
    }
    // Every child left is a killed container process: reap them, bounded.
    let deadline = Instant::now() + EXEC_REAP_TIMEOUT;
    loop {
        match sys::wait_any() {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(_) => return, // ECHILD: none left
        }
        if Instant::now() >= deadline {
            diag(format_args!("children left after a failed create"));
            return;
        }
        drain_signals(sigfd);
        let _ = wait_readable(sigfd.as_fd(), deadline);
    }
}

/// Consume pending signals; true if SIGTERM or SIGINT was among them.
/// (SIGCHLD needs no note: the caller reaps anyway, since signals coalesce;
/// SIGHUP means nothing to a shim without a terminal.)
fn drain_signals(sigfd: &SignalFd) -> bool {
    let mut term = false;
    while let Ok(Some(info)) = sigfd.read_signal() {
        let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
        term |= signo == libc::SIGTERM || signo == libc::SIGINT;
    }
    term
}

/// Add `fd` to a poll set, remembering why.
fn add<'a>(fds: &mut Vec<PollFd<'a>>, tokens: &mut Vec<Token>, fd: BorrowedFd<'a>, t: Token) {
    fds.push(PollFd::new(fd, PollFlags::POLLIN));
    tokens.push(t);
}

/// Poll one fd until readable or `deadline`; false on timeout.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(
        nix::poll::poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)),
        Ok(n) if n > 0
    )
}

impl Shim {
    /// Create the container and bind the socket. On failure everything is
    /// torn down and the original error returned.
    pub fn create(
        cfg: ShimConfig,
        backend: Box<dyn Backend>,
        sigfd: SignalFd,
    ) -> Result<Self, ShimError> {
        let log = CriLog::open(&cfg.log_path, cfg.log_max_size, cfg.log_max_files)
            .map_err(other("open log"))?;
        std::fs::create_dir_all(&cfg.exec_dir).map_err(other("create exec dir"))?;
        let (stdio, outs) = make_stdio().map_err(other("stdio pipes"))?;
        let pid = match backend.create(&cfg.id, &cfg.bundle, stdio) {
            Ok(pid) => pid,
            Err(e) => {
                undo_create(&*backend, &cfg, &sigfd);
                return Err(shim_error(e));
            }
        };
        // Anything failing from here on must undo the create too.
        let bound = (|| {
            remove_socket(&cfg.socket);
            if let Some(dir) = cfg.socket.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let listener = berth_shim_proto::bind(&cfg.socket)?;
            listener.set_nonblocking(true)?;
            Ok::<_, io::Error>(listener)
        })();
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                undo_create(&*backend, &cfg, &sigfd);
                remove_socket(&cfg.socket);
                return Err(other("bind socket")(e));
            }
        };
        let (cgroup, own_pid_ns) = bundle_facts(&cfg.bundle);
        let oom = cgroup.as_deref().and_then(watch_oom);
        Ok(Self {
            shim_pid: i32::try_from(std::process::id()).unwrap_or(0),
            state: ShimState::Created,
            init: Proc {
                id: INIT_PROCESS.into(),
                pid: Pid::from_raw(pid),
                outs,
                log,
                exited: false,
            },
            execs: Vec::new(),
            listener,
            clients: Vec::new(),
            subscribers: Vec::new(),
            sigfd,
            cgroup,
            own_pid_ns,
            oom,
            oom_kills: 0,
            oom_recheck: None,
            init_exit: None,
            buf: vec![0; READ_BUF],
            backend,
            cfg,
        })
    }

    pub fn shim_pid(&self) -> i32 {
        self.shim_pid
    }

    pub fn init_pid(&self) -> i32 {
        self.init.pid.as_raw()
    }

    /// Serve until the init exits; then tear down. Returns the exit code.
    pub fn run(mut self) -> i32 {
        // The init may have died before we started listening for SIGCHLD.
        self.reap();
        let mut trim = true;
        while self.init_exit.is_none() {
            trim = self.turn(trim);
        }
        self.finish()
    }

    /// One poll(2) round; with `trim`, drop the pages touched so far just
    /// before sleeping (see [`sys::trim_file_pages`]). Returns true when it
    /// did more than copy output (served a request, reaped a process), i.e.
    /// when the next sleep should trim again.
    fn turn(&mut self, trim: bool) -> bool {
        let mut tokens = Vec::new();
        let ready: Vec<(Token, PollFlags)> = {
            let mut fds = Vec::new();
            for (i, out) in self.init.outs.iter().enumerate() {
                if let Some(f) = out {
                    add(&mut fds, &mut tokens, f.as_fd(), Token::Out(None, i));
                }
            }
            for (e, p) in self.execs.iter().enumerate() {
                for (i, out) in p.outs.iter().enumerate() {
                    if let Some(f) = out {
                        add(&mut fds, &mut tokens, f.as_fd(), Token::Out(Some(e), i));
                    }
                }
            }
            add(
                &mut fds,
                &mut tokens,
                self.listener.as_fd(),
                Token::Listener,
            );
            for (i, c) in self.clients.iter().enumerate() {
                if let Some(c) = c {
                    add(&mut fds, &mut tokens, c.stream.as_fd(), Token::Client(i));
                }
            }
            for (i, s) in self.subscribers.iter().enumerate() {
                if let Some(s) = s {
                    add(&mut fds, &mut tokens, s.as_fd(), Token::Subscriber(i));
                }
            }
            if let Some(o) = &self.oom {
                add(&mut fds, &mut tokens, o.fd.as_fd(), Token::Oom);
            }
            add(&mut fds, &mut tokens, self.sigfd.as_fd(), Token::Signal);
            // Wake up to expire idle clients, or to look for an OOM kill.
            let timeout = if self.oom_recheck.is_some() {
                PollTimeout::from(50u16)
            } else if !self.clients.is_empty() {
                PollTimeout::from(1000u16)
            } else {
                PollTimeout::NONE
            };
            if trim {
                sys::trim_file_pages();
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    diag(format_args!("poll: {e}"));
                    // Do not spin on a persistent error.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            fds.iter()
                .zip(&tokens)
                .filter_map(|(fd, t)| {
                    let r = fd.revents().unwrap_or(PollFlags::empty());
                    (!r.is_empty()).then_some((*t, r))
                })
                .collect()
        };
        let mut busy = false;
        for (token, revents) in ready {
            busy |= !matches!(token, Token::Out(..));
            match token {
                Token::Out(None, i) => pump(&mut self.init, i, &mut self.buf, 4),
                Token::Out(Some(e), i) => pump(&mut self.execs[e], i, &mut self.buf, 4),
                Token::Listener => self.accept(),
                Token::Client(i) => self.on_client(i),
                Token::Subscriber(i) => self.on_subscriber(i, revents),
                Token::Oom => self.on_oom(),
                Token::Signal => self.on_signals(),
            }
        }
        let now = Instant::now();
        if let Some(until) = self.oom_recheck {
            self.check_oom();
            if now >= until {
                self.oom_recheck = None;
            }
        }
        for c in &mut self.clients {
            if c.as_ref().is_some_and(|c| now - c.since > CLIENT_TIMEOUT) {
                *c = None;
            }
        }
        self.clients.retain(Option::is_some);
        self.subscribers.retain(Option::is_some);
        self.execs
            .retain(|p| !(p.exited && p.outs.iter().all(Option::is_none)));
        busy
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                        continue; // dropped: closes the connection
                    }
                    self.clients.push(Some(Client {
                        stream,
                        buf: Vec::new(),
                        since: Instant::now(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock, or a transient accept error
            }
        }
    }

    fn on_client(&mut self, i: usize) {
        let Some(client) = self.clients[i].as_mut() else {
            return;
        };
        let mut chunk = [0u8; 1024];
        loop {
            match client.stream.read(&mut chunk) {
                Ok(0) => {
                    // Closed before a full line: nothing to answer.
                    self.clients[i] = None;
                    return;
                }
                Ok(n) => {
                    client.buf.extend_from_slice(&chunk[..n]);
                    if client.buf.contains(&b'\n') || client.buf.len() > MAX_LINE {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.clients[i] = None;
                    return;
                }
            }
        }
        let Some(client) = self.clients[i].take() else {
            return;
        };
        let mut stream = client.stream;
        let request: io::Result<Option<Request>> =
            berth_shim_proto::read_line(&mut &client.buf[..]);
        let (response, subscribe) = match request {
            Ok(Some(req)) => self.handle(req),
            Ok(None) => return,
            Err(e) => (
                Response::Error(ShimError::new(
                    ErrorKind::Other,
                    format!("bad request: {e}"),
                )),
                false,
            ),
        };
        let sent = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            .and_then(|()| berth_shim_proto::write_line(&mut stream, &response));
        if sent.is_ok() && subscribe {
            self.subscribers.push(Some(stream));
        }
    }

    /// A subscriber only listens; input or a hang-up means it is gone.
    fn on_subscriber(&mut self, i: usize, revents: PollFlags) {
        let Some(s) = self.subscribers[i].as_mut() else {
            return;
        };
        let mut chunk = [0u8; 256];
        let _ = s.set_nonblocking(true);
        let alive = match s.read(&mut chunk) {
            Ok(0) => false,
            Ok(_) => true, // ignore chatter
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        };
        let _ = s.set_nonblocking(false);
        if !alive || revents.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
            self.subscribers[i] = None;
        }
    }

    /// The memory cgroup signalled an OOM situation. The kernel signals
    /// every failed charge; report only when a process was actually killed
    /// (the `oom_kill` counter grew), once per kill.
    fn on_oom(&mut self) {
        let Some(o) = self.oom.as_mut() else { return };
        // Room for an eventfd counter or a batch of inotify events.
        let mut buf = [0u8; 1024];
        match o.fd.read(&mut buf) {
            Ok(n) if n > 0 => {
                // The notice can come before the kill is counted: look
                // again for a little while.
                self.oom_recheck = Some(Instant::now() + OOM_RECHECK);
                self.check_oom();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => self.oom = None,
        }
    }

    /// Report OOM kills not reported yet.
    fn check_oom(&mut self) {
        let kills = self.cgroup.as_deref().and_then(oom_kills).unwrap_or(0);
        if kills > self.oom_kills {
            self.oom_kills = kills;
            self.oom_recheck = None;
            self.broadcast(&ShimEvent::Oom);
        }
    }

    fn on_signals(&mut self) {
        let term = drain_signals(&self.sigfd);
        if term {
            self.shutdown();
        }
        // Reap even without a SIGCHLD in hand: signals coalesce.
        self.reap();
    }

    /// SIGTERM to the shim: kill the container; the init's exit then runs
    /// the normal exit path. Never leaves an orphan container behind.
    fn shutdown(&mut self) {
        diag(format_args!("terminating: killing the container"));
        if let Err(e) = self
            .backend
            .kill(&self.cfg.id, Signal::SIGKILL as i32, true)
        {
            diag(format_args!("kill: {e}"));
        }
        // The init is our unreaped child: its pid cannot have been reused.
        if !sys::has_exited(self.init.pid) {
            let _ = nix::sys::signal::kill(self.init.pid, Signal::SIGKILL);
        }
    }

    fn reap(&mut self) {
        while let Ok(Some((pid, status))) = sys::wait_any() {
            let Some(exit) = wire_exit(status) else {
                continue;
            };
            let at = berth_shim_proto::now_rfc3339();
            if pid == self.init.pid {
                self.init.exited = true;
                self.init_exit = Some((exit, at));
            } else if let Some(i) = self.execs.iter().position(|p| p.pid == pid && !p.exited) {
                self.exec_exited(i, exit, at);
            }
            // Anything else was re-parented to us (an orphan of the
            // container): reaped, nothing to report.
        }
    }

    /// An exec exited: log what it left in its pipes, write its exit file,
    /// tell the subscribers. Its pipes stay watched until EOF (a child of it
    /// may still write).
    fn exec_exited(&mut self, i: usize, exit: WireExit, at: String) {
        let p = &mut self.execs[i];
        p.exited = true;
        for s in 0..2 {
            pump(p, s, &mut self.buf, 64);
        }
        p.log.sync();
        let record = ExitRecord {
            process: p.id.clone(),
            pid: p.pid.as_raw(),
            exit,
            exited_at: at,
            oom_killed: false,
        };
        let path = self.cfg.exec_dir.join(format!("{}.exit", p.id));
        self.write_exit(&path, &record);
        self.broadcast(&ShimEvent::Exit(record));
    }

    fn write_exit(&self, path: &Path, record: &ExitRecord) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let written = serde_json::to_vec(record)
            .map_err(io::Error::other)
            .and_then(|json| berth_shim_proto::write_atomic(path, &json));
        if let Err(e) = written {
            diag(format_args!("write {}: {e}", path.display()));
        }
    }

    fn broadcast(&mut self, event: &ShimEvent) {
        for slot in &mut self.subscribers {
            if let Some(s) = slot {
                if berth_shim_proto::write_line(s, event).is_err() {
                    *slot = None;
                }
            }
        }
    }

    fn handle(&mut self, req: Request) -> (Response, bool) {
        let result = match req {
            Request::Hello => Ok(Response::Hello {
                version: PROTOCOL_VERSION,
                shim_pid: self.shim_pid,
                pid: self.init.pid.as_raw(),
                state: self.state,
                execs: self
                    .execs
                    .iter()
                    .filter(|p| !p.exited)
                    .map(|p| p.id.clone())
                    .collect(),
            }),
            Request::Subscribe => return (Response::Ok, true),
            Request::Start => self.start().map(|()| Response::Ok),
            Request::Kill {
                signal,
                all,
                process,
            } => self
                .kill(signal, all, process.as_deref())
                .map(|()| Response::Ok),
            Request::Pause => self.pause(true).map(|()| Response::Ok),
            Request::Resume => self.pause(false).map(|()| Response::Ok),
            Request::Exec { exec_id, process } => self
                .exec(&exec_id, process)
                .map(|pid| Response::Started { pid }),
        };
        (result.unwrap_or_else(Response::Error), false)
    }

    fn invalid_state(&self, what: &str) -> ShimError {
        ShimError::new(
            ErrorKind::InvalidState,
            format!("cannot {what}: container is {:?}", self.state).to_lowercase(),
        )
    }

    fn start(&mut self) -> Result<(), ShimError> {
        if self.state != ShimState::Created {
            return Err(self.invalid_state("start"));
        }
        self.backend.start(&self.cfg.id).map_err(shim_error)?;
        self.state = ShimState::Running;
        Ok(())
    }

    fn kill(&mut self, signal: i32, all: bool, process: Option<&str>) -> Result<(), ShimError> {
        let sig = Signal::try_from(signal)
            .map_err(|_| ShimError::new(ErrorKind::Other, format!("invalid signal {signal}")))?;
        match process {
            None | Some(INIT_PROCESS) => {
                if let Err(e) = self.backend.kill(&self.cfg.id, signal, all) {
                    // Signalling a container whose init already exited is
                    // not an error: the exit is on its way.
                    if !sys::has_exited(self.init.pid) {
                        return Err(shim_error(e));
                    }
                }
                Ok(())
            }
            Some(id) => {
                let p = self
                    .execs
                    .iter()
                    .find(|p| p.id == id && !p.exited)
                    .ok_or_else(|| {
                        ShimError::new(ErrorKind::NotFound, format!("no running exec {id:?}"))
                    })?;
                // Unreaped child of ours: the pid is still this process.
                nix::sys::signal::kill(p.pid, sig)
                    .map_err(|e| ShimError::new(ErrorKind::Other, format!("kill exec {id}: {e}")))
            }
        }
    }

    fn pause(&mut self, pause: bool) -> Result<(), ShimError> {
        let (from, to, what) = if pause {
            (ShimState::Running, ShimState::Paused, "pause")
        } else {
            (ShimState::Paused, ShimState::Running, "resume")
        };
        if self.state != from {
            return Err(self.invalid_state(what));
        }
        let r = if pause {
            self.backend.pause(&self.cfg.id)
        } else {
            self.backend.resume(&self.cfg.id)
        };
        r.map_err(shim_error)?;
        self.state = to;
        Ok(())
    }

    fn exec(&mut self, exec_id: &str, process: serde_json::Value) -> Result<i32, ShimError> {
        validate_exec_id(exec_id)?;
        if self.execs.iter().any(|p| p.id == exec_id) {
            return Err(ShimError::new(
                ErrorKind::InvalidState,
                format!("exec {exec_id:?} already exists"),
            ));
        }
        if self.state != ShimState::Running {
            return Err(self.invalid_state("exec"));
        }
        let process: berth_oci::oci_spec::runtime::Process = serde_json::from_value(process)
            .map_err(|e| ShimError::new(ErrorKind::Other, format!("invalid process: {e}")))?;
        if process.terminal() == Some(true) {
            return Err(ShimError::new(
                ErrorKind::Other,
                "exec with a terminal is not supported",
            ));
        }
        let log_path = self.cfg.exec_dir.join(format!("{exec_id}.log"));
        let exit_path = self.cfg.exec_dir.join(format!("{exec_id}.exit"));
        let _ = std::fs::remove_file(&exit_path);
        let log = CriLog::open(&log_path, self.cfg.log_max_size, self.cfg.log_max_files)
            .map_err(other("open exec log"))?;
        let started = make_stdio()
            .map_err(other("stdio pipes"))
            .and_then(|(stdio, outs)| {
                self.backend
                    .exec(&self.cfg.id, &process, stdio)
                    .map(|pid| (pid, outs))
                    .map_err(shim_error)
            });
        let (pid, outs) = match started {
            Ok(v) => v,
            Err(e) => {
                // Nothing ran: leave no empty log behind.
                drop(log);
                let _ = std::fs::remove_file(&log_path);
                return Err(e);
            }
        };
        self.execs.push(Proc {
            id: exec_id.to_owned(),
            pid: Pid::from_raw(pid),
            outs,
            log,
            exited: false,
        });
        Ok(pid)
    }

    /// The init exited: kill what is left, report the execs, drain the
    /// output, delete the container, write the exit file, tell the
    /// subscribers, remove the socket.
    fn finish(mut self) -> i32 {
        self.state = ShimState::Stopping;
        // Without a pid namespace of its own, processes may outlive the
        // init: kill them. With one, the kernel already has (a runtime
        // call here would only cost the exit report milliseconds).
        if !self.own_pid_ns {
            match self
                .backend
                .kill(&self.cfg.id, Signal::SIGKILL as i32, true)
            {
                Ok(()) => {}
                Err(e) if e.kind == berth_oci::ErrorKind::NotFound => {}
                Err(e) => diag(format_args!("kill after init exit: {e}")),
            }
        }

        // The execs die from that (or with the pid namespace): their exits
        // go out before the init's.
        let deadline = Instant::now() + EXEC_REAP_TIMEOUT;
        while self.execs.iter().any(|p| !p.exited) && Instant::now() < deadline {
            let _ = wait_readable(self.sigfd.as_fd(), deadline);
            drain_signals(&self.sigfd);
            self.reap();
        }
        for i in 0..self.execs.len() {
            if !self.execs[i].exited {
                // Could not be reaped in time: its status is unknown (-1),
                // never reported as success.
                diag(format_args!("exec {} did not exit", self.execs[i].id));
                let at = berth_shim_proto::now_rfc3339();
                self.exec_exited(
                    i,
                    WireExit::Unknown {
                        reason: "the process could not be reaped after the container stopped"
                            .into(),
                    },
                    at,
                );
            }
        }

        self.drain_outputs(Instant::now() + DRAIN_TIMEOUT);
        self.init.log.sync();
        for p in &mut self.execs {
            p.log.sync();
        }

        // An OOM kill not reported yet (it raced the exit): report it first.
        self.check_oom();
        let oom = self.oom_kills > 0;
        self.oom = None;
        match self.backend.delete(&self.cfg.id, true) {
            Ok(()) => {}
            Err(e) if e.kind == berth_oci::ErrorKind::NotFound => {}
            Err(e) => diag(format_args!("delete: {e}")),
        }

        let (exit, exited_at) = self.init_exit.take().unwrap_or((
            WireExit::Unknown {
                reason: "the shim did not see the init exit".into(),
            },
            berth_shim_proto::now_rfc3339(),
        ));
        let record = ExitRecord {
            process: INIT_PROCESS.into(),
            pid: self.init.pid.as_raw(),
            exit,
            exited_at,
            oom_killed: oom,
        };
        self.write_exit(&self.cfg.exit_file, &record);
        self.broadcast(&ShimEvent::Exit(record));
        remove_socket(&self.cfg.socket);
        0
    }

    /// Read every open pipe until EOF or `deadline` (a process that escaped
    /// the kill may hold one open forever).
    fn drain_outputs(&mut self, deadline: Instant) {
        loop {
            let mut tokens = Vec::new();
            let ready: Vec<Token> = {
                let mut fds = Vec::new();
                for (i, out) in self.init.outs.iter().enumerate() {
                    if let Some(f) = out {
                        fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                        tokens.push(Token::Out(None, i));
                    }
                }
                for (e, p) in self.execs.iter().enumerate() {
                    for (i, out) in p.outs.iter().enumerate() {
                        if let Some(f) = out {
                            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                            tokens.push(Token::Out(Some(e), i));
                        }
                    }
                }
                if fds.is_empty() {
                    return;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
                match nix::poll::poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                ) {
                    Ok(0) => return,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
                fds.iter()
                    .zip(&tokens)
                    .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, t)| *t)
                    .collect()
            };
            for t in ready {
                match t {
                    Token::Out(None, i) => pump(&mut self.init, i, &mut self.buf, 16),
                    Token::Out(Some(e), i) => pump(&mut self.execs[e], i, &mut self.buf, 16),
                    _ => {}
                }
            }
        }
    }
}
