//! `/events` in Docker's format, mapped from berth's durable event log
//! (so `since` replays what happened while a client was away), and
//! `/system/df` from berth's disk usage.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_api::v1;
use bollard_stubs::models::{
    ContainerSummary, EventActor, EventMessage, EventMessageScopeEnum, EventMessageTypeEnum,
    ImageSummary, SystemDataUsageResponse, Volume, VolumeScopeEnum, VolumeUsageData,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::frames::{json_line, streamed};
use crate::query::Query;
use crate::Backend;

type Ctx = State<Arc<dyn Backend>>;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/events", get(events))
        .route("/system/df", get(df))
}

/// Docker's `since`/`until`: Unix seconds with an optional fraction
/// (what the CLI sends), or an RFC 3339 time; as berth's RFC 3339.
fn point(s: Option<&str>, what: &str) -> Result<String, ApiError> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(String::new());
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if let Ok(secs) = secs.parse::<u64>() {
        let digits: String = frac.chars().take(9).collect();
        let nanos = if digits.is_empty() {
            0
        } else {
            let n: u32 = digits.parse().map_err(|_| bad_time(what, s))?;
            n * 10u32.pow(9 - u32::try_from(digits.len()).unwrap_or(9))
        };
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        return Ok(humantime::format_rfc3339_nanos(t).to_string());
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .map_err(|_| bad_time(what, s))
}

fn bad_time(what: &str, s: &str) -> ApiError {
    ApiError::bad_request(format!(
        "invalid {what} {s:?}: give Unix seconds (1733100000 or 1733100000.5) or an RFC 3339 time"
    ))
}

/// The kind of object an event is about (berth's log leaves it empty for
/// container events).
fn object(ev: &v1::Event) -> &str {
    if ev.object.is_empty() {
        "container"
    } else {
        ev.object.as_str()
    }
}

/// berth's event type as Docker's action; None: no Docker counterpart.
fn action(ev: &v1::Event) -> Option<String> {
    let other = match (object(ev), ev.r#type.as_str()) {
        ("container", _) => None,
        ("image", t @ ("pull" | "load" | "save" | "tag" | "untag" | "delete")) => Some(t),
        ("volume", "create") | ("network", "create") => Some("create"),
        ("volume", "delete") | ("network", "delete") => Some("destroy"),
        ("network", t @ ("connect" | "disconnect")) => Some(t),
        _ => return None,
    };
    if let Some(a) = other {
        return Some(a.to_string());
    }
    Some(
        match ev.r#type.as_str() {
            "create" => "create",
            "start" => "start",
            "exit" => "die",
            "exec-added" => "exec_create",
            "exec-started" => "exec_start",
            "exec-exit" => "exec_die",
            "pause" => "pause",
            "resume" => "unpause",
            "oom" => "oom",
            "restart" => "restart",
            "delete" => "destroy",
            "update" => "update",
            "rename" => "rename",
            "health_status" => return Some(format!("health_status: {}", ev.status)),
            _ => return None,
        }
        .to_string(),
    )
}

/// What Docker puts in a container event's attributes besides the exit
/// code: the name, the image and the labels (looked up once per container).
#[derive(Clone, Default)]
struct Known {
    name: String,
    image: String,
    labels: HashMap<String, String>,
}

/// An image, volume or network event as moby emits it: an image event's
/// Actor is the image id (a pull's the reference) with the familiar
/// reference as `name`; a volume's is its name with its `driver`; a
/// network's is its id with `name`, `type` and, for connect and
/// disconnect, `container`.
fn object_event(ev: &v1::Event, action: String, typ: EventMessageTypeEnum) -> EventMessage {
    let mut attrs: HashMap<String, String> = ev
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let id = match typ {
        EventMessageTypeEnum::IMAGE => {
            let name = if ev.name.is_empty() {
                ev.container.clone()
            } else {
                crate::images::familiar(&ev.name)
            };
            attrs.insert("name".into(), name.clone());
            if ev.r#type == "pull" {
                name
            } else {
                ev.container.clone()
            }
        }
        EventMessageTypeEnum::NETWORK => {
            attrs.insert("name".into(), ev.name.clone());
            ev.container.clone()
        }
        _ => ev.container.clone(),
    };
    message(ev, typ, action, id, attrs)
}

