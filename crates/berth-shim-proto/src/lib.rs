//! The private protocol between `berthd` and `berth-shim`, defined in one place.
//!
//! Version [`PROTOCOL_VERSION`]. Everything here is plain data plus a few
//! blocking helpers; the daemon does its own async framing with the same types.
//!
//! # Lifecycle of a shim
//!
//! 1. berthd writes a [`ShimConfig`] as JSON to `<container dir>/shim.json`, then
//!    runs `berth-shim start <container dir>/shim.json` with its stdout on a pipe
//!    (the *ready pipe*).
//! 2. The shim detaches (new session, double fork: the process berthd started
//!    exits at once, so the shim is not berthd's child and survives berthd),
//!    sets itself as child subreaper, creates the container through the
//!    runtime with the container's stdio on pipes it holds, binds
//!    [`ShimConfig::socket`], and writes exactly one JSON line, a [`Ready`], to the
//!    ready pipe, then closes it. On failure the `Ready` carries the error, the
//!    shim has already torn down whatever it created, and it exits non-zero.
//! 3. berthd talks to it with one [`Request`] per connection: connect, write one
//!    JSON line, read one JSON line ([`Response`]). The exception is
//!    [`Request::Subscribe`]: after the `Response::Ok` the shim keeps the
//!    connection and writes one [`ShimEvent`] JSON line per event, in order.
//! 4. When the init exits, the shim kills whatever is left in the container,
//!    drains stdout/stderr into the log (bounded in time), deletes the
//!    container from the runtime (cgroups, runtime state), writes
//!    [`ShimConfig::exit_file`] atomically (an [`ExitRecord`]), sends
//!    [`ShimEvent::Exit`] for `init` to every subscriber, and exits. The exits of
//!    exec'd processes are always sent before the init's.
//!
//! Because the exit file is written before the shim exits, berthd learns the
//! exit status even if it was down when the container exited.

use std::io::{self, BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod netns;

/// Bumped on any incompatible change to the types below.
pub const PROTOCOL_VERSION: u32 = 2;

/// Process id of the init process in requests and events.
pub const INIT_PROCESS: &str = "init";

/// The longest line either side accepts (1 MiB): bounds memory on bad input.
pub const MAX_LINE: usize = 1 << 20;

/// Which OCI runtime the shim drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuntimeKind {
    /// youki's libcontainer, linked into the shim (run in forked helpers).
    Embedded,
    /// An OCI runtime command line (runc, crun, or a path to one).
    Cli { path: PathBuf },
}

/// Everything a shim needs to know, written by berthd to `shim.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container id (64 lowercase hex); also the runtime's container id.
    pub id: String,
    /// The OCI bundle: holds `config.json`; `root.path` in it is absolute.
    pub bundle: PathBuf,
    pub runtime: RuntimeKind,
    /// The runtime's state root (`runc --root`, libcontainer's root path).
    pub runtime_root: PathBuf,
    /// Where the shim listens.
    pub socket: PathBuf,
    /// The container's log, in the CRI format.
    pub log_path: PathBuf,
    /// Rotate the log when it grows past this many bytes (0: never).
    #[serde(default)]
    pub log_max_size: u64,
    /// How many rotated files to keep beside the live one (`log.1`, `log.2`, ...).
    #[serde(default)]
    pub log_max_files: u32,
    /// Where the init's [`ExitRecord`] is written.
    pub exit_file: PathBuf,
    /// Directory for per-exec files: `<exec id>.log` and `<exec id>.exit`.
    pub exec_dir: PathBuf,
    /// The shim's own diagnostics go here (its stderr).
    pub shim_log: PathBuf,
    /// Keep the init's stdin open for attached clients (`-i`); otherwise it
    /// reads EOF at once. (Whether it has a terminal is `process.terminal`
    /// in the bundle.)
    #[serde(default)]
    pub open_stdin: bool,
    /// What the shim needs from the bundle's spec, so that it need not read
    /// it: berthd has the spec in hand, and in the freshly started shim
    /// parsing the whole of it (most of it the seccomp profile) costs more
    /// than the rest of the shim's setup. Absent: the shim reads
    /// `config.json` ([`SpecFacts::from_config_json`]).
    #[serde(default)]
    pub facts: Option<SpecFacts>,
}

