//! The rest of the container endpoints: restart, rename, top, stats,
//! update, prune, changes, export and archive (`docker cp`), each a
//! mapping onto one berth call.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use berth_api::v1;
use bollard_stubs::models::{
    ChangeType, ContainerPruneResponse, ContainerTopResponse, ContainerUpdateBody,
    ContainerUpdateResponse, FilesystemChange,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::frames::{json_line, streamed};
use crate::query::Query;
use crate::{Backend, BoxStream};

type Ctx = State<Arc<dyn Backend>>;

/// The most bytes of JSON a request body may have.
const MAX_BODY: usize = 4 << 20;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/update", post(update))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/changes", get(changes))
        .route("/containers/{id}/export", get(export))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
}

fn query(req: &Request) -> Query {
    Query::parse(req.uri().query())
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// --- Restart, rename, top, update, prune, changes --------------------------

async fn restart(
    State(b): Ctx,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query(&req);
    let timeout = match q.int("t")? {
        // -1 waits forever in Docker; berth's stop is bounded.
        Some(t) if t < 0 => Some(u32::MAX),
        Some(t) => Some(u32::try_from(t).unwrap_or(u32::MAX)),
        None => None,
    };
    if let Some(sig) = q.get("signal").filter(|s| !s.is_empty()) {
        // The signal asked for goes first, as with stop; a container that
        // is not running has nothing to signal.
        let c = b.inspect(v1::InspectRequest { id: id.clone() }).await?;
        if c.container.is_some_and(|c| c.state == "running") {
            b.kill(v1::KillRequest {
                id: id.clone(),
                signal: sig.to_string(),
                ..Default::default()
            })
            .await?;
        }
    }
    b.restart(v1::RestartRequest { id, timeout }).await?;
    Ok(no_content())
}

async fn rename(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(&req);
    let name = q.get("name").unwrap_or("").trim_start_matches('/');
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "no new name given: add ?name=NEW to the request",
        ));
    }
    b.rename(v1::RenameRequest {
        id,
        name: name.to_string(),
    })
    .await?;
    Ok(no_content())
}

async fn top(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(&req);
    let ps_args = q
        .get("ps_args")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let c = b
        .inspect(v1::InspectRequest { id: id.clone() })
        .await?
        .container
        .ok_or_else(|| ApiError::internal("berthd answered without the container"))?;
    if c.state != "running" && c.state != "paused" {
        return Err(ApiError::conflict(format!(
            "container {} is not running",
            c.id
        )));
    }
    let r = b.top(v1::TopRequest { id: c.id, ps_args }).await?;
    Ok(Json(ContainerTopResponse {
        titles: Some(r.titles),
        processes: Some(r.processes.into_iter().map(|p| p.fields).collect()),
    })
    .into_response())
}

/// Docker's update body as berth's: unset and zero fields change nothing
/// (the CLI sends every field, zero when not given).
fn update_request(
    id: String,
    u: ContainerUpdateBody,
) -> Result<(v1::UpdateRequest, Vec<String>), ApiError> {
    let set = |v: Option<i64>| v.filter(|n| *n != 0);
    let mut warnings = Vec::new();
    let res = v1::Resources {
        memory_swap: set(u.memory_swap),
        memory_reservation: set(u.memory_reservation),
        cpu_shares: set(u.cpu_shares).map(|n| u64::try_from(n).unwrap_or(0)),
        cpu_period: set(u.cpu_period).map(|n| u64::try_from(n).unwrap_or(0)),
        cpu_quota: set(u.cpu_quota),
        cpuset_cpus: u.cpuset_cpus.filter(|s| !s.is_empty()),
        cpuset_mems: u.cpuset_mems.filter(|s| !s.is_empty()),
        blkio_weight: u.blkio_weight.filter(|n| *n != 0).map(u32::from),
        ..Default::default()
    };
    if u.blkio_device_read_bps
        .as_ref()
        .is_some_and(|v| !v.is_empty())
        || u.blkio_device_write_bps
            .as_ref()
            .is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "device rates (BlkioDeviceReadBps/WriteBps) are set at create, not by update",
        ));
    }
    for (field, is_set) in [
        ("KernelMemoryTCP", set(u.kernel_memory_tcp).is_some()),
        ("CpuRealtimePeriod", set(u.cpu_realtime_period).is_some()),
        ("CpuRealtimeRuntime", set(u.cpu_realtime_runtime).is_some()),
        (
            "MemorySwappiness",
            u.memory_swappiness.is_some_and(|n| n >= 0),
        ),
        ("OomKillDisable", u.oom_kill_disable == Some(true)),
        (
            "CgroupParent",
            u.cgroup_parent.is_some_and(|s| !s.is_empty()),
        ),
    ] {
        if is_set {
            warnings.push(format!("{field} is not supported by berth: ignored"));
        }
    }
    let restart = match &u.restart_policy {
        Some(p) => match crate::create::restart_policy(p) {
            s if s.is_empty() && p.name.is_none() => None,
            s if s.is_empty() => {
                use bollard_stubs::models::RestartPolicyNameEnum as N;
                (p.name == Some(N::NO)).then(|| "no".to_string())
            }
            s => Some(s),
        },
        None => None,
    };
    let pids_limit = u.pids_limit.filter(|n| *n != 0);
    let cpus = set(u.nano_cpus).map(|n| n as f64 / 1e9);
    Ok((
        v1::UpdateRequest {
            id,
            memory: set(u.memory),
            cpus,
            pids_limit,
            resources: Some(res),
            restart,
        },
        warnings,
    ))
}

