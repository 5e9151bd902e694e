//! OCI runtime backends driven by `berth-shim`.
//!
//! The shim needs very little from an OCI runtime: create a container with
//! its stdio on given fds, start it, signal it, freeze/thaw it, run an extra
//! process in it, and delete it. [`Backend`] is exactly that, with two
//! implementations:
//!
//! - [`Embedded`]: youki's libcontainer linked into the caller. libcontainer
//!   must run in a single-threaded process and mutates the process that calls
//!   it (cwd, dumpable flag, `oom_score_adj`, `LISTEN_FDS`), so every call runs
//!   in a short-lived forked helper. The caller stays small and unchanged.
//! - [`Cli`]: an OCI runtime command line (`runc`, `crun`, or any path).
//!
//! Both report failures as an [`OciError`]: one clean human line plus an
//! [`ErrorKind`] that tells "command not found" (exit code 127) and
//! "command not executable" (126) apart from everything else.
//!
//! Processes created by either backend end up as children of the caller
//! (the runtime's own processes exit and the container's processes are
//! re-parented), provided the caller is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`). Reaping them is the caller's job.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cgroups;
mod cli;
mod embedded;
mod seccomp;
mod sys;

pub use cgroups::warm_mounts as warm_cgroup_mounts;
pub use cli::Cli;
pub use embedded::Embedded;
/// The spec types used in this API (one copy across the stack).
pub use oci_spec;

/// How long a create (or exec) may take before the runtime is killed.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long any other runtime operation may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The stdio of a process to create. The backend consumes (closes) them: the
/// caller keeps only the other ends of its pipes.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Where a new process's stdio goes.
#[derive(Debug)]
pub enum Io {
    /// Plain fds (pipes), consumed by the backend.
    Pipes(Stdio),
    /// A terminal (`process.terminal` is true in the spec): the runtime
    /// creates a pty, makes its slave the process's stdio and sends the
    /// master over the unix socket listening at this path (SCM_RIGHTS), as
    /// `runc --console-socket` does. The path must fit a sockaddr_un.
    Console(std::path::PathBuf),
}

/// What kind of failure an [`OciError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The process's executable does not exist in the container (exit 127).
    CommandNotFound,
    /// The executable exists but cannot be run (exit 126).
    CommandNotExecutable,
    /// The container does not exist in the runtime's state.
    NotFound,
    /// Anything else.
    Other,
}

/// A failed runtime operation: a kind and one line of text for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OciError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OciError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: one_line(&message.into()),
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// An error whose kind is read from its own message (see [`classify`]).
    pub fn classified(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(classify(&message), message)
    }

    /// The exit code a shell would report for this failure: 127 for a
    /// missing command, 126 for one that cannot be executed.
    pub fn exit_code(&self) -> Option<i32> {
        match self.kind {
            ErrorKind::CommandNotFound => Some(127),
            ErrorKind::CommandNotExecutable => Some(126),
            ErrorKind::NotFound | ErrorKind::Other => None,
        }
    }
}

/// The operations the shim needs from an OCI runtime.
///
/// Every call is bounded in time ([`CREATE_TIMEOUT`], [`OP_TIMEOUT`]).
pub trait Backend {
    /// Create the container `id` from the bundle (its `config.json`), with the
    /// init's stdio on `io`, and return the init's pid. The init waits for
    /// [`Backend::start`] before it runs the user's process.
    fn create(&self, id: &str, bundle: &Path, io: Io) -> Result<i32, OciError>;
    /// Let the created init run the user's process.
    fn start(&self, id: &str) -> Result<(), OciError>;
    /// Send `signal` to the init, or with `all` to every process in the container.
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError>;
    /// Freeze every process in the container.
    fn pause(&self, id: &str) -> Result<(), OciError>;
    /// Thaw a paused container.
    fn resume(&self, id: &str) -> Result<(), OciError>;
    /// Run `process` in the running container with its stdio on `io`;
    /// returns its pid.
    fn exec(&self, id: &str, process: &oci_spec::runtime::Process, io: Io)
        -> Result<i32, OciError>;
    /// Remove the container's cgroups and runtime state. With `force`, kill
    /// whatever still runs in it first. A container the runtime does not know
    /// gives an error of kind [`ErrorKind::NotFound`].
    fn delete(&self, id: &str, force: bool) -> Result<(), OciError>;
    /// Apply new limits to the running (or created, or paused) container's
    /// cgroup: what `resources` sets is written, the rest is left alone.
    fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), OciError>;
}

