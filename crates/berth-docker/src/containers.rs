//! The container endpoints: create, start, stop, kill, pause, unpause,
//! wait, delete, inspect, list, logs, attach, resize, and exec.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use berth_api::v1;
use bollard_stubs::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerWaitExitError, ContainerWaitResponse,
    ExecConfig, ExecInspectResponse, ExecStartConfig, ProcessConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::Status;

use crate::backend::InputStream;
use crate::error::ApiError;
use crate::frames::{self, json_line, streamed, Escape, Scan};
use crate::inspect;
use crate::query::Query;
use crate::version::ApiVersion;
use crate::{Backend, BoxStream};

type Ctx = State<Arc<dyn Backend>>;
type Sess = Extension<Arc<Sessions>>;

/// The most bytes of JSON a request body may have.
const MAX_BODY: usize = 4 << 20;
/// Execs remembered (created or finished) before the oldest finished
/// ones are forgotten.
const MAX_EXECS: usize = 1024;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/{id}/json", get(inspect_one))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/exec", post(exec_create))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/resize", post(exec_resize))
        .route("/exec/{id}/json", get(exec_inspect))
        .layer(Extension(Arc::new(Sessions::default())))
}

// --- State the Docker API keeps beside berth's --------------------------

/// What Docker clients rely on that berth.v1 does not have as such: an
/// attach made before the start (it becomes the attached start), the live
/// attach inputs (for resizes sent on another connection), and execs that
/// exist before they run. In memory: lost when berthd restarts, as the
/// connections are.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Attaches to created containers, by container id, waiting for start.
    pending: HashMap<String, Vec<Pending>>,
    /// Live attach inputs of a container's init, by container id.
    inputs: HashMap<String, Vec<mpsc::Sender<v1::AttachInput>>>,
    execs: HashMap<String, Exec>,
    exec_order: Vec<String>,
}

/// How an attach gets its output: from the start that is yet to come,
/// or at once.
enum Mode {
    Pending(oneshot::Receiver<Result<BoxStream<v1::AttachResponse>, Status>>),
    Now(v1::AttachSetup, InputStream),
}

struct Pending {
    setup: v1::AttachSetup,
    rest: InputStream,
    reply: oneshot::Sender<Result<BoxStream<v1::AttachResponse>, Status>>,
}

#[derive(Clone)]
struct Exec {
    container: String,
    config: ExecConfig,
    /// berth's exec id once it runs.
    process: Option<String>,
    pid: i64,
    running: bool,
    exit_code: Option<i64>,
    input: Option<mpsc::Sender<v1::AttachInput>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_input(&self, id: &str, tx: mpsc::Sender<v1::AttachInput>) {
        let mut g = self.lock();
        let v = g.inputs.entry(id.to_string()).or_default();
        v.retain(|t| !t.is_closed());
        v.push(tx);
    }

    fn inputs_of(&self, id: &str) -> Vec<mpsc::Sender<v1::AttachInput>> {
        let mut g = self.lock();
        let v = g.inputs.entry(id.to_string()).or_default();
        v.retain(|t| !t.is_closed());
        v.clone()
    }

    fn update_exec(&self, id: &str, f: impl FnOnce(&mut Exec)) {
        if let Some(e) = self.lock().execs.get_mut(id) {
            f(e);
        }
    }

    fn forget(&self, container: &str) {
        let mut g = self.lock();
        g.pending.remove(container);
        g.inputs.remove(container);
    }
}

// --- Helpers ---------------------------------------------------------------

fn query(req_query: Option<&str>) -> Query {
    Query::parse(req_query)
}

async fn container(b: &Arc<dyn Backend>, id: &str) -> Result<v1::Container, ApiError> {
    let r = b.inspect(v1::InspectRequest { id: id.to_string() }).await?;
    r.container
        .ok_or_else(|| ApiError::internal("berthd answered without the container"))
}

fn not_running(c: &v1::Container) -> ApiError {
    ApiError::conflict(format!("container {} is not running", c.id))
}

fn is_live(c: &v1::Container) -> bool {
    matches!(c.state.as_str(), "running" | "paused")
}

fn json_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
}

async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn random_id() -> Result<String, ApiError> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| ApiError::internal(format!("cannot make an id: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The upgrade of a hijacked request, or Docker's 400 without one.
fn take_upgrade(req: &mut Request) -> Result<hyper::upgrade::OnUpgrade, ApiError> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !wants {
        return Err(ApiError::bad_request(
            "this endpoint hijacks the connection: send Connection: Upgrade and Upgrade: tcp",
        ));
    }
    Ok(hyper::upgrade::on(req))
}

fn upgraded_response(tty: bool) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(frames::content_type(tty)),
    );
    resp
}