async fn update(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let body: ContainerUpdateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ContainerUpdateBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))?
    };
    let (r, warnings) = update_request(id, body)?;
    b.update(r).await?;
    Ok(Json(ContainerUpdateResponse {
        warnings: Some(warnings),
    })
    .into_response())
}

/// Docker's prune filters as berth's `KEY=VALUE` strings.
fn prune_filters(q: &Query) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for (key, vals) in q.filters()? {
        match key.as_str() {
            "until" | "label" | "label!" => {
                out.extend(vals.into_iter().map(|v| format!("{key}={v}")));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': container prune takes until, label and label!"
                )))
            }
        }
    }
    Ok(out)
}

async fn prune(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let filters = prune_filters(&query(&req))?;
    let r = b.prune(v1::PruneContainersRequest { filters }).await?;
    Ok(Json(ContainerPruneResponse {
        containers_deleted: Some(r.deleted),
        space_reclaimed: Some(i64::try_from(r.space_reclaimed).unwrap_or(i64::MAX)),
    })
    .into_response())
}

async fn changes(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let r = b.diff(v1::DiffRequest { container: id }).await?;
    let out: Vec<FilesystemChange> = r
        .changes
        .into_iter()
        .map(|c| FilesystemChange {
            path: c.path,
            kind: match c.kind.as_str() {
                "A" => ChangeType::_1,
                "D" => ChangeType::_2,
                _ => ChangeType::_0,
            },
        })
        .collect();
    Ok(Json(out).into_response())
}

// --- Stats -----------------------------------------------------------------

/// One of berth's samples in Docker's stats shape. berth sends the CPU
/// share already computed; the counters here are a one-second window
/// that gives the client's formula (delta of `total_usage` over delta of
/// `system_cpu_usage`, times `online_cpus`, times 100) that same share.
fn docker_stats(s: &v1::ContainerStats, time: &str, cpus: u32) -> serde_json::Value {
    let cpus = cpus.max(1);
    let window_ns: u64 = 1_000_000_000;
    let system = window_ns * u64::from(cpus);
    let total = (s.cpu_percent / 100.0 * window_ns as f64).max(0.0) as u64;
    let blkio = if s.stopped {
        json!(null)
    } else {
        json!([
            {"major": 0, "minor": 0, "op": "read", "value": s.blkio_read},
            {"major": 0, "minor": 0, "op": "write", "value": s.blkio_write},
        ])
    };
    let (cpu, precpu) = if s.stopped {
        (
            json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}),
            json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}),
        )
    } else {
        (
            json!({
                "cpu_usage": {"total_usage": total, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "system_cpu_usage": system,
                "online_cpus": cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            }),
            json!({
                "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "system_cpu_usage": 0,
                "online_cpus": cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            }),
        )
    };
    let memory = if s.stopped {
        json!({})
    } else {
        json!({"usage": s.memory_usage, "limit": s.memory_limit, "stats": {}, "failcnt": s.oom_kills})
    };
    let zero_time = "0001-01-01T00:00:00Z";
    json!({
        "name": format!("/{}", s.name),
        "id": s.id,
        "read": if s.stopped { zero_time } else { time },
        "preread": zero_time,
        "pids_stats": if s.stopped { json!({}) } else { json!({"current": s.pids}) },
        "blkio_stats": {"io_service_bytes_recursive": blkio},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu,
        "precpu_stats": precpu,
        "memory_stats": memory,
        "networks": {"eth0": {
            "rx_bytes": s.net_rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
            "tx_bytes": s.net_tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0,
        }},
    })
}

