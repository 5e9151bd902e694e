//! The gRPC service: maps `berth.v1` requests onto the supervisor.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::v1;
use berth_core::container::{
    ContainerConfig, ContainerRecord, Source, DEFAULT_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT,
};
use berth_core::event::{Event, EventType, ObjectKind};
use berth_core::exit::{parse_signal, Exit, ExitStatus};
use berth_core::runtime::{
    AttachInput, AttachIo, AttachOptions, Output, OutputStream, RuntimeErrorKind, INIT_PROCESS,
};
use berth_core::spec::{self, SpecOptions};
use berth_core::{CreateParams, Error, RestartPolicy, Supervisor};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

use crate::images::{ImageError, Images, Prepared};
use crate::logs::{self, Follower, Record};
use crate::shim::RootfsProvider;
use crate::validate;

/// How often a follower looks for new output when its log cannot be watched.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// How long an attached `--rm` run waits for the removal after the exit.
const REMOVE_WAIT: Duration = Duration::from_secs(15);
/// The most bytes of output merged into one log entry.
const BATCH: usize = 64 * 1024;
/// The safety tick of a watched follower.
const FOLLOW_TICK: Duration = Duration::from_millis(500);

pub struct Service {
    sup: Supervisor,
    root: PathBuf,
    runtime: String,
    sampler: crate::stats::Sampler,
    images: Arc<Images>,
    /// The settings in force as TOML (`berth info`), kept current by
    /// reloads.
    config: Arc<std::sync::RwLock<String>>,
    net: Arc<crate::net::Net>,
    vols: Arc<crate::volumes::Volumes>,
    /// Image layers' sizes, computed once (`ps -s`, `system df`).
    sizes: Arc<crate::system::LayerSizes>,
    userns: Arc<crate::userns::Userns>,
}

impl Service {
    pub fn new(
        sup: Supervisor,
        root: PathBuf,
        runtime: String,
        images: Arc<Images>,
        net: Arc<crate::net::Net>,
        vols: Arc<crate::volumes::Volumes>,
    ) -> Self {
        let sampler = crate::stats::Sampler::new(sup.clone());
        crate::health::Checker::spawn(sup.clone(), root.clone());
        Self {
            sup,
            root,
            runtime,
            sampler,
            images,
            config: Arc::default(),
            net,
            vols,
            sizes: Arc::default(),
            userns: crate::userns::Userns::new(
                crate::userns::DEFAULT_POOL,
                crate::userns::Mode::Host,
            ),
        }
    }