fn output_bytes(tty: bool, e: &v1::LogEntry, timestamps: bool) -> Vec<u8> {
    let stream = if e.stream == v1::log_entry::Stream::Stderr as i32 {
        frames::STDERR
    } else {
        frames::STDOUT
    };
    if timestamps && !e.time.is_empty() {
        let mut data = format!("{} ", e.time).into_bytes();
        data.extend_from_slice(&e.data);
        frames::encode(tty, stream, &data)
    } else {
        frames::encode(tty, stream, &e.data)
    }
}

// --- Create, inspect, list ------------------------------------------------

async fn create(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let body: ContainerCreateBody = json_body(&read_body(req).await?)?;
    if body.image.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "no image given: set Image in the request body",
        ));
    }
    let wants_bridge = body
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        == Some("bridge");
    let has_bridge = if wants_bridge {
        b.info(v1::InfoRequest {})
            .await
            .map(|i| i.network_modes.iter().any(|m| m == "bridge"))
            .unwrap_or(false)
    } else {
        false
    };
    let (r, warnings) = crate::create::create_request(
        body,
        q.get("name").unwrap_or(""),
        q.get("platform").unwrap_or(""),
        has_bridge,
    );
    let id = b.create(r).await?.id;
    Ok((
        StatusCode::CREATED,
        Json(ContainerCreateResponse { id, warnings }),
    )
        .into_response())
}