fn message(
    ev: &v1::Event,
    typ: EventMessageTypeEnum,
    action: String,
    id: String,
    attrs: HashMap<String, String>,
) -> EventMessage {
    let t = humantime::parse_rfc3339_weak(&ev.time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    EventMessage {
        typ: Some(typ),
        action: Some(action),
        actor: Some(EventActor {
            id: Some(id),
            attributes: Some(attrs),
        }),
        scope: Some(EventMessageScopeEnum::LOCAL),
        time: Some(i64::try_from(t.as_secs()).unwrap_or(0)),
        time_nano: Some(i64::try_from(t.as_nanos()).unwrap_or(0)),
    }
}

fn docker_event(ev: &v1::Event, action: String, k: &Known) -> EventMessage {
    let mut attrs: HashMap<String, String> = k.labels.clone();
    let name = if ev.name.is_empty() {
        k.name.clone()
    } else {
        ev.name.clone()
    };
    attrs.insert("name".into(), name);
    if !k.image.is_empty() {
        attrs.insert("image".into(), k.image.clone());
    }
    if let Some(code) = ev.exit_code {
        attrs.insert("exitCode".into(), code.to_string());
    }
    if !ev.process.is_empty() {
        attrs.insert("execID".into(), ev.process.clone());
    }
    if ev.r#type == "rename" {
        attrs.insert("oldName".into(), format!("/{}", ev.old_name));
    }
    message(
        ev,
        EventMessageTypeEnum::CONTAINER,
        action,
        ev.container.clone(),
        attrs,
    )
}

/// Docker's deprecated top-level fields, which the CLI's default output
/// and docker-py still read: `status`, `id`, `from` (moby sets them on
/// container and image events only).
fn with_legacy(m: &EventMessage) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    let legacy = matches!(
        m.typ,
        Some(EventMessageTypeEnum::CONTAINER | EventMessageTypeEnum::IMAGE)
    );
    if let Some(o) = v.as_object_mut().filter(|_| legacy) {
        o.insert("status".into(), m.action.clone().unwrap_or_default().into());
        if let Some(a) = &m.actor {
            o.insert("id".into(), a.id.clone().unwrap_or_default().into());
            if let Some(img) = a.attributes.as_ref().and_then(|x| x.get("image")) {
                o.insert("from".into(), img.clone().into());
            }
        }
    }
    v
}

/// The object kinds berth records, by Docker's `Type` name.
const KINDS: [&str; 4] = ["container", "image", "volume", "network"];

/// The filters Docker's `/events` takes that berth can match.
#[derive(Default)]
struct EventFilters {
    containers: Vec<String>,
    actions: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
    labels: Vec<String>,
    /// Of `type`, the kinds berth records (none: every kind).
    types: Vec<String>,
    /// A `type` or `scope` filter nothing of berth's matches.
    none: bool,
}

fn event_filters(q: &Query) -> Result<EventFilters, ApiError> {
    let mut f = EventFilters::default();
    for (key, vals) in q.filters()? {
        match key.as_str() {
            "container" => f.containers = vals,
            "event" => f.actions = vals,
            "image" => f.images = vals,
            "volume" => f.volumes = vals,
            "network" => f.networks = vals,
            "label" => f.labels = vals,
            "type" => {
                // daemon, plugin, service, ... are never recorded.
                f.types = vals
                    .iter()
                    .filter(|v| KINDS.contains(&v.as_str()))
                    .cloned()
                    .collect();
                f.none |= !vals.is_empty() && f.types.is_empty();
            }
            "scope" => f.none |= !vals.is_empty() && !vals.iter().any(|v| v == "local"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': berth's events take container, event, image, volume, network, label, type and scope"
                )))
            }
        }
    }
    Ok(f)
}

/// Whether `want` (a filter's values) names `id` (or a prefix of it) or
/// `name`; an empty filter names everything.
fn names(want: &[String], id: &str, name: &str) -> bool {
    want.is_empty() || want.iter().any(|w| named(w, id, name))
}

/// Whether one filter value names `id` (or a prefix of it) or `name`.
fn named(w: &str, id: &str, name: &str) -> bool {
    (!w.is_empty() && id.starts_with(w)) || w == name
}

