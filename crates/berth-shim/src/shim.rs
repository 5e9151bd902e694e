//! The monitor: creates the container, then serves requests, writes logs and
//! reaps processes in one poll(2) loop until the init exits.
//!
//! Everything is synchronous and single-threaded: a backend call blocks the
//! loop for its (bounded) duration, which is what makes the libcontainer
//! helpers safe (they fork this process) and keeps the shim tiny.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_oci::{Backend, Io, OciError};
use berth_shim_proto::{
    frame, AttachOptions, ErrorKind, ExitRecord, Request, Response, ShimConfig, ShimError,
    ShimEvent, ShimState, SpecFacts, WireExit, INIT_PROCESS, MAX_LINE, PROTOCOL_VERSION,
};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use crate::crilog::CriLog;
use crate::stdio::{self, ConsoleSocket, Input};
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
const READ_BUF: usize = 64 * 1024;
/// How long a runtime may take to send a terminal after create or exec.
const TTY_TIMEOUT: Duration = Duration::from_secs(10);
/// An attached client this far behind holds back the process's output (the
/// process blocks on a full pipe, as it would on a slow disk)...
const ATTACH_HIGH: usize = 1 << 20;
/// ...but one that has taken nothing for this long is dropped: a client
/// that went away must not block the container.
const ATTACH_STALL: Duration = Duration::from_secs(10);
/// How long after a process exited its attached clients still get output
/// from whatever it left running with its stdout (`sh -c 'daemon &'`).
const ATTACH_LINGER: Duration = Duration::from_millis(500);
/// How long the shim is quiet after some work before it trims its pages
/// (see [`Shim::turn`]); also the longest poll while clients are connected.
const TRIM_QUIET_MS: u16 = 500;
/// Stop reading clients' stdin while a process has this much unread.
const STDIN_HIGH: usize = 256 * 1024;
/// At most this many attached clients at once.
const MAX_ATTACHED: usize = 64;

/// A process the shim watches: the init or an exec.
struct Proc {
    /// `init` or the exec id.
    id: String,
    pid: Pid,
    /// Read ends of stdout and stderr (nonblocking); `None` after EOF. With
    /// a terminal, stdout is the pty master and there is no stderr.
    outs: [Option<File>; 2],
    /// Where attached clients' stdin goes, when it is open.
    input: Option<Input>,
    /// The pty master, for resizes, when the process has a terminal.
    console: Option<File>,
    log: CriLog,
    /// When it exited (reaped): its attached clients are let go a moment
    /// later even if a process it left behind still holds its output open.
    exited_at: Option<Instant>,
}

impl Proc {
    fn exited(&self) -> bool {
        self.exited_at.is_some()
    }
}

/// The shim's ends of a new process's stdio.
struct ProcIo {
    outs: [Option<File>; 2],
    input: Option<Input>,
    console: Option<File>,
}

impl ProcIo {
    /// A terminal: output, input and resizes all go through the master.
    fn console(master: File, open_stdin: bool, size: Option<(u16, u16)>) -> io::Result<Self> {
        if let Some((rows, cols)) = size {
            sys::set_winsize(&master, rows, cols)?;
        }
        let input = if open_stdin {
            Some(Input::new(master.try_clone()?, true))
        } else {
            None
        };
        Ok(Self {
            outs: [Some(master.try_clone()?), None],
            input,
            console: Some(master),
        })
    }
}

/// A client attached to a process's stdio (see [`berth_shim_proto::frame`]).
struct Attached {
    stream: UnixStream,
    /// `init` or an exec id.
    process: String,
    /// It may write the process's stdin.
    stdin: bool,
    /// Bytes of a frame not complete yet.
    rbuf: Vec<u8>,
    /// Frames queued for the client, written from `wpos`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// When the client last took bytes (or had nothing queued).
    progress: Instant,
}