    /// Attach over any stream of inputs (gRPC's, or the Docker API's):
    /// the first message is the setup.
    pub async fn attach_stream<S>(
        &self,
        mut inbound: S,
    ) -> Result<BoxStream<v1::AttachResponse>, Status>
    where
        S: Stream<Item = Result<v1::AttachInput, Status>> + Send + Unpin + 'static,
    {
        let setup = match inbound.next().await.transpose()? {
            Some(v1::AttachInput {
                kind: Some(v1::attach_input::Kind::Setup(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "the first Attach message must be an AttachSetup",
                ))
            }
        };
        let rec = self.sup.inspect(&setup.id).map_err(status)?;
        let size = setup.size.as_ref().map(tty_size);
        let opts = AttachOptions { stdin: setup.stdin };
        let (tx, rx) = mpsc::channel(64);
        let exec =
            setup.exec.is_some() || (!setup.process.is_empty() && setup.process != INIT_PROCESS);
        let (io, done): (AttachIo, BoxFuture<Result<Exit, Status>>) = if exec {
            let (exec_id, io) = match setup.exec {
                Some(mut e) => {
                    e.interactive = setup.stdin;
                    let process = exec_process(&rec, e, size)?;
                    // A client's exec: the runtime's cgroup attach of it
                    // comes a few ms from now (health checks' execs do
                    // not warm: nobody waits on them).
                    crate::cgroup::warm_attach();
                    let (exec_id, pid, io) = self
                        .sup
                        .exec_attached(&rec.id, process, Some(opts))
                        .await
                        .map_err(status)?;
                    let io = io.ok_or_else(|| Status::internal("the exec was not attached"))?;
                    let started = v1::AttachResponse {
                        kind: Some(v1::attach_response::Kind::Started(v1::ExecResponse {
                            exec_id: exec_id.clone(),
                            pid,
                        })),
                    };
                    let _ = tx.send(Ok(started)).await;
                    (exec_id, io)
                }
                None => {
                    let io = self
                        .sup
                        .attach(&rec.id, &setup.process, opts)
                        .await
                        .map_err(status)?;
                    if let Some((rows, cols)) = size {
                        let _ = io.input.send(AttachInput::Resize { rows, cols }).await;
                    }
                    (setup.process.clone(), io)
                }
            };
            let (sup, id) = (self.sup.clone(), rec.id.clone());
            let done = async move { sup.wait_exec(&id, &exec_id).await.map_err(status) };
            (io, Box::pin(done))
        } else {
            let (mut watch, io) = if setup.start {
                let (_, watch, io) = self
                    .sup
                    .start_attached(&rec.id, Some((opts, size)))
                    .await
                    .map_err(status)?;
                (watch, io)
            } else {
                let watch = self.sup.watch_exit(&rec.id).map_err(status)?;
                let io = self
                    .sup
                    .attach(&rec.id, INIT_PROCESS, opts)
                    .await
                    .map_err(status)?;
                if let Some((rows, cols)) = size {
                    let _ = io.input.send(AttachInput::Resize { rows, cols }).await;
                }
                (watch, Some(io))
            };
            let io = io.ok_or_else(|| Status::internal("the init was not attached"))?;
            let auto_remove = rec.config.auto_remove;
            let done = async move {
                let exit = watch
                    .wait(None)
                    .await
                    .ok_or_else(|| Status::internal("the exit watch ended"))?;
                // With --rm, report the exit once the container is gone, as
                // Docker does: the name is free when `run` returns.
                if auto_remove && !watch.wait_removed(REMOVE_WAIT).await {
                    tracing::warn!("--rm removal did not finish in time");
                }
                Ok(exit)
            };
            (io, Box::pin(done))
        };
        tokio::spawn(attach_session(io, inbound, done, tx));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// berthd's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a container that asks for nothing gets a user namespace of
    /// its own (berthd's `--userns auto`).
    pub fn userns_by_default(&self) -> bool {
        matches!(self.userns.mode(""), Ok(crate::userns::Mode::Auto { .. }))
    }

    /// The user namespace default and pool.
    pub fn with_userns(mut self, userns: Arc<crate::userns::Userns>) -> Self {
        self.userns = userns;
        self
    }

    /// The id range of a `--userns=auto` request (held by the lease until
    /// the container's record holds it), after refusing what cannot run
    /// in a user namespace of its own.
    fn userns_lease(
        &self,
        r: &v1::CreateRequest,
        mode: Option<&crate::net::Mode>,
    ) -> Result<Option<crate::userns::Lease>, Status> {
        use crate::userns::Mode as U;
        let U::Auto { size } = self.userns.mode(&r.userns)? else {
            return Ok(None);
        };
        let how = if r.userns.is_empty() {
            "berthd's default --userns=auto"
        } else {
            "--userns=auto"
        };
        if self.runtime == "embedded" && matches!(mode, Some(crate::net::Mode::Join(_))) {
            // libcontainer enters the new user namespace before it joins
            // the other container's network namespace, which belongs to
            // another user namespace: the kernel refuses that setns.
            return Err(Status::invalid_argument(format!(
                "--network container:ID cannot be used with {how} on the embedded runtime: start berthd with --runtime runc (or crun), or add --userns=host"
            )));
        }
        if !matches!(r.source, Some(v1::create_request::Source::Image(_))) {
            return Err(Status::invalid_argument(format!(
                "{how} needs an image (berth maps the image's files into the range): run an image, or add --userns=host for --rootfs and --bundle"
            )));
        }
        if r.privileged {
            return Err(Status::invalid_argument(format!(
                "--privileged cannot run in a user namespace ({how}): its root would not hold the host's devices and capabilities; add --userns=host"
            )));
        }
        if matches!(mode, Some(crate::net::Mode::Host)) {
            return Err(Status::invalid_argument(format!(
                "--network host cannot be used with {how}: the host's network namespace is not the container's user namespace's to administer; add --userns=host, or use another network"
            )));
        }
        if size > self.userns.pool().size {
            return Err(Status::invalid_argument(format!(
                "--userns=auto:size={size} is larger than berthd's whole pool ({} ids): ask for fewer",
                self.userns.pool().size
            )));
        }
        let in_use = self
            .sup
            .list(true)
            .iter()
            .filter_map(|rec| spec::IdRange::of_spec(&rec.spec))
            .collect::<Vec<_>>();
        self.userns.allocate(size, in_use).map(Some)
    }

    /// Where `berth info` reads the settings in force.
    pub fn with_config(mut self, config: Arc<std::sync::RwLock<String>>) -> Self {
        self.config = config;
        self
    }

    /// The create parameters of a request; for an image, its snapshot is
    /// made first (and released again if the parameters are refused).
    async fn params(
        &self,
        r: v1::CreateRequest,
    ) -> Result<(CreateParams, Option<crate::userns::Lease>), Status> {
        // Bad input is refused before anything is unpacked or mounted.
        validate::create(&r)?;
        // As early as a good request is known: the snapshot and the spec
        // come before the runtime's cgroup attach, and the grace period
        // passes during them.
        crate::cgroup::warm_attach();
        let mode = self.network_mode(&r)?;
        crate::mounts::requests(&r, &[])?;
        crate::mounts::shm_size(&r)?;
        let lease = self.userns_lease(&r, mode.as_ref())?;
        let shift = lease.as_ref().map(|l| berth_image::snapshot::IdShift {
            host: l.range.host,
            size: l.range.size,
        });
        let id = berth_core::id::generate_id().map_err(|e| Status::internal(e.to_string()))?;
        let prepared = match &r.source {
            Some(v1::create_request::Source::Image(name)) => {
                if !r.name.is_empty() {
                    // Refuse a bad name before any unpacking.
                    berth_core::id::validate_name(&r.name)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                }
                let (images, cid, name, platform) = (
                    self.images.clone(),
                    id.clone(),
                    name.clone(),
                    r.platform.clone(),
                );
                let p = tokio::task::spawn_blocking(move || {
                    images.prepare(&cid, &name, &platform, shift)
                })
                .await
                .map_err(|e| Status::internal(format!("preparing the image failed: {e}")))?
                .map_err(image_status)?;
                Some(p)
            }
            _ => None,
        };
        let res = create_params(
            id.clone(),
            r,
            prepared.as_ref(),
            mode.as_ref(),
            &self.net,
            &self.vols,
            lease.as_ref().map(|l| l.range),
        );
        if res.is_err() && prepared.is_some() {
            self.release(&id).await;
        }
        res.map(|p| (p, lease))
    }

    /// The network mode of a request, with a `container:` target looked up
    /// (it must be running, as Docker's); `None` for a bundle.
    fn network_mode(&self, r: &v1::CreateRequest) -> Result<Option<crate::net::Mode>, Status> {
        use crate::net::{Mode, ParsedMode};
        let flags = !r.network.is_empty()
            || !r.dns.is_empty()
            || !r.dns_search.is_empty()
            || !r.dns_option.is_empty()
            || !r.add_host.is_empty();
        if matches!(r.source, Some(v1::create_request::Source::Bundle(_))) {
            if flags {
                return Err(Status::invalid_argument(
                    "--network, --dns* and --add-host do not apply to a --bundle: set its config.json's namespaces and mounts",
                ));
            }
            return Ok(None);
        }
        Ok(Some(match crate::net::parse_mode(&r.network)? {
            ParsedMode::Default => self.net.default_mode(),
            ParsedMode::None => Mode::None,
            ParsedMode::Network(name) => {
                self.net
                    .network(&name)
                    .map_err(|e| Status::invalid_argument(e.message().to_string()))?;
                Mode::Network(name)
            }
            ParsedMode::Host => Mode::Host,
            ParsedMode::Container(key) => {
                let other = self.sup.inspect(&key).map_err(|e| {
                    Status::invalid_argument(format!("--network container:{key}: {e}"))
                })?;
                if other.pid <= 0 {
                    return Err(Status::invalid_argument(format!(
                        "--network container:{key}: the container is not running; start it first"
                    )));
                }
                let ns = other
                    .spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.namespaces().clone())
                    .unwrap_or_default()
                    .into_iter()
                    .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network);
                match ns {
                    // It shares the host's: so does this one.
                    None => Mode::Host,
                    Some(n) => {
                        let path = n.path().clone().unwrap_or_else(|| {
                            PathBuf::from(format!("/proc/{}/ns/net", other.pid))
                        });
                        if path == self.net.netns_path(&other.id) {
                            // A `none` container's namespace is its
                            // runtime's until another joins it.
                            self.net.pin_netns(&other.id, other.pid).map_err(|e| {
                                Status::internal(format!("--network container:{key}: {e}"))
                            })?;
                        }
                        Mode::Join(path)
                    }
                }
            }
        }))
    }

    /// Remove the anonymous volumes `spec` mounts that no container uses
    /// (after `rm -v`, or a create that failed).
    async fn remove_anonymous(&self, spec: &oci_spec::runtime::Spec) {
        let vols = self.vols.clone();
        let names: Vec<String> = spec
            .mounts()
            .iter()
            .flatten()
            .filter_map(|m| m.source().as_ref().and_then(|s| vols.name_of(s)))
            .collect();
        let users = crate::volumes_api::users(&vols, &self.sup);
        let _ = tokio::task::spawn_blocking(move || {
            for n in names {
                if users.contains_key(&n) {
                    continue;
                }
                if vols.get(&n).map(|r| r.anonymous).unwrap_or(false) {
                    if let Err(e) = vols.remove(&n, None) {
                        tracing::warn!(volume = %n, error = %e, "cannot remove an anonymous volume");
                    }
                }
            }
        })
        .await;
    }

