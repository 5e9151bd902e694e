//! The seam between the model and whatever runs containers. berthd
//! implements it with one `berth-shim` per container; tests use [`fake`].

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::exit::Exit;

pub mod fake;

/// The process id of a container's init in events and requests.
pub const INIT_PROCESS: &str = "init";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeErrorKind {
    /// The command does not exist in the container (CLI exit 127).
    CommandNotFound,
    /// The command cannot be invoked (CLI exit 126).
    CommandNotExecutable,
    /// The operation does not fit the state the runtime sees.
    InvalidState,
    /// No such container or process in the runtime.
    NotFound,
    /// Anything else.
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub kind: RuntimeErrorKind,
    pub message: String,
}

impl RuntimeError {
    pub fn new(kind: RuntimeErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(RuntimeErrorKind::Other, message)
    }
}

/// What is needed to create a container.
#[derive(Debug, Clone)]
pub struct CreateTask {
    pub id: String,
    pub spec: Arc<oci_spec::runtime::Spec>,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Keep the init's stdin open for attached clients (`-i`).
    pub open_stdin: bool,
}

/// A process to run in a container.
#[derive(Debug, Clone)]
pub struct ExecTask {
    pub exec_id: String,
    pub process: oci_spec::runtime::Process,
    /// Attach to the process as it starts (nothing of its output is missed);
    /// its stdin is open only when attached with `stdin`.
    pub attach: Option<AttachOptions>,
}

/// How a client attaches to a process's stdio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// The client writes the process's stdin (which must have been opened).
    pub stdin: bool,
}

/// Which of a process's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A chunk of a process's output, as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stream: OutputStream,
    pub data: Vec<u8>,
}

/// What an attached client sends to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachInput {
    Stdin(Vec<u8>),
    /// The client's stdin ended: close the process's (not a terminal's).
    CloseStdin,
    /// The client's terminal changed size.
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// A live connection to a process's stdio. `output` ends once the
/// process's output has ended and all of it was delivered; dropping both
/// halves detaches without affecting the process. A client that stops
/// reading `output` holds the process back for a bounded time, then is
/// cut off.
pub struct AttachIo {
    pub input: mpsc::Sender<AttachInput>,
    pub output: mpsc::Receiver<Output>,
}

/// What a task reports, in order. The stream ends with exactly one `Exit`
/// of [`INIT_PROCESS`], after the exits of every exec it ended; when the
/// runtime loses track of the init, that exit says `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Exit {
        process: String,
        pid: i32,
        exit: Exit,
    },
    Oom,
}

/// What the runtime reports for a live task after a daemon restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    Paused,
}

/// A container found again after a daemon restart.
pub enum Restored {
    Alive {
        task: Arc<dyn Task>,
        state: TaskState,
    },
    /// It exited while the daemon was away (or its monitor is gone); the
    /// runtime has cleaned up.
    Gone(Exit),
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Create the container: the init exists, stopped before the user's
    /// command runs. On error nothing is left behind.
    async fn create(&self, req: CreateTask) -> Result<Arc<dyn Task>, RuntimeError>;
    /// Find a container created by an earlier daemon.
    async fn restore(&self, id: &str) -> Restored;
    /// Remove everything the runtime keeps for a stopped container (bundle,
    /// logs, exit files).
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// The recorded exit of an exec'd process, if it has exited (read after
    /// a daemon restart, for the exits that happened meanwhile).
    async fn exec_exit(&self, id: &str, exec_id: &str) -> Option<Exit>;
    /// Tear down and remove every container the runtime has that is not in
    /// `known` (e.g. created by a daemon that died before recording it).
    /// Returns the ids removed.
    async fn collect_orphans(&self, known: &[String]) -> Vec<String>;
    /// End whatever still runs for a container recorded as stopped (a new
    /// run a daemon created and died before recording). Idempotent.
    async fn end_stale(&self, _id: &str) {}
}

/// A created container's init and its exec'd processes.
#[async_trait]
pub trait Task: Send + Sync {
    fn pid(&self) -> i32;
    async fn start(&self) -> Result<(), RuntimeError>;
    /// Signal the init, or every process when `all`.
    async fn kill(&self, signal: i32, all: bool) -> Result<(), RuntimeError>;
    /// Signal one exec'd process.
    async fn kill_exec(&self, exec_id: &str, signal: i32) -> Result<(), RuntimeError>;
    async fn pause(&self) -> Result<(), RuntimeError>;
    async fn resume(&self) -> Result<(), RuntimeError>;
    /// Write new limits to the container's cgroup (only what `resources` sets).
    async fn update(
        &self,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError>;
    /// Start a process in the container; returns its pid, and its stdio
    /// when `req.attach` asked for it.
    async fn exec(&self, req: ExecTask) -> Result<(i32, Option<AttachIo>), RuntimeError>;
    /// Connect to the stdio of the init ([`INIT_PROCESS`]) or of an exec.
    async fn attach(&self, process: &str, opts: AttachOptions) -> Result<AttachIo, RuntimeError>;
    /// The ordered event stream; there is one, handed out once.
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<TaskEvent>>;
}
