//! The supervisor: the table of containers and every operation on them.
//!
//! Locking: each container has its own async lock, held for the whole of an
//! operation on it (so operations on one container are serialized) but never
//! across a wait for an exit or a deadline. Operations on different
//! containers never wait for each other: the table lock is a short-held
//! `std` lock around a map of `Arc`s. Readers (`list`, `inspect`) read a
//! snapshot and never wait for an operation in progress.
//!
//! Events are published while the container's lock is held, which is what
//! gives each container its order: create < start < exec-* < exit < delete.
//! Publishing is a durable append and a non-blocking broadcast, never a wait
//! for a subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn, Instrument};

use crate::container::{ContainerConfig, ContainerRecord, ExecRecord, State};
use crate::event::{now_rfc3339, EventBus, EventInfo, EventType};
use crate::exit::{Exit, ExitStatus};
use crate::runtime::{
    AttachInput, AttachIo, AttachOptions, CreateTask, ExecTask, Restored, Runtime, RuntimeError,
    Task, TaskEvent, TaskState, INIT_PROCESS,
};
use crate::store::{Store, StoreError};

/// How long to wait for an init to go after SIGKILL before giving up.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("no such process {1:?} in container {0}")]
    ProcessNotFound(String, String),
    #[error("container id prefix {0:?} matches more than one container: give more characters or the name")]
    Ambiguous(String),
    #[error("the name {0:?} is already in use by container {1}: remove that container or choose another name")]
    NameInUse(String, String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    Timeout(String),
    /// Run to completion ended with something other than exit code 0.
    #[error("container {0} {desc}", desc = .1.status.describe())]
    Failed(String, Exit),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What `create` needs. The id is chosen by the caller (it is part of the
/// spec: cgroups path, default hostname).
pub struct CreateParams {
    pub id: String,
    pub name: Option<String>,
    pub spec: oci_spec::runtime::Spec,
    pub config: ContainerConfig,
}

/// Mutable state of one container, behind its lock.
struct Ctr {
    rec: ContainerRecord,
    task: Option<Arc<dyn Task>>,
    /// Which run of the container the task belongs to: bumped at every
    /// runtime create. An exit is applied only to its own run, which guards
    /// against duplicate or stale exits by identity, not by time.
    run: u64,
    removing: bool,
    /// The last delay before a policy restart (the backoff grows from it).
    restart_delay: Option<Duration>,
}

/// What readers see without taking the container's lock.
#[derive(Clone)]
struct Snapshot {
    rec: ContainerRecord,
    run: u64,
    /// The run whose exit `rec.exit` is.
    exited_run: u64,
}

struct Entry {
    id: String,
    /// What lookups compare (not a snapshot). Changed only by rename, and
    /// only under the table's write lock, where create checks names too:
    /// two containers can never hold one name.
    name: Mutex<String>,
    /// Set once the container has been deleted (then `changed` is bumped).
    removed: std::sync::atomic::AtomicBool,
    ctr: tokio::sync::Mutex<Ctr>,
    snap: Mutex<Snapshot>,
    /// Bumped after every exit (init or exec) and every state change
    /// that waiters care about.
    changed: watch::Sender<u64>,
}

impl Entry {
    fn new(rec: ContainerRecord, run: u64, task: Option<Arc<dyn Task>>) -> Arc<Self> {
        let exited_run = if rec.state == State::Stopped { run } else { 0 };
        Arc::new(Entry {
            id: rec.id.clone(),
            name: Mutex::new(rec.name.clone()),
            removed: std::sync::atomic::AtomicBool::new(false),
            snap: Mutex::new(Snapshot {
                rec: rec.clone(),
                run,
                exited_run,
            }),
            ctr: tokio::sync::Mutex::new(Ctr {
                rec,
                task,
                run,
                removing: false,
                restart_delay: None,
            }),
            changed: watch::channel(0).0,
        })
    }

    /// An operation that found the container before it was deleted, and
    /// got its lock after, must not write its record back (that would
    /// bring a deleted container back at the next start, without files).
    fn check_not_removed(&self) -> Result<()> {
        if self.removed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::NotFound(self.id.clone()));
        }
        Ok(())
    }

    fn has_name(&self, name: &str) -> bool {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) == name
    }

    /// Call with the table's write lock held.
    fn set_name(&self, name: &str) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    fn snapshot(&self) -> Snapshot {
        self.snap.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publish the new state to readers and waiters.
    fn publish_snapshot(&self, ctr: &Ctr, exited: bool) {
        {
            let mut s = self.snap.lock().unwrap_or_else(|p| p.into_inner());
            s.rec = ctr.rec.clone();
            s.run = ctr.run;
            if exited {
                s.exited_run = ctr.run;
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Waits for the exit of one run of a container's init.
pub struct ExitWatch {
    entry: Arc<Entry>,
    rx: watch::Receiver<u64>,
    run: u64,
}

impl ExitWatch {
    /// The exit, or `None` when `timeout` passed first.
    pub async fn wait(&mut self, timeout: Option<Duration>) -> Option<Exit> {
        let fut = async {
            loop {
                let s = self.entry.snapshot();
                if s.exited_run >= self.run {
                    if let Some(exit) = s.rec.exit {
                        return exit;
                    }
                }
                if self.rx.changed().await.is_err() {
                    return Exit {
                        status: ExitStatus::unknown("the container was removed"),
                        at: now_rfc3339(),
                        oom_killed: false,
                    };
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.ok(),
            None => Some(fut.await),
        }
    }

    /// The record as it is now (for the log path and final state).
    pub fn record(&self) -> ContainerRecord {
        self.entry.snapshot().rec
    }

    /// Wait until the container has been deleted (e.g. by `--rm` after its
    /// exit); false when `timeout` passed first.
    pub async fn wait_removed(&mut self, timeout: Duration) -> bool {
        let fut = async {
            while !self.entry.removed.load(std::sync::atomic::Ordering::SeqCst) {
                if self.rx.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.is_ok()
    }
}

struct Inner {
    runtime: Arc<dyn Runtime>,
    store: Arc<dyn Store>,
    events: EventBus,
    table: RwLock<HashMap<String, Arc<Entry>>>,
    /// Set when the daemon shuts down: no policy restarts from then on.
    shutting_down: std::sync::atomic::AtomicBool,
}

/// The table of containers. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn info_of(rec: &ContainerRecord) -> EventInfo {
    EventInfo {
        container: rec.id.clone(),
        name: rec.name.clone(),
        process: String::new(),
        pid: 0,
        exit_code: None,
        status: String::new(),
        old_name: String::new(),
    }
}

fn not_running(rec: &ContainerRecord) -> Error {
    Error::InvalidState(format!(
        "container {} is not running (state: {})",
        rec.name,
        rec.state.as_str()
    ))
}

impl Supervisor {
    pub fn new(runtime: Arc<dyn Runtime>, store: Arc<dyn Store>) -> Result<Self> {
        let events = EventBus::new(store.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                store,
                events,
                table: RwLock::new(HashMap::new()),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Find a container by full id, name, or unique id prefix.
    pub fn resolve(&self, key: &str) -> Result<String> {
        self.lookup(key).map(|e| e.id.clone())
    }

    fn lookup(&self, key: &str) -> Result<Arc<Entry>> {
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "a container id or name is required".into(),
            ));
        }
        let table = self.table();
        if let Some(e) = table.get(key) {
            return Ok(e.clone());
        }
        if let Some(e) = table.values().find(|e| e.has_name(key)) {
            return Ok(e.clone());
        }
        let mut found = table.iter().filter(|(id, _)| id.starts_with(key));
        match (found.next(), found.next()) {
            (Some((_, e)), None) => Ok(e.clone()),
            (Some(_), Some(_)) => Err(Error::Ambiguous(key.to_string())),
            _ => Err(Error::NotFound(key.to_string())),
        }
    }

    /// All containers (or only live ones), oldest first.
    pub fn list(&self, all: bool) -> Vec<ContainerRecord> {
        self.list_with(all, ContainerRecord::clone)
    }

    /// As [`Supervisor::list`], each record mapped by `f` where it is:
    /// without a copy of every record (and its spec) per listing.
    pub fn list_with<T>(&self, all: bool, f: impl Fn(&ContainerRecord) -> T) -> Vec<T> {
        let mut v: Vec<(String, String, T)> = self
            .table()
            .values()
            .filter_map(|e| {
                let s = e.snap.lock().unwrap_or_else(|p| p.into_inner());
                let r = &s.rec;
                (all || r.state.is_live() && r.state != State::Created)
                    .then(|| (r.created_at.clone(), r.id.clone(), f(r)))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        v.into_iter().map(|(_, _, t)| t).collect()
    }

    pub fn inspect(&self, key: &str) -> Result<ContainerRecord> {
        Ok(self.lookup(key)?.snapshot().rec)
    }

    /// Persist and publish the new state of a container.
    /// An explicit stop or kill: no restart policy may undo it. Only a
    /// policy reads the flag, so it is made durable before the signal only
    /// when there is one (or a restart is pending). Without one, the exit's
    /// commit carries it, and a stop costs one durable write, not two.
    fn mark_manually_stopped(&self, entry: &Entry, ctr: &mut Ctr) {
        let durable =
            ctr.rec.config.restart != crate::restart::RestartPolicy::No || ctr.rec.restarting;
        ctr.rec.manually_stopped = true;
        ctr.rec.restarting = false;
        if durable {
            let _ = self.commit(entry, ctr, false);
        } else {
            entry.publish_snapshot(ctr, false);
        }
    }

    fn commit(&self, entry: &Entry, ctr: &Ctr, exited: bool) -> Result<()> {
        entry.check_not_removed()?;
        let res = self.inner.store.save_container(&ctr.rec);
        entry.publish_snapshot(ctr, exited);
        res.map_err(Error::from)
    }

    /// Persist the new state of a container and the event that says so in
    /// one durable write; readers see the state before anyone sees the event.
    fn commit_event(
        &self,
        entry: &Entry,
        ctr: &Ctr,
        exited: bool,
        kind: EventType,
        info: EventInfo,
    ) -> Result<()> {
        entry.check_not_removed()?;
        let (_, written) = self
            .inner
            .events
            .publish_with(kind, info, Some(&ctr.rec), None, || {
                entry.publish_snapshot(ctr, exited)
            });
        written.map_err(Error::from)
    }

    /// As [`Supervisor::commit_event`], for events that happen together:
    /// one durable write, consecutive sequence numbers, published in order.
    fn commit_events(
        &self,
        entry: &Entry,
        ctr: &Ctr,
        events: Vec<(EventType, EventInfo)>,
    ) -> Result<()> {
        entry.check_not_removed()?;
        let (_, written) = self
            .inner
            .events
            .publish_all_with(events, Some(&ctr.rec), None, || {
                entry.publish_snapshot(ctr, false)
            });
        written.map_err(Error::from)
    }

    fn publish(&self, kind: EventType, info: EventInfo) {
        self.inner.events.publish(kind, info);
    }

    /// Create a container: runtime create, record, `create` event.
    pub async fn create(&self, p: CreateParams) -> Result<String> {
        let name = match p.name {
            Some(n) => {
                crate::id::validate_name(&n).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                n
            }
            None => crate::id::short_id(&p.id).to_string(),
        };
        if p.config.auto_remove && !p.config.restart.is_no() {
            return Err(Error::InvalidArgument(
                "--rm and a restart policy cannot be combined: choose one".into(),
            ));
        }
        let rec = ContainerRecord {
            id: p.id.clone(),
            name: name.clone(),
            config: p.config,
            spec: Arc::new(p.spec),
            state: State::Created,
            pid: 0,
            exit: None,
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            manually_stopped: false,
            restarting: false,
            execs: Default::default(),
            health: None,
        };
        let entry = Entry::new(rec.clone(), 1, None);
        // Hold the new container's lock from before it is visible until it
        // is created, so nothing can act on a half-made container.
        let mut ctr = entry.ctr.lock().await;
        {
            let mut table = self.table_mut();
            if let Some(other) = table.values().find(|e| e.has_name(&name)) {
                return Err(Error::NameInUse(name, other.id.clone()));
            }
            if table.contains_key(&p.id) {
                return Err(Error::InvalidArgument(format!(
                    "container id {} exists",
                    p.id
                )));
            }
            table.insert(p.id.clone(), entry.clone());
        }
        let span = tracing::info_span!("container", id = %p.id);
        let created = self
            .inner
            .runtime
            .create(CreateTask {
                id: p.id.clone(),
                spec: rec.spec.clone(),
                log_max_size: rec.config.log_max_size,
                log_max_files: rec.config.log_max_files,
                open_stdin: rec.config.open_stdin,
            })
            .instrument(span.clone())
            .await;
        let task = match created {
            Ok(t) => t,
            Err(e) => {
                self.table_mut().remove(&p.id);
                return Err(e.into());
            }
        };
        ctr.rec.pid = task.pid();
        ctr.task = Some(task.clone());
        // The record and its `create` event in one write: a crash leaves
        // both or neither (then the container is an orphan, removed at the
        // next start).
        let info = EventInfo {
            process: INIT_PROCESS.into(),
            pid: ctr.rec.pid,
            ..info_of(&ctr.rec)
        };
        if let Err(e) = self.commit_event(&entry, &ctr, false, EventType::Create, info) {
            // Without a record the container would be invisible after a
            // restart: tear it down and report the original error.
            let _ = task.kill(9, true).await;
            drop(ctr);
            self.table_mut().remove(&p.id);
            let _ = self.inner.runtime.remove(&p.id).await;
            return Err(e);
        }
        self.spawn_watcher(entry.clone(), task, ctr.run);
        span.in_scope(|| info!(name = %name, "created"));
        Ok(p.id)
    }

    /// Start a created container, or run a stopped one again. Returns the
    /// init's pid and a watch for this run's exit.
    pub async fn start(&self, key: &str) -> Result<(i32, ExitWatch)> {
        self.start_attached(key, None)
            .await
            .map(|(pid, watch, _)| (pid, watch))
    }

    /// [`Supervisor::start`], attached to the init's stdio before it runs
    /// when `attach` is given (with the terminal size to set first, if
    /// any), so that not a byte of its output is missed.
    pub async fn start_attached(
        &self,
        key: &str,
        attach: Option<(AttachOptions, Option<(u16, u16)>)>,
    ) -> Result<(i32, ExitWatch, Option<AttachIo>)> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        if ctr.removing {
            return Err(Error::InvalidState(format!(
                "container {} is being removed",
                ctr.rec.name
            )));
        }
        match ctr.rec.state {
            State::Created => {}
            State::Stopped => self.new_run(&entry, &mut ctr).await?,
            State::Running | State::Paused => {
                // As Docker: starting a running container is a no-op.
                let watch = ExitWatch {
                    entry: entry.clone(),
                    rx: entry.changed.subscribe(),
                    run: ctr.run,
                };
                let io = match attach {
                    Some((opts, size)) => Some(Self::attach_task(&ctr, opts, size).await?),
                    None => None,
                };
                return Ok((ctr.rec.pid, watch, io));
            }
        }
        let io = match attach {
            Some((opts, size)) => Some(Self::attach_task(&ctr, opts, size).await?),
            None => None,
        };
        // A start by the user: policies apply again, from a fresh backoff.
        ctr.rec.manually_stopped = false;
        ctr.rec.restarting = false;
        ctr.restart_delay = None;
        let watch = ExitWatch {
            entry: entry.clone(),
            rx: entry.changed.subscribe(),
            run: ctr.run,
        };
        self.start_task(&entry, &mut ctr).await?;
        Ok((ctr.rec.pid, watch, io))
    }

    /// Attach to the init of `ctr`'s current task; set the terminal size first.
    async fn attach_task(
        ctr: &Ctr,
        opts: AttachOptions,
        size: Option<(u16, u16)>,
    ) -> Result<AttachIo> {
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        let io = task.attach(INIT_PROCESS, opts).await?;
        if let Some((rows, cols)) = size {
            let _ = io.input.send(AttachInput::Resize { rows, cols }).await;
        }
        Ok(io)
    }

    /// Create the init of a stopped container again: a new run.
    async fn new_run(&self, entry: &Arc<Entry>, ctr: &mut Ctr) -> Result<()> {
        let task = self
            .inner
            .runtime
            .create(CreateTask {
                id: ctr.rec.id.clone(),
                spec: ctr.rec.spec.clone(),
                log_max_size: ctr.rec.config.log_max_size,
                log_max_files: ctr.rec.config.log_max_files,
                open_stdin: ctr.rec.config.open_stdin,
            })
            .await?;
        ctr.run += 1;
        ctr.task = Some(task.clone());
        ctr.rec.pid = task.pid();
        ctr.rec.state = State::Created;
        ctr.rec.execs.clear();
        self.spawn_watcher(entry.clone(), task, ctr.run);
        Ok(())
    }

    /// Start the created init of the current run and publish `start`.
    async fn start_task(&self, entry: &Arc<Entry>, ctr: &mut Ctr) -> Result<()> {
        let task = ctr
            .task
            .clone()
            .ok_or_else(|| Error::InvalidState("container has no task".into()))?;
        if let Err(e) = task.start().await {
            // A start that failed leaves nothing behind: kill the created
            // init; the watcher records its exit.
            let _ = task.kill(9, true).await;
            return Err(e.into());
        }
        ctr.rec.state = State::Running;
        ctr.rec.started_at = Some(now_rfc3339());
        let info = EventInfo {
            process: INIT_PROCESS.into(),
            pid: ctr.rec.pid,
            ..info_of(&ctr.rec)
        };
        self.commit_event(entry, ctr, false, EventType::Start, info)
    }

    /// After a policy's backoff: run the container again, unless anything
    /// happened meanwhile (a start, a stop, a removal). A restart that fails
    /// is tried again with a longer delay while the policy allows.
    async fn restart_after(self, entry: Arc<Entry>, run: u64, mut delay: Duration) {
        loop {
            tokio::time::sleep(delay).await;
            let mut ctr = entry.ctr.lock().await;
            if ctr.run != run
                || ctr.removing
                || ctr.rec.manually_stopped
                || ctr.rec.state != State::Stopped
                || self.is_shutting_down()
            {
                return;
            }
            ctr.rec.restart_count += 1;
            ctr.rec.restarting = false;
            let attempt = async {
                self.new_run(&entry, &mut ctr).await?;
                self.publish(
                    EventType::Restart,
                    EventInfo {
                        process: INIT_PROCESS.into(),
                        pid: ctr.rec.pid,
                        ..info_of(&ctr.rec)
                    },
                );
                self.start_task(&entry, &mut ctr).await
            }
            .await;
            let Err(e) = attempt else {
                info!(count = ctr.rec.restart_count, "restarted by policy");
                return;
            };
            warn!(error = %e, "restart by policy failed");
            if ctr.run != run {
                // The new run was created and its init killed: its exit
                // goes through the policy again.
                return;
            }
            let failed = ExitStatus::unknown(e.to_string());
            let _ = self.commit(&entry, &ctr, false);
            if !ctr.rec.config.restart.should_restart(
                &failed,
                ctr.rec.restart_count,
                ctr.rec.manually_stopped,
            ) {
                return;
            }
            ctr.rec.restarting = true;
            let _ = self.commit(&entry, &ctr, false);
            delay = crate::restart::next_delay(Some(delay), Duration::ZERO);
            ctr.restart_delay = Some(delay);
        }
    }

    /// Apply the restart policy to an exit being recorded (under the lock):
    /// marks the container restarting and returns the delay, or `None`.
    fn plan_restart(&self, ctr: &mut Ctr, exit: &Exit) -> Option<Duration> {
        let policy = ctr.rec.config.restart;
        if ctr.removing
            || self.is_shutting_down()
            || !policy.should_restart(
                &exit.status,
                ctr.rec.restart_count,
                ctr.rec.manually_stopped,
            )
        {
            return None;
        }
        let ran_for = match (
            ctr.rec.started_at.as_deref().map(humantime::parse_rfc3339),
            humantime::parse_rfc3339(&exit.at),
        ) {
            (Some(Ok(start)), Ok(end)) => end.duration_since(start).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let delay = crate::restart::next_delay(ctr.restart_delay, ran_for);
        ctr.restart_delay = Some(delay);
        ctr.rec.restarting = true;
        Some(delay)
    }

    /// Run a container to completion: create, start, wait for its exit
    /// (bounded by `timeout` when given: then it is killed), and remove it
    /// either way. Anything but exit code 0 is an error naming the status.
    pub async fn run_to_completion(
        &self,
        mut p: CreateParams,
        timeout: Option<Duration>,
    ) -> Result<Exit> {
        // One run, removed by us: no auto-remove racing our removal, and no
        // restart policy (a run to completion runs once).
        p.config.auto_remove = false;
        p.config.restart = crate::restart::RestartPolicy::No;
        let id = self.create(p).await?;
        let result = async {
            let (_, mut watch) = self.start(&id).await?;
            if let Some(exit) = watch.wait(timeout).await {
                return Ok(exit);
            }
            let _ = self.kill(&id, 9, true).await;
            watch.wait(Some(KILL_WAIT)).await.ok_or_else(|| {
                Error::Timeout(format!(
                    "container {id} did not exit within {}s of SIGKILL",
                    KILL_WAIT.as_secs()
                ))
            })
        }
        .await;
        // Tear down whatever happened (auto-remove may have been first);
        // keep the first error.
        let removed = match self.delete(&id, true).await {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        };
        let exit = result?;
        removed?;
        if exit.status.success() {
            Ok(exit)
        } else {
            Err(Error::Failed(id, exit))
        }
    }

    /// A watch for the current (or, for a stopped container, the last) run's exit.
    pub fn watch_exit(&self, key: &str) -> Result<ExitWatch> {
        let entry = self.lookup(key)?;
        let rx = entry.changed.subscribe();
        let run = entry.snapshot().run;
        Ok(ExitWatch { entry, rx, run })
    }

    /// Block until the container's init exits (returns at once if stopped).
    pub async fn wait(&self, key: &str) -> Result<Exit> {
        let mut w = self.watch_exit(key)?;
        w.wait(None)
            .await
            .ok_or_else(|| Error::Timeout("wait ended".into()))
    }

    /// Block until an exec'd process exits.
    pub async fn wait_exec(&self, key: &str, exec_id: &str) -> Result<Exit> {
        let entry = self.lookup(key)?;
        let mut rx = entry.changed.subscribe();
        loop {
            let s = entry.snapshot();
            match s.rec.execs.get(exec_id) {
                None => return Err(Error::ProcessNotFound(s.rec.name, exec_id.into())),
                Some(ExecRecord {
                    exit: Some(exit), ..
                }) => return Ok(exit.clone()),
                Some(_) => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::NotFound(key.into()));
            }
        }
    }

    /// Send `signal` to the init (or every process with `all`).
    pub async fn kill(&self, key: &str, signal: i32, all: bool) -> Result<()> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        if !ctr.rec.state.is_live() {
            return Err(not_running(&ctr.rec));
        }
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        // A kill meant to end the container is an explicit stop; a signal
        // like HUP (reload) is not.
        if matches!(signal, 2 | 9 | 15) || signal == ctr.rec.config.stop_signal {
            self.mark_manually_stopped(&entry, &mut ctr);
        }
        task.kill(signal, all).await?;
        if ctr.rec.state == State::Paused && signal == 9 {
            // A frozen process only dies once thawed.
            let _ = task.resume().await;
        }
        Ok(())
    }

    /// Signal one exec'd process.
    pub async fn kill_exec(&self, key: &str, exec_id: &str, signal: i32) -> Result<()> {
        let entry = self.lookup(key)?;
        let ctr = entry.ctr.lock().await;
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        if !ctr.rec.execs.get(exec_id).is_some_and(|e| e.running) {
            return Err(Error::ProcessNotFound(ctr.rec.name.clone(), exec_id.into()));
        }
        task.kill_exec(exec_id, signal).await?;
        Ok(())
    }

    /// Stop: the stop signal, up to `timeout` (default: the container's),
    /// then SIGKILL, bounded. Already stopped is success.
    pub async fn stop(&self, key: &str, timeout: Option<Duration>) -> Result<Exit> {
        let entry = self.lookup(key)?;
        self.stop_entry(entry, timeout, true).await
    }

    fn is_shutting_down(&self) -> bool {
        self.inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The daemon is going away: no policy restarts from now on. With
    /// `stop_containers`, every live container is stopped (its stop signal,
    /// its deadline, then SIGKILL), all at once, and this returns when they
    /// have exited. That is not an explicit stop: policies apply again
    /// when the daemon comes back. Returns how many were stopped.
    pub async fn shutdown(&self, stop_containers: bool) -> usize {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if !stop_containers {
            return 0;
        }
        let live: Vec<Arc<Entry>> = self
            .table()
            .values()
            .filter(|e| e.snapshot().rec.state.is_live())
            .cloned()
            .collect();
        let n = live.len();
        let mut set = tokio::task::JoinSet::new();
        for entry in live {
            let this = self.clone();
            let span = tracing::info_span!("container", id = %entry.id);
            set.spawn(
                async move {
                    match this.stop_entry(entry, None, false).await {
                        Ok(exit) => info!(status = %exit.status.describe(), "stopped on shutdown"),
                        Err(e) => warn!(error = %e, "cannot stop on shutdown"),
                    }
                }
                .instrument(span),
            );
        }
        while set.join_next().await.is_some() {}
        n
    }

    async fn stop_entry(
        &self,
        entry: Arc<Entry>,
        timeout: Option<Duration>,
        manual: bool,
    ) -> Result<Exit> {
        let (task, mut watch, signal, timeout, paused) = {
            let mut ctr = entry.ctr.lock().await;
            if manual {
                // An explicit stop, also of a container waiting to restart.
                self.mark_manually_stopped(&entry, &mut ctr);
            }
            if !ctr.rec.state.is_live() {
                return ctr.rec.exit.clone().ok_or_else(|| not_running(&ctr.rec));
            }
            let Some(task) = ctr.task.clone() else {
                return Err(not_running(&ctr.rec));
            };
            // A created init has not run the user's command: nothing to
            // shut down gracefully.
            let timeout = if ctr.rec.state == State::Created {
                Duration::ZERO
            } else {
                timeout
                    .unwrap_or_else(|| Duration::from_secs(u64::from(ctr.rec.config.stop_timeout)))
            };
            let watch = ExitWatch {
                entry: entry.clone(),
                rx: entry.changed.subscribe(),
                run: ctr.run,
            };
            (
                task,
                watch,
                ctr.rec.config.stop_signal,
                timeout,
                ctr.rec.state == State::Paused,
            )
        };
        let span = tracing::info_span!("container", id = %entry.id);
        let sent = task.kill(signal, false).await;
        if paused {
            let _ = task.resume().await;
        }
        if sent.is_ok() && !timeout.is_zero() {
            if let Some(exit) = watch.wait(Some(timeout)).await {
                return Ok(exit);
            }
            span.in_scope(|| info!(?timeout, "stop signal ignored, sending SIGKILL"));
        }
        let _ = task.kill(9, true).await;
        watch.wait(Some(KILL_WAIT)).await.ok_or_else(|| {
            Error::Timeout(format!(
                "container {} did not exit within {}s of SIGKILL; it may be stuck in the kernel (D state)",
                entry.id,
                KILL_WAIT.as_secs()
            ))
        })
    }

    /// Stop a running or paused container (as [`Supervisor::stop`]), then
    /// start it again; a created or stopped one is only started. The
    /// `start` is followed by a `restart` event. Returns the new init's pid.
    pub async fn restart(&self, key: &str, timeout: Option<Duration>) -> Result<i32> {
        let entry = self.lookup(key)?;
        let rec = entry.snapshot().rec;
        if rec.config.auto_remove {
            // Its stop would remove it before it could start again.
            return Err(Error::InvalidState(format!(
                "container {} was created with --rm: it is removed when it stops, so it cannot be restarted",
                rec.name
            )));
        }
        if matches!(rec.state, State::Running | State::Paused) {
            self.stop_entry(entry.clone(), timeout, true).await?;
        }
        let (pid, watch) = self.start(&entry.id).await?;
        let ctr = entry.ctr.lock().await;
        // Only if nothing happened since (an exit, a stop, another start):
        // the event is published under the lock like every other, so it
        // keeps its place in the container's order.
        if ctr.run == watch.run
            && ctr.rec.state == State::Running
            && !entry.removed.load(std::sync::atomic::Ordering::SeqCst)
        {
            self.publish(
                EventType::Restart,
                EventInfo {
                    process: INIT_PROCESS.into(),
                    pid,
                    ..info_of(&ctr.rec)
                },
            );
        }
        Ok(pid)
    }

    /// Give a container a new name, durably, with a `rename` event (the
    /// old name in it). The new name is checked and taken under the
    /// table's write lock, as create checks it.
    pub async fn rename(&self, key: &str, new_name: &str) -> Result<()> {
        crate::id::validate_name(new_name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        entry.check_not_removed()?;
        if ctr.removing {
            return Err(Error::InvalidState(format!(
                "container {} is being removed",
                ctr.rec.name
            )));
        }
        let old = ctr.rec.name.clone();
        if old == new_name {
            return Err(Error::InvalidArgument(format!(
                "container {} is already named {new_name:?}: choose another name",
                crate::id::short_id(&entry.id)
            )));
        }
        {
            let table = self.table_mut();
            if let Some(other) = table
                .values()
                .find(|e| e.id != entry.id && e.has_name(new_name))
            {
                return Err(Error::NameInUse(new_name.to_string(), other.id.clone()));
            }
            entry.set_name(new_name);
        }
        ctr.rec.name = new_name.to_string();
        let info = EventInfo {
            old_name: old.clone(),
            ..info_of(&ctr.rec)
        };
        if let Err(e) = self.commit_event(&entry, &ctr, false, EventType::Rename, info) {
            // Not durable: back to the old name, unless a create took it
            // meanwhile (then the new name stays in memory, and the next
            // write of the record makes it durable).
            ctr.rec.name = old.clone();
            {
                let table = self.table_mut();
                if !table.values().any(|e| e.id != entry.id && e.has_name(&old)) {
                    entry.set_name(&old);
                }
            }
            entry.publish_snapshot(&ctr, false);
            return Err(e);
        }
        tracing::info_span!("container", id = %entry.id)
            .in_scope(|| info!(from = %old, to = %new_name, "renamed"));
        Ok(())
    }

    pub async fn pause(&self, key: &str) -> Result<()> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        match ctr.rec.state {
            State::Running => {}
            State::Paused => {
                return Err(Error::InvalidState(format!(
                    "container {} is already paused",
                    ctr.rec.name
                )))
            }
            _ => return Err(not_running(&ctr.rec)),
        }
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        task.pause().await?;
        ctr.rec.state = State::Paused;
        self.commit_event(&entry, &ctr, false, EventType::Pause, info_of(&ctr.rec))?;
        Ok(())
    }

    pub async fn resume(&self, key: &str) -> Result<()> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        if ctr.rec.state != State::Paused {
            return Err(Error::InvalidState(format!(
                "container {} is not paused",
                ctr.rec.name
            )));
        }
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        task.resume().await?;
        ctr.rec.state = State::Running;
        self.commit_event(&entry, &ctr, false, EventType::Resume, info_of(&ctr.rec))?;
        Ok(())
    }

    /// Run a process in a running container. Returns its exec id and pid.
    pub async fn exec(
        &self,
        key: &str,
        process: oci_spec::runtime::Process,
    ) -> Result<(String, i32)> {
        self.exec_attached(key, process, None)
            .await
            .map(|(id, pid, _)| (id, pid))
    }

    /// Connect to the stdio of a live container's init or of one of its
    /// running execs.
    pub async fn attach(&self, key: &str, process: &str, opts: AttachOptions) -> Result<AttachIo> {
        let entry = self.lookup(key)?;
        let ctr = entry.ctr.lock().await;
        if !ctr.rec.state.is_live() {
            return Err(Error::InvalidState(format!(
                "container {} is not running: start it first",
                ctr.rec.name
            )));
        }
        if process != INIT_PROCESS && !ctr.rec.execs.get(process).is_some_and(|e| e.running) {
            return Err(Error::ProcessNotFound(ctr.rec.name.clone(), process.into()));
        }
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        Ok(task.attach(process, opts).await?)
    }

    /// [`Supervisor::exec`], attached to the process from its start when
    /// `attach` is given.
    pub async fn exec_attached(
        &self,
        key: &str,
        process: oci_spec::runtime::Process,
        attach: Option<AttachOptions>,
    ) -> Result<(String, i32, Option<AttachIo>)> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        if ctr.rec.state != State::Running {
            return Err(match ctr.rec.state {
                State::Paused => Error::InvalidState(format!(
                    "container {} is paused: unpause it first",
                    ctr.rec.name
                )),
                _ => not_running(&ctr.rec),
            });
        }
        let task = ctr.task.clone().ok_or_else(|| not_running(&ctr.rec))?;
        let exec_id = crate::id::generate_id().map_err(|e| Error::InvalidState(e.to_string()))?
            [..16]
            .to_string();
        let args = process.args().clone().unwrap_or_default();
        let (pid, io) = task
            .exec(ExecTask {
                exec_id: exec_id.clone(),
                process,
                attach,
            })
            .await?;
        ctr.rec.execs.insert(
            exec_id.clone(),
            ExecRecord {
                id: exec_id.clone(),
                pid,
                args,
                running: true,
                exit: None,
            },
        );
        let ev = EventInfo {
            process: exec_id.clone(),
            pid,
            ..info_of(&ctr.rec)
        };
        // The record and both events in one durable write: the process is
        // already running when the shim answers, so "added" and "started"
        // happen together (two writes cost every exec an fdatasync).
        self.commit_events(
            &entry,
            &ctr,
            vec![
                (EventType::ExecAdded, ev.clone()),
                (EventType::ExecStarted, ev),
            ],
        )?;
        Ok((exec_id, pid, io))
    }

    /// Remove a container. A running one needs `force` (it is killed first).
    pub async fn delete(&self, key: &str, force: bool) -> Result<()> {
        let entry = self.lookup(key)?;
        let kill = {
            let mut ctr = entry.ctr.lock().await;
            if ctr.removing {
                return Err(Error::InvalidState(format!(
                    "removal of container {} is already in progress",
                    ctr.rec.name
                )));
            }
            let live = matches!(ctr.rec.state, State::Running | State::Paused);
            if live && !force {
                return Err(Error::InvalidState(format!(
                    "cannot remove running container {}: stop it first, or use rm -f",
                    ctr.rec.name
                )));
            }
            ctr.removing = true;
            if ctr.rec.state.is_live() {
                ctr.task.clone().map(|t| {
                    (
                        t,
                        ExitWatch {
                            entry: entry.clone(),
                            rx: entry.changed.subscribe(),
                            run: ctr.run,
                        },
                        ctr.rec.state == State::Paused,
                    )
                })
            } else {
                None
            }
        };
        if let Some((task, mut watch, paused)) = kill {
            let _ = task.kill(9, true).await;
            if paused {
                let _ = task.resume().await;
            }
            if watch.wait(Some(KILL_WAIT)).await.is_none() {
                entry.ctr.lock().await.removing = false;
                return Err(Error::Timeout(format!(
                    "container {} did not exit within {}s of SIGKILL; not removed",
                    entry.id,
                    KILL_WAIT.as_secs()
                )));
            }
        }
        let ctr = entry.ctr.lock().await;
        // The record goes first (with its `delete` event, in one write),
        // then the files: a crash in between leaves files no record knows
        // of, which the next start removes as an orphan. The other order
        // would leave a record whose files are gone.
        let (_, written) = self.inner.events.publish_with(
            EventType::Delete,
            info_of(&ctr.rec),
            None,
            Some(&entry.id),
            || {
                self.table_mut().remove(&entry.id);
            },
        );
        if let Err(e) = written {
            // Still gone from the table; the next start finds the record
            // and, without a shim or exit file, reports an unknown exit.
            warn!(error = %e, "cannot remove the container's record");
        }
        self.remove_files(&entry, ctr).await;
        Ok(())
    }

    /// The end of a removal, once the record is gone: the files, then the
    /// container is marked removed and its waiters are woken.
    async fn remove_files(&self, entry: &Entry, ctr: tokio::sync::MutexGuard<'_, Ctr>) {
        if let Err(e) = self.inner.runtime.remove(&entry.id).await {
            // The record is gone: the next start removes the files.
            warn!(error = %e, "cannot remove the container's files; the next start will");
        }
        // Under the lock: whoever takes it next sees the removal.
        entry
            .removed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(ctr);
        // Wake anyone still waiting on this container.
        entry.changed.send_modify(|n| *n += 1);
        tracing::info_span!("container", id = %entry.id).in_scope(|| info!("removed"));
    }

    /// Consume a task's events until its init exits.
    fn spawn_watcher(&self, entry: Arc<Entry>, task: Arc<dyn Task>, run: u64) {
        let Some(events) = task.take_events() else {
            warn!(id = %entry.id, "task events already taken");
            return;
        };
        let this = self.clone();
        let span = tracing::info_span!("container", id = %entry.id);
        tokio::spawn(this.watch_task(entry, events, run).instrument(span));
    }

    async fn watch_task(
        self,
        entry: Arc<Entry>,
        mut events: mpsc::UnboundedReceiver<TaskEvent>,
        run: u64,
    ) {
        let mut init_exit = None;
        while let Some(ev) = events.recv().await {
            match ev {
                TaskEvent::Exit { process, pid, exit } if process == INIT_PROCESS => {
                    init_exit = Some((pid, exit));
                    break;
                }
                TaskEvent::Exit { process, pid, exit } => {
                    self.on_exec_exit(&entry, run, process, pid, exit).await;
                }
                TaskEvent::Oom => self.on_oom(&entry, run).await,
            }
        }
        let (pid, exit) = init_exit.unwrap_or_else(|| {
            (
                0,
                Exit {
                    status: ExitStatus::unknown("the runtime lost track of the container"),
                    at: now_rfc3339(),
                    oom_killed: false,
                },
            )
        });
        self.on_init_exit(&entry, run, pid, exit).await;
    }

    async fn on_oom(&self, entry: &Arc<Entry>, run: u64) {
        let ctr = entry.ctr.lock().await;
        if ctr.run != run {
            return;
        }
        self.publish(EventType::Oom, info_of(&ctr.rec));
    }

    async fn on_exec_exit(
        &self,
        entry: &Arc<Entry>,
        run: u64,
        exec_id: String,
        pid: i32,
        exit: Exit,
    ) {
        let mut ctr = entry.ctr.lock().await;
        if ctr.run != run {
            return;
        }
        let Some(rec) = ctr.rec.execs.get_mut(&exec_id) else {
            warn!(exec_id, "exit of an unknown exec");
            return;
        };
        if !rec.running || rec.pid != pid {
            return; // a duplicate: this process's exit was applied already
        }
        self.apply_exec_exit(entry, &mut ctr, exec_id, pid, exit);
    }

    /// Record an exec's exit and publish its `exec-exit` (under the lock),
    /// in one durable write: a crash leaves both or neither, so the exit
    /// is applied again at restore only if its event was never written.
    fn apply_exec_exit(&self, entry: &Entry, ctr: &mut Ctr, exec_id: String, pid: i32, exit: Exit) {
        let code = exit.status.code();
        if let Some(e) = ctr.rec.execs.get_mut(&exec_id) {
            e.running = false;
            e.exit = Some(exit);
        }
        let info = EventInfo {
            process: exec_id,
            pid,
            exit_code: Some(code),
            ..info_of(&ctr.rec)
        };
        if let Err(e) = self.commit_event(entry, ctr, false, EventType::ExecExit, info) {
            warn!(error = %e, "cannot persist an exec's exit");
        }
    }

    async fn on_init_exit(&self, entry: &Arc<Entry>, run: u64, pid: i32, exit: Exit) {
        {
            let mut ctr = entry.ctr.lock().await;
            if ctr.run != run || !ctr.rec.state.is_live() {
                return; // stale or duplicate
            }
            // Execs the runtime did not report are gone with the init; their
            // exit is unknown, and still gets its event, before the init's.
            let lost = ctr.rec.running_execs();
            for (exec_id, exec_pid) in lost {
                let unknown = Exit {
                    status: ExitStatus::unknown(
                        "its exit was not reported before the container stopped",
                    ),
                    at: exit.at.clone(),
                    oom_killed: false,
                };
                self.apply_exec_exit(entry, &mut ctr, exec_id, exec_pid, unknown);
            }
            ctr.rec.state = State::Stopped;
            ctr.rec.pid = 0;
            ctr.rec.finished_at = Some(exit.at.clone());
            ctr.rec.exit = Some(exit.clone());
            ctr.task = None;
            // The policy's decision is saved with the exit (one write): a
            // crash right after it cannot lose a restart.
            let restart = self.plan_restart(&mut ctr, &exit);
            let info = EventInfo {
                process: INIT_PROCESS.into(),
                pid,
                exit_code: Some(exit.status.code()),
                ..info_of(&ctr.rec)
            };
            if restart.is_none() && ctr.rec.config.auto_remove && !ctr.removing {
                // --rm: the exit and the removal that follows it are one
                // durable write (the record goes with both events). A crash
                // before it leaves the live record, and the next start
                // applies the exit and the removal again.
                ctr.removing = true;
                let gone = info_of(&ctr.rec);
                let (_, written) = self.inner.events.publish_all_with(
                    vec![(EventType::Exit, info), (EventType::Delete, gone)],
                    None,
                    Some(&entry.id),
                    || {
                        entry.publish_snapshot(&ctr, true);
                        self.table_mut().remove(&entry.id);
                    },
                );
                if let Err(e) = written {
                    warn!(error = %e, "cannot persist the exit and the removal");
                }
                info!(status = %exit.status.describe(), "exited");
                self.remove_files(entry, ctr).await;
                return;
            }
            if let Err(e) = self.commit_event(entry, &ctr, true, EventType::Exit, info) {
                warn!(error = %e, "cannot persist the exit");
            }
            info!(status = %exit.status.describe(), "exited");
            if let Some(delay) = restart {
                info!(?delay, policy = %ctr.rec.config.restart, "restarting by policy");
                let span = tracing::info_span!("container", id = %entry.id);
                tokio::spawn(
                    self.clone()
                        .restart_after(entry.clone(), ctr.run, delay)
                        .instrument(span),
                );
            }
        }
    }

    /// Apply the exits of execs that ended while the daemon was away (the
    /// runtime recorded them), with the events owed for them.
    async fn settle_execs(&self, entry: &Arc<Entry>) {
        let mut ctr = entry.ctr.lock().await;
        let running = ctr.rec.running_execs();
        for (exec_id, pid) in running {
            let Some(exit) = self.inner.runtime.exec_exit(&entry.id, &exec_id).await else {
                continue;
            };
            self.apply_exec_exit(entry, &mut ctr, exec_id, pid, exit);
        }
        drop(ctr);
    }

    /// Load the containers of an earlier daemon and reconnect to the live
    /// ones. Containers that exited meanwhile get their exit (and the events
    /// owed for it).
    pub async fn restore(&self) -> Result<()> {
        let records = self.inner.store.load_containers()?;
        // A daemon killed in the middle of a create leaves a container the
        // store never heard of: nobody could ever see or remove it.
        let known: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        for id in self.inner.runtime.collect_orphans(&known).await {
            warn!(id = %id, "removed a container no record knows of");
        }
        let live: Vec<String> = records
            .iter()
            .filter(|r| r.state.is_live())
            .map(|r| r.id.clone())
            .collect();
        let mut reconnected = self.restore_tasks(live).await;
        for rec in records {
            let id = rec.id.clone();
            let span = tracing::info_span!("container", id = %id);
            if !rec.state.is_live() {
                self.inner
                    .runtime
                    .end_stale(&id)
                    .instrument(span.clone())
                    .await;
                // Policies that start with the daemon, and a restart the
                // last daemon had decided on but not done (killed while the
                // container waited out its backoff).
                let start = rec.config.restart.start_with_daemon(rec.manually_stopped)
                    || (rec.restarting && !rec.manually_stopped);
                let mut rec = rec;
                rec.restarting = false;
                let entry = Entry::new(rec, 1, None);
                self.table_mut().insert(id, entry.clone());
                if start {
                    // As Docker after a reboot: `always` (and `unless-stopped`
                    // unless stopped by hand) containers come back up.
                    {
                        let mut ctr = entry.ctr.lock().await;
                        ctr.rec.manually_stopped = false;
                        ctr.rec.restarting = true;
                        entry.publish_snapshot(&ctr, false);
                    }
                    tokio::spawn(
                        self.clone()
                            .restart_after(entry, 1, crate::restart::BACKOFF_START)
                            .instrument(span),
                    );
                }
                continue;
            }
            let restored = match reconnected.remove(&id) {
                Some(r) => r,
                // Its task panicked: once more, here.
                None => {
                    self.inner
                        .runtime
                        .restore(&id)
                        .instrument(span.clone())
                        .await
                }
            };
            match restored {
                Restored::Alive { task, state } => {
                    let mut rec = rec;
                    let was = rec.state;
                    let now = match state {
                        TaskState::Created => State::Created,
                        TaskState::Running => State::Running,
                        TaskState::Paused => State::Paused,
                    };
                    let recorded_pid = rec.pid;
                    rec.pid = task.pid();
                    let entry = Entry::new(rec, 1, Some(task.clone()));
                    self.table_mut().insert(id.clone(), entry.clone());
                    // Before the watcher runs: a duplicate of an exit applied
                    // here is then dropped by the pid guard.
                    self.settle_execs(&entry).await;
                    {
                        // A change the last daemon made but died before
                        // recording (a start, pause or resume): record it
                        // now, with the event it owes.
                        let mut ctr = entry.ctr.lock().await;
                        ctr.rec.state = now;
                        let owed = match (was, now) {
                            (State::Created, State::Running | State::Paused) => {
                                if ctr.rec.started_at.is_none() {
                                    ctr.rec.started_at = Some(now_rfc3339());
                                }
                                Some(EventType::Start)
                            }
                            // A new run (a policy restart, or a start of a
                            // stopped container) that the last daemon began
                            // and died before recording.
                            (State::Stopped, State::Running | State::Paused) => {
                                ctr.rec.started_at = Some(now_rfc3339());
                                Some(EventType::Start)
                            }
                            (State::Running, State::Paused) => Some(EventType::Pause),
                            (State::Paused, State::Running) => Some(EventType::Resume),
                            _ => None,
                        };
                        let saved = match owed {
                            Some(kind) => {
                                let mut info = info_of(&ctr.rec);
                                if kind == EventType::Start {
                                    info.process = INIT_PROCESS.into();
                                    info.pid = ctr.rec.pid;
                                }
                                self.commit_event(&entry, &ctr, false, kind, info)
                            }
                            // Nothing changed while the daemon was away: no
                            // durable write (one per live container made a
                            // restart with 1,000 of them take 18 s).
                            None if ctr.rec.pid == recorded_pid => {
                                entry.publish_snapshot(&ctr, false);
                                Ok(())
                            }
                            None => self.commit(&entry, &ctr, false),
                        };
                        if let Err(e) = saved {
                            span.in_scope(|| warn!(error = %e, "cannot save the restored state"));
                        }
                    }
                    self.spawn_watcher(entry, task, 1);
                    span.in_scope(|| info!("reconnected"));
                }
                Restored::Gone(exit) => {
                    let pid = rec.pid;
                    // Recorded as created, but it exited with a code of its
                    // own: the last daemon started it and died before
                    // recording that. Its `start` is owed too. (Killed by a
                    // signal, it may never have run: no start is made up.)
                    let owed_start = rec.state == State::Created
                        && matches!(exit.status, ExitStatus::Exited { .. });
                    let entry = Entry::new(rec, 1, None);
                    self.table_mut().insert(id.clone(), entry.clone());
                    if owed_start {
                        let mut ctr = entry.ctr.lock().await;
                        ctr.rec.state = State::Running;
                        if ctr.rec.started_at.is_none() {
                            ctr.rec.started_at = Some(exit.at.clone());
                        }
                        let info = EventInfo {
                            process: INIT_PROCESS.into(),
                            pid,
                            ..info_of(&ctr.rec)
                        };
                        if let Err(e) =
                            self.commit_event(&entry, &ctr, false, EventType::Start, info)
                        {
                            span.in_scope(|| warn!(error = %e, "cannot record the owed start"));
                        }
                    }
                    self.settle_execs(&entry).await;
                    span.in_scope(
                        || info!(status = %exit.status.describe(), "exited while berthd was down"),
                    );
                    self.on_init_exit(&entry, 1, pid, exit).await;
                }
            }
        }
        Ok(())
    }

    /// The runtime's restore of each of `ids`, [`RESTORE_AT_ONCE`] at a
    /// time. Each one is round trips to a shim of its own (a hello, then a
    /// subscription), which wakes up to answer: in turn, 1,000 of them
    /// took seconds on a loaded machine. Their events wait in each task's
    /// channel until its watcher runs, so asking early loses none.
    async fn restore_tasks(&self, ids: Vec<String>) -> HashMap<String, Restored> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut set = tokio::task::JoinSet::new();
        let mut ids = ids.into_iter();
        loop {
            while set.len() < RESTORE_AT_ONCE {
                let Some(id) = ids.next() else { break };
                let runtime = self.inner.runtime.clone();
                let span = tracing::info_span!("container", id = %id);
                set.spawn(
                    async move {
                        let r = runtime.restore(&id).await;
                        (id, r)
                    }
                    .instrument(span),
                );
            }
            match set.join_next().await {
                Some(Ok((id, r))) => {
                    out.insert(id, r);
                }
                Some(Err(e)) => warn!(error = %e, "a container's restore task failed"),
                None => break,
            }
        }
        out
    }
}

/// How many containers [`Supervisor::restore`] reconnects to at once.
const RESTORE_AT_ONCE: usize = 32;

mod health;
mod update;
pub use update::Update;

#[cfg(test)]
mod tests;