async fn inspect_one(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let c = container(&b, &id).await?;
    Ok(Json(inspect::inspect(&c)).into_response())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `c` passes every filter (values of one key are alternatives).
fn matches_filters(
    c: &v1::Container,
    filters: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<bool, ApiError> {
    for (key, vals) in filters {
        if vals.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "id" => vals.iter().any(|v| c.id.starts_with(v.as_str())),
            "name" => vals
                .iter()
                .any(|v| c.name.contains(v.trim_start_matches('/'))),
            // Labels AND, as Docker's (compose asks for its project and
            // its one-off flag together).
            "label" => vals.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => c.labels.get(k).is_some_and(|x| x == val),
                None => c.labels.contains_key(v),
            }),
            "status" => {
                for v in vals {
                    if !matches!(
                        v.as_str(),
                        "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
                    ) {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter 'status={v}': use created, restarting, running, removing, paused, exited or dead"
                        )));
                    }
                }
                vals.iter().any(|v| v == inspect::docker_state(c))
            }
            "exited" => {
                let mut any = false;
                for v in vals {
                    let code: i64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid filter 'exited={v}': use an exit code"))
                    })?;
                    any |= inspect::docker_state(c) == "exited" && inspect::exit_code(c) == code;
                }
                any
            }
            "ancestor" => vals.iter().any(|v| {
                c.image == *v
                    || inspect::short_image(&c.image) == inspect::short_image(v)
                    || (v.len() >= 4 && c.image_id.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:")))
            }),
            "health" => vals.iter().any(|v| {
                let h = if c.health.is_empty() { "none" } else { c.health.as_str() };
                v == h
            }),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': berth's list takes id, name, label, status, exited, ancestor, health, before and since"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let limit = q.int("limit")?.filter(|n| *n > 0);
    let filters = q.filters()?;
    // A limit or a status filter lists stopped containers too, as Docker.
    let all = q.flag("all", false)
        || limit.is_some()
        || filters.contains_key("status")
        || filters.contains_key("exited");
    let size = q.flag("size", false);
    // before/since name a container: kept are those created before or
    // after it (Docker's list order is creation order).
    let mut bounds = Vec::new();
    for key in ["before", "since"] {
        for v in filters.get(key).into_iter().flatten() {
            let c = container(&b, v).await?;
            bounds.push((key == "before", c.created_at.clone(), c.id.clone()));
        }
    }
    let mut filters = filters;
    filters.remove("before");
    filters.remove("since");
    let mut cs = b
        .list(v1::ListRequest {
            all: all || !bounds.is_empty(),
            size,
            // The network mode and the mounts come from the configuration.
            config: true,
        })
        .await?
        .containers;
    let mut kept = Vec::new();
    for c in cs.drain(..) {
        let in_bounds = bounds.iter().all(|(before, t, id)| {
            c.id != *id
                && if *before {
                    c.created_at < *t
                } else {
                    c.created_at > *t
                }
        });
        if in_bounds && matches_filters(&c, &filters)? {
            kept.push(c);
        }
    }
    // Newest first.
    kept.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    if let Some(n) = limit {
        kept.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let now = now_secs();
    let out: Vec<_> = kept
        .iter()
        .map(|c| {
            let mut s = inspect::summary(c, now);
            if size {
                s.size_rw = c.size_rw;
                s.size_root_fs = c.size_root_fs;
            }
            s
        })
        .collect();
    Ok(Json(out).into_response())
}

// --- Lifecycle -------------------------------------------------------------

async fn start(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = container(&b, &id).await?;
    match c.state.as_str() {
        "running" => return Err(ApiError::not_modified()),
        "paused" => {
            return Err(ApiError::conflict(
                "cannot start a paused container, try unpause instead",
            ))
        }
        _ => {}
    }
    let pending = s.lock().pending.remove(&c.id).unwrap_or_default();
    if pending.is_empty() {
        b.start(v1::StartRequest { id: c.id.clone() }).await?;
        return Ok(no_content());
    }
    // An attach made before the start: start attached, so no output is
    // missed; the other attaches join once it runs.
    let mut rest = pending.into_iter();
    let first = rest.next();
    if let Some(p) = first {
        let setup = v1::AttachSetup {
            start: true,
            ..p.setup
        };
        let result = b.attach(with_setup(setup, p.rest)).await;
        let failed = result.as_ref().err().cloned();
        let _ = p.reply.send(result);
        if let Some(e) = failed {
            for p in rest {
                let _ = p.reply.send(Err(e.clone()));
            }
            return Err(e.into());
        }
    }
    for p in rest {
        let result = b.attach(with_setup(p.setup, p.rest)).await;
        let _ = p.reply.send(result);
    }
    Ok(no_content())
}

fn with_setup(setup: v1::AttachSetup, rest: InputStream) -> InputStream {
    let first = v1::AttachInput {
        kind: Some(v1::attach_input::Kind::Setup(setup)),
    };
    Box::pin(tokio_stream::once(first).chain(rest))
}

async fn stop(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let c = container(&b, &id).await?;
    if !is_live(&c) {
        return Err(ApiError::not_modified());
    }
    let timeout = match q.int("t")? {
        // -1: wait forever in Docker; berth's stop is bounded, so the
        // longest it takes.
        Some(t) if t < 0 => Some(u32::MAX),
        Some(t) => Some(u32::try_from(t).unwrap_or(u32::MAX)),
        None => None,
    };
    if let Some(sig) = q.get("signal").filter(|s| !s.is_empty()) {
        // The stop signal asked for goes first; stop then waits and kills.
        b.kill(v1::KillRequest {
            id: c.id.clone(),
            signal: sig.to_string(),
            ..Default::default()
        })
        .await?;
    }
    b.stop(v1::StopRequest {
        id: c.id.clone(),
        timeout,
    })
    .await?;
    Ok(no_content())
}

async fn kill(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let c = container(&b, &id).await?;
    if !is_live(&c) {
        return Err(not_running(&c));
    }
    b.kill(v1::KillRequest {
        id: c.id.clone(),
        signal: q.get("signal").unwrap_or("KILL").to_string(),
        ..Default::default()
    })
    .await?;
    Ok(no_content())
}

async fn pause(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    b.pause(v1::PauseRequest { id }).await?;
    Ok(no_content())
}

async fn unpause(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    b.resume(v1::ResumeRequest { id }).await?;
    Ok(no_content())
}

async fn remove(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    if q.flag("link", false) {
        return Err(ApiError::bad_request(
            "link=1 removes a legacy link: berth has no links",
        ));
    }
    let c = container(&b, &id).await?;
    b.delete(v1::DeleteRequest {
        id: c.id.clone(),
        force: q.flag("force", false),
        volumes: q.flag("v", false),
    })
    .await?;
    s.forget(&c.id);
    Ok(no_content())
}

async fn wait(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let condition = q.get("condition").unwrap_or("not-running").to_string();
    let removed = match condition.as_str() {
        "" | "not-running" | "next-exit" => false,
        "removed" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition {other:?}: use not-running, next-exit or removed"
            )))
        }
    };
    let c = container(&b, &id).await?;
    let (tx, rx) = mpsc::channel(1);
    let at_once = (condition.is_empty() || condition == "not-running")
        && matches!(inspect::docker_state(&c), "created" | "exited");
    if at_once {
        let body = ContainerWaitResponse {
            status_code: inspect::exit_code(&c),
            error: None,
        };
        let _ = tx.try_send(json_line(&body));
    } else {
        let req = v1::WaitRequest {
            id: c.id.clone(),
            process: String::new(),
            removed,
        };
        // berth's wait of an exited container answers its last exit;
        // Docker's next-exit waits for the exit of a later run: the next
        // `exit` in the event log, from now on.
        let next_run = condition == "next-exit" && inspect::docker_state(&c) == "exited";
        let events = if next_run {
            Some(
                b.events(v1::EventsRequest {
                    containers: vec![c.id.clone()],
                    types: vec!["exit".into(), "delete".into()],
                    // Not a network's or a volume's delete.
                    objects: vec!["container".into()],
                    ..Default::default()
                })
                .await?,
            )
        } else {
            None
        };
        // A created container's wait is met only by a run that starts
        // later, so it does not matter whether the start comes first.
        tokio::spawn(async move {
            let result = match events {
                Some(mut evs) => match evs.next().await {
                    Some(Ok(ev)) if ev.r#type == "exit" => Ok(v1::WaitResponse {
                        exit: Some(v1::ExitStatus {
                            exit_code: ev.exit_code.unwrap_or(-1),
                            ..Default::default()
                        }),
                    }),
                    Some(Err(e)) => Err(e),
                    _ => Err(Status::not_found(format!(
                        "container {} was removed before it ran again",
                        req.id
                    ))),
                },
                None => b.wait(req).await,
            };
            let body = match result {
                Ok(w) => ContainerWaitResponse {
                    status_code: w.exit.map_or(-1, |e| i64::from(e.exit_code)),
                    error: None,
                },
                Err(e) => ContainerWaitResponse {
                    status_code: -1,
                    error: Some(ContainerWaitExitError {
                        message: Some(e.message().to_string()),
                    }),
                },
            };
            let _ = tx.send(json_line(&body)).await;
        });
    }
    Ok(streamed("application/json", rx))
}

