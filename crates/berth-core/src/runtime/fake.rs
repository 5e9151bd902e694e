//! A fake runtime for unit tests of the model: no processes, just state.
//!
//! Behaviour: creating a container whose command starts with `/nonexistent`
//! fails with `CommandNotFound`; SIGKILL and SIGTERM end the init (unless the
//! test made it ignore SIGTERM); other exits are driven by the test with
//! [`FakeRuntime::exit`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::*;
use crate::exit::{Exit, ExitStatus};

#[derive(Default)]
struct FakeState {
    tasks: HashMap<String, Arc<FakeTask>>,
    /// (container, exec) → exit, as a shim's exec exit files.
    exec_exits: HashMap<(String, String), Exit>,
    removed: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn task(&self, id: &str) -> Option<Arc<FakeTask>> {
        self.lock().tasks.get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the init of `id` exit with `status`.
    pub fn exit(&self, id: &str, status: ExitStatus) {
        if let Some(t) = self.task(id) {
            t.finish(status);
        }
    }

    /// Make an exec'd process exit.
    pub fn exit_exec(&self, id: &str, exec_id: &str, code: i32) {
        if let Some(t) = self.task(id) {
            t.finish_exec(exec_id, ExitStatus::Exited { code });
        }
    }

    /// An exec exits while nobody listens (the daemon is down): only its
    /// exit record remains.
    pub fn exit_exec_silently(&self, id: &str, exec_id: &str, code: i32) {
        if let Some(t) = self.task(id) {
            t.inner().execs.remove(exec_id);
        }
        self.lock().exec_exits.insert(
            (id.to_string(), exec_id.to_string()),
            Exit {
                status: ExitStatus::Exited { code },
                at: now(),
                oom_killed: false,
            },
        );
    }

    /// Make the init of `id` survive even SIGKILL (as a process stuck in the
    /// kernel, D state).
    pub fn make_unkillable(&self, id: &str) {
        if let Some(t) = self.task(id) {
            let mut g = t.inner();
            g.ignore_term = true;
            g.unkillable = true;
        }
    }

    /// The signals sent to the init of `id` so far.
    pub fn signals(&self, id: &str) -> Vec<i32> {
        self.task(id)
            .map(|t| t.inner().signals.clone())
            .unwrap_or_default()
    }

    /// Make the init of `id` ignore SIGTERM.
    pub fn ignore_sigterm(&self, id: &str) {
        if let Some(t) = self.task(id) {
            t.inner().ignore_term = true;
        }
    }

    /// Ids whose init has not exited.
    pub fn live(&self) -> Vec<String> {
        self.lock()
            .tasks
            .iter()
            .filter(|(_, t)| !t.inner().exited)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids passed to `remove`.
    pub fn removed(&self) -> Vec<String> {
        self.lock().removed.clone()
    }
}

struct TaskInner {
    started: bool,
    paused: bool,
    exited: bool,
    ignore_term: bool,
    unkillable: bool,
    /// Every signal sent to the init, in order.
    signals: Vec<i32>,
    execs: HashMap<String, i32>,
    tx: mpsc::UnboundedSender<TaskEvent>,
    rx: Option<mpsc::UnboundedReceiver<TaskEvent>>,
}

pub struct FakeTask {
    pid: i32,
    inner: Mutex<TaskInner>,
}

/// The fake process behind an attach: stdin comes back as stdout (upper
/// case on stderr when it starts with `!`); a closed stdin ends the output.
fn echo(_opts: AttachOptions) -> AttachIo {
    let (in_tx, mut in_rx) = mpsc::channel::<AttachInput>(8);
    let (out_tx, out_rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(msg) = in_rx.recv().await {
            let out = match msg {
                AttachInput::Stdin(data) if data.starts_with(b"!") => Output {
                    stream: OutputStream::Stderr,
                    data: data.to_ascii_uppercase(),
                },
                AttachInput::Stdin(data) => Output {
                    stream: OutputStream::Stdout,
                    data,
                },
                AttachInput::Resize { rows, cols } => Output {
                    stream: OutputStream::Stdout,
                    data: format!("{rows} {cols}\n").into_bytes(),
                },
                AttachInput::CloseStdin => return,
            };
            if out_tx.send(out).await.is_err() {
                return;
            }
        }
    });
    AttachIo {
        input: in_tx,
        output: out_rx,
    }
}

fn now() -> String {
    crate::event::now_rfc3339()
}

impl FakeTask {
    fn inner(&self) -> std::sync::MutexGuard<'_, TaskInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, status: ExitStatus) {
        let mut g = self.inner();
        if g.exited {
            return;
        }
        g.exited = true;
        // Execs die with the init, and their exits come first.
        let execs: Vec<(String, i32)> = g.execs.drain().collect();
        for (id, pid) in execs {
            let _ = g.tx.send(TaskEvent::Exit {
                process: id,
                pid,
                exit: Exit {
                    status: ExitStatus::Signaled { signal: 9 },
                    at: now(),
                    oom_killed: false,
                },
            });
        }
        let _ = g.tx.send(TaskEvent::Exit {
            process: INIT_PROCESS.into(),
            pid: self.pid,
            exit: Exit {
                status,
                at: now(),
                oom_killed: false,
            },
        });
    }

