//! `/images`: list, inspect, tag, delete, history, load, get (save) and
//! prune, mapped onto berth's image service. Names go out in Docker's
//! familiar form (`busybox:latest`, not `docker.io/library/busybox:latest`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api::v1;
use bollard_stubs::models::{
    HistoryResponseItem, ImageDeleteResponseItem, ImagePruneResponse, ImageSummary,
};
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::filters::{truthy, Filters};
use crate::Backend;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/load", post(load))
        .route("/images/prune", post(prune))
        .route("/images/get", get(save_many))
        // Names have slashes (`127.0.0.1:5000/app`): the action is the last
        // segment, so one wildcard route takes them all.
        .route(
            "/images/{*rest}",
            get(by_name_get).post(by_name_post).delete(remove),
        )
}

pub use berth_api::display::familiar;

/// RFC 3339 → Unix seconds (0 when unknown), as Docker's `Created`.
fn unix(t: &str) -> i64 {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn summary(i: &v1::Image) -> ImageSummary {
    ImageSummary {
        id: i.id.clone(),
        parent_id: String::new(),
        repo_tags: i.repo_tags.iter().map(|t| familiar(t)).collect(),
        repo_digests: i.repo_digests.iter().map(|t| familiar(t)).collect(),
        created: unix(&i.created),
        size: size(i.size),
        shared_size: -1,
        virtual_size: Some(size(i.size)),
        labels: HashMap::new(),
        containers: -1,
        ..Default::default()
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    filters: Option<String>,
}

async fn list(
    State(b): State<Arc<dyn Backend>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let f = Filters::parse(q.filters.as_deref(), &["dangling", "reference"])?;
    let dangling = f.bool("dangling")?;
    let r = b
        .image_list(v1::ListImagesRequest {
            all: truthy(q.all.as_deref()) || dangling.is_some(),
        })
        .await?;
    let out = r
        .images
        .iter()
        .filter(|i| dangling.is_none_or(|d| d == i.repo_tags.is_empty()))
        .filter(|i| {
            f.any("reference", |want| {
                i.repo_tags.iter().any(|t| {
                    let t = familiar(t);
                    t == want || t.rsplit_once(':').is_some_and(|(repo, _)| repo == want)
                })
            })
        })
        .map(summary)
        .collect();
    Ok(Json(out))
}

/// What follows the image name in `/images/{name}/{action}`.
fn split_action(rest: &str) -> (&str, &str) {
    for action in ["/json", "/history", "/get", "/tag", "/push"] {
        if let Some(name) = rest.strip_suffix(action) {
            return (name, &action[1..]);
        }
    }
    (rest, "")
}

#[derive(Deserialize, Default)]
struct TagQuery {
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

async fn by_name_get(
    State(b): State<Arc<dyn Backend>>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    match split_action(&rest) {
        (name, "json") => inspect(b, name).await,
        (name, "history") => history(b, name).await,
        (name, "get") => save(b, vec![name.to_string()]).await,
        _ => Err(ApiError::page_not_found()),
    }
}

async fn by_name_post(
    State(b): State<Arc<dyn Backend>>,
    Path(rest): Path<String>,
    Query(q): Query<TagQuery>,
) -> Result<Response, ApiError> {
    match split_action(&rest) {
        (name, "tag") => {
            let repo = q.repo.unwrap_or_default();
            if repo.is_empty() {
                return Err(ApiError::bad_request(
                    "repository name must have at least one component",
                ));
            }
            let target = match q.tag.filter(|t| !t.is_empty()) {
                Some(t) => format!("{repo}:{t}"),
                None => repo,
            };
            b.image_tag(v1::TagImageRequest {
                source: name.to_string(),
                target,
            })
            .await?;
            Ok(StatusCode::CREATED.into_response())
        }
        (_, "push") => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "push is not supported by berth",
        )),
        _ => Err(ApiError::page_not_found()),
    }
}

async fn inspect(b: Arc<dyn Backend>, name: &str) -> Result<Response, ApiError> {
    let r = b
        .image_inspect(v1::InspectImageRequest {
            image: name.to_string(),
        })
        .await?;
    let mut doc: serde_json::Value = serde_json::from_str(&r.json)
        .map_err(|e| ApiError::internal(format!("the image's description: {e}")))?;
    if let Some(m) = doc.as_object_mut() {
        for key in ["RepoTags", "RepoDigests"] {
            if let Some(serde_json::Value::Array(a)) = m.get_mut(key) {
                for v in a.iter_mut() {
                    if let Some(s) = v.as_str() {
                        *v = serde_json::Value::String(familiar(s));
                    }
                }
            }
        }
        // Fields Docker clients read that berth's description lacks.
        for (k, v) in [
            ("Parent", serde_json::json!("")),
            ("Comment", serde_json::json!("")),
            ("DockerVersion", serde_json::json!("")),
            ("Author", serde_json::json!("")),
            (
                "VirtualSize",
                m.get("Size").cloned().unwrap_or(serde_json::json!(0)),
            ),
            (
                "GraphDriver",
                serde_json::json!({"Name": "overlay", "Data": {}}),
            ),
            (
                "Metadata",
                serde_json::json!({"LastTagTime": "0001-01-01T00:00:00Z"}),
            ),
        ] {
            m.entry(k).or_insert(v);
        }
        if m.get("Created").is_some_and(serde_json::Value::is_null) {
            m.insert("Created".into(), serde_json::json!("0001-01-01T00:00:00Z"));
        }
        if m.get("Config").is_some_and(serde_json::Value::is_null) {
            m.insert("Config".into(), serde_json::json!({}));
        }
    }
    Ok(Json(doc).into_response())
}

async fn history(b: Arc<dyn Backend>, name: &str) -> Result<Response, ApiError> {
    let r = b
        .image_history(v1::HistoryRequest {
            image: name.to_string(),
        })
        .await?;
    let items: Vec<HistoryResponseItem> = r
        .entries
        .iter()
        .map(|e| HistoryResponseItem {
            id: e.id.clone(),
            created: unix(&e.created),
            created_by: e.created_by.clone(),
            tags: Vec::new(),
            size: size(e.size),
            comment: e.comment.clone(),
        })
        .collect();
    Ok(Json(items).into_response())
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
) -> Result<Json<Vec<ImageDeleteResponseItem>>, ApiError> {
    let r = b
        .image_remove(v1::RemoveImageRequest {
            image: name,
            force: truthy(q.force.as_deref()),
        })
        .await?;
    Ok(Json(delete_items(&r.untagged, &r.deleted)))
}

fn delete_items(untagged: &[String], deleted: &[String]) -> Vec<ImageDeleteResponseItem> {
    untagged
        .iter()
        .map(|u| ImageDeleteResponseItem {
            untagged: Some(familiar(u)),
            deleted: None,
        })
        .chain(deleted.iter().map(|d| ImageDeleteResponseItem {
            untagged: None,
            deleted: Some(d.clone()),
        }))
        .collect()
}

#[derive(Deserialize, Default)]
struct PruneQuery {
    #[serde(default)]
    filters: Option<String>,
}

async fn prune(
    State(b): State<Arc<dyn Backend>>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<ImagePruneResponse>, ApiError> {
    let f = Filters::parse(q.filters.as_deref(), &["dangling"])?;
    // dangling=false: every unused image (docker image prune -a).
    let all = f.bool("dangling")? == Some(false);
    let r = b.image_prune(v1::PruneImagesRequest { all }).await?;
    Ok(Json(ImagePruneResponse {
        images_deleted: Some(delete_items(&r.untagged, &r.deleted)),
        space_reclaimed: Some(size(r.reclaimed)),
    }))
}

async fn save_many(
    State(b): State<Arc<dyn Backend>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    // `names` repeats (names=a&names=b): collected by hand, serde_urlencoded
    // keeps only one.
    let names: Vec<String> = raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "names")
        .map(|(_, v)| percent_decode(v))
        .collect();
    save(b, names).await
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn save(b: Arc<dyn Backend>, names: Vec<String>) -> Result<Response, ApiError> {
    let stream = b.image_save(v1::SaveRequest { images: names }).await?;
    let body = Body::from_stream(stream.map(|r| {
        r.map(|c| axum::body::Bytes::from(c.data))
            .map_err(|s| std::io::Error::other(s.message().to_string()))
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

#[derive(Deserialize, Default)]
struct LoadQuery {
    #[serde(default)]
    quiet: Option<String>,
}

/// `POST /images/load`: the body is the archive; the reply, Docker's JSON
/// message stream: `{"stream":"Loaded image: busybox:latest\n"}` per image.
async fn load(
    State(b): State<Arc<dyn Backend>>,
    Query(q): Query<LoadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let _quiet = truthy(q.quiet.as_deref());
    let chunks = body.into_data_stream().map(|r| {
        r.map(|bytes| v1::LoadChunk {
            data: bytes.to_vec(),
        })
        .map_err(|e| tonic::Status::aborted(format!("the archive upload broke: {e}")))
    });
    let loaded = b.image_load(Box::pin(chunks)).await?;
    let mut text = String::new();
    for l in loaded {
        let msg = match l.message.split_once(": ") {
            Some((what, name)) if what == "Loaded image" => format!("{what}: {}", familiar(name)),
            _ => l.message.clone(),
        };
        text.push_str(&serde_json::json!({ "stream": format!("{msg}\n") }).to_string());
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/user/app:1"), "user/app:1");
        assert_eq!(familiar("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
    }

    #[test]
    fn actions_split_from_names_with_slashes() {
        assert_eq!(
            split_action("127.0.0.1:5000/app:1/json"),
            ("127.0.0.1:5000/app:1", "json")
        );
        assert_eq!(split_action("busybox/tag"), ("busybox", "tag"));
        assert_eq!(split_action("busybox"), ("busybox", ""));
        assert_eq!(percent_decode("a%2Fb%3A1"), "a/b:1");
    }
}
