//! The command-line backend: `runc`, `crun`, or any OCI runtime binary.
//!
//! Each operation is one run of the runtime with `--root` and a JSON log
//! (`--log <file> --log-format json`), bounded by a timeout after which the
//! runtime is SIGKILLed. On failure the last error `msg` of that log (or the
//! last line of stderr) becomes the error message.
//!
//! For `create` and `exec` the runtime's stdio *is* the new process's stdio:
//! runtimes hand their own 0/1/2 to the container process when no terminal
//! is asked for.

use std::cell::Cell;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag};
use nix::unistd::Pid;

use crate::{sys, validate_id, Backend, Io, OciError, Stdio, CREATE_TIMEOUT, OP_TIMEOUT};

/// An OCI runtime command line.
#[derive(Debug)]
pub struct Cli {
    path: PathBuf,
    name: String,
    root: PathBuf,
    scratch: PathBuf,
    seq: Cell<u32>,
}

/// A scratch file, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Cli {
    /// `path` is the runtime (looked up in `PATH` when it has no slash),
    /// `root` its state root (`--root`), `scratch` a private directory for
    /// the short-lived files of each call (log, pid file, process spec).
    pub fn new(
        path: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
        scratch: impl Into<PathBuf>,
    ) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "runtime".into());
        Self {
            path,
            name,
            root: root.into(),
            scratch: scratch.into(),
            seq: Cell::new(0),
        }
    }

    fn scratch_file(&self, op: &str, ext: &str) -> Result<Scratch, OciError> {
        std::fs::create_dir_all(&self.scratch).map_err(|e| {
            OciError::other(format!(
                "{} {op} failed: {}: {e}",
                self.name,
                self.scratch.display()
            ))
        })?;
        let n = self.seq.get().wrapping_add(1);
        self.seq.set(n);
        let file = format!(".{}-{op}-{}-{n}.{ext}", self.name, std::process::id());
        let path = self.scratch.join(file);
        let _ = std::fs::remove_file(&path);
        Ok(Scratch(path))
    }

    /// Run `<rt> --root R --log L --log-format json <op> <args>`.
    fn run(
        &self,
        op: &str,
        args: &[OsString],
        stdio: Option<Stdio>,
        timeout: Duration,
    ) -> Result<(), OciError> {
        let log = self.scratch_file(op, "log")?;
        let mut cmd = Command::new(&self.path);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log.0)
            .arg("--log-format")
            .arg("json")
            .arg(op)
            .args(args)
            // Runtimes forward LISTEN_FDS into the container: not ours.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        // std resets the child's signal mask and SIGPIPE before exec; handled
        // signals fall back to default by exec itself.
        let piped = stdio.is_none();
        match stdio {
            Some(s) => {
                cmd.stdin(s.stdin).stdout(s.stdout).stderr(s.stderr);
            }
            None => {
                cmd.stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
            }
        }
        let spawned = cmd.spawn();
        // Close our copies of the container's stdio right away.
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            OciError::other(format!(
                "{} {op} failed: cannot run {}: {e}",
                self.name,
                self.path.display()
            ))
        })?;
        let status = wait_child(&mut child, Instant::now() + timeout)
            .map_err(|e| OciError::other(format!("{} {op} failed: {e}", self.name)))?;
        if status.success() {
            return Ok(());
        }
        let stderr = match (piped, child.stderr.take()) {
            (true, Some(s)) => read_available(s.into()),
            _ => String::new(),
        };
        let detail = last_log_error(&log.0)
            .or_else(|| {
                stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("exited with {status}"));
        // runc says "runc create failed: ..." but "exec failed: ...": one
        // "<runtime> <op> failed: " prefix, not two.
        let msg = if detail.starts_with(&format!("{} ", self.name)) {
            detail
        } else {
            let own = format!("{op} failed: ");
            let detail = detail.strip_prefix(&own).unwrap_or(&detail);
            format!("{} {op} failed: {detail}", self.name)
        };
        Err(OciError::classified(msg))
    }

    fn read_pid(&self, op: &str, file: &Scratch) -> Result<i32, OciError> {
        let text = std::fs::read_to_string(&file.0)
            .map_err(|e| OciError::other(format!("{} {op} failed: pid file: {e}", self.name)))?;
        text.trim()
            .parse::<i32>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                OciError::other(format!("{} {op} failed: bad pid file {text:?}", self.name))
            })
    }
}