// --- Logs -------------------------------------------------------------------

/// Docker's `since`/`until`: Unix seconds, with an optional fraction, as
/// RFC 3339 for berth. 0 or empty means unset.
fn unix_to_rfc3339(s: &str, what: &str) -> Result<String, ApiError> {
    if s.is_empty() || s == "0" {
        return Ok(String::new());
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = || {
        ApiError::bad_request(format!(
            "invalid {what} {s:?}: use Unix seconds, e.g. 1700000000 or 1700000000.5"
        ))
    };
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let nanos = format!("{frac:0<9}");
    Ok(format!("{}.{nanos}Z", civil(secs)))
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of Unix seconds.
fn civil(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn logs(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let (want_out, want_err) = (q.flag("stdout", false), q.flag("stderr", false));
    if !want_out && !want_err {
        return Err(ApiError::bad_request(
            "you must choose at least one stream: set stdout=1 and/or stderr=1",
        ));
    }
    let c = container(&b, &id).await?;
    let tail = match q.get("tail") {
        None | Some("") | Some("all") => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid tail {t:?}: use a number of lines or all"))
        })?),
    };
    let timestamps = q.flag("timestamps", false);
    let stream = b
        .logs(v1::LogsRequest {
            id: c.id.clone(),
            process: String::new(),
            follow: q.flag("follow", false),
            tail,
            since: unix_to_rfc3339(q.get("since").unwrap_or(""), "since")?,
            until: unix_to_rfc3339(q.get("until").unwrap_or(""), "until")?,
            timestamps,
        })
        .await?;
    let tty = c.tty;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        tokio::pin!(stream);
        while let Some(item) = stream.next().await {
            let bytes = match item {
                Ok(e) => {
                    let is_err = e.stream == v1::log_entry::Stream::Stderr as i32;
                    if (is_err && !want_err) || (!is_err && !want_out) {
                        continue;
                    }
                    output_bytes(tty, &e, timestamps)
                }
                Err(e) => {
                    let msg = format!("Error grabbing logs: {}\n", e.message());
                    let _ = tx
                        .send(Bytes::from(frames::encode(
                            tty,
                            frames::SYSTEMERR,
                            msg.as_bytes(),
                        )))
                        .await;
                    return;
                }
            };
            if tx.send(Bytes::from(bytes)).await.is_err() {
                return;
            }
        }
    });
    Ok(streamed(frames::content_type(tty), rx))
}