impl EventFilters {
    fn matches(&self, m: &EventMessage) -> bool {
        if self.none {
            return false;
        }
        let typ = m.typ.map(|t| t.to_string()).unwrap_or_default();
        if !self.types.is_empty() && !self.types.contains(&typ) {
            return false;
        }
        let action = m.action.as_deref().unwrap_or("");
        // `health_status` matches `health_status: healthy`, as Docker.
        let base = action.split(':').next().unwrap_or(action);
        if !self.actions.is_empty() && !self.actions.iter().any(|a| a == action || a == base) {
            return false;
        }
        let attrs = m
            .actor
            .as_ref()
            .and_then(|a| a.attributes.clone())
            .unwrap_or_default();
        let id = m
            .actor
            .as_ref()
            .and_then(|a| a.id.clone())
            .unwrap_or_default();
        let name = attrs.get("name").map(String::as_str).unwrap_or("");
        // As moby: a filter on one kind of object leaves out events about
        // other kinds, except where an event names that object too (a
        // network connect names its container, a container its image).
        match typ.as_str() {
            "image" => {
                let short = name.split(':').next().unwrap_or(name);
                return (self.images.is_empty()
                    || self
                        .images
                        .iter()
                        .any(|i| named(i, &id, name) || i == short))
                    && self.containers.is_empty()
                    && self.volumes.is_empty()
                    && self.networks.is_empty()
                    && self.labels.is_empty();
            }
            "volume" => {
                return names(&self.volumes, &id, &id)
                    && self.images.is_empty()
                    && self.containers.is_empty()
                    && self.networks.is_empty()
                    && self.labels.is_empty();
            }
            "network" => {
                let ctr = attrs.get("container").map(String::as_str).unwrap_or("");
                return names(&self.networks, &id, name)
                    && (self.containers.is_empty() || names(&self.containers, ctr, ctr))
                    && self.images.is_empty()
                    && self.volumes.is_empty()
                    && self.labels.is_empty();
            }
            _ => {}
        }
        if !self.volumes.is_empty() || !self.networks.is_empty() {
            return false;
        }
        if !self.images.is_empty() {
            let img = attrs.get("image").map(String::as_str).unwrap_or("");
            let short = img.split(':').next().unwrap_or(img);
            if !self.images.iter().any(|i| i == img || i == short) {
                return false;
            }
        }
        self.labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => attrs.get(k).is_some_and(|x| x == v),
            None => attrs.contains_key(l),
        })
    }
}

async fn events(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri().query());
    let since = point(q.get("since"), "since")?;
    let until = point(q.get("until"), "until")?;
    let filters = event_filters(&q)?;
    let mut stream = b
        .events(v1::EventsRequest {
            since,
            until,
            containers: filters.containers.clone(),
            types: Vec::new(),
            objects: filters.types.clone(),
        })
        .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let backend = b.clone();
    tokio::spawn(async move {
        let mut known: HashMap<String, Known> = HashMap::new();
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => return,
            };
            let Some(Ok(ev)) = item else { return };
            let Some(action) = action(&ev) else { continue };
            let typ = match object(&ev) {
                "image" => Some(EventMessageTypeEnum::IMAGE),
                "volume" => Some(EventMessageTypeEnum::VOLUME),
                "network" => Some(EventMessageTypeEnum::NETWORK),
                _ => None,
            };
            if let Some(typ) = typ {
                let m = object_event(&ev, action, typ);
                if !filters.matches(&m) {
                    continue;
                }
                if tx.send(json_line(&with_legacy(&m))).await.is_err() {
                    return;
                }
                continue;
            }
            if !known.contains_key(&ev.container) {
                let k = match backend
                    .inspect(v1::InspectRequest {
                        id: ev.container.clone(),
                    })
                    .await
                    .ok()
                    .and_then(|r| r.container)
                {
                    Some(c) => Known {
                        name: c.name,
                        image: crate::images::familiar(&c.image),
                        labels: c.labels.into_iter().collect(),
                    },
                    None => Known::default(),
                };
                known.insert(ev.container.clone(), k);
            }
            let k = known.get(&ev.container).cloned().unwrap_or_default();
            if ev.r#type == "delete" {
                known.remove(&ev.container);
            }
            let m = docker_event(&ev, action, &k);
            if !filters.matches(&m) {
                continue;
            }
            if tx.send(json_line(&with_legacy(&m))).await.is_err() {
                return;
            }
        }
    });
    Ok(streamed("application/json", rx))
}

