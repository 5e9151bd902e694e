//! `POST /images/create` (pull) with Docker's JSON progress stream, and
//! `POST /auth` (`docker login`: the credentials checked against the
//! registry; the client keeps them, as with Docker).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use berth_api::v1;
use bollard_stubs::models::SystemAuthResponse;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::frames::{json_line, streamed};
use crate::query::Query;
use crate::Backend;

type Ctx = State<Arc<dyn Backend>>;

pub fn routes() -> Router<Arc<dyn Backend>> {
    Router::new()
        .route("/images/create", post(create))
        .route("/auth", post(auth))
}

/// `fromImage` and `tag` as one reference: `tag` may be a tag or a digest;
/// a `fromImage` that already has one keeps it.
fn reference(from: &str, tag: &str) -> String {
    if tag.is_empty() {
        return from.to_string();
    }
    if tag.starts_with("sha256:") {
        return format!("{from}@{tag}");
    }
    let last = from.rsplit('/').next().unwrap_or(from);
    if last.contains(':') || last.contains('@') {
        from.to_string()
    } else {
        format!("{from}:{tag}")
    }
}

/// Base64 as Go's clients write it: URL-safe (docker CLI) or standard
/// (some SDKs), padded or not.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .ok()
}

/// The credentials of `X-Registry-Auth` (base64 of an AuthConfig); none
/// when absent or empty (`{}`).
fn registry_auth(headers: &HeaderMap) -> Result<Option<v1::RegistryAuth>, ApiError> {
    let Some(raw) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("");
    if raw.is_empty() {
        return Ok(None);
    }
    let bytes = decode_b64(raw).ok_or_else(|| {
        ApiError::bad_request(
            "X-Registry-Auth is not base64: send base64url of the AuthConfig JSON",
        )
    })?;
    let a: AuthConfig = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("X-Registry-Auth is not an AuthConfig: {e}")))?;
    Ok(auth_of(&a))
}

fn auth_of(a: &AuthConfig) -> Option<v1::RegistryAuth> {
    let (mut user, mut pass) = (
        a.username.clone().unwrap_or_default(),
        a.password.clone().unwrap_or_default(),
    );
    // `auth`: base64 of USER:PASSWORD, as in config.json.
    if user.is_empty() {
        if let Some(text) = a
            .auth
            .as_deref()
            .and_then(decode_b64)
            .and_then(|b| String::from_utf8(b).ok())
        {
            if let Some((u, p)) = text.split_once(':') {
                user = u.to_string();
                pass = p.to_string();
            }
        }
    }
    let token = a.identitytoken.clone().unwrap_or_default();
    if user.is_empty() && pass.is_empty() && token.is_empty() {
        return None;
    }
    Some(v1::RegistryAuth {
        username: user,
        password: pass,
        identity_token: token,
    })
}

/// Docker's AuthConfig as clients send it (bollard's model lacks `auth`
/// and `identitytoken`, which Go clients send too).
#[derive(Debug, Default, Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// base64 of USER:PASSWORD.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    serveraddress: Option<String>,
}

/// The 12 hex characters Docker uses as a layer's id in progress.
fn short(digest: &str) -> String {
    berth_api::display::short_id(digest).to_string()
}

/// Docker's text bar, as moby's jsonmessage renders `progress`.
fn bar(current: u64, total: u64) -> String {
    if total == 0 {
        return String::new();
    }
    let width = 50u64;
    let filled = (current.min(total) * width / total) as usize;
    let mut s = String::from("[");
    s.push_str(&"=".repeat(filled));
    if filled < width as usize {
        s.push('>');
        s.push_str(&" ".repeat(width as usize - filled - 1));
    }
    s.push(']');
    format!("{s} {}/{}", human(current), human(total))
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i])
    }
}

/// One of berth's pull messages as Docker's progress lines.
fn progress_lines(
    p: &v1::PullProgress,
    last: &mut std::collections::HashMap<String, String>,
) -> Vec<serde_json::Value> {
    use v1::pull_progress::Event;
    match &p.event {
        Some(Event::Resolved(r)) => {
            let (repo, tag) = split_tag(&r.reference);
            let mut out = vec![json!({"status": format!("Pulling from {repo}"), "id": tag})];
            for l in &r.layers {
                out.push(
                    json!({"status": "Pulling fs layer", "progressDetail": {}, "id": short(l)}),
                );
            }
            out
        }
        Some(Event::Layer(l)) => {
            let id = short(&l.digest);
            let changed = last.get(&id).map(String::as_str) != Some(l.status.as_str());
            last.insert(id.clone(), l.status.clone());
            match l.status.as_str() {
                "downloading" | "extracting" => vec![json!({
                    "status": berth_api::display::pull_status(&l.status),
                    "progressDetail": {"current": l.current, "total": l.total},
                    "progress": bar(l.current, l.total),
                    "id": id,
                })],
                _ if changed => {
                    vec![
                        json!({"status": berth_api::display::pull_status(&l.status), "progressDetail": {}, "id": id}),
                    ]
                }
                _ => Vec::new(),
            }
        }
        Some(Event::Done(d)) => {
            let name = crate::images::familiar(&d.reference);
            let status = if d.downloaded {
                format!("Status: Downloaded newer image for {name}")
            } else {
                format!("Status: Image is up to date for {name}")
            };
            vec![
                json!({"status": format!("Digest: {}", d.digest)}),
                json!({"status": status}),
            ]
        }
        None => Vec::new(),
    }
}