async fn stats(State(b): Ctx, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let q = query(&req);
    let stream = q.flag("stream", true) && !q.flag("one-shot", false);
    let cpus = b.info(v1::InfoRequest {}).await.map_or(1, |i| i.cpus);
    let c = b
        .inspect(v1::InspectRequest { id: id.clone() })
        .await?
        .container
        .ok_or_else(|| ApiError::internal("berthd answered without the container"))?;
    let running = matches!(c.state.as_str(), "running" | "paused");
    if !running {
        // Docker answers a stopped container's stats with zeros, once
        // when not streaming.
        let s = v1::ContainerStats {
            id: c.id.clone(),
            name: c.name.clone(),
            stopped: true,
            ..Default::default()
        };
        let body = json_line(&docker_stats(&s, "", cpus));
        if !stream {
            return Ok(json_response(Body::from(body)));
        }
    }
    let mut samples: BoxStream<v1::StatsResponse> = b
        .stats(v1::StatsRequest {
            containers: vec![c.id.clone()],
            all: false,
            stream,
        })
        .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        while let Some(item) = samples.next().await {
            let Ok(tick) = item else { break };
            for s in &tick.stats {
                if tx
                    .send(json_line(&docker_stats(s, &tick.time, cpus)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !stream {
                break;
            }
        }
    });
    Ok(streamed("application/json", rx))
}

fn json_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

// --- Export and archive (docker cp) ----------------------------------------

/// A tar stream as the reply's body; an error mid-stream cuts it short
/// (the client sees a truncated archive, as with Docker).
fn tar_body(mut chunks: BoxStream<v1::ArchiveChunk>) -> Body {
    let s = async_stream_like(
        move |tx: mpsc::Sender<Result<Bytes, std::io::Error>>| async move {
            while let Some(item) = chunks.next().await {
                let msg = match item {
                    Ok(c) if c.data.is_empty() => continue,
                    Ok(c) => Ok(Bytes::from(c.data)),
                    Err(e) => Err(std::io::Error::other(e.message().to_string())),
                };
                let stop = msg.is_err();
                if tx.send(msg).await.is_err() || stop {
                    return;
                }
            }
        },
    );
    Body::from_stream(s)
}

/// A stream fed by a spawned task through a small channel.
fn async_stream_like<F, Fut>(
    job: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>>
where
    F: FnOnce(mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(job(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn tar_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    resp
}

async fn export(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let chunks = b.export(v1::ExportRequest { container: id }).await?;
    Ok(tar_response(tar_body(chunks)))
}

/// st_mode as Go's `os.FileMode` (what the CLI decodes from the stat
/// header): the permission bits, and the type as Go's high bits.
fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = mode & 0o777;
    m |= match mode & 0o170000 {
        0o040000 => DIR,
        0o120000 => SYMLINK,
        0o010000 => NAMED_PIPE,
        0o140000 => SOCKET,
        0o020000 => DEVICE | CHAR_DEVICE,
        0o060000 => DEVICE,
        _ => 0,
    };
    if mode & 0o4000 != 0 {
        m |= SETUID;
    }
    if mode & 0o2000 != 0 {
        m |= SETGID;
    }
    if mode & 0o1000 != 0 {
        m |= STICKY;
    }
    m
}

/// The `X-Docker-Container-Path-Stat` header: base64 of the stat as JSON.
fn stat_header(s: &v1::PathStat) -> Result<HeaderValue, ApiError> {
    let mtime =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(s.mtime).unwrap_or(0));
    let j = json!({
        "name": s.name,
        "size": s.size,
        "mode": go_file_mode(s.mode),
        "mtime": humantime::format_rfc3339(mtime).to_string(),
        "linkTarget": s.link_target,
    });
    let text = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&j).unwrap_or_default());
    HeaderValue::from_str(&text).map_err(|e| ApiError::internal(format!("a bad stat header: {e}")))
}

fn archive_path(q: &Query) -> Result<String, ApiError> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(ApiError::bad_request(
            "no path given: add ?path=PATH (a path in the container)",
        )),
    }
}

/// A missing path is Docker's 404 "Could not find the file".
fn missing(e: tonic::Status, id: &str, path: &str) -> ApiError {
    if e.code() == tonic::Code::NotFound && !e.message().starts_with("no such container") {
        ApiError::not_found(format!("Could not find the file {path} in container {id}"))
    } else {
        e.into()
    }
}