    /// Release the snapshot and network settings made for a container that
    /// was not created.
    async fn release(&self, id: &str) {
        let (images, net, id) = (self.images.clone(), self.net.clone(), id.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            images.release(&id);
            net.release(&id);
        })
        .await;
    }

    /// `ps`'s PORTS of a running container, as Docker prints them.
    fn ports_column(&self, rec: &ContainerRecord) -> Vec<String> {
        if !rec.state.is_live() {
            return Vec::new();
        }
        self.net
            .ports_of(&rec.id)
            .iter()
            .map(|p| {
                let ip = if p.host_ip.is_empty() {
                    "0.0.0.0"
                } else {
                    &p.host_ip
                };
                format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
            })
            .collect()
    }

    fn log_path(&self, id: &str, process: &str) -> PathBuf {
        crate::shim::process_log(&self.root, id, process)
    }
}

/// Map a supervisor error to a gRPC status. The command-not-found and
/// not-executable cases carry the exit code the CLI must use.
pub fn status(e: Error) -> Status {
    let mut msg = e.to_string();
    // A message quotes what the client sent (an id, a name): keep it short
    // however long that was.
    if msg.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| msg.is_char_boundary(*i))
            .unwrap_or(0);
        msg.truncate(cut);
        msg.push('…');
    }
    match e {
        Error::NotFound(_) | Error::ProcessNotFound(..) => Status::not_found(msg),
        Error::Ambiguous(_) | Error::InvalidArgument(_) => Status::invalid_argument(msg),
        Error::NameInUse(..) => Status::already_exists(msg),
        Error::InvalidState(_) => Status::failed_precondition(msg),
        Error::Timeout(_) => Status::deadline_exceeded(msg),
        Error::Store(_) => Status::internal(msg),
        Error::Failed(_, exit) => {
            let code = match exit.status.code() {
                c @ 0..=255 => c,
                _ => 125,
            };
            let mut md = tonic::metadata::MetadataMap::new();
            if let Ok(v) = code.to_string().parse() {
                md.insert(berth_api::EXIT_CODE_METADATA, v);
            }
            Status::with_metadata(tonic::Code::FailedPrecondition, msg, md)
        }
        Error::Runtime(r) => {
            let code = match r.kind {
                RuntimeErrorKind::CommandNotFound => Some("127"),
                RuntimeErrorKind::CommandNotExecutable => Some("126"),
                _ => None,
            };
            match code {
                Some(code) => {
                    let mut md = tonic::metadata::MetadataMap::new();
                    md.insert(
                        berth_api::EXIT_CODE_METADATA,
                        tonic::metadata::MetadataValue::from_static(code),
                    );
                    Status::with_metadata(tonic::Code::FailedPrecondition, msg, md)
                }
                None => match r.kind {
                    RuntimeErrorKind::InvalidState => Status::failed_precondition(msg),
                    RuntimeErrorKind::NotFound => Status::not_found(msg),
                    _ => Status::internal(msg),
                },
            }
        }
    }
}

/// Map an image error to a gRPC status (NOT_FOUND keeps Docker's text).
pub fn image_status(e: ImageError) -> Status {
    let msg = e.to_string();
    match e {
        ImageError::NotFound(_) => Status::not_found(msg),
        ImageError::Invalid(_) => Status::invalid_argument(msg),
        ImageError::InUse(_) => Status::failed_precondition(msg),
        ImageError::Failed(_) => Status::internal(msg),
    }
}

pub fn exit_proto(e: &Exit) -> v1::ExitStatus {
    let (kind, signal, reason) = match &e.status {
        ExitStatus::Exited { .. } => (v1::exit_status::Kind::Exited, 0, String::new()),
        ExitStatus::Signaled { signal } => (
            v1::exit_status::Kind::Signaled,
            *signal,
            e.status.describe(),
        ),
        ExitStatus::Unknown { reason } => (v1::exit_status::Kind::Unknown, 0, reason.clone()),
    };
    v1::ExitStatus {
        kind: kind as i32,
        exit_code: e.status.code(),
        signal,
        reason,
        exited_at: e.at.clone(),
    }
}

/// A container for Inspect: everything, its configuration included.
fn container_proto(rec: &ContainerRecord, log_path: &Path) -> v1::Container {
    let config = serde_json::json!({ "config": rec.config, "spec": rec.spec });
    v1::Container {
        config_json: config.to_string(),
        ..container_fields(rec, log_path)
    }
}

/// A container for List: `config_json` in its slim form.
fn container_summary(rec: &ContainerRecord, log_path: &Path) -> v1::Container {
    v1::Container {
        config_json: slim_config(rec).to_string(),
        ..container_fields(rec, log_path)
    }
}

/// The configuration a listing shows (the Docker API's `ps` reads the
/// network mode from the namespaces and the mounts): the options and the
/// spec's mounts and namespaces, not the whole spec (with its seccomp
/// filter ~25 KB a container, ~25 MB for a `ps` of 1,000).
fn slim_config(rec: &ContainerRecord) -> serde_json::Value {
    let namespaces = rec
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone());
    serde_json::json!({
        "config": rec.config,
        "spec": {
            "mounts": rec.spec.mounts(),
            "linux": { "namespaces": namespaces },
        },
    })
}

/// A container's fields but `config_json`.
fn container_fields(rec: &ContainerRecord, log_path: &Path) -> v1::Container {
    v1::Container {
        id: rec.id.clone(),
        name: rec.name.clone(),
        state: rec.state.as_str().to_string(),
        pid: rec.pid,
        exit: rec.exit.as_ref().map(exit_proto),
        created_at: rec.created_at.clone(),
        started_at: rec.started_at.clone().unwrap_or_default(),
        finished_at: rec.finished_at.clone().unwrap_or_default(),
        oom_killed: rec.exit.as_ref().is_some_and(|e| e.oom_killed),
        restart_count: rec.restart_count,
        image: rec
            .config
            .source
            .image()
            .map(|i| i.reference.clone())
            .unwrap_or_default(),
        image_id: rec
            .config
            .source
            .image()
            .map(|i| i.id.clone())
            .unwrap_or_default(),
        command: rec.command(),
        config_json: String::new(),
        log_path: log_path.display().to_string(),
        labels: rec.config.labels.clone().into_iter().collect(),
        auto_remove: rec.config.auto_remove,
        restarting: rec.restarting,
        tty: rec
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false),
        interactive: rec.config.open_stdin,
        resources_json: crate::resources::summary_json(&rec.spec),
        health: rec
            .health
            .as_ref()
            .filter(|_| rec.state.is_live())
            .map(|h| h.status.as_str().to_string())
            .unwrap_or_default(),
        health_json: rec
            .health
            .as_ref()
            .and_then(|h| serde_json::to_string(h).ok())
            .unwrap_or_default(),
        size_rw: None,
        size_root_fs: None,
        ports: Vec::new(),
        network_json: String::new(),
    }
}