// --- Attach -------------------------------------------------------------

/// Copy the client's stdin into `tx` until it ends (then close the
/// process's stdin, unless it is a terminal's) or the detach keys are
/// typed (then `detach` fires).
async fn pump_stdin<R: tokio::io::AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<v1::AttachInput>,
    keys: Vec<u8>,
    tty: bool,
    detach: oneshot::Sender<()>,
) {
    let mut esc = Escape::new(keys);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (data, detached) = match esc.scan(&buf[..n]) {
            Scan::Data(d) => (d, false),
            Scan::Detach(d) => (d, true),
        };
        if !data.is_empty() {
            let msg = v1::AttachInput {
                kind: Some(v1::attach_input::Kind::Stdin(data)),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        if detached {
            let _ = detach.send(());
            return;
        }
    }
    if tty {
        // A terminal's input has no end of its own: the client is gone
        // (the CLI closes the connection when it detaches).
        let _ = detach.send(());
        return;
    }
    let _ = tx
        .send(v1::AttachInput {
            kind: Some(v1::attach_input::Kind::CloseStdin(true)),
        })
        .await;
    // Keep the detach sender alive until the session ends: dropping it
    // would read as a detach.
    std::future::pending::<()>().await;
}

/// Write the process's output to the client until it ends, the client
/// detaches, or the client goes away. Returns the exit code when the
/// process's end was seen.
async fn pump_output<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    mut out: BoxStream<v1::AttachResponse>,
    tty: bool,
    (want_out, want_err): (bool, bool),
    mut detach: oneshot::Receiver<()>,
    mut on_started: impl FnMut(&v1::ExecResponse),
) -> Option<i64> {
    loop {
        let item = tokio::select! {
            item = out.next() => item,
            _ = &mut detach => return None,
        };
        match item {
            None => return None,
            Some(Err(e)) => {
                let msg = format!("{}\n", e.message());
                let _ = wr
                    .write_all(&frames::encode(tty, frames::SYSTEMERR, msg.as_bytes()))
                    .await;
                return None;
            }
            Some(Ok(v1::AttachResponse { kind: Some(kind) })) => match kind {
                v1::attach_response::Kind::Output(e) => {
                    let is_err = e.stream == v1::log_entry::Stream::Stderr as i32;
                    if (is_err && !want_err) || (!is_err && !want_out) {
                        continue;
                    }
                    if wr.write_all(&output_bytes(tty, &e, false)).await.is_err() {
                        return None;
                    }
                    let _ = wr.flush().await;
                }
                v1::attach_response::Kind::Exit(x) => return Some(i64::from(x.exit_code)),
                v1::attach_response::Kind::Started(s) => on_started(&s),
            },
            Some(Ok(_)) => {}
        }
    }
}

