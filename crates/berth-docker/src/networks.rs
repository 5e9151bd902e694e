//! `/networks`: create, list, inspect, delete, connect, disconnect and
//! prune, over berthd's network functions (the ones `berth network` uses).
//! berth's networks are bridges; `host` and `none` are network modes of a
//! container, not networks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api::v1;
use bollard_stubs::models::{
    Ipam, IpamConfig, Network, NetworkConnectRequest, NetworkContainer, NetworkCreateRequest,
    NetworkCreateResponse, NetworkDisconnectRequest, NetworkPruneResponse,
};

use crate::error::ApiError;
use crate::filters::Filters;
use crate::Backend;

type Ctx = State<Arc<dyn Backend>>;

const MAX_BODY: usize = 1 << 20;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

async fn body<T: serde::de::DeserializeOwned + Default>(req: Request) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
}

/// berth's network in Docker's shape.
fn docker_network(n: &v1::Network) -> Network {
    let containers: HashMap<String, NetworkContainer> = n
        .containers
        .iter()
        .map(|e| {
            (
                e.container_id.clone(),
                NetworkContainer {
                    name: Some(e.container_name.clone()),
                    endpoint_id: Some(format!("{}-{}", n.id, e.interface)),
                    mac_address: Some(e.mac.clone()),
                    ipv4_address: Some(e.ipv4.clone()),
                    ipv6_address: Some(String::new()),
                },
            )
        })
        .collect();
    let mut options = HashMap::new();
    if !n.bridge.is_empty() {
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
    }
    Network {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(if n.created.is_empty() {
            "0001-01-01T00:00:00Z".into()
        } else {
            n.created.clone()
        }),
        scope: Some("local".into()),
        driver: Some(n.driver.clone()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(n.subnet.clone()),
                gateway: Some(n.gateway.clone()),
                ..Default::default()
            }]),
            options: Some(HashMap::new()),
        }),
        internal: Some(n.internal),
        attachable: Some(false),
        ingress: Some(false),
        config_only: Some(false),
        containers: Some(containers),
        options: Some(options),
        labels: Some(n.labels.clone().into_iter().collect()),
        ..Default::default()
    }
}

/// The network `key` names: its name, its id, or a unique prefix of the id.
async fn find(b: &Arc<dyn Backend>, key: &str) -> Result<v1::Network, ApiError> {
    let all = b.network_list(v1::ListNetworksRequest {}).await?.networks;
    if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
        return Ok(n.clone());
    }
    let by_prefix: Vec<_> = all
        .iter()
        .filter(|n| !key.is_empty() && n.id.starts_with(key))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::not_found(format!("network {key} not found"))),
        _ => Err(ApiError::bad_request(format!(
            "network {key} is ambiguous ({} matches): give more of its id",
            by_prefix.len()
        ))),
    }
}

async fn list(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let f = Filters::parse(
        crate::query::Query::parse(req.uri().query())
            .get("filters")
            .map(str::to_string)
            .as_deref(),
        &["name", "id", "label", "driver", "type", "scope", "dangling"],
    )?;
    let dangling = f.bool("dangling")?;
    let nets = b.network_list(v1::ListNetworksRequest {}).await?.networks;
    let out: Vec<Network> = nets
        .iter()
        .filter(|n| f.any("name", |v| n.name.contains(v)))
        .filter(|n| f.any("id", |v| n.id.starts_with(v)))
        .filter(|n| f.any("driver", |v| v == n.driver))
        .filter(|_| f.any("scope", |v| v == "local"))
        // builtin: the default network; custom: the user's.
        .filter(|n| f.any("type", |v| (v == "builtin") == (n.name == "bridge")))
        .filter(|n| dangling.is_none_or(|d| d == n.containers.is_empty()))
        .filter(|n| f.labels_match(&n.labels.clone().into_iter().collect()))
        .map(docker_network)
        .collect();
    Ok(Json(out).into_response())
}

async fn inspect(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let n = find(&b, &id).await?;
    Ok(Json(docker_network(&n)).into_response())
}

async fn create(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let r: NetworkCreateRequest = body(req).await?;
    if r.name.is_empty() {
        return Err(ApiError::bad_request("no network name given: set Name"));
    }
    match r.driver.as_deref().unwrap_or("") {
        "" | "bridge" => {}
        other => {
            return Err(ApiError::bad_request(format!(
            "network driver {other:?} is not supported: berth's networks are bridges (use bridge)"
        )))
        }
    }
    if r.ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .is_some_and(|c| c.len() > 1)
    {
        return Err(ApiError::bad_request(
            "one IPAM config at most: berth's networks have one IPv4 subnet",
        ));
    }
    let cfg = r
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| c.first())
        .cloned()
        .unwrap_or_default();
    if cfg.ip_range.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "IPRange is not supported: berth allocates from the whole subnet",
        ));
    }
    let mut warning = String::new();
    if r.options.as_ref().is_some_and(|o| !o.is_empty()) {
        warning = "driver options are not supported by berth and were ignored".into();
    }
    let n = b
        .network_create(v1::CreateNetworkRequest {
            name: r.name,
            subnet: cfg.subnet.unwrap_or_default(),
            gateway: cfg.gateway.unwrap_or_default(),
            internal: r.internal.unwrap_or(false),
            labels: r.labels.unwrap_or_default().into_iter().collect(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreateResponse { id: n.id, warning }),
    )
        .into_response())
}

async fn remove(State(b): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let n = find(&b, &id).await?;
    b.network_remove(v1::RemoveNetworkRequest {
        name: n.name,
        force: false,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn connect(
    State(b): Ctx,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let n = find(&b, &id).await?;
    let r: NetworkConnectRequest = body(req).await?;
    let container = r.container.unwrap_or_default();
    if container.is_empty() {
        return Err(ApiError::bad_request("no container given: set Container"));
    }
    let ep = r.endpoint_config.unwrap_or_default();
    let ip = ep
        .ipam_config
        .as_ref()
        .and_then(|c| c.ipv4_address.clone())
        .unwrap_or_default();
    b.network_connect(v1::ConnectNetworkRequest {
        network: n.name,
        container,
        aliases: ep.aliases.unwrap_or_default(),
        ip,
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

async fn disconnect(
    State(b): Ctx,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let n = find(&b, &id).await?;
    let r: NetworkDisconnectRequest = body(req).await?;
    let container = r.container.unwrap_or_default();
    if container.is_empty() {
        return Err(ApiError::bad_request("no container given: set Container"));
    }
    b.network_disconnect(v1::DisconnectNetworkRequest {
        network: n.name,
        container,
        force: r.force.unwrap_or(false),
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

async fn prune(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let q = crate::query::Query::parse(req.uri().query());
    let f = q.filters()?;
    if let Some(k) = f.keys().next() {
        return Err(ApiError::bad_request(format!(
            "invalid filter '{k}': berth's network prune takes no filters"
        )));
    }
    let r = b.network_prune(v1::PruneNetworksRequest {}).await?;
    Ok(Json(NetworkPruneResponse {
        networks_deleted: Some(r.removed),
    })
    .into_response())
}