/// The few facts of a container's OCI spec the shim acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecFacts {
    /// `linux.cgroupsPath`, when an absolute cgroupfs path.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// The container has a pid namespace of its own (not joined by path).
    #[serde(default)]
    pub own_pid_ns: bool,
    /// The runtime makes the container's network namespace (one without a
    /// path): the embedded runtime's shim brings its loopback up.
    #[serde(default)]
    pub own_net_ns: bool,
    /// `process.terminal`.
    #[serde(default)]
    pub terminal: bool,
    /// `process.consoleSize` (rows, columns).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

impl SpecFacts {
    /// The facts of an OCI `config.json`; what is missing or malformed reads
    /// as absent (the runtime reports a bad spec itself). Only the fields
    /// needed are decoded: the rest is skipped without being kept.
    pub fn from_config_json(text: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Config {
            process: Option<Process>,
            linux: Option<Linux>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Process {
            terminal: Option<bool>,
            console_size: Option<ConsoleSize>,
        }
        #[derive(Deserialize)]
        struct ConsoleSize {
            height: u64,
            width: u64,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Linux {
            cgroups_path: Option<PathBuf>,
            namespaces: Option<Vec<Namespace>>,
        }
        #[derive(Deserialize)]
        struct Namespace {
            #[serde(rename = "type")]
            kind: String,
            path: Option<PathBuf>,
        }
        let Ok(c) = serde_json::from_slice::<Config>(text) else {
            return Self::default();
        };
        let (terminal, console_size) = match c.process {
            Some(p) => (
                p.terminal.unwrap_or(false),
                p.console_size.and_then(|s| {
                    Some((u16::try_from(s.height).ok()?, u16::try_from(s.width).ok()?))
                }),
            ),
            None => (false, None),
        };
        let (cgroup, own_pid_ns, own_net_ns) = match c.linux {
            Some(l) => {
                let ns = l.namespaces.unwrap_or_default();
                let own = |kind: &str| {
                    ns.iter().any(|n| {
                        n.kind == kind && n.path.as_ref().is_none_or(|p| p.as_os_str().is_empty())
                    })
                };
                (
                    l.cgroups_path.filter(|p| p.is_absolute()),
                    own("pid"),
                    own("network"),
                )
            }
            None => (None, false, false),
        };
        Self {
            cgroup,
            own_pid_ns,
            own_net_ns,
            terminal,
            console_size,
        }
    }
}

/// The one line the shim writes on its ready pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// Pid of the shim (the long-lived monitor).
    #[serde(default)]
    pub shim_pid: i32,
    /// Pid of the container's init, when creation succeeded.
    #[serde(default)]
    pub pid: i32,
    /// Set when creation failed; the shim tore everything down.
    #[serde(default)]
    pub error: Option<ShimError>,
}

/// What kind of failure an error is; lets berthd map it to exit code 126/127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command to run does not exist in the container (exit code 127).
    CommandNotFound,
    /// The command exists but cannot be invoked (exit code 126).
    CommandNotExecutable,
    /// The request does not fit the container's state (e.g. start twice).
    InvalidState,
    /// The named process does not exist.
    NotFound,
    /// Anything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ShimError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ShimError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A request from berthd; one per connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    /// Version and current state; answered with [`Response::Hello`].
    Hello,
    /// Start the created init.
    Start,
    /// Signal the init (`all`: every process in the container), or one exec.
    Kill {
        signal: i32,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        process: Option<String>,
    },
    /// Freeze / thaw the container.
    Pause,
    Resume,
    /// Run a process in the container. `process` is an OCI `process` object
    /// (args, env, cwd, user, terminal, ...). Output goes to
    /// `<exec_dir>/<exec_id>.log`. With `attach`, the connection becomes the
    /// process's attach stream after the `Response::Started`, registered
    /// before the process runs, so not a byte of its output is missed.
    Exec {
        exec_id: String,
        process: serde_json::Value,
        #[serde(default)]
        attach: Option<AttachOptions>,
    },
    /// Keep this connection and stream [`ShimEvent`]s on it.
    Subscribe,
    /// Apply new limits to the container's cgroup (`berth update`):
    /// `resources` is an OCI `linux.resources` object holding only what
    /// changes (never device rules).
    Update {
        resources: serde_json::Value,
    },
    /// After the `Response::Ok` this connection carries [`frame`]s: the
    /// process's output to the client, stdin, stdin EOF and resizes from it.
    /// The shim closes it once the process's output has ended and been sent.
    Attach {
        /// `init` or an exec id.
        process: String,
        #[serde(flatten)]
        options: AttachOptions,
    },
}

/// How a client attaches to a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachOptions {
    /// The client may write to the process's stdin (which must be open).
    #[serde(default)]
    pub stdin: bool,
}