/// Wait for `child` until `deadline`; SIGKILL and reap it after that.
fn wait_child(child: &mut Child, deadline: Instant) -> io::Result<ExitStatus> {
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    let exited = match sys::pidfd_open(pid) {
        Ok(pidfd) => sys::wait_readable(&pidfd, deadline)?,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
    }
    child.wait()
}

/// What is already in a pipe whose writer has exited (bounded, nonblocking:
/// a leftover grandchild may hold the write end).
fn read_available(fd: OwnedFd) -> String {
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut buf = Vec::new();
    let _ = File::from(fd).take(64 * 1024).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last error message in a runtime's JSON log (runc, crun: one object
/// per line with `level` and `msg`).
fn last_log_error(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut last_any = None;
    let mut last_err = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(msg) = v.get("msg").and_then(|m| m.as_str()) else {
            continue;
        };
        let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
        if matches!(level, "error" | "fatal" | "panic") {
            last_err = Some(msg.to_owned());
        }
        last_any = Some(msg.to_owned());
    }
    last_err.or(last_any).filter(|m| !m.trim().is_empty())
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// `--console-socket PATH` for a terminal (the runtime's own stdio then
/// stays ours: null and a pipe for its errors); the fds for pipes.
fn console_args(io: Io, args: &mut Vec<OsString>) -> Option<Stdio> {
    match io {
        Io::Pipes(stdio) => Some(stdio),
        Io::Console(path) => {
            args.push(os("--console-socket"));
            args.push(os(path));
            None
        }
    }
}

impl Backend for Cli {
    fn create(&self, id: &str, bundle: &Path, io: Io) -> Result<i32, OciError> {
        validate_id(id)?;
        let pid_file = self.scratch_file("create", "pid")?;
        let mut args = vec![
            os("--bundle"),
            os(bundle),
            os("--pid-file"),
            os(&pid_file.0),
        ];
        let stdio = console_args(io, &mut args);
        args.push(os(id));
        self.run("create", &args, stdio, CREATE_TIMEOUT)?;
        self.read_pid("create", &pid_file)
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        validate_id(id)?;
        self.run("start", &[os(id)], None, OP_TIMEOUT)
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        validate_id(id)?;
        let mut args = Vec::new();
        if all {
            args.push(os("--all"));
        }
        args.extend([os(id), os(signal.to_string())]);
        self.run("kill", &args, None, OP_TIMEOUT)
    }

    fn pause(&self, id: &str) -> Result<(), OciError> {
        validate_id(id)?;
        self.run("pause", &[os(id)], None, OP_TIMEOUT)
    }

    fn resume(&self, id: &str) -> Result<(), OciError> {
        validate_id(id)?;
        self.run("resume", &[os(id)], None, OP_TIMEOUT)
    }

    fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: Io,
    ) -> Result<i32, OciError> {
        validate_id(id)?;
        let spec = self.scratch_file("exec", "json")?;
        let json = serde_json::to_vec(process)
            .map_err(|e| OciError::other(format!("{} exec failed: process: {e}", self.name)))?;
        std::fs::write(&spec.0, json)
            .map_err(|e| OciError::other(format!("{} exec failed: process: {e}", self.name)))?;
        let pid_file = self.scratch_file("exec", "pid")?;
        let mut args = vec![
            os("--detach"),
            os("--pid-file"),
            os(&pid_file.0),
            os("--process"),
            os(&spec.0),
        ];
        let stdio = console_args(io, &mut args);
        args.push(os(id));
        self.run("exec", &args, stdio, CREATE_TIMEOUT)?;
        self.read_pid("exec", &pid_file)
    }

    fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), OciError> {
        validate_id(id)?;
        let file = self.scratch_file("update", "json")?;
        let json = serde_json::to_vec(resources)
            .map_err(|e| OciError::other(format!("{} update failed: {e}", self.name)))?;
        std::fs::write(&file.0, json)
            .map_err(|e| OciError::other(format!("{} update failed: {e}", self.name)))?;
        self.run(
            "update",
            &[os("--resources"), os(&file.0), os(id)],
            None,
            OP_TIMEOUT,
        )
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        validate_id(id)?;
        let mut args = Vec::new();
        if force {
            args.push(os("--force"));
        }
        args.push(os(id));
        self.run("delete", &args, None, OP_TIMEOUT)
    }
}