fn event_proto(ev: &Event) -> v1::Event {
    v1::Event {
        seq: ev.seq,
        time: ev.time.clone(),
        r#type: ev.kind.as_str().to_string(),
        container: ev.container.clone(),
        process: ev.process.clone(),
        pid: ev.pid,
        exit_code: ev.exit_code,
        missed: ev.missed,
        name: ev.name.clone(),
        status: ev.status.clone(),
        old_name: ev.old_name.clone(),
        object: ev.object.as_str().to_string(),
        attributes: ev
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn entry_proto(r: Record) -> v1::LogEntry {
    v1::LogEntry {
        stream: match r.stream {
            logs::Stream::Stdout => v1::log_entry::Stream::Stdout as i32,
            logs::Stream::Stderr => v1::log_entry::Stream::Stderr as i32,
        },
        data: r.data,
        time: r.time,
    }
}

/// Records as entries: with `merge`, runs of records of the same stream
/// become one entry (up to [`BATCH`] bytes; the time is the first record's),
/// which saves a message per line when the client needs no per-line times.
fn entries(records: Vec<Record>, merge: bool) -> Vec<v1::LogEntry> {
    let mut out: Vec<v1::LogEntry> = Vec::new();
    for r in records {
        let e = entry_proto(r);
        match out.last_mut() {
            Some(last)
                if merge && last.stream == e.stream && last.data.len() + e.data.len() <= BATCH =>
            {
                last.data.extend_from_slice(&e.data);
            }
            _ => out.push(e),
        }
    }
    out
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A point in the event stream: a sequence number or a time.
#[derive(Debug, Clone, Copy)]
enum Point {
    Seq(u64),
    Time(SystemTime),
}

fn parse_point(s: &str, what: &str) -> Result<Option<Point>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Some(Point::Seq(n)));
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| Some(Point::Time(t)))
        .map_err(|_| {
            Status::invalid_argument(format!(
                "{what} {s:?} is neither a sequence number nor an RFC 3339 time (like 2026-01-02T15:04:05Z)"
            ))
        })
}

/// A time bound of `logs` (a time only: records have no sequence number).
fn log_time(s: &str, flag: &str) -> Result<Option<SystemTime>, Status> {
    match parse_point(s, flag)? {
        None => Ok(None),
        Some(Point::Time(t)) => Ok(Some(t)),
        Some(Point::Seq(_)) => Err(Status::invalid_argument(format!(
            "{flag} for logs takes an RFC 3339 time"
        ))),
    }
}

fn event_time(ev: &Event) -> SystemTime {
    humantime::parse_rfc3339(&ev.time).unwrap_or(SystemTime::UNIX_EPOCH)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Validate a create request and build the spec and options it asks for:
/// for a rootfs, a bundle, or an image whose snapshot was `prepared` for
/// this `id`.
pub(crate) fn create_params(
    id: String,
    r: v1::CreateRequest,
    prepared: Option<&Prepared>,
    network: Option<&crate::net::Mode>,
    net: &crate::net::Net,
    vols: &crate::volumes::Volumes,
    userns: Option<spec::IdRange>,
) -> Result<CreateParams, Status> {
    let image_only = r.entrypoint.is_some() || !r.platform.is_empty();
    if image_only && prepared.is_none() {
        return Err(Status::invalid_argument(
            "--entrypoint and --platform apply to images only: drop them with --rootfs or --bundle",
        ));
    }
    if !r.name.is_empty() {
        berth_core::id::validate_name(&r.name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let cgroups_path = format!("/berth/{id}");
    let image_volumes = prepared.map(|p| p.volumes.clone()).unwrap_or_default();
    let mount_reqs = crate::mounts::requests(&r, &image_volumes)?;
    let shm_size = crate::mounts::shm_size(&r)?;
    let limits = crate::resources::create_limits(&r)?;
    let requested = requested_security(&r);
    let mut labels: std::collections::BTreeMap<String, String> =
        r.labels.clone().into_iter().collect();
    let mut stop_signal_name = r.stop_signal.clone();
    let mut image_health = None;
    let mut exposed_ports = Vec::new();
    let (spec, source) = match r.source.clone() {
        Some(v1::create_request::Source::Image(name)) => {
            let Some(p) = prepared else {
                return Err(Status::internal(format!(
                    "image {name} was not prepared for the container"
                )));
            };
            let img = &p.defaults;
            let args = spec::image::command(img, r.entrypoint.as_deref(), &r.args);
            if args.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "no command specified: image {name} has no Entrypoint or Cmd; give the command after the image"
                )));
            }
            let rootfs = p.source.rootfs.clone();
            let (passwd, group) = spec::read_user_db(&rootfs);
            let security = spec::SecurityOptions {
                host: host_info(),
                ..requested
            };
            let opts = SpecOptions {
                rootfs,
                args,
                env: spec::image::env(img, &r.env),
                cwd: spec::image::or_image(&r.workdir, &img.workdir),
                user: spec::image::or_image(&r.user, &img.user),
                hostname: opt(r.hostname.clone()),
                readonly_rootfs: r.read_only,
                terminal: r.tty,
                cgroups_path: cgroups_path.clone(),
                id: id.clone(),
                limits,
                security,
                userns,
            };
            let mut spec = spec::generate(&opts, passwd.as_deref(), group.as_deref())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let extra = crate::mounts::resolve(&opts.rootfs, &mount_reqs, vols)?;
            if let Some(range) = userns {
                crate::userns::own_new_volumes(&extra, vols, range)?;
                if let Some(method) = p.userns_method {
                    let mut a = spec.annotations().clone().unwrap_or_default();
                    a.insert(
                        crate::userns::ROOTFS_ANNOTATION.into(),
                        method.as_str().into(),
                    );
                    spec.set_annotations(Some(a));
                }
            }
            crate::mounts::apply(&mut spec, extra, shm_size)?;
            labels = spec::image::labels(img, labels);
            if stop_signal_name.is_empty() {
                stop_signal_name = img.stop_signal.clone().unwrap_or_default();
            }
            image_health = img.healthcheck.clone();
            exposed_ports = img.exposed_ports.clone();
            (spec, Source::Image(p.source.clone()))
        }
        Some(v1::create_request::Source::Rootfs(p)) => {
            let rootfs = PathBuf::from(&p);
            if !rootfs.is_absolute() {
                return Err(Status::invalid_argument(format!(
                    "rootfs {p:?} is not an absolute path"
                )));
            }
            if !rootfs.is_dir() {
                return Err(Status::invalid_argument(format!(
                        "rootfs {p} is not a directory: give the directory that holds the container's root filesystem"
                    )));
            }
            if r.args.is_empty() {
                return Err(Status::invalid_argument(
                        "no command given: add the command to run after the rootfs, e.g. /bin/sh -c 'echo hi'",
                    ));
            }
            let (passwd, group) = spec::read_user_db(&rootfs);
            let security = spec::SecurityOptions {
                host: host_info(),
                ..requested
            };
            let opts = SpecOptions {
                rootfs: rootfs.clone(),
                args: r.args.clone(),
                env: r.env.clone(),
                cwd: opt(r.workdir.clone()),
                user: opt(r.user.clone()),
                hostname: opt(r.hostname.clone()),
                readonly_rootfs: r.read_only,
                terminal: r.tty,
                cgroups_path: cgroups_path.clone(),
                id: id.clone(),
                limits,
                security,
                userns: None,
            };
            let mut spec = spec::generate(&opts, passwd.as_deref(), group.as_deref())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let extra = crate::mounts::resolve(&opts.rootfs, &mount_reqs, vols)?;
            crate::mounts::apply(&mut spec, extra, shm_size)?;
            (spec, Source::Rootfs(rootfs))
        }
        Some(v1::create_request::Source::Bundle(b)) => {
            if requested != spec::SecurityOptions::default() {
                return Err(Status::invalid_argument(
                    "security flags (--cap-add, --privileged, --security-opt, --device, --group-add, --sysctl, --ulimit, --oom-score-adj) do not apply to a --bundle: set them in its config.json",
                ));
            }
            if !limits.is_empty() {
                return Err(Status::invalid_argument(
                    "resource limits (--memory, --cpus, ...) do not apply to a --bundle: set linux.resources in its config.json",
                ));
            }
            if !mount_reqs.is_empty() || shm_size.is_some() {
                return Err(Status::invalid_argument(
                    "mounts (-v, --mount, --tmpfs, --shm-size) do not apply to a --bundle: set mounts in its config.json",
                ));
            }
            let bundle = PathBuf::from(&b);
            let config = bundle.join("config.json");
            let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| {
                Status::invalid_argument(format!(
                    "cannot read the OCI spec {}: {e}",
                    config.display()
                ))
            })?;
            let args = (!r.args.is_empty()).then(|| r.args.clone());
            let mut spec = spec::adapt_bundle(spec, &bundle, &cgroups_path, args)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if r.tty {
                if let Some(mut process) = spec.process().clone() {
                    process.set_terminal(Some(true));
                    spec.set_process(Some(process));
                }
            }
            (spec, Source::Bundle(bundle))
        }
        None => {
            return Err(Status::invalid_argument(
                "no root filesystem: give an image, --rootfs DIR or --bundle DIR",
            ))
        }
    };
    crate::resources::check_spec(&spec)?;
    let mut spec = crate::resources::with_init(r.init, spec, &source)?;
    let stop_signal = if stop_signal_name.is_empty() {
        DEFAULT_STOP_SIGNAL
    } else {
        parse_signal(&stop_signal_name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "invalid stop signal {stop_signal_name:?}: use a name like SIGTERM or a number",
            ))
        })?
    };
    let config = ContainerConfig {
        source,
        auto_remove: r.auto_remove,
        labels,
        stop_signal,
        stop_timeout: r.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
        log_max_size: r.log_max_size,
        log_max_files: r.log_max_files,
        restart: r
            .restart
            .parse::<RestartPolicy>()
            .map_err(Status::invalid_argument)?,
        open_stdin: r.interactive,
        // The flags' health check, else the image's.
        health: match crate::resources::health_config(r.health.as_ref())? {
            Some(h) => Some(h),
            None => image_health,
        },
        exposed_ports,
    };
    // Last, once nothing else can refuse the request: the plan is a file.
    if let Some(mode) = network {
        net.apply_and_save(&id, mode, &r, &config.exposed_ports, &mut spec)?;
    }
    Ok(CreateParams {
        id,
        name: opt(r.name),
        spec,
        config,
    })
}