/// `registry/repo/name:tag` → (`repo/name` without the registry, `tag`).
fn split_tag(reference: &str) -> (String, String) {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (reference, "latest"),
    };
    let name = name.split('@').next().unwrap_or(name);
    let repo = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => name,
    };
    (repo.to_string(), tag.to_string())
}

async fn create(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let q = Query::parse(req.uri().query());
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "importing a tarball (fromSrc, docker import) is not supported by berth: use docker load",
        ));
    }
    let from = q.get("fromImage").unwrap_or("");
    if from.is_empty() {
        return Err(ApiError::bad_request(
            "no image given: add ?fromImage=NAME (and &tag=TAG)",
        ));
    }
    let reference = reference(from, q.get("tag").unwrap_or(""));
    let auth = registry_auth(req.headers())?;
    let mut stream = b
        .pull(v1::PullRequest {
            reference,
            platform: q.get("platform").unwrap_or("").to_string(),
            insecure: false,
            auth,
        })
        .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut last = std::collections::HashMap::new();
        while let Some(item) = stream.next().await {
            let lines = match item {
                Ok(p) => progress_lines(&p, &mut last),
                // After the headers, an error is a message in the stream,
                // as Docker's (the CLI prints it and fails).
                Err(e) => vec![json!({
                    "errorDetail": {"message": e.message()},
                    "error": e.message(),
                })],
            };
            for l in lines {
                if tx.send(json_line(&l)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(streamed("application/json", rx))
}

async fn auth(State(b): Ctx, req: Request) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let a: AuthConfig = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))?;
    let server = a.serveraddress.clone().unwrap_or_default();
    // Docker Hub's address as the CLI sends it, as berth names it.
    let registry = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    let registry = if registry.is_empty() || registry == "index.docker.io" {
        "docker.io".to_string()
    } else {
        registry
    };
    let creds = auth_of(&a)
        .ok_or_else(|| ApiError::bad_request("no credentials given: set username and password"))?;
    b.login(registry, creds).await.map_err(|e| {
        let mut err = ApiError::from(e);
        // A registry's refusal is Docker's 401 whatever berth's code.
        if err.status.is_server_error() || err.status == axum::http::StatusCode::CONFLICT {
            err.status = axum::http::StatusCode::UNAUTHORIZED;
        }
        err
    })?;
    Ok(Json(SystemAuthResponse {
        status: "Login Succeeded".into(),
        identity_token: None,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn references() {
        assert_eq!(reference("busybox", "latest"), "busybox:latest");
        assert_eq!(reference("127.0.0.1:5000/a/b", "1"), "127.0.0.1:5000/a/b:1");
        assert_eq!(reference("busybox:1", ""), "busybox:1");
        assert_eq!(reference("busybox", "sha256:abc"), "busybox@sha256:abc");
        assert_eq!(reference("127.0.0.1:5000/a", ""), "127.0.0.1:5000/a");
    }

    #[test]
    fn auth_header() {
        let mut h = HeaderMap::new();
        assert_eq!(registry_auth(&h).unwrap(), None);
        h.insert("X-Registry-Auth", HeaderValue::from_static("e30="));
        assert_eq!(registry_auth(&h).unwrap(), None);
        // {"username":"alice","password":"s3cret"}
        let enc = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"username":"alice","password":"s3cret"}"#);
        h.insert("X-Registry-Auth", HeaderValue::from_str(&enc).unwrap());
        let a = registry_auth(&h).unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("alice", "s3cret")
        );
    }

    #[test]
    fn progress() {
        assert_eq!(
            split_tag("127.0.0.1:5000/e2e/app:1"),
            ("e2e/app".to_string(), "1".to_string())
        );
        assert_eq!(
            split_tag("docker.io/library/busybox:latest"),
            ("library/busybox".to_string(), "latest".to_string())
        );
        assert!(bar(5, 10).starts_with("[=========================>"));
    }
}