    fn finish_exec(&self, exec_id: &str, status: ExitStatus) {
        let mut g = self.inner();
        if let Some(pid) = g.execs.remove(exec_id) {
            let _ = g.tx.send(TaskEvent::Exit {
                process: exec_id.into(),
                pid,
                exit: Exit {
                    status,
                    at: now(),
                    oom_killed: false,
                },
            });
        }
    }
}

static NEXT_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(1000);

fn next_pid() -> i32 {
    NEXT_PID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn create(&self, req: CreateTask) -> Result<Arc<dyn Task>, RuntimeError> {
        let args = req
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        if args.first().is_some_and(|a| a.starts_with("/nonexistent")) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::CommandNotFound,
                format!("executable {:?} not found", args[0]),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Arc::new(FakeTask {
            pid: next_pid(),
            inner: Mutex::new(TaskInner {
                started: false,
                paused: false,
                exited: false,
                ignore_term: false,
                unkillable: false,
                signals: Vec::new(),
                execs: HashMap::new(),
                tx,
                rx: Some(rx),
            }),
        });
        self.lock().tasks.insert(req.id.clone(), task.clone());
        Ok(task)
    }

    async fn restore(&self, id: &str) -> Restored {
        match self.task(id) {
            Some(t) if !t.inner().exited => {
                let (tx, rx) = mpsc::unbounded_channel();
                let state = {
                    let mut g = t.inner();
                    g.tx = tx;
                    g.rx = Some(rx);
                    if g.paused {
                        TaskState::Paused
                    } else if g.started {
                        TaskState::Running
                    } else {
                        TaskState::Created
                    }
                };
                Restored::Alive { task: t, state }
            }
            _ => Restored::Gone(Exit {
                status: ExitStatus::unknown("no such task"),
                at: now(),
                oom_killed: false,
            }),
        }
    }

    async fn exec_exit(&self, id: &str, exec_id: &str) -> Option<Exit> {
        self.lock()
            .exec_exits
            .get(&(id.to_string(), exec_id.to_string()))
            .cloned()
    }

    async fn collect_orphans(&self, known: &[String]) -> Vec<String> {
        let mut g = self.lock();
        let orphans: Vec<String> = g
            .tasks
            .keys()
            .filter(|id| !known.contains(id))
            .cloned()
            .collect();
        for id in &orphans {
            if let Some(t) = g.tasks.remove(id) {
                t.finish(ExitStatus::Signaled { signal: 9 });
            }
            g.removed.push(id.clone());
        }
        orphans
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut g = self.lock();
        g.tasks.remove(id);
        g.removed.push(id.to_string());
        Ok(())
    }
}

#[async_trait]
impl Task for FakeTask {
    fn pid(&self) -> i32 {
        self.pid
    }

    async fn start(&self) -> Result<(), RuntimeError> {
        let mut g = self.inner();
        if g.started || g.exited {
            return Err(RuntimeError::new(
                RuntimeErrorKind::InvalidState,
                "already started",
            ));
        }
        g.started = true;
        Ok(())
    }

    async fn kill(&self, signal: i32, _all: bool) -> Result<(), RuntimeError> {
        let (exited, ignore_term, unkillable) = {
            let mut g = self.inner();
            g.signals.push(signal);
            (g.exited, g.ignore_term, g.unkillable)
        };
        if exited {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                "process already exited",
            ));
        }
        if (signal == 9 && !unkillable) || (signal == 15 && !ignore_term) {
            self.finish(ExitStatus::Signaled { signal });
        }
        Ok(())
    }

    async fn kill_exec(&self, exec_id: &str, signal: i32) -> Result<(), RuntimeError> {
        if !self.inner().execs.contains_key(exec_id) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                "no such exec",
            ));
        }
        if signal == 9 || signal == 15 {
            self.finish_exec(exec_id, ExitStatus::Signaled { signal });
        }
        Ok(())
    }

    async fn pause(&self) -> Result<(), RuntimeError> {
        self.inner().paused = true;
        Ok(())
    }

    async fn resume(&self) -> Result<(), RuntimeError> {
        self.inner().paused = false;
        Ok(())
    }

    async fn update(
        &self,
        _resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn exec(&self, req: ExecTask) -> Result<(i32, Option<AttachIo>), RuntimeError> {
        let pid = {
            let mut g = self.inner();
            if !g.started || g.exited {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::InvalidState,
                    "container is not running",
                ));
            }
            let pid = next_pid();
            g.execs.insert(req.exec_id, pid);
            pid
        };
        Ok((pid, req.attach.map(echo)))
    }

    async fn attach(&self, process: &str, opts: AttachOptions) -> Result<AttachIo, RuntimeError> {
        let g = self.inner();
        if g.exited || (process != INIT_PROCESS && !g.execs.contains_key(process)) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("no running process {process}"),
            ));
        }
        Ok(echo(opts))
    }

    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<TaskEvent>> {
        self.inner().rx.take()
    }
}