async fn df(State(b): Ctx) -> Result<Response, ApiError> {
    let r = b.disk_usage(v1::DiskUsageRequest {}).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    let images: Vec<ImageSummary> = r
        .images
        .iter()
        .map(|i| ImageSummary {
            id: i.id.clone(),
            parent_id: String::new(),
            repo_tags: i
                .repo_tags
                .iter()
                .map(|t| crate::images::familiar(t))
                .collect(),
            repo_digests: Vec::new(),
            created: crate::inspect::unix_seconds(&i.created),
            size: i.size,
            shared_size: i.shared_size,
            virtual_size: Some(i.size),
            labels: HashMap::new(),
            containers: i.containers,
            manifests: None,
            descriptor: None,
        })
        .collect();
    let containers: Vec<ContainerSummary> = r
        .containers
        .iter()
        .filter_map(|u| u.container.as_ref())
        .map(|c| {
            let mut s = crate::inspect::summary(c, now);
            s.size_rw = c.size_rw;
            s.size_root_fs = c.size_root_fs;
            s
        })
        .collect();
    let volumes: Vec<Volume> = r
        .volumes
        .iter()
        .map(|v| Volume {
            name: v.name.clone(),
            driver: "local".into(),
            scope: Some(VolumeScopeEnum::LOCAL),
            usage_data: Some(VolumeUsageData {
                size: v.size,
                ref_count: v.links,
            }),
            ..Default::default()
        })
        .collect();
    Ok(Json(SystemDataUsageResponse {
        layers_size: Some(r.layers_size),
        images: Some(images),
        containers: Some(containers),
        volumes: Some(volumes),
        build_cache: Some(Vec::new()),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points() {
        assert_eq!(point(None, "since").unwrap(), "");
        assert_eq!(
            point(Some("1700000000.5"), "since").unwrap(),
            "2023-11-14T22:13:20.500000000Z"
        );
        assert_eq!(
            point(Some("1700000000"), "since").unwrap(),
            "2023-11-14T22:13:20.000000000Z"
        );
        assert!(point(Some("yesterday"), "since").is_err());
    }

    #[test]
    fn maps_an_exit() {
        let ev = v1::Event {
            seq: 3,
            time: "2023-11-14T22:13:20.25Z".into(),
            r#type: "exit".into(),
            container: "abc".into(),
            name: "web".into(),
            exit_code: Some(3),
            ..Default::default()
        };
        let a = action(&ev).unwrap();
        assert_eq!(a, "die");
        let k = Known {
            image: "busybox:latest".into(),
            ..Default::default()
        };
        let m = docker_event(&ev, a, &k);
        let v = with_legacy(&m);
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Action"], "die");
        assert_eq!(v["status"], "die");
        assert_eq!(v["id"], "abc");
        assert_eq!(v["from"], "busybox:latest");
        assert_eq!(v["time"], 1_700_000_000);
        assert_eq!(v["timeNano"], 1_700_000_000_250_000_000i64);
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3");
        assert_eq!(v["Actor"]["Attributes"]["name"], "web");
    }

    fn obj(object: &str, typ: &str, id: &str, name: &str, attrs: &[(&str, &str)]) -> v1::Event {
        v1::Event {
            seq: 9,
            time: "2023-11-14T22:13:20Z".into(),
            r#type: typ.into(),
            object: object.into(),
            container: id.into(),
            name: name.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn docker(ev: &v1::Event) -> serde_json::Value {
        let a = action(ev).unwrap();
        let typ = match object(ev) {
            "image" => EventMessageTypeEnum::IMAGE,
            "volume" => EventMessageTypeEnum::VOLUME,
            _ => EventMessageTypeEnum::NETWORK,
        };
        with_legacy(&object_event(ev, a, typ))
    }

    #[test]
    fn maps_image_events_as_moby() {
        let pull = obj(
            "image",
            "pull",
            "sha256:abc",
            "docker.io/library/busybox:latest",
            &[],
        );
        let v = docker(&pull);
        assert_eq!(v["Type"], "image");
        assert_eq!(v["Action"], "pull");
        assert_eq!(v["Actor"]["ID"], "busybox:latest");
        assert_eq!(v["Actor"]["Attributes"]["name"], "busybox:latest");
        assert_eq!(v["status"], "pull");
        let tag = obj(
            "image",
            "tag",
            "sha256:abc",
            "docker.io/library/busybox:mine",
            &[],
        );
        let v = docker(&tag);
        assert_eq!(v["Action"], "tag");
        assert_eq!(v["Actor"]["ID"], "sha256:abc");
        assert_eq!(v["Actor"]["Attributes"]["name"], "busybox:mine");
        let del = obj("image", "delete", "sha256:abc", "", &[]);
        let v = docker(&del);
        assert_eq!(v["Action"], "delete");
        assert_eq!(v["Actor"]["Attributes"]["name"], "sha256:abc");
        for t in ["load", "save", "untag"] {
            assert_eq!(action(&obj("image", t, "sha256:abc", "", &[])).unwrap(), t);
        }
        // An image kind with a container's type has no Docker action.
        assert!(action(&obj("image", "start", "x", "", &[])).is_none());
    }

    #[test]
    fn maps_volume_and_network_events_as_moby() {
        let v = docker(&obj(
            "volume",
            "create",
            "data",
            "data",
            &[("driver", "local")],
        ));
        assert_eq!(v["Type"], "volume");
        assert_eq!(v["Action"], "create");
        assert_eq!(v["Actor"]["ID"], "data");
        assert_eq!(v["Actor"]["Attributes"]["driver"], "local");
        // moby sets the legacy fields on container and image events only.
        assert!(v.get("status").is_none());
        let v = docker(&obj(
            "volume",
            "delete",
            "data",
            "data",
            &[("driver", "local")],
        ));
        assert_eq!(v["Action"], "destroy");
        let v = docker(&obj(
            "network",
            "connect",
            "n1id",
            "front",
            &[("type", "bridge"), ("container", "c1")],
        ));
        assert_eq!(v["Type"], "network");
        assert_eq!(v["Action"], "connect");
        assert_eq!(v["Actor"]["ID"], "n1id");
        assert_eq!(v["Actor"]["Attributes"]["name"], "front");
        assert_eq!(v["Actor"]["Attributes"]["type"], "bridge");
        assert_eq!(v["Actor"]["Attributes"]["container"], "c1");
        let v = docker(&obj(
            "network",
            "delete",
            "n1id",
            "front",
            &[("type", "bridge")],
        ));
        assert_eq!(v["Action"], "destroy");
        // A container event still maps as before (empty object).
        assert_eq!(action(&obj("", "delete", "c", "", &[])).unwrap(), "destroy");
        assert_eq!(
            action(&obj("container", "exit", "c", "", &[])).unwrap(),
            "die"
        );
    }

    fn filters(json: &str) -> EventFilters {
        let q = format!("filters={}", urlencoding(json));
        event_filters(&Query::parse(Some(&q))).unwrap()
    }

    /// Enough percent-encoding for the filter JSON of these tests.
    fn urlencoding(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
                c => format!("%{:02X}", c as u32),
            })
            .collect()
    }

    #[test]
    fn filters_by_type_and_object() {
        let vol = object_event(
            &obj("volume", "create", "data", "data", &[("driver", "local")]),
            "create".into(),
            EventMessageTypeEnum::VOLUME,
        );
        let img = object_event(
            &obj(
                "image",
                "tag",
                "sha256:abc",
                "docker.io/library/busybox:mine",
                &[],
            ),
            "tag".into(),
            EventMessageTypeEnum::IMAGE,
        );
        let net = object_event(
            &obj(
                "network",
                "connect",
                "n1id",
                "front",
                &[("type", "bridge"), ("container", "c1abc")],
            ),
            "connect".into(),
            EventMessageTypeEnum::NETWORK,
        );
        let ctr = docker_event(
            &obj("", "start", "c1abc", "web", &[]),
            "start".into(),
            &Known {
                image: "busybox:latest".into(),
                ..Default::default()
            },
        );
        let all = [&vol, &img, &net, &ctr];
        let hits = |f: &EventFilters| -> Vec<bool> { all.iter().map(|m| f.matches(m)).collect() };
        assert_eq!(hits(&filters("{}")), [true, true, true, true]);
        assert_eq!(
            hits(&filters(r#"{"type":["volume"]}"#)),
            [true, false, false, false]
        );
        assert_eq!(
            hits(&filters(r#"{"type":["image","network"]}"#)),
            [false, true, true, false]
        );
        assert_eq!(hits(&filters(r#"{"type":["daemon"]}"#)), [false; 4]);
        assert_eq!(
            hits(&filters(r#"{"volume":["data"]}"#)),
            [true, false, false, false]
        );
        assert_eq!(hits(&filters(r#"{"volume":["other"]}"#)), [false; 4]);
        assert_eq!(
            hits(&filters(r#"{"network":["front"]}"#)),
            [false, false, true, false]
        );
        assert_eq!(
            hits(&filters(r#"{"network":["n1"]}"#)),
            [false, false, true, false]
        );
        // image= matches the image's events and the containers made of it.
        assert_eq!(
            hits(&filters(r#"{"image":["busybox:mine"]}"#)),
            [false, true, false, false]
        );
        assert_eq!(
            hits(&filters(r#"{"image":["busybox"]}"#)),
            [false, true, false, true]
        );
        assert_eq!(
            hits(&filters(r#"{"event":["create"]}"#)),
            [true, false, false, false]
        );
        assert_eq!(
            hits(&filters(r#"{"event":["connect","tag"]}"#)),
            [false, true, true, false]
        );
        assert!(event_filters(&Query::parse(Some(
            "filters=%7B%22plugin%22%3A%5B%22x%22%5D%7D"
        )))
        .is_err());
    }
}