/// The state the shim reports in [`Response::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimState {
    Created,
    Running,
    Paused,
    /// The init exited; the shim is tearing down and will exit shortly.
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Response {
    Ok,
    Hello {
        version: u32,
        shim_pid: i32,
        pid: i32,
        state: ShimState,
        /// Exec ids still running.
        #[serde(default)]
        execs: Vec<String>,
    },
    /// A process was started (exec); its pid.
    Started {
        pid: i32,
    },
    Error(ShimError),
}

/// How a process ended, as the shim saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum WireExit {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The shim could not learn the status (e.g. a process that could not be
    /// reaped in time). Never to be read as success.
    Unknown {
        reason: String,
    },
}

/// The content of an exit file (init or exec), and of [`ShimEvent::Exit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// `init` or the exec id.
    pub process: String,
    pub pid: i32,
    pub exit: WireExit,
    /// RFC 3339 with nanoseconds, UTC.
    pub exited_at: String,
    /// The kernel's OOM killer acted in the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
}

/// Events a shim streams to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum ShimEvent {
    /// A process exited. For `init` this is the last event: the container has
    /// been torn down and the shim exits right after.
    Exit(ExitRecord),
    /// The OOM killer acted in the container.
    Oom,
}

/// The framing of an attach connection: a 1-byte kind, a 4-byte big-endian
/// payload length, the payload. Kinds from the shim: [`frame::STDOUT`],
/// [`frame::STDERR`]; to it: [`frame::STDIN`], [`frame::CLOSE_STDIN`] (no
/// payload), [`frame::RESIZE`] (rows, cols: two big-endian u16).
pub mod frame {
    use std::io;

    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const CLOSE_STDIN: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const HEADER: usize = 5;
    /// The largest payload either side accepts.
    pub const MAX_PAYLOAD: usize = 1 << 20;

    /// Append one frame to `out`.
    pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(kind);
        // Payloads are bounded by MAX_PAYLOAD at every call site.
        out.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(payload);
    }

    /// The payload of a RESIZE frame.
    pub fn resize(rows: u16, cols: u16) -> [u8; 4] {
        let [r0, r1] = rows.to_be_bytes();
        let [c0, c1] = cols.to_be_bytes();
        [r0, r1, c0, c1]
    }

    /// Rows and columns from a RESIZE payload.
    pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
        match payload {
            [r0, r1, c0, c1] => Some((
                u16::from_be_bytes([*r0, *r1]),
                u16::from_be_bytes([*c0, *c1]),
            )),
            _ => None,
        }
    }

    /// The first complete frame in `buf`: its kind, payload range and total
    /// length. `Ok(None)` when more bytes are needed; an error for a length
    /// over [`MAX_PAYLOAD`] (the peer is broken: drop the connection).
    pub fn decode(buf: &[u8]) -> io::Result<Option<(u8, std::ops::Range<usize>)>> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach frame of {len} bytes"),
            ));
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        Ok(Some((buf[0], HEADER..HEADER + len)))
    }
}

/// Serialize `msg` as one JSON line.
pub fn write_line<T: Serialize, W: Write>(w: &mut W, msg: &T) -> io::Result<()> {
    let mut buf = serde_json::to_vec(msg).map_err(io::Error::other)?;
    buf.push(b'\n');
    w.write_all(&buf)?;
    w.flush()
}

/// Read one JSON line. `Ok(None)` on a clean EOF before any byte.
pub fn read_line<T: for<'de> Deserialize<'de>, R: BufRead>(r: &mut R) -> io::Result<Option<T>> {
    let mut buf = Vec::new();
    let n = io::Read::take(&mut *r, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too long",
        ));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write `contents` to `path` atomically: a temporary file beside it, fsync,
/// rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_renamed(path, contents, true)?;
    sync_dir_of(path)
}

/// Write `contents` to `path` as [`write_atomic`] does, but leave both
/// fsyncs to [`sync_written`]: readers on this host see the whole file at
/// once (a rename), while its durability across a power loss waits. For a
/// file that must be seen before it must be durable (a shim's exit record,
/// which berthd commits durably itself once it reads the report).
pub fn write_visible(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_renamed(path, contents, false)
}