async fn attach(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let c = container(&b, &id).await?;
    let keys = frames::detach_keys(
        q.get("detachKeys")
            .filter(|k| !k.is_empty())
            .unwrap_or("ctrl-p,ctrl-q"),
    )
    .map_err(ApiError::bad_request)?;
    let want_stdin = q.flag("stdin", false);
    let wants = (q.flag("stdout", false), q.flag("stderr", false));
    let replay = q.flag("logs", false);
    let stream = q.flag("stream", false);
    if !stream && !replay {
        return Err(ApiError::bad_request(
            "attach needs stream=1 or logs=1 (or both)",
        ));
    }
    if !stream && matches!(c.state.as_str(), "created") {
        return Err(ApiError::bad_request("the container has no output yet"));
    }
    let upgrade = take_upgrade(&mut req)?;
    let tty = c.tty;
    let created = c.state == "created" && stream;
    if !created && stream && !is_live(&c) && !replay {
        return Err(not_running(&c));
    }
    // Everything a later request relies on is in place before the 101 goes
    // out: the CLI sends the start (and resizes) as soon as it has it.
    let (in_tx, in_rx) = mpsc::channel::<v1::AttachInput>(16);
    let setup = v1::AttachSetup {
        id: c.id.clone(),
        stdin: want_stdin,
        ..Default::default()
    };
    let rest: InputStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(in_rx));
    let mode = if created {
        let (reply_tx, reply_rx) = oneshot::channel();
        s.lock()
            .pending
            .entry(c.id.clone())
            .or_default()
            .push(Pending {
                setup,
                rest,
                reply: reply_tx,
            });
        Mode::Pending(reply_rx)
    } else {
        Mode::Now(setup, rest)
    };
    if stream {
        s.add_input(&c.id, in_tx.clone());
    }
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "attach: the upgrade failed");
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(io);
        if replay && !created {
            if let Ok(mut logs) = b
                .logs(v1::LogsRequest {
                    id: c.id.clone(),
                    ..Default::default()
                })
                .await
            {
                while let Some(Ok(e)) = logs.next().await {
                    let is_err = e.stream == v1::log_entry::Stream::Stderr as i32;
                    if (is_err && !wants.1) || (!is_err && !wants.0) {
                        continue;
                    }
                    if wr.write_all(&output_bytes(tty, &e, false)).await.is_err() {
                        return;
                    }
                }
            }
            if !stream || !is_live(&c) {
                let _ = wr.shutdown().await;
                return;
            }
        }
        let (detach_tx, detach_rx) = oneshot::channel();
        let mut keep = None;
        let stdin_task = if want_stdin {
            Some(tokio::spawn(pump_stdin(rd, in_tx, keys, tty, detach_tx)))
        } else {
            // Nothing is read: the client may close its side at once.
            keep = Some((detach_tx, in_tx));
            None
        };
        let out = match mode {
            Mode::Pending(reply) => match reply.await {
                Ok(r) => r,
                // Removed before it started.
                Err(_) => Err(Status::not_found("the container was removed")),
            },
            Mode::Now(setup, rest) => b.attach(with_setup(setup, rest)).await,
        };
        match out {
            Ok(out) => {
                pump_output(&mut wr, out, tty, wants, detach_rx, |_| {}).await;
            }
            Err(e) => {
                let msg = format!("{}\n", e.message());
                let _ = wr
                    .write_all(&frames::encode(tty, frames::SYSTEMERR, msg.as_bytes()))
                    .await;
            }
        }
        let _ = wr.shutdown().await;
        if let Some(t) = stdin_task {
            t.abort();
        }
        drop(keep);
    });
    Ok(upgraded_response(tty))
}

fn size_of(q: &Query) -> Result<v1::TtySize, ApiError> {
    let h = q.int("h")?.unwrap_or(0);
    let w = q.int("w")?.unwrap_or(0);
    let fit = |v: i64| u32::try_from(v.clamp(0, i64::from(u16::MAX))).unwrap_or(0);
    Ok(v1::TtySize {
        rows: fit(h),
        cols: fit(w),
    })
}

/// Resize through a live attach when there is one; else through a short
/// attach of its own that carries only the size.
async fn send_resize(
    b: &Arc<dyn Backend>,
    inputs: Vec<mpsc::Sender<v1::AttachInput>>,
    container: &str,
    process: &str,
    size: v1::TtySize,
) -> Result<(), ApiError> {
    let msg = v1::AttachInput {
        kind: Some(v1::attach_input::Kind::Resize(size)),
    };
    for tx in &inputs {
        if tx.send(msg.clone()).await.is_ok() {
            return Ok(());
        }
    }
    let setup = v1::AttachSetup {
        id: container.to_string(),
        process: process.to_string(),
        size: Some(size),
        ..Default::default()
    };
    let out = b
        .attach(with_setup(setup, Box::pin(tokio_stream::empty())))
        .await?;
    // The size went with the setup; the output is not wanted.
    drop(out);
    Ok(())
}

async fn resize(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let size = size_of(&q)?;
    let c = container(&b, &id).await?;
    if !is_live(&c) {
        return Err(not_running(&c));
    }
    send_resize(&b, s.inputs_of(&c.id), &c.id, "", size).await?;
    Ok(StatusCode::OK.into_response())
}

// --- Exec -------------------------------------------------------------------

async fn exec_create(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let config: ExecConfig = json_body(&read_body(req).await?)?;
    let c = container(&b, &id).await?;
    if c.state == "paused" {
        return Err(ApiError::conflict(format!(
            "container {} is paused, unpause the container before exec",
            c.id
        )));
    }
    if c.state != "running" {
        return Err(not_running(&c));
    }
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad_request("no exec command specified: set Cmd"));
    }
    if config.privileged == Some(true) {
        return Err(ApiError::bad_request(
            "Privileged execs are not supported by berth: give the container the privileges it needs at create",
        ));
    }
    let exec_id = random_id()?;
    let mut g = s.lock();
    // Forget the oldest finished execs past the bound.
    if g.exec_order.len() >= MAX_EXECS {
        let finished: Vec<String> = g
            .exec_order
            .iter()
            .filter(|id| g.execs.get(*id).is_some_and(|e| !e.running))
            .take(g.exec_order.len() + 1 - MAX_EXECS)
            .cloned()
            .collect();
        for id in &finished {
            g.execs.remove(id);
        }
        g.exec_order.retain(|id| !finished.contains(id));
    }
    g.execs.insert(
        exec_id.clone(),
        Exec {
            container: c.id.clone(),
            config,
            process: None,
            pid: 0,
            running: false,
            exit_code: None,
            input: None,
        },
    );
    g.exec_order.push(exec_id.clone());
    drop(g);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": exec_id })),
    )
        .into_response())
}

