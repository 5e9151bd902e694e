//! `/_ping`, `/version`, `/info`: what clients read to negotiate and to
//! describe the daemon, from berth's Version and Info.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_api::v1;
use bollard_stubs::models::{
    IndexInfo, LocalNodeState, RegistryServiceConfig, Runtime, SwarmInfo, SystemInfo,
    SystemInfoCgroupDriverEnum, SystemInfoCgroupVersionEnum, SystemVersion,
    SystemVersionComponents, SystemVersionPlatform,
};

use crate::error::ApiError;
use crate::version::{MAX_API, MIN_API};
use crate::{Backend, Engine};

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
}

/// GET and HEAD: the version headers (added to every reply by the
/// negotiation layer) plus these; the body `OK` on GET only.
async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    // No BuildKit session endpoint: clients use the classic builder's
    // protocol (and get a clear error from /build).
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    resp
}

/// Go's name for the architecture (`Version.Arch`), as Docker reports it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        other => other,
    }
}

/// The runtime's short name: `embedded`, or the binary's file name.
fn runtime_name(runtime: &str) -> String {
    std::path::Path::new(runtime)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| runtime.to_string())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `GET /version`: berth's version as the engine's, the API range served.
pub fn version_body(v: &v1::VersionResponse) -> SystemVersion {
    let kernel = kernel();
    let details: HashMap<String, String> = [
        ("ApiVersion", MAX_API.to_string()),
        ("MinAPIVersion", MIN_API.to_string()),
        ("Os", "linux".to_string()),
        ("Arch", go_arch().to_string()),
        ("KernelVersion", kernel.clone()),
        ("Experimental", "false".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let runtime = runtime_name(&v.runtime);
    SystemVersion {
        platform: Some(SystemVersionPlatform {
            name: format!("berth {}", v.version),
        }),
        components: Some(vec![
            SystemVersionComponents {
                name: "Engine".into(),
                version: v.version.clone(),
                details: Some(details),
            },
            SystemVersionComponents {
                name: runtime.clone(),
                version: String::new(),
                details: Some(HashMap::from([("Path".to_string(), v.runtime.clone())])),
            },
        ]),
        version: Some(v.version.clone()),
        api_version: Some(MAX_API.to_string()),
        min_api_version: Some(MIN_API.to_string()),
        os: Some("linux".into()),
        arch: Some(go_arch().into()),
        kernel_version: Some(kernel),
        experimental: Some(false),
        ..Default::default()
    }
}

async fn version(State(b): State<Arc<dyn Backend>>) -> Result<Json<SystemVersion>, ApiError> {
    let v = b.version(v1::VersionRequest {}).await?;
    Ok(Json(version_body(&v)))
}

/// The value of `KEY="..."` in an os-release text.
fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// Where berth pulls over plain HTTP: loopback registries only (berth-image's
/// registry client), which Docker shows as its insecure CIDRs; Docker Hub
/// is the official index, over TLS. berth has no mirrors.
fn registry_config() -> RegistryServiceConfig {
    RegistryServiceConfig {
        insecure_registry_cidrs: Some(vec!["::1/128".into(), "127.0.0.0/8".into()]),
        index_configs: Some(HashMap::from([(
            "docker.io".to_string(),
            IndexInfo {
                name: Some("docker.io".into()),
                mirrors: Some(Vec::new()),
                secure: Some(true),
                official: Some(true),
            },
        )])),
        mirrors: Some(Vec::new()),
    }
}

/// `GET /info`: the counts, host and storage facts berth's Info has, the
/// engine's ID and security options, the registry settings.
pub fn info_body(
    i: &v1::InfoResponse,
    engine: &Engine,
    hostname: String,
    os_release: &str,
) -> SystemInfo {
    let count = |n: u32| Some(i64::from(n));
    let runtime = runtime_name(&i.runtime);
    SystemInfo {
        containers: count(i.containers),
        containers_running: count(i.running),
        containers_paused: count(i.paused),
        containers_stopped: count(i.stopped),
        images: count(i.images),
        driver: Some(i.storage_driver.clone()),
        driver_status: Some(Vec::new()),
        docker_root_dir: Some(i.root.clone()),
        memory_limit: Some(true),
        pids_limit: Some(true),
        cpu_shares: Some(true),
        cpu_cfs_period: Some(true),
        cpu_cfs_quota: Some(true),
        cpu_set: Some(true),
        logging_driver: Some("json-file".into()),
        cgroup_driver: Some(SystemInfoCgroupDriverEnum::CGROUPFS),
        cgroup_version: Some(if i.cgroup.starts_with("v2") {
            SystemInfoCgroupVersionEnum::_2
        } else {
            SystemInfoCgroupVersionEnum::_1
        }),
        kernel_version: Some(i.kernel.clone()),
        operating_system: os_release_value(os_release, "PRETTY_NAME"),
        os_version: os_release_value(os_release, "VERSION_ID"),
        os_type: Some("linux".into()),
        architecture: Some(std::env::consts::ARCH.into()),
        ncpu: count(i.cpus),
        mem_total: Some(i64::try_from(i.memory).unwrap_or(i64::MAX)),
        name: Some(hostname),
        labels: Some(Vec::new()),
        experimental_build: Some(false),
        server_version: Some(i.version.clone()),
        runtimes: Some(HashMap::from([(
            runtime.clone(),
            Runtime {
                path: Some(i.runtime.clone()),
                ..Default::default()
            },
        )])),
        default_runtime: Some(runtime),
        swarm: Some(SwarmInfo {
            node_id: Some(String::new()),
            node_addr: Some(String::new()),
            local_node_state: Some(LocalNodeState::INACTIVE),
            control_available: Some(false),
            error: Some(String::new()),
            ..Default::default()
        }),
        live_restore_enabled: Some(true),
        warnings: Some(Vec::new()),
        id: Some(engine.id.clone()),
        security_options: Some(engine.security_options.clone()),
        registry_config: Some(registry_config()),
        ..Default::default()
    }
}

async fn info(State(b): State<Arc<dyn Backend>>) -> Result<Json<SystemInfo>, ApiError> {
    let i = b.info(v1::InfoRequest {}).await?;
    let engine = b.engine().await?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    Ok(Json(info_body(&i, &engine, hostname, &os_release)))
}