/// The security flags as asked for (and a default host: compare with
/// `SecurityOptions::default()` to see whether any flag was given).
fn requested_security(r: &v1::CreateRequest) -> spec::SecurityOptions {
    spec::SecurityOptions {
        cap_add: r.cap_add.clone(),
        cap_drop: r.cap_drop.clone(),
        privileged: r.privileged,
        security_opt: r.security_opt.clone(),
        devices: r.devices.clone(),
        group_add: r.group_add.clone(),
        sysctls: r.sysctls.clone().into_iter().collect(),
        ulimits: r.ulimits.clone(),
        oom_score_adj: r.oom_score_adj,
        host: spec::HostInfo::default(),
    }
}

/// What berthd can grant (its capabilities, rlimits, oom score), read once:
/// none of it changes while the daemon runs.
fn host_info() -> spec::HostInfo {
    static HOST: std::sync::OnceLock<spec::HostInfo> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let mut h = spec::HostInfo::current();
        h.seccomp.x32_abi = x32_abi();
        h
    })
    .clone()
}

/// Whether the kernel runs x32 syscalls: getpid with the x32 bit set
/// answers a pid, or ENOSYS where the ABI is compiled out or disabled
/// (`syscall.x32=n`).
#[cfg(target_arch = "x86_64")]
fn x32_abi() -> bool {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: getpid takes no arguments and touches no memory; with the x32
    // bit it is either that same getpid or an unknown syscall (ENOSYS).
    let r = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
    r > 0
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_abi() -> bool {
    false
}

/// The process of an exec: the container's own, with the request's
/// options applied (user names resolved in the container's rootfs).
fn exec_process(
    rec: &ContainerRecord,
    r: v1::ExecRequest,
    console_size: Option<(u16, u16)>,
) -> Result<oci_spec::runtime::Process, Status> {
    validate::process(&r.args, &r.env)?;
    for (field, v) in [("workdir", &r.workdir), ("user", &r.user)] {
        if v.len() > validate::MAX_PATH {
            return Err(Status::invalid_argument(format!(
                "{field} is {} bytes: at most {}",
                v.len(),
                validate::MAX_PATH
            )));
        }
    }
    let rootfs = rec
        .spec
        .root()
        .as_ref()
        .map(|root| root.path().clone())
        .unwrap_or_default();
    let (passwd, group) = spec::read_user_db(&rootfs);
    let base = rec.spec.process().clone().unwrap_or_default();
    spec::exec_process(
        &base,
        &spec::ExecOptions {
            args: r.args,
            env: r.env,
            cwd: opt(r.workdir),
            user: opt(r.user),
            terminal: r.tty,
            console_size,
        },
        passwd.as_deref(),
        group.as_deref(),
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A terminal size from the API, clamped to what a tty holds.
fn tty_size(s: &v1::TtySize) -> (u16, u16) {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    (clamp(s.rows), clamp(s.cols))
}

fn output_proto(o: Output) -> v1::AttachResponse {
    let stream = match o.stream {
        OutputStream::Stdout => v1::log_entry::Stream::Stdout,
        OutputStream::Stderr => v1::log_entry::Stream::Stderr,
    };
    v1::AttachResponse {
        kind: Some(v1::attach_response::Kind::Output(v1::LogEntry {
            stream: stream as i32,
            data: o.data,
            time: String::new(),
        })),
    }
}

#[tonic::async_trait]
impl berth_api::Containers for Service {
    async fn create(
        &self,
        req: Request<v1::CreateRequest>,
    ) -> Result<Response<v1::CreateResponse>, Status> {
        let (params, lease) = self.params(req.into_inner()).await?;
        let id = params.id.clone();
        let spec = params.spec.clone();
        let created = self.sup.create(params).await;
        // The record holds the range now (or the create failed).
        drop(lease);
        match created {
            Ok(id) => Ok(Response::new(v1::CreateResponse { id })),
            Err(e) => {
                self.release(&id).await;
                self.remove_anonymous(&spec).await;
                Err(status(e))
            }
        }
    }

    async fn run_to_completion(
        &self,
        req: Request<v1::CreateRequest>,
    ) -> Result<Response<v1::WaitResponse>, Status> {
        let (params, lease) = self.params(req.into_inner()).await?;
        // In a task of its own, so that the container is torn down even if
        // the client goes away before it exits.
        let sup = self.sup.clone();
        let images = self.images.clone();
        let net = self.net.clone();
        let exit = tokio::spawn(async move {
            let id = params.id.clone();
            let res = sup.run_to_completion(params, None).await;
            drop(lease);
            // Removed with the container; a create that failed left it.
            let _ = tokio::task::spawn_blocking(move || {
                images.release(&id);
                net.release(&id);
            })
            .await;
            res
        })
        .await
        .map_err(|e| Status::internal(format!("run to completion: {e}")))?
        .map_err(status)?;
        Ok(Response::new(v1::WaitResponse {
            exit: Some(exit_proto(&exit)),
        }))
    }

    async fn start(
        &self,
        req: Request<v1::StartRequest>,
    ) -> Result<Response<v1::StartResponse>, Status> {
        let (pid, _) = self.sup.start(&req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(v1::StartResponse { pid }))
    }

    async fn list(
        &self,
        req: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let r = req.into_inner();
        if !r.size {
            // Each record mapped where it is, with the slim configuration
            // only if asked: a copy of every record and its whole spec per
            // `ps` did not scale to 1,000 containers.
            let containers = self.sup.list_with(r.all, |rec| {
                let log = self.log_path(&rec.id, "");
                let mut c = if r.config {
                    container_summary(rec, &log)
                } else {
                    container_fields(rec, &log)
                };
                c.ports = self.ports_column(rec);
                c
            });
            return Ok(Response::new(v1::ListResponse { containers }));
        }
        let records = self.sup.list(r.all);
        let mut containers: Vec<v1::Container> = records
            .iter()
            .map(|rec| {
                let log = self.log_path(&rec.id, "");
                let mut c = if r.config {
                    container_summary(rec, &log)
                } else {
                    container_fields(rec, &log)
                };
                c.ports = self.ports_column(rec);
                c
            })
            .collect();
        {
            let (images, sizes) = (self.images.clone(), self.sizes.clone());
            let found = tokio::task::spawn_blocking(move || {
                let layers = sizes.all(&images);
                let by_id = crate::system::image_sizes(&images, &layers);
                records
                    .iter()
                    .map(|rec| crate::system::container_sizes(&images, &by_id, rec))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| Status::internal(format!("sizing containers: {e}")))?;
            for (c, (rw, root)) in containers.iter_mut().zip(found) {
                c.size_rw = Some(rw);
                c.size_root_fs = Some(root);
            }
        }
        Ok(Response::new(v1::ListResponse { containers }))
    }

    async fn inspect(
        &self,
        req: Request<v1::InspectRequest>,
    ) -> Result<Response<v1::InspectResponse>, Status> {
        let rec = self.sup.inspect(&req.into_inner().id).map_err(status)?;
        let mut c = container_proto(&rec, &self.log_path(&rec.id, ""));
        c.ports = self.ports_column(&rec);
        c.network_json = self.net.settings_json(&rec.id);
        Ok(Response::new(v1::InspectResponse { container: Some(c) }))
    }

    async fn wait(
        &self,
        req: Request<v1::WaitRequest>,
    ) -> Result<Response<v1::WaitResponse>, Status> {
        let r = req.into_inner();
        let exit = if r.process.is_empty() && r.removed {
            let mut w = self.sup.watch_exit(&r.id).map_err(status)?;
            let exit = w
                .wait(None)
                .await
                .ok_or_else(|| Status::internal("the exit watch ended"))?;
            // An --rm removal follows the exit at once; anyone else's rm
            // may take as long as the client cares to wait.
            let bound = if w.record().config.auto_remove {
                REMOVE_WAIT
            } else {
                Duration::from_secs(365 * 24 * 3600)
            };
            if !w.wait_removed(bound).await {
                tracing::warn!("wait for the removal: it did not happen in time");
            }
            Ok(exit)
        } else if r.process.is_empty() {
            self.sup.wait(&r.id).await
        } else {
            self.sup.wait_exec(&r.id, &r.process).await
        }
        .map_err(status)?;
        Ok(Response::new(v1::WaitResponse {
            exit: Some(exit_proto(&exit)),
        }))
    }

    async fn kill(
        &self,
        req: Request<v1::KillRequest>,
    ) -> Result<Response<v1::KillResponse>, Status> {
        let r = req.into_inner();
        let signal = if r.signal.is_empty() {
            9
        } else {
            parse_signal(&r.signal).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "invalid signal {:?}: use a name like KILL or SIGTERM, or a number from 1 to 64",
                    r.signal
                ))
            })?
        };
        if r.process.is_empty() || r.process == berth_core::runtime::INIT_PROCESS {
            self.sup.kill(&r.id, signal, r.all).await.map_err(status)?;
        } else {
            self.sup
                .kill_exec(&r.id, &r.process, signal)
                .await
                .map_err(status)?;
        }
        Ok(Response::new(v1::KillResponse {}))
    }

    async fn stop(
        &self,
        req: Request<v1::StopRequest>,
    ) -> Result<Response<v1::StopResponse>, Status> {
        let r = req.into_inner();
        let exit = self
            .sup
            .stop(&r.id, r.timeout.map(|s| Duration::from_secs(u64::from(s))))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::StopResponse {
            exit: Some(exit_proto(&exit)),
        }))
    }

    async fn pause(
        &self,
        req: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseResponse>, Status> {
        self.sup.pause(&req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(v1::PauseResponse {}))
    }

    async fn resume(
        &self,
        req: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::ResumeResponse>, Status> {
        self.sup
            .resume(&req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ResumeResponse {}))
    }

    async fn exec(
        &self,
        req: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        let r = req.into_inner();
        if r.interactive {
            return Err(Status::invalid_argument(
                "an exec's stdin is written through Attach: a detached exec cannot be interactive",
            ));
        }
        let rec = self.sup.inspect(&r.id).map_err(status)?;
        let process = exec_process(&rec, r, None)?;
        crate::cgroup::warm_attach();
        let (exec_id, pid) = self.sup.exec(&rec.id, process).await.map_err(status)?;
        Ok(Response::new(v1::ExecResponse { exec_id, pid }))
    }

    async fn delete(
        &self,
        req: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let r = req.into_inner();
        let rec = self.sup.inspect(&r.id).map_err(status)?;
        self.sup.delete(&r.id, r.force).await.map_err(status)?;
        if r.volumes {
            self.remove_anonymous(&rec.spec).await;
        }
        Ok(Response::new(v1::DeleteResponse {}))
    }
    type LogsStream = BoxStream<v1::LogEntry>;

    async fn logs(
        &self,
        req: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        // The exec id becomes a file name: never a path.
        validate::process_id(&r.process)?;
        let rec = self.sup.inspect(&r.id).map_err(status)?;
        let path = self.log_path(&rec.id, &r.process);
        let since = log_time(&r.since, "--since")?;
        let until = log_time(&r.until, "--until")?;
        let filter = logs::Filter {
            since,
            tail: r.tail.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            until,
        };
        let (records, mut follower) = logs::open_log(&path, &filter).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Status::not_found(format!("no output recorded for process {:?}", r.process))
            } else {
                Status::internal(format!("reading {}: {e}", path.display()))
            }
        })?;
        let (tx, rx) = mpsc::channel(64);
        let sup = self.sup.clone();
        let id = rec.id.clone();
        let merge = !r.timestamps;
        tokio::spawn(async move {
            for e in entries(records, merge) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if !r.follow {
                return;
            }
            let process = r.process.clone();
            let done = async {
                if process.is_empty() {
                    if let Ok(mut w) = sup.watch_exit(&id) {
                        w.wait(None).await;
                    }
                } else {
                    let _ = sup.wait_exec(&id, &process).await;
                }
            };
            let live = logs::Filter {
                tail: None,
                ..filter
            };
            follow(&mut follower, done, &live, merge, |e| {
                let tx = tx.clone();
                async move { tx.send(Ok(e)).await.is_ok() }
            })
            .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type AttachStream = BoxStream<v1::AttachResponse>;

    async fn attach(
        &self,
        req: Request<Streaming<v1::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.attach_stream(req.into_inner())
            .await
            .map(Response::new)
    }

    type EventsStream = BoxStream<v1::Event>;

    async fn events(
        &self,
        req: Request<v1::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let r = req.into_inner();
        let since = parse_point(&r.since, "--since")?;
        let until = parse_point(&r.until, "--until")?;
        let mut types = Vec::new();
        for t in &r.types {
            types.push(t.parse::<EventType>().map_err(Status::invalid_argument)?);
        }
        let mut objects = Vec::new();
        for o in &r.objects {
            objects.push(o.parse::<ObjectKind>().map_err(Status::invalid_argument)?);
        }
        // A container filter may name a container that is gone: then match
        // the literal against ids and names in the events.
        let containers: Vec<String> = r
            .containers
            .iter()
            .map(|c| self.sup.resolve(c).unwrap_or_else(|_| c.clone()))
            .collect();
        let bus = self.sup.events().clone();
        let mut sub = match since {
            None => bus.subscribe(bus.last_seq()),
            Some(Point::Seq(n)) => bus.subscribe(n),
            Some(Point::Time(_)) => bus.subscribe(0),
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let matches = |ev: &Event| {
                if let Some(Point::Time(t)) = since {
                    if ev.kind != EventType::Missed && event_time(ev) < t {
                        return false;
                    }
                }
                (types.is_empty() || types.contains(&ev.kind) || ev.kind == EventType::Missed)
                    && ev.is_of(&objects)
                    && (containers.is_empty()
                        || ev.kind == EventType::Missed
                        || containers.iter().any(|c| {
                            if ev.object.is_container() {
                                ev.container.starts_with(c.as_str()) || ev.name == *c
                            } else {
                                // A network event names its container in
                                // the attributes; others have none.
                                ev.attributes
                                    .get("container")
                                    .is_some_and(|x| x.starts_with(c.as_str()))
                            }
                        }))
            };
            let past_until = |ev: &Event| match until {
                Some(Point::Seq(n)) => ev.seq > n,
                Some(Point::Time(t)) => ev.kind != EventType::Missed && event_time(ev) > t,
                None => false,
            };
            let mut held_missed: Option<Event> = None;
            loop {
                let ev = match sub.try_next() {
                    Some(ev) => ev,
                    None => {
                        // Caught up: an `until` in the past ends the stream.
                        let ended = match until {
                            Some(Point::Seq(n)) => n <= bus.last_seq(),
                            Some(Point::Time(t)) => t <= SystemTime::now(),
                            None => false,
                        };
                        if ended {
                            return;
                        }
                        let deadline = match until {
                            Some(Point::Time(t)) => {
                                t.duration_since(SystemTime::now()).unwrap_or_default()
                            }
                            _ => Duration::from_secs(365 * 24 * 3600),
                        };
                        tokio::select! {
                            ev = sub.next() => match ev {
                                Some(ev) => ev,
                                None => return,
                            },
                            _ = tokio::time::sleep(deadline) => return,
                            _ = tx.closed() => return,
                        }
                    }
                };
                if past_until(&ev) {
                    return;
                }
                if let Some(Point::Time(t)) = since {
                    // Replaying from a time: a `missed` record matters only
                    // if what follows it is already past that time (else
                    // everything dropped was older than asked for).
                    if ev.kind == EventType::Missed {
                        held_missed = Some(ev);
                        continue;
                    }
                    if let Some(m) = held_missed.take() {
                        if event_time(&ev) > t && tx.send(Ok(event_proto(&m))).await.is_err() {
                            return;
                        }
                    }
                }
                if matches(&ev) && tx.send(Ok(event_proto(&ev))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn version(
        &self,
        _req: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        Ok(Response::new(v1::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            runtime: self.runtime.clone(),
            root: self.root.display().to_string(),
        }))
    }

    async fn top(&self, req: Request<v1::TopRequest>) -> Result<Response<v1::TopResponse>, Status> {
        let r = req.into_inner();
        let rec = self.sup.inspect(&r.id).map_err(status)?;
        if !matches!(
            rec.state,
            berth_core::container::State::Running | berth_core::container::State::Paused
        ) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running (state: {}): start it first",
                rec.name,
                rec.state.as_str()
            )));
        }
        let path = rec
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .ok_or_else(|| Status::internal(format!("container {} has no cgroup", rec.name)))?;
        let pids = crate::cgroup::host().procs(&path).map_err(|e| {
            Status::internal(format!("reading container {}'s processes: {e}", rec.name))
        })?;
        Ok(Response::new(crate::system::top(&r.ps_args, &pids).await?))
    }

    async fn restart(
        &self,
        req: Request<v1::RestartRequest>,
    ) -> Result<Response<v1::RestartResponse>, Status> {
        let r = req.into_inner();
        let pid = self
            .sup
            .restart(&r.id, r.timeout.map(|s| Duration::from_secs(u64::from(s))))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::RestartResponse { pid }))
    }

    async fn rename(
        &self,
        req: Request<v1::RenameRequest>,
    ) -> Result<Response<v1::RenameResponse>, Status> {
        let r = req.into_inner();
        let before = self.sup.inspect(&r.id).ok();
        self.sup.rename(&r.id, &r.name).await.map_err(status)?;
        // Its name on its networks (DNS) follows at once.
        if let Some(rec) = before {
            let net = self.net.clone();
            let _ =
                tokio::task::spawn_blocking(move || net.rename(&rec.id, &rec.name, &r.name)).await;
        }
        Ok(Response::new(v1::RenameResponse {}))
    }

    async fn prune(
        &self,
        req: Request<v1::PruneContainersRequest>,
    ) -> Result<Response<v1::PruneContainersResponse>, Status> {
        let filters = crate::system::PruneFilters::parse(&req.into_inner().filters)?;
        let mut out = v1::PruneContainersResponse::default();
        for rec in self.sup.list(true) {
            if !crate::system::prunable(&rec) || !filters.matches(&rec) {
                continue;
            }
            let (images, id) = (self.images.clone(), rec.id.clone());
            let size =
                tokio::task::spawn_blocking(move || crate::system::container_size_rw(&images, &id))
                    .await
                    .unwrap_or(0);
            // One started or removed meanwhile is left alone (the delete
            // refuses a running one without force).
            match self.sup.delete(&rec.id, false).await {
                Ok(()) => {
                    out.deleted.push(rec.id.clone());
                    out.space_reclaimed += size;
                }
                Err(e) => tracing::info!(id = %rec.id, error = %e, "prune skipped a container"),
            }
        }
        Ok(Response::new(out))
    }

    async fn disk_usage(
        &self,
        _req: Request<v1::DiskUsageRequest>,
    ) -> Result<Response<v1::DiskUsageResponse>, Status> {
        let records = self.sup.list(true);
        let users = crate::volumes_api::users(&self.vols, &self.sup);
        let (images, sizes, vols, root) = (
            self.images.clone(),
            self.sizes.clone(),
            self.vols.clone(),
            self.root.clone(),
        );
        let usage = tokio::task::spawn_blocking(move || {
            crate::system::disk_usage(&images, &sizes, &vols, &records, &users, |rec| {
                container_summary(rec, &crate::shim::process_log(&root, &rec.id, ""))
            })
        })
        .await
        .map_err(|e| Status::internal(format!("disk usage: {e}")))??;
        Ok(Response::new(usage))
    }

    async fn update(
        &self,
        req: Request<v1::UpdateRequest>,
    ) -> Result<Response<v1::UpdateResponse>, Status> {
        let r = req.into_inner();
        let u = crate::resources::update_of(&r)?;
        self.sup
            .update(&r.id, u, |res| crate::cgroup::host().check(res))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::UpdateResponse {}))
    }

    type StatsStream = BoxStream<v1::StatsResponse>;

    async fn stats(
        &self,
        req: Request<v1::StatsRequest>,
    ) -> Result<Response<Self::StatsStream>, Status> {
        let rx = crate::stats::stream(&self.sampler, req.into_inner())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn info(
        &self,
        _req: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::InfoResponse>, Status> {
        let host = crate::cgroup::host();
        let all = self.sup.list(true);
        let count = |s: berth_core::container::State| {
            u32::try_from(all.iter().filter(|r| r.state == s).count()).unwrap_or(u32::MAX)
        };
        use berth_core::container::State;
        Ok(Response::new(v1::InfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            runtime: self.runtime.clone(),
            root: self.root.display().to_string(),
            cgroup: host.describe(),
            cgroup_controllers: host.controllers(),
            containers: u32::try_from(all.len()).unwrap_or(u32::MAX),
            running: count(State::Running),
            paused: count(State::Paused),
            stopped: count(State::Stopped) + count(State::Created),
            cpus: u32::try_from(host.cpus().len()).unwrap_or(u32::MAX),
            memory: crate::cgroup::host_memory(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            config: self
                .config
                .read()
                .map(|c| c.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
            storage_driver: match self.images.snaps.kind() {
                berth_image::snapshot::SnapshotterKind::Overlay => "overlay".into(),
                berth_image::snapshot::SnapshotterKind::Copy => "copy".into(),
            },
            images: u32::try_from(self.images.db.list().map(|l| l.len()).unwrap_or(0))
                .unwrap_or(u32::MAX),
            network_modes: ["bridge", "none", "host", "container:ID", "NAME"]
                .map(String::from)
                .to_vec(),
        }))
    }
}

/// Relay an attached client's input to the process and the process's
/// output to the client until the output ends; then send the exit status
/// (or the error that ended the wait). A client that goes away detaches:
/// dropping `io` closes the connection to the shim, and the process goes on.
async fn attach_session<S>(
    io: AttachIo,
    mut inbound: S,
    done: BoxFuture<Result<Exit, Status>>,
    tx: mpsc::Sender<Result<v1::AttachResponse, Status>>,
) where
    S: Stream<Item = Result<v1::AttachInput, Status>> + Send + Unpin + 'static,
{
    let AttachIo { input, mut output } = io;
    let mut reading = true;
    loop {
        tokio::select! {
            out = output.recv() => match out {
                Some(o) => {
                    if tx.send(Ok(output_proto(o))).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            msg = inbound.next(), if reading => match msg.transpose() {
                Ok(Some(v1::AttachInput { kind: Some(kind) })) => {
                    let to_process = match kind {
                        v1::attach_input::Kind::Stdin(data) => Some(AttachInput::Stdin(data)),
                        v1::attach_input::Kind::CloseStdin(true) => Some(AttachInput::CloseStdin),
                        v1::attach_input::Kind::Resize(s) => {
                            let (rows, cols) = tty_size(&s);
                            Some(AttachInput::Resize { rows, cols })
                        }
                        _ => None,
                    };
                    if let Some(m) = to_process {
                        // The process is gone when this fails; its output
                        // end comes next.
                        let _ = input.send(m).await;
                    }
                }
                Ok(Some(_)) => {}
                // The client sends nothing more; it still reads.
                Ok(None) => reading = false,
                // Cancelled: the client detached.
                Err(_) => return,
            },
            _ = tx.closed() => return,
        }
    }
    drop(input);
    let result = tokio::select! {
        r = done => r,
        _ = tx.closed() => return,
    };
    let msg = result.map(|exit| v1::AttachResponse {
        kind: Some(v1::attach_response::Kind::Exit(exit_proto(&exit))),
    });
    let _ = tx.send(msg).await;
}

/// Send what the follower reads until `done` resolves, then what is left
/// (the shim drains and flushes the output before it reports the exit),
/// and return `done`'s output; `None` when the receiver went away. Wakes
/// on changes to the log's files; a slow tick covers a watch that could
/// not be set up.
async fn follow<D, T, S, F>(
    follower: &mut Follower,
    done: D,
    filter: &logs::Filter,
    merge: bool,
    send: S,
) -> Option<T>
where
    D: std::future::Future<Output = T>,
    S: Fn(v1::LogEntry) -> F,
    F: std::future::Future<Output = bool>,
{
    tokio::pin!(done);
    let watch = match logs::LogWatch::new(follower.path()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch a log; polling it");
            None
        }
    };
    let tick = if watch.is_some() {
        FOLLOW_TICK
    } else {
        FOLLOW_POLL
    };
    let mut finished = None;
    let mut readable = true;
    loop {
        if readable {
            match follower.poll() {
                Ok(mut records) => {
                    records.retain(|r| filter.keep(r));
                    for e in entries(records, merge) {
                        if !send(e).await {
                            return None;
                        }
                    }
                }
                Err(e) => {
                    // Keep waiting for the end: the exit still matters.
                    tracing::warn!(error = %e, "reading a log");
                    readable = false;
                }
            }
        }
        if finished.is_some() {
            return finished;
        }
        let changed = async {
            match &watch {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = &mut done => finished = Some(out),
            _ = changed => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