impl Attached {
    fn queued(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    fn queue(&mut self, kind: u8, data: &[u8]) {
        if self.queued() == 0 {
            self.wbuf.clear();
            self.wpos = 0;
            self.progress = Instant::now();
        }
        for chunk in data.chunks(frame::MAX_PAYLOAD) {
            frame::encode(kind, chunk, &mut self.wbuf);
        }
    }

    /// Write what is queued without blocking; false when the client is gone.
    fn flush(&mut self) -> bool {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.wpos += n;
                    self.progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A client that keeps up but never quite catches up
                    // must not grow the buffer: drop what was sent.
                    if self.wpos >= 64 * 1024 && self.wpos * 2 >= self.wbuf.len() {
                        self.wbuf.drain(..self.wpos);
                        self.wpos = 0;
                    }
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.wbuf.capacity() > ATTACH_HIGH {
            self.wbuf = Vec::new();
        }
        true
    }
}

/// What a connection becomes after its request is answered.
enum After {
    Close,
    Subscribe,
    Attach { process: String, stdin: bool },
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
    attached: Vec<Option<Attached>>,
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
    /// Work was done (a request served, output copied, a process reaped)
    /// since the last trim of file pages.
    copied: bool,
}

/// What the poll loop woke up for.
#[derive(Clone, Copy)]
enum Token {
    Signal,
    Listener,
    Oom,
    /// Output of the init (`None`) or of `execs[i]`, stream 0/1.
    Out(Option<usize>, usize),
    /// The init's (`None`) or `execs[i]`'s input can take more bytes.
    Input(Option<usize>),
    Client(usize),
    Subscriber(usize),
    Attached(usize),
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

/// Read what `proc`'s stream `i` has (at most `max_reads` reads) into its
/// log and to the clients attached to it.
fn pump(
    proc: &mut Proc,
    i: usize,
    buf: &mut Vec<u8>,
    max_reads: usize,
    attached: &mut [Option<Attached>],
) {
    let buf = read_buf(buf);
    for _ in 0..max_reads {
        let Some(f) = proc.outs[i].as_mut() else {
            return;
        };
        match f.read(buf) {
            Ok(0) => {
                proc.outs[i] = None;
                return;
            }
            Ok(n) => {
                let data = &buf[..n];
                proc.log.write(STREAMS[i], data);
                let kind = if i == 0 { frame::STDOUT } else { frame::STDERR };
                for slot in attached.iter_mut() {
                    if let Some(a) = slot.as_mut().filter(|a| a.process == proc.id) {
                        a.queue(kind, data);
                        if !a.flush() {
                            *slot = None;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A pty master reads EIO once every slave fd is closed: its EOF.
            Err(e) if e.raw_os_error() == Some(libc::EIO) && proc.console.is_some() => {
                proc.outs[i] = None;
                return;
            }
            Err(e) => {
                diag(format_args!("read {} {}: {e}", proc.id, STREAMS[i]));
                proc.outs[i] = None;
                return;
            }
        }
    }
}

/// The shared read buffer, allocated on first use: a shim that never
/// copies anything (or has trimmed after copying) does not hold it.
fn read_buf(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(READ_BUF, 0);
    }
    buf
}

/// Write what is buffered for `proc`'s input; drop the input when finished.
fn flush_input(proc: &mut Proc) {
    if let Some(input) = proc.input.as_mut() {
        if !input.flush() {
            proc.input = None;
        }
    }
}

/// `consoleSize` of an OCI process object, as (rows, columns).
fn console_size(process: Option<&serde_json::Value>) -> Option<(u16, u16)> {
    let size = process?.get("consoleSize")?;
    let dim = |k: &str| {
        size.get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u16::try_from(v).ok())
    };
    Some((dim("height")?, dim("width")?))
}

/// The spec's facts, from berthd's shim config or else from the bundle.
pub(crate) fn spec_facts(cfg: &ShimConfig) -> SpecFacts {
    match &cfg.facts {
        Some(f) => f.clone(),
        None => std::fs::read(cfg.bundle.join("config.json"))
            .map(|text| SpecFacts::from_config_json(&text))
            .unwrap_or_default(),
    }
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
        let facts = spec_facts(&cfg);
        let console = if facts.terminal {
            Some(ConsoleSocket::new().map_err(other("console socket"))?)
        } else {
            None
        };
        let (io, mut pio) = match &console {
            Some(sock) => (
                Io::Console(sock.path().to_path_buf()),
                ProcIo {
                    outs: [None, None],
                    input: None,
                    console: None,
                },
            ),
            None => {
                let (stdio, outs, stdin) =
                    stdio::pipes(cfg.open_stdin).map_err(other("stdio pipes"))?;
                (
                    Io::Pipes(stdio),
                    ProcIo {
                        outs,
                        input: stdin.map(|f| Input::new(f, false)),
                        console: None,
                    },
                )
            }
        };
        let pid = match backend.create(&cfg.id, &cfg.bundle, io) {
            Ok(pid) => pid,
            Err(e) => {
                undo_create(&*backend, &cfg, &sigfd);
                return Err(shim_error(e));
            }
        };
        // Anything failing from here on must undo the create too.
        if let Some(sock) = console {
            let got = sock
                .receive(Instant::now() + TTY_TIMEOUT)
                .and_then(|m| ProcIo::console(m, cfg.open_stdin, facts.console_size));
            match got {
                Ok(p) => pio = p,
                Err(e) => {
                    undo_create(&*backend, &cfg, &sigfd);
                    return Err(other("terminal")(e));
                }
            }
        }
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
        let SpecFacts {
            cgroup, own_pid_ns, ..
        } = facts;
        let oom = cgroup.as_deref().and_then(watch_oom);
        Ok(Self {
            shim_pid: i32::try_from(std::process::id()).unwrap_or(0),
            state: ShimState::Created,
            init: Proc {
                id: INIT_PROCESS.into(),
                pid: Pid::from_raw(pid),
                outs: pio.outs,
                input: pio.input,
                console: pio.console,
                log,
                exited_at: None,
            },
            execs: Vec::new(),
            listener,
            clients: Vec::new(),
            subscribers: Vec::new(),
            attached: Vec::new(),
            sigfd,
            cgroup,
            own_pid_ns,
            oom,
            oom_kills: 0,
            oom_recheck: None,
            init_exit: None,
            buf: Vec::new(),
            // The create touched pages: trim once it is quiet.
            copied: true,
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
        let mut trim = false;
        while self.init_exit.is_none() {
            trim = self.turn(trim);
        }
        self.finish()
    }

    /// One poll(2) round; with `trim`, drop the pages touched so far just
    /// before sleeping (see [`sys::trim_file_pages`]). Returns true when the
    /// shim has been quiet for [`TRIM_QUIET_MS`] after doing something, i.e.
    /// when the next sleep should trim.
    ///
    /// Why not trim right after each request: reading `/proc/self/smaps`,
    /// `madvise` and `malloc_trim` cost more CPU than serving a request, and
    /// a container's start is a burst of them (create, hello, subscribe,
    /// start, attach, the exit) a few milliseconds apart: trimming between
    /// them only refaults the same pages. A short-lived container now exits
    /// before its shim ever trims.
    fn turn(&mut self, trim: bool) -> bool {
        if trim {
            // Going idle: give back the buffers a burst of output grew.
            self.buf = Vec::new();
            self.init.log.release();
            for p in &mut self.execs {
                p.log.release();
            }
            sys::release_heap();
        }
        let mut tokens = Vec::new();
        let ready: Vec<(Token, PollFlags)> = {
            let mut fds = Vec::new();
            let held = |id: &str| {
                self.attached
                    .iter()
                    .flatten()
                    .any(|a| a.process == id && a.queued() > ATTACH_HIGH)
            };
            let procs = std::iter::once((None, &self.init))
                .chain(self.execs.iter().enumerate().map(|(e, p)| (Some(e), p)));
            for (e, p) in procs {
                // A client far behind holds the output back (backpressure).
                if !held(&p.id) {
                    for (i, out) in p.outs.iter().enumerate() {
                        if let Some(f) = out {
                            add(&mut fds, &mut tokens, f.as_fd(), Token::Out(e, i));
                        }
                    }
                }
                if let Some(input) = p.input.as_ref().filter(|i| i.pending() > 0) {
                    fds.push(PollFd::new(input.fd().as_fd(), PollFlags::POLLOUT));
                    tokens.push(Token::Input(e));
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
            for (i, a) in self.attached.iter().enumerate() {
                let Some(a) = a else { continue };
                // Stop taking stdin while the process does not read it.
                let full = self
                    .proc_ref(&a.process)
                    .and_then(|p| p.input.as_ref())
                    .is_some_and(|inp| inp.pending() > STDIN_HIGH);
                let mut flags = PollFlags::empty();
                if !full {
                    flags |= PollFlags::POLLIN;
                }
                if a.queued() > 0 {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(a.stream.as_fd(), flags));
                tokens.push(Token::Attached(i));
            }
            if let Some(o) = &self.oom {
                add(&mut fds, &mut tokens, o.fd.as_fd(), Token::Oom);
            }
            add(&mut fds, &mut tokens, self.sigfd.as_fd(), Token::Signal);
            // Wake up to expire idle clients and stalled attached ones, or
            // to look for an OOM kill.
            let lingering = self.attached.iter().flatten().any(|a| {
                self.proc_ref(&a.process)
                    .is_some_and(|p| p.exited() && p.outs.iter().any(Option::is_some))
            });
            let timeout = if self.oom_recheck.is_some() {
                PollTimeout::from(50u16)
            } else if lingering {
                PollTimeout::from(100u16)
            } else if !self.clients.is_empty()
                || self.attached.iter().flatten().any(|a| a.queued() > 0)
                // Work since the last trim: trim once it has been quiet
                // for TRIM_QUIET (not after every request or chunk).
                || (self.copied && !trim)
            {
                PollTimeout::from(TRIM_QUIET_MS)
            } else {
                PollTimeout::NONE
            };
            if trim {
                sys::trim_file_pages();
                self.copied = false;
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
        // Quiet for a while after some work: time to trim.
        let quiet = ready.is_empty() && self.copied;
        self.copied |= !ready.is_empty();
        for (token, revents) in ready {
            match token {
                Token::Out(None, i) => {
                    pump(&mut self.init, i, &mut self.buf, 4, &mut self.attached);
                }
                Token::Out(Some(e), i) => {
                    pump(&mut self.execs[e], i, &mut self.buf, 4, &mut self.attached);
                }
                Token::Input(None) => flush_input(&mut self.init),
                Token::Input(Some(e)) => flush_input(&mut self.execs[e]),
                Token::Listener => self.accept(),
                Token::Client(i) => self.on_client(i),
                Token::Subscriber(i) => self.on_subscriber(i, revents),
                Token::Attached(i) => self.on_attached(i, revents),
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
        self.settle_attached(now);
        self.clients.retain(Option::is_some);
        self.subscribers.retain(Option::is_some);
        self.attached.retain(Option::is_some);
        self.execs
            .retain(|p| !(p.exited() && p.outs.iter().all(Option::is_none)));
        quiet
    }

    /// The init or the exec `id`, if the shim still has it.
    fn proc_ref(&self, id: &str) -> Option<&Proc> {
        if id == INIT_PROCESS {
            return Some(&self.init);
        }
        self.execs.iter().find(|p| p.id == id)
    }

    fn proc_mut(&mut self, id: &str) -> Option<&mut Proc> {
        if id == INIT_PROCESS {
            return Some(&mut self.init);
        }
        self.execs.iter_mut().find(|p| p.id == id)
    }

    /// Close attached clients whose process's output has ended once
    /// everything is sent, and drop the ones that stalled.
    fn settle_attached(&mut self, now: Instant) {
        for i in 0..self.attached.len() {
            let Some(a) = self.attached[i].as_ref() else {
                continue;
            };
            let ended = self.proc_ref(&a.process).is_none_or(|p| {
                p.outs.iter().all(Option::is_none)
                    || p.exited_at.is_some_and(|t| now - t > ATTACH_LINGER)
            });
            if ended && a.queued() == 0 {
                self.attached[i] = None;
            } else if a.queued() > ATTACH_HIGH && now - a.progress > ATTACH_STALL {
                diag(format_args!(
                    "dropping a client attached to {}: it took nothing for {}s",
                    a.process,
                    ATTACH_STALL.as_secs()
                ));
                self.attached[i] = None;
            }
        }
    }

    /// An attached client is readable (frames, or it went away) or
    /// writable (queued output can go).
    fn on_attached(&mut self, i: usize, revents: PollFlags) {
        if revents.contains(PollFlags::POLLOUT) {
            if let Some(a) = self.attached[i].as_mut() {
                if !a.flush() {
                    self.attached[i] = None;
                    return;
                }
            }
        }
        if !revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        let Some(a) = self.attached[i].as_mut() else {
            return;
        };
        // The shared buffer, not a stack array: a big frame in the poll
        // loop would be probed into residence for every idle shim.
        let chunk = read_buf(&mut self.buf);
        let mut gone = false;
        loop {
            match a.stream.read(chunk) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => {
                    a.rbuf.extend_from_slice(&chunk[..n]);
                    if a.rbuf.len() > frame::HEADER + frame::MAX_PAYLOAD {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        let rbuf = std::mem::take(&mut a.rbuf);
        let (process, may_write) = (a.process.clone(), a.stdin);
        let mut used = 0;
        let mut broken = false;
        loop {
            match frame::decode(&rbuf[used..]) {
                Ok(Some((kind, range))) => {
                    let payload = &rbuf[used + range.start..used + range.end];
                    self.on_frame(&process, may_write, kind, payload);
                    used += range.end;
                }
                Ok(None) => break,
                Err(e) => {
                    diag(format_args!("client attached to {process}: {e}"));
                    broken = true;
                    break;
                }
            }
        }
        if gone || broken {
            self.attached[i] = None;
        } else if let Some(a) = self.attached[i].as_mut() {
            a.rbuf = rbuf[used..].to_vec();
        }
    }

    /// One frame from an attached client.
    fn on_frame(&mut self, process: &str, may_write: bool, kind: u8, payload: &[u8]) {
        let Some(p) = self.proc_mut(process) else {
            return;
        };
        match kind {
            frame::STDIN if may_write => {
                if let Some(input) = p.input.as_mut() {
                    input.push(payload);
                }
                flush_input(p);
            }
            frame::CLOSE_STDIN if may_write => {
                if let Some(input) = p.input.as_mut() {
                    input.close();
                }
                flush_input(p);
            }
            frame::RESIZE => {
                if let (Some(console), Some((rows, cols))) =
                    (p.console.as_ref(), frame::parse_resize(payload))
                {
                    if let Err(e) = sys::set_winsize(console, rows, cols) {
                        diag(format_args!("resize {process}: {e}"));
                    }
                }
            }
            _ => {} // stdin from a client not allowed to write it, or unknown
        }
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
        let (response, after) = match request {
            Ok(Some(req)) => self.handle(req),
            Ok(None) => return,
            Err(e) => (
                Response::Error(ShimError::new(
                    ErrorKind::Other,
                    format!("bad request: {e}"),
                )),
                After::Close,
            ),
        };
        let sent = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            .and_then(|()| berth_shim_proto::write_line(&mut stream, &response));
        if sent.is_err() {
            return;
        }
        match after {
            After::Close => {}
            After::Subscribe => self.subscribers.push(Some(stream)),
            After::Attach { process, stdin } => {
                if stream.set_nonblocking(true).is_ok() {
                    self.attached.push(Some(Attached {
                        stream,
                        process,
                        stdin,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        wpos: 0,
                        progress: Instant::now(),
                    }));
                }
            }
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
                self.init.exited_at = Some(Instant::now());
                self.init_exit = Some((exit, at));
            } else if let Some(i) = self.execs.iter().position(|p| p.pid == pid && !p.exited()) {
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
        p.exited_at = Some(Instant::now());
        for s in 0..2 {
            pump(p, s, &mut self.buf, 64, &mut self.attached);
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
        self.report_exit(&path, record);
    }

    /// Write a process's exit record, tell the subscribers, and only then
    /// make the file durable. The file is visible (whole, by a rename)
    /// before the report, so a berthd that restarts in between finds it;
    /// the report's own durability is berthd's commit, which clients wait
    /// for. What the order changes is a power loss in the millisecond
    /// between the report and the fsyncs, before berthd's commit: the exit
    /// is then lost with the host, as it would be a moment earlier, and
    /// berthd reports it as unknown, never as success. The two fsyncs (file
    /// and directory: two journal commits on a journaled file system, ~0.2
    /// ms each on the test VM's) are off every exit's path to the CLI.
    fn report_exit(&mut self, path: &Path, record: ExitRecord) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let written = serde_json::to_vec(&record)
            .map_err(io::Error::other)
            .and_then(|json| berth_shim_proto::write_visible(path, &json));
        self.broadcast(&ShimEvent::Exit(record));
        if let Err(e) = written.and_then(|()| berth_shim_proto::sync_written(path)) {
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

    fn handle(&mut self, req: Request) -> (Response, After) {
        let result = match req {
            Request::Hello => Ok(Response::Hello {
                version: PROTOCOL_VERSION,
                shim_pid: self.shim_pid,
                pid: self.init.pid.as_raw(),
                state: self.state,
                execs: self
                    .execs
                    .iter()
                    .filter(|p| !p.exited())
                    .map(|p| p.id.clone())
                    .collect(),
            }),
            Request::Subscribe => return (Response::Ok, After::Subscribe),
            Request::Attach { process, options } => {
                return match self.attach_check(&process) {
                    Ok(()) => (
                        Response::Ok,
                        After::Attach {
                            process,
                            stdin: options.stdin,
                        },
                    ),
                    Err(e) => (Response::Error(e), After::Close),
                };
            }
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
            Request::Update { resources } => self.update(resources).map(|()| Response::Ok),
            Request::Exec {
                exec_id,
                process,
                attach,
            } => {
                return match self.exec(&exec_id, process, attach) {
                    Ok(pid) => {
                        let after = match attach {
                            Some(AttachOptions { stdin }) => After::Attach {
                                process: exec_id,
                                stdin,
                            },
                            None => After::Close,
                        };
                        (Response::Started { pid }, after)
                    }
                    Err(e) => (Response::Error(e), After::Close),
                };
            }
        };
        (result.unwrap_or_else(Response::Error), After::Close)
    }

    /// Whether a client may attach to `process` now.
    fn attach_check(&self, process: &str) -> Result<(), ShimError> {
        if self.attached.iter().flatten().count() >= MAX_ATTACHED {
            return Err(ShimError::new(
                ErrorKind::Other,
                format!("too many attached clients (at most {MAX_ATTACHED})"),
            ));
        }
        match self.proc_ref(process) {
            Some(p) if !p.exited() && p.outs.iter().any(Option::is_some) => Ok(()),
            Some(_) => Err(ShimError::new(
                ErrorKind::InvalidState,
                format!("process {process} has ended its output"),
            )),
            None => Err(ShimError::new(
                ErrorKind::NotFound,
                format!("no process {process:?}"),
            )),
        }
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
                if self.kill_init_directly(sig, all) {
                    // The init is our unreaped child: its pid cannot have
                    // been reused, and it is alive or a zombie.
                    return match nix::sys::signal::kill(self.init.pid, sig) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                        Err(e) => Err(ShimError::new(ErrorKind::Other, format!("kill: {e}"))),
                    };
                }
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
                    .find(|p| p.id == id && !p.exited())
                    .ok_or_else(|| {
                        ShimError::new(ErrorKind::NotFound, format!("no running exec {id:?}"))
                    })?;
                // Unreaped child of ours: the pid is still this process.
                nix::sys::signal::kill(p.pid, sig)
                    .map_err(|e| ShimError::new(ErrorKind::Other, format!("kill exec {id}: {e}")))
            }
        }
    }

    /// Whether a signal to the container can be sent by the shim itself,
    /// without the runtime: the runtime would only read its state and
    /// `kill(2)` the init (one forked helper or runtime process per signal,
    /// on the path of every stop). True for a running (not paused: a frozen
    /// cgroup needs the runtime's thaw) container whose init we have not
    /// reaped, when the signal is for the init alone, or is a SIGKILL of
    /// "all" in a pid namespace of the container's own (the kernel kills the
    /// rest when its init dies). libcontainer's state needs no update: it
    /// reads the init's liveness from `/proc` on every load.
    fn kill_init_directly(&self, sig: Signal, all: bool) -> bool {
        self.state == ShimState::Running
            && self.init_exit.is_none()
            && (!all || (sig == Signal::SIGKILL && self.own_pid_ns))
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

    fn update(&mut self, resources: serde_json::Value) -> Result<(), ShimError> {
        if self.state == ShimState::Stopping {
            return Err(self.invalid_state("update"));
        }
        let resources: berth_oci::oci_spec::runtime::LinuxResources =
            serde_json::from_value(resources).map_err(|e| {
                ShimError::new(ErrorKind::Other, format!("update: bad resources: {e}"))
            })?;
        self.backend
            .update(&self.cfg.id, &resources)
            .map_err(shim_error)
    }

    fn exec(
        &mut self,
        exec_id: &str,
        process: serde_json::Value,
        attach: Option<AttachOptions>,
    ) -> Result<i32, ShimError> {
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
        let size = console_size(Some(&process));
        let process: berth_oci::oci_spec::runtime::Process = serde_json::from_value(process)
            .map_err(|e| ShimError::new(ErrorKind::Other, format!("invalid process: {e}")))?;
        let terminal = process.terminal() == Some(true);
        // Stdin is open only for a client that will write it.
        let open_stdin = attach.is_some_and(|a| a.stdin);
        let log_path = self.cfg.exec_dir.join(format!("{exec_id}.log"));
        let exit_path = self.cfg.exec_dir.join(format!("{exec_id}.exit"));
        let _ = std::fs::remove_file(&exit_path);
        // Made at the first exec, not at create: most containers never
        // exec, and on a disk file system each directory is an inode to
        // find and free again (docs/performance.md).
        std::fs::create_dir_all(&self.cfg.exec_dir).map_err(other("create exec dir"))?;
        let log = CriLog::open(&log_path, self.cfg.log_max_size, self.cfg.log_max_files)
            .map_err(other("open exec log"))?;
        let started = self.spawn_exec(&process, terminal, open_stdin, size);
        let (pid, pio) = match started {
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
            outs: pio.outs,
            input: pio.input,
            console: pio.console,
            log,
            exited_at: None,
        });
        Ok(pid)
    }

    /// Run `process` with its stdio on pipes or a terminal.
    fn spawn_exec(
        &mut self,
        process: &berth_oci::oci_spec::runtime::Process,
        terminal: bool,
        open_stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<(i32, ProcIo), ShimError> {
        if !terminal {
            let (stdio, outs, stdin) = stdio::pipes(open_stdin).map_err(other("stdio pipes"))?;
            let pid = self
                .backend
                .exec(&self.cfg.id, process, Io::Pipes(stdio))
                .map_err(shim_error)?;
            let input = stdin.map(|f| Input::new(f, false));
            return Ok((
                pid,
                ProcIo {
                    outs,
                    input,
                    console: None,
                },
            ));
        }
        let sock = ConsoleSocket::new().map_err(other("console socket"))?;
        let pid = self
            .backend
            .exec(
                &self.cfg.id,
                process,
                Io::Console(sock.path().to_path_buf()),
            )
            .map_err(shim_error)?;
        let got = sock
            .receive(Instant::now() + TTY_TIMEOUT)
            .and_then(|m| ProcIo::console(m, open_stdin, size));
        match got {
            Ok(pio) => Ok((pid, pio)),
            Err(e) => {
                // It runs without a terminal anyone holds: kill it (it is
                // our child, reaped by the loop; its pid cannot be reused
                // before that).
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                Err(other("terminal")(e))
            }
        }
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
        while self.execs.iter().any(|p| !p.exited()) && Instant::now() < deadline {
            let _ = wait_readable(self.sigfd.as_fd(), deadline);
            drain_signals(&self.sigfd);
            self.reap();
        }
        for i in 0..self.execs.len() {
            if !self.execs[i].exited() {
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

        let drained = Instant::now() + DRAIN_TIMEOUT;
        self.drain_outputs(drained);
        self.flush_attached(drained);
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
        let path = self.cfg.exit_file.clone();
        self.report_exit(&path, record);
        remove_socket(&self.cfg.socket);
        0
    }

    /// Send attached clients what is queued for them, until `deadline`; then
    /// close them all (their processes' output has ended).
    fn flush_attached(&mut self, deadline: Instant) {
        loop {
            for slot in &mut self.attached {
                if slot.as_mut().is_some_and(|a| !a.flush() || a.queued() == 0) {
                    *slot = None;
                }
            }
            self.attached.retain(Option::is_some);
            if self.attached.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                diag(format_args!(
                    "attached clients did not take all the output in time"
                ));
                self.attached.clear();
                return;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds: Vec<PollFd<'_>> = self
                .attached
                .iter()
                .flatten()
                .map(|a| PollFd::new(a.stream.as_fd(), PollFlags::POLLOUT))
                .collect();
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        }
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
                    Token::Out(None, i) => {
                        pump(&mut self.init, i, &mut self.buf, 16, &mut self.attached);
                    }
                    Token::Out(Some(e), i) => {
                        pump(&mut self.execs[e], i, &mut self.buf, 16, &mut self.attached);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_keeps_up_does_not_grow_the_queue() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut client = Attached {
            stream: ours,
            process: INIT_PROCESS.into(),
            stdin: false,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            progress: Instant::now(),
        };
        let chunk = vec![7u8; 64 * 1024];
        // 1 MiB behind to begin with...
        for _ in 0..16 {
            client.queue(frame::STDOUT, &chunk);
        }
        assert!(client.flush());
        // ...then it takes as much as comes: always behind, never empty.
        let mut sink = vec![0u8; chunk.len() + frame::HEADER];
        for _ in 0..500 {
            client.queue(frame::STDOUT, &chunk);
            assert!(client.flush());
            let mut want = sink.len();
            while want > 0 {
                match theirs.read(&mut sink[..want]) {
                    Ok(n) => want -= n,
                    Err(_) => break,
                }
            }
            assert!(client.queued() > 0);
            assert!(
                client.wbuf.len() <= 4 * ATTACH_HIGH,
                "{}",
                client.wbuf.len()
            );
        }
    }
}