/// Check a container id before it becomes a directory name anywhere:
/// 64 lowercase hex characters, or 1 to 128 characters of `[A-Za-z0-9_.-]`,
/// not starting with a dot.
pub fn validate_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::other(format!("invalid container id {id:?}")))
    }
}

/// Classify a runtime's error message.
///
/// Recognizes libcontainer's validator ("executable '...' not found in
/// $PATH", "... does not have correct permissions") and its `execvp` failure,
/// and runc/crun's `exec: "<cmd>": ...` errors ("stat ...: no such file or
/// directory", "executable file not found in $PATH", "permission denied").
/// A bare "no such file or directory" (a missing bundle, say) is not a
/// missing command.
pub fn classify(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    if m.contains("not found in $path") {
        return ErrorKind::CommandNotFound;
    }
    if m.contains("does not have correct permissions") {
        return ErrorKind::CommandNotExecutable;
    }
    // runc and crun: `exec: "/bin/x": <reason>` (crun: `executable file `x` not found`).
    if let Some(pos) = m.find("exec: \"").or_else(|| m.find("executable file `")) {
        let rest = &m[pos..];
        if rest.contains("no such file or directory") || rest.contains("not found") {
            return ErrorKind::CommandNotFound;
        }
        if rest.contains("permission denied")
            || rest.contains("is a directory")
            || rest.contains("exec format error")
        {
            return ErrorKind::CommandNotExecutable;
        }
    }
    // libcontainer's execvp failure: "error 'ENOENT: ...' executing ...".
    if m.contains("executing") {
        if m.contains("enoent") {
            return ErrorKind::CommandNotFound;
        }
        if m.contains("eacces") || m.contains("enoexec") {
            return ErrorKind::CommandNotExecutable;
        }
    }
    if m.contains("container does not exist")
        || m.contains("container state directory does not exist")
    {
        return ErrorKind::NotFound;
    }
    ErrorKind::Other
}

/// Collapse a message onto one line (runtimes sometimes embed newlines).
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_runtime_messages() {
        let cases = [
            (
                "runc create failed: unable to start container process: exec: \"/nonexistent\": stat /nonexistent: no such file or directory",
                ErrorKind::CommandNotFound,
            ),
            (
                "runc create failed: unable to start container process: exec: \"nosuchcmd\": executable file not found in $PATH",
                ErrorKind::CommandNotFound,
            ),
            (
                "runc create failed: unable to start container process: exec: \"/etc/passwd\": permission denied",
                ErrorKind::CommandNotExecutable,
            ),
            (
                "executable '/nonexistent' not found in $PATH",
                ErrorKind::CommandNotFound,
            ),
            (
                "executable 'x' at path '\"/etc/passwd\"' does not have correct permissions",
                ErrorKind::CommandNotExecutable,
            ),
            (
                "open /b/config.json: no such file or directory",
                ErrorKind::Other,
            ),
            ("container does not exist", ErrorKind::NotFound),
        ];
        for (msg, kind) in cases {
            assert_eq!(classify(msg), kind, "{msg}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id(&"a".repeat(64)).is_ok());
        assert!(validate_id("web-1_x.y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn errors_are_one_line() {
        let e = OciError::other("a\n  b\tc ");
        assert_eq!(e.message, "a b c");
        assert_eq!(
            OciError::classified("exec: \"x\": permission denied").exit_code(),
            Some(126)
        );
    }
}
