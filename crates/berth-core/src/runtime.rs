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
    pub spec: oci_spec::runtime::Spec,
    pub log_max_size: u64,
    pub log_max_files: u32,
}

/// A process to run in a container.
#[derive(Debug, Clone)]
pub struct ExecTask {
    pub exec_id: String,
    pub process: oci_spec::runtime::Process,
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
    /// Start a process in the container; returns its pid.
    async fn exec(&self, req: ExecTask) -> Result<i32, RuntimeError>;
    /// The ordered event stream; there is one, handed out once.
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<TaskEvent>>;
}