/// Make a file written by [`write_visible`] durable: its data, then its
/// name. A file already removed (its owner was done with it) is not an
/// error.
pub fn sync_written(path: &Path) -> io::Result<()> {
    match std::fs::File::open(path).and_then(|f| f.sync_all()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match sync_dir_of(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn write_renamed(path: &Path, contents: &[u8], sync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)
}

fn sync_dir_of(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Unix socket paths are limited to 107 bytes. Longer paths are reached
/// through `/proc/self/fd/<dirfd>/<name>` with the directory held open; the
/// returned guard must live until the bind or connect is done.
pub struct ShortPath {
    path: PathBuf,
    _dir: Option<std::fs::File>,
}

impl ShortPath {
    pub fn new(path: &Path) -> io::Result<Self> {
        const LIMIT: usize = 100;
        if path.as_os_str().len() <= LIMIT {
            return Ok(Self {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let dir = path.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "socket path has no parent")
        })?;
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "socket path has no name")
        })?;
        let dir = std::fs::File::open(dir)?;
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(Self {
            path: short,
            _dir: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Bind a listening unix socket at `path`, whatever its length.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let short = ShortPath::new(path)?;
    UnixListener::bind(short.path())
}

/// Connect to the unix socket at `path`, whatever its length.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let short = ShortPath::new(path)?;
    UnixStream::connect(short.path())
}

/// Current time as RFC 3339 with nanoseconds, UTC (the CRI log's format).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let mut buf = Vec::new();
        write_line(
            &mut buf,
            &Request::Kill {
                signal: 9,
                all: true,
                process: None,
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            "{\"op\":\"kill\",\"signal\":9,\"all\":true,\"process\":null}\n"
        );
        let back: Request = read_line(&mut &buf[..]).unwrap().unwrap();
        assert!(matches!(
            back,
            Request::Kill {
                signal: 9,
                all: true,
                ..
            }
        ));
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        frame::encode(frame::STDOUT, b"hello", &mut buf);
        frame::encode(frame::RESIZE, &frame::resize(24, 80), &mut buf);
        frame::encode(frame::CLOSE_STDIN, b"", &mut buf);
        assert!(frame::decode(&buf[..4]).unwrap().is_none());
        assert!(frame::decode(&buf[..7]).unwrap().is_none());
        let (k, r) = frame::decode(&buf).unwrap().unwrap();
        assert_eq!((k, &buf[r.clone()]), (frame::STDOUT, &b"hello"[..]));
        let rest = &buf[r.end..];
        let (k, r) = frame::decode(rest).unwrap().unwrap();
        assert_eq!(k, frame::RESIZE);
        assert_eq!(frame::parse_resize(&rest[r.clone()]), Some((24, 80)));
        let (k, r) = frame::decode(&rest[r.end..]).unwrap().unwrap();
        assert_eq!((k, r.len()), (frame::CLOSE_STDIN, 0));
        let huge = [frame::STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(frame::decode(&huge).is_err());
    }

    #[test]
    fn attach_request_shape() {
        let mut buf = Vec::new();
        let req = Request::Attach {
            process: INIT_PROCESS.into(),
            options: AttachOptions { stdin: true },
        };
        write_line(&mut buf, &req).unwrap();
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            "{\"op\":\"attach\",\"process\":\"init\",\"stdin\":true}\n"
        );
        let back: Request = read_line(&mut &buf[..]).unwrap().unwrap();
        assert!(matches!(
            back,
            Request::Attach {
                options: AttachOptions { stdin: true },
                ..
            }
        ));
    }

    #[test]
    fn exit_record_round_trip() {
        let rec = ExitRecord {
            process: INIT_PROCESS.into(),
            pid: 42,
            exit: WireExit::Signaled { signal: 9 },
            exited_at: now_rfc3339(),
            oom_killed: false,
        };
        let json = serde_json::to_string(&ShimEvent::Exit(rec.clone())).unwrap();
        let back: ShimEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ShimEvent::Exit(rec));
    }

    #[test]
    fn eof_is_none_and_long_lines_fail() {
        let none: Option<Request> = read_line(&mut &b""[..]).unwrap();
        assert!(none.is_none());
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(read_line::<Request, _>(&mut &long[..]).is_err());
    }

    #[test]
    fn long_socket_paths_work() {
        let base = std::env::temp_dir().join(format!("berth-proto-{}", std::process::id()));
        let deep = base.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("shim.sock");
        let listener = bind(&sock).unwrap();
        let _client = connect(&sock).unwrap();
        let _ = listener.accept().unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("berth-proto-aw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("exit");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_visible_write_is_whole_at_once_and_synced_later() {
        let tmp = berth_testkit::TempDir::new("berth-proto-vw");
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("exit");
        write_visible(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        sync_written(&p).unwrap();
        // Its reader may have removed it, or its directory, already.
        std::fs::remove_file(&p).unwrap();
        sync_written(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        sync_written(&p).unwrap();
    }
}