async fn archive_head(
    State(b): Ctx,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let path = archive_path(&query(&req))?;
    let st = b
        .path_stat(v1::StatPathRequest {
            container: id.clone(),
            path: path.clone(),
            follow: false,
        })
        .await
        .map_err(|e| missing(e, &id, &path))?;
    let mut resp = Response::new(Body::empty());
    resp.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&st)?);
    Ok(resp)
}

async fn archive_get(
    State(b): Ctx,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let path = archive_path(&query(&req))?;
    let mut chunks = b
        .archive(v1::ArchiveRequest {
            container: id.clone(),
            path: path.clone(),
            follow: false,
        })
        .await
        .map_err(|e| missing(e, &id, &path))?;
    // The first chunk is the stat.
    let first = match chunks.next().await {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(missing(e, &id, &path)),
        None => return Err(ApiError::internal("the archive ended before it began")),
    };
    let header = match &first.stat {
        Some(st) => Some(stat_header(st)?),
        None => None,
    };
    let rest: BoxStream<v1::ArchiveChunk> = if first.data.is_empty() {
        chunks
    } else {
        Box::pin(tokio_stream::once(Ok(first)).chain(chunks))
    };
    let mut resp = tar_response(tar_body(rest));
    if let Some(h) = header {
        resp.headers_mut().insert("X-Docker-Container-Path-Stat", h);
    }
    Ok(resp)
}

async fn archive_put(
    State(b): Ctx,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query(&req);
    let path = archive_path(&q)?;
    let copy_uid_gid = q.flag("copyUIDGID", false);
    // The destination must be a directory that exists (the CLI stats it
    // first and names the files in the archive).
    let st = b
        .path_stat(v1::StatPathRequest {
            container: id.clone(),
            path: path.clone(),
            follow: true,
        })
        .await
        .map_err(|e| missing(e, &id, &path))?;
    if st.mode & 0o170000 != 0o040000 {
        return Err(ApiError::bad_request(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let header = v1::ExtractChunk {
        header: Some(v1::ExtractHeader {
            container: id,
            path,
            copy_uid_gid,
        }),
        data: Vec::new(),
    };
    let body = req.into_body().into_data_stream().map(|r| {
        r.map(|data| v1::ExtractChunk {
            header: None,
            data: data.to_vec(),
        })
        .map_err(|e| tonic::Status::cancelled(format!("the upload broke: {e}")))
    });
    let chunks: BoxStream<v1::ExtractChunk> = Box::pin(tokio_stream::once(Ok(header)).chain(body));
    b.extract(chunks).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_are_go_modes() {
        assert_eq!(go_file_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
    }

    #[test]
    fn stats_give_the_clients_formula_berths_share() {
        let s = v1::ContainerStats {
            id: "x".into(),
            name: "web".into(),
            cpu_percent: 50.0,
            memory_usage: 100,
            memory_limit: 1000,
            pids: 3,
            ..Default::default()
        };
        let j = docker_stats(&s, "2026-12-02T00:00:00Z", 2);
        let total = j["cpu_stats"]["cpu_usage"]["total_usage"].as_f64().unwrap();
        let pre = j["precpu_stats"]["cpu_usage"]["total_usage"]
            .as_f64()
            .unwrap();
        let sys = j["cpu_stats"]["system_cpu_usage"].as_f64().unwrap();
        let presys = j["precpu_stats"]["system_cpu_usage"].as_f64().unwrap();
        let cpus = j["cpu_stats"]["online_cpus"].as_f64().unwrap();
        let pct = (total - pre) / (sys - presys) * cpus * 100.0;
        assert!((pct - 50.0).abs() < 1e-6, "{pct}");
        assert_eq!(j["memory_stats"]["usage"], 100);
        assert_eq!(j["pids_stats"]["current"], 3);
        assert_eq!(j["name"], "/web");
    }

    #[test]
    fn update_ignores_zero_fields() {
        let body: ContainerUpdateBody = serde_json::from_str(
            r#"{"Memory": 0, "NanoCpus": 500000000, "CpuShares": 0, "PidsLimit": 0,
                "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}"#,
        )
        .unwrap();
        let (r, w) = update_request("c".into(), body).unwrap();
        assert_eq!(r.memory, None);
        assert_eq!(r.cpus, Some(0.5));
        assert_eq!(r.pids_limit, None);
        assert_eq!(r.restart.as_deref(), Some("always"));
        assert!(w.is_empty());
        let body: ContainerUpdateBody =
            serde_json::from_str(r#"{"Memory": 1048576, "RestartPolicy": {"Name": ""}}"#).unwrap();
        let (r, _) = update_request("c".into(), body).unwrap();
        assert_eq!(r.memory, Some(1 << 20));
        assert_eq!(r.restart, None);
    }
}