fn exec_request(e: &Exec, tty: bool) -> v1::ExecRequest {
    v1::ExecRequest {
        id: e.container.clone(),
        args: e.config.cmd.clone().unwrap_or_default(),
        env: e.config.env.clone().unwrap_or_default(),
        workdir: e.config.working_dir.clone().unwrap_or_default(),
        user: e.config.user.clone().unwrap_or_default(),
        tty,
        interactive: false,
    }
}

/// Learns the exit of an exec that runs on without a client (detached, or
/// its client gone) and records it, so that inspect shows it; its input
/// goes with it.
fn watch_exec_exit(
    b: Arc<dyn Backend>,
    s: Arc<Sessions>,
    id: String,
    container: String,
    process: String,
) {
    let req = v1::WaitRequest {
        id: container,
        process,
        removed: false,
    };
    tokio::spawn(async move {
        let code = b
            .wait(req)
            .await
            .ok()
            .and_then(|w| w.exit)
            .map_or(-1, |x| i64::from(x.exit_code));
        s.update_exec(&id, |x| {
            x.running = false;
            x.exit_code = Some(code);
            x.input = None;
        });
    });
}

async fn exec_start(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
    api: Option<Extension<ApiVersion>>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let hijack = req.headers().contains_key(header::UPGRADE);
    let upgrade = if hijack {
        Some(take_upgrade(&mut req)?)
    } else {
        None
    };
    let start: ExecStartConfig = json_body(&read_body(req).await?)?;
    let e = s
        .lock()
        .execs
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    if e.process.is_some() || e.exit_code.is_some() {
        return Err(ApiError::conflict(format!(
            "Error: Exec command {id} has already run"
        )));
    }
    let tty = start.tty.or(e.config.tty).unwrap_or(false);
    let detach = start.detach.unwrap_or(false);
    if detach || upgrade.is_none() {
        let r = b.exec(exec_request(&e, tty)).await?;
        let process = r.exec_id.clone();
        s.update_exec(&id, |x| {
            x.process = Some(r.exec_id.clone());
            x.pid = i64::from(r.pid);
            x.running = true;
        });
        watch_exec_exit(b, s, id, e.container.clone(), process);
        return Ok(StatusCode::OK.into_response());
    }
    // ConsoleSize counts from 1.42, with a terminal only.
    let size = start
        .console_size
        .as_ref()
        .filter(|_| tty && api.is_none_or(|Extension(v)| v >= ApiVersion(42)))
        .and_then(|v| match v.as_slice() {
            [h, w] if *h > 0 && *w > 0 => Some(v1::TtySize {
                rows: u32::try_from(*h).unwrap_or(0),
                cols: u32::try_from(*w).unwrap_or(0),
            }),
            _ => None,
        });
    let want_stdin = e.config.attach_stdin.unwrap_or(false);
    let wants = (
        e.config.attach_stdout.unwrap_or(true),
        e.config.attach_stderr.unwrap_or(true),
    );
    let keys = frames::detach_keys(
        e.config
            .detach_keys
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("ctrl-p,ctrl-q"),
    )
    .map_err(ApiError::bad_request)?;
    // Mark it started now (a second start is refused), with its input in
    // place for the resizes that follow the 101.
    let (in_tx, in_rx) = mpsc::channel::<v1::AttachInput>(16);
    s.update_exec(&id, |x| {
        x.process = Some(String::new());
        x.running = true;
        x.input = Some(in_tx.clone());
    });
    let upgrade = upgrade.ok_or_else(|| ApiError::internal("no upgrade"))?;
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(err) => {
                tracing::debug!(error = %err, "exec start: the upgrade failed");
                s.update_exec(&id, |x| {
                    x.running = false;
                    x.exit_code = Some(-1);
                });
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(io);
        let (detach_tx, detach_rx) = oneshot::channel();
        let mut keep = None;
        let stdin_task = if want_stdin {
            Some(tokio::spawn(pump_stdin(rd, in_tx, keys, tty, detach_tx)))
        } else {
            keep = Some((detach_tx, in_tx));
            None
        };
        let setup = v1::AttachSetup {
            id: e.container.clone(),
            stdin: want_stdin,
            exec: Some(exec_request(&e, tty)),
            size,
            ..Default::default()
        };
        let rest: InputStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(in_rx));
        let code = match b.attach(with_setup(setup, rest)).await {
            Ok(out) => {
                let (s2, id2) = (s.clone(), id.clone());
                pump_output(&mut wr, out, tty, wants, detach_rx, move |st| {
                    s2.update_exec(&id2, |x| {
                        x.process = Some(st.exec_id.clone());
                        x.pid = i64::from(st.pid);
                    })
                })
                .await
            }
            Err(err) => {
                let msg = format!("{}\n", err.message());
                let _ = wr.write_all(msg.as_bytes()).await;
                Some(126)
            }
        };
        // The exit is recorded before the stream closes: the CLI inspects
        // the exec as soon as its output ends.
        match code {
            Some(c) => s.update_exec(&id, |x| {
                x.running = false;
                x.exit_code = Some(c);
                x.input = None;
            }),
            None => {
                // Detached or gone: the exec goes on; learn its exit.
                let info = s.lock().execs.get(&id).cloned();
                if let Some(Exec {
                    container,
                    process: Some(process),
                    ..
                }) = info.filter(|x| x.process.as_deref().is_some_and(|p| !p.is_empty()))
                {
                    watch_exec_exit(b.clone(), s.clone(), id.clone(), container, process);
                }
            }
        }
        let _ = wr.shutdown().await;
        if let Some(t) = stdin_task {
            t.abort();
        }
        drop(keep);
    });
    Ok(upgraded_response(tty))
}

