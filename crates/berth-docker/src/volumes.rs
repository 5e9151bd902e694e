//! `/volumes`: create, list, inspect, delete and prune, mapped onto berth's
//! volume service (docs/volumes.md). Every volume is `local`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api::v1;
use bollard_stubs::models::{
    Volume, VolumeCreateOptions, VolumeListResponse, VolumePruneResponse, VolumeScopeEnum,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::filters::Filters;
use crate::Backend;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

/// Docker's view of a berth volume.
pub fn volume_body(v: &v1::Volume) -> Volume {
    Volume {
        name: v.name.clone(),
        driver: "local".into(),
        mountpoint: v.mountpoint.clone(),
        created_at: (!v.created.is_empty()).then(|| v.created.clone()),
        labels: v.labels.clone().into_iter().collect(),
        scope: Some(VolumeScopeEnum::LOCAL),
        options: HashMap::new(),
        ..Default::default()
    }
}

async fn create(
    State(b): State<Arc<dyn Backend>>,
    body: Option<Json<VolumeCreateOptions>>,
) -> Result<Response, ApiError> {
    let o = body.map(|Json(o)| o).unwrap_or_default();
    if let Some(d) = o
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::bad_request(format!(
            "volume driver {d:?} is not supported: berth has only the local driver"
        )));
    }
    if o.driver_opts.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ApiError::bad_request(
            "volume driver options are not supported: berth's local volumes are plain directories",
        ));
    }
    let v = b
        .volume_create(v1::CreateVolumeRequest {
            name: o.name.unwrap_or_default(),
            labels: o.labels.unwrap_or_default().into_iter().collect(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(volume_body(&v))).into_response())
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    filters: Option<String>,
}

async fn list(
    State(b): State<Arc<dyn Backend>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<VolumeListResponse>, ApiError> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &["dangling", "name", "label", "driver"],
    )?;
    let dangling = f.bool("dangling")?;
    let r = b
        .volume_list(v1::ListVolumesRequest {
            dangling: dangling == Some(true),
        })
        .await?;
    let volumes = r
        .volumes
        .iter()
        .filter(|v| dangling != Some(false) || !v.containers.is_empty())
        .filter(|v| f.any("name", |n| v.name.contains(n)))
        .filter(|_| f.any("driver", |d| d == "local"))
        .filter(|v| f.labels_match(&v.labels))
        .map(volume_body)
        .collect();
    Ok(Json(VolumeListResponse {
        volumes: Some(volumes),
        warnings: Some(Vec::new()),
    }))
}

async fn inspect(
    State(b): State<Arc<dyn Backend>>,
    Path(name): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    let v = b.volume_inspect(v1::InspectVolumeRequest { name }).await?;
    Ok(Json(volume_body(&v)))
}

#[derive(Deserialize, Default)]
struct RemoveQuery {
    #[serde(default)]
    force: Option<String>,
}

async fn remove(
    State(b): State<Arc<dyn Backend>>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    b.volume_remove(v1::RemoveVolumeRequest {
        name,
        force: crate::filters::truthy(q.force.as_deref()),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    State(b): State<Arc<dyn Backend>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<VolumePruneResponse>, ApiError> {
    // As Docker 23+: only anonymous volumes unless `all=true`; always only
    // volumes no container uses.
    let f = Filters::parse(q.filters.as_deref(), &["all", "label"])?;
    let all = f.bool("all")? == Some(true);
    let r = b
        .volume_list(v1::ListVolumesRequest { dangling: true })
        .await?;
    let mut deleted = Vec::new();
    for v in r.volumes.iter().filter(|v| v.containers.is_empty()) {
        if (!all && !v.anonymous) || !f.labels_match(&v.labels) {
            continue;
        }
        // One a container took meanwhile is refused, and stays.
        if b.volume_remove(v1::RemoveVolumeRequest {
            name: v.name.clone(),
            force: false,
        })
        .await
        .is_ok()
        {
            deleted.push(v.name.clone());
        }
    }
    Ok(Json(VolumePruneResponse {
        volumes_deleted: Some(deleted),
        space_reclaimed: Some(0),
    }))
}