async fn exec_resize(
    State(b): Ctx,
    Extension(s): Sess,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query(req.uri().query());
    let size = size_of(&q)?;
    let e = s
        .lock()
        .execs
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    let process = e.process.clone().unwrap_or_default();
    if !e.running || process.is_empty() {
        // Not started yet (or its id not yet known): the start's
        // ConsoleSize sets the first size.
        if let Some(tx) = &e.input {
            let msg = v1::AttachInput {
                kind: Some(v1::attach_input::Kind::Resize(size)),
            };
            let _ = tx.send(msg).await;
        }
        return Ok(StatusCode::OK.into_response());
    }
    let inputs = e.input.clone().into_iter().collect();
    send_resize(&b, inputs, &e.container, &process, size).await?;
    Ok(StatusCode::OK.into_response())
}

async fn exec_inspect(Extension(s): Sess, Path(id): Path<String>) -> Result<Response, ApiError> {
    let e = s
        .lock()
        .execs
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    let cmd = e.config.cmd.clone().unwrap_or_default();
    let body = ExecInspectResponse {
        can_remove: Some(false),
        detach_keys: Some(e.config.detach_keys.clone().unwrap_or_default()),
        id: Some(id),
        running: Some(e.running),
        exit_code: e.exit_code,
        process_config: Some(ProcessConfig {
            privileged: Some(false),
            user: Some(e.config.user.clone().unwrap_or_default()),
            tty: Some(e.config.tty.unwrap_or(false)),
            entrypoint: cmd.first().cloned(),
            arguments: Some(cmd.iter().skip(1).cloned().collect()),
        }),
        open_stdin: Some(e.config.attach_stdin.unwrap_or(false)),
        open_stderr: Some(e.config.attach_stderr.unwrap_or(false)),
        open_stdout: Some(e.config.attach_stdout.unwrap_or(false)),
        container_id: Some(e.container.clone()),
        pid: Some(e.pid),
    };
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times() {
        assert_eq!(
            unix_to_rfc3339("1796166894", "since").ok().as_deref(),
            Some("2026-12-01T23:14:54.000000000Z")
        );
        assert_eq!(
            unix_to_rfc3339("0.5", "since").ok().as_deref(),
            Some("")
                .filter(|_| false)
                .or(Some("1970-01-01T00:00:00.500000000Z"))
        );
        assert_eq!(unix_to_rfc3339("", "since").ok().as_deref(), Some(""));
        assert!(unix_to_rfc3339("yesterday", "since").is_err());
        assert_eq!(civil(951_782_400), "2000-02-29T00:00:00");
    }
}
