//! The router and the server loop on a unix socket.

use std::sync::Arc;

use axum::response::IntoResponse;
use axum::{Router, ServiceExt};
use tokio::net::UnixListener;
use tower::Layer;

use crate::error::ApiError;
use crate::{containers, events, images, networks, ops, pull, system, volumes, Backend};

/// Every route, unversioned: the negotiation layer in [`serve`] strips the
/// `/v1.NN` prefix before routing. Each resource adds its own `routes()`.
pub fn router(backend: Arc<dyn Backend>) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(containers::routes())
        .merge(ops::routes())
        .merge(images::routes())
        .merge(pull::routes())
        .merge(events::routes())
        .merge(volumes::routes())
        .merge(networks::routes())
        .fallback(|| async { ApiError::page_not_found().into_response() })
        .method_not_allowed_fallback(|| async { ApiError::page_not_found().into_response() })
        .with_state(backend)
}

/// The router behind the version negotiation layer, as a service that can
/// be driven without a socket (tests call it with `tower::ServiceExt`).
pub fn app(
    backend: Arc<dyn Backend>,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    // Around the router, not inside it: the URI is rewritten before the
    // route is chosen. The timing is outermost, so it counts the whole
    // request.
    let app = axum::middleware::from_fn(crate::version::negotiate).layer(router(backend));
    axum::middleware::from_fn(timed).layer(app)
}

/// Each request's method, path, status and time to its response head, at
/// debug level (`berthd --log-level debug`): where a client's time goes,
/// request by request. A streamed or hijacked reply (wait, logs, attach)
/// is counted to its head, not to its end.
async fn timed(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
        "docker api request"
    );
    resp
}

/// Serve the Docker API on `listener` until the task is dropped. Every
/// connection may be upgraded (attach, exec start).
pub async fn serve(listener: UnixListener, backend: Arc<dyn Backend>) -> std::io::Result<()> {
    let app = app(backend);
    axum::serve(listener, app.into_make_service()).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use berth_api::v1;
    use tower::ServiceExt;

    use crate::fake::Fake;

    async fn call(
        fake: Arc<Fake>,
        method: Method,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let resp = super::app(fake).oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json, text)
    }

    #[tokio::test]
    async fn ping_get_and_head() {
        let fake = Arc::new(Fake::default());
        let (st, h, _, body) = call(fake.clone(), Method::GET, "/_ping").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body, "OK");
        assert_eq!(h["api-version"], "1.50");
        assert_eq!(h["ostype"], "linux");
        assert_eq!(h["docker-experimental"], "false");
        let (st, h, _, body) = call(fake.clone(), Method::HEAD, "/v1.24/_ping").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body, "");
        assert_eq!(h["api-version"], "1.50");
    }

    #[tokio::test]
    async fn version_range_is_checked() {
        let fake = Arc::new(Fake::default());
        let (st, h, j, _) = call(fake.clone(), Method::GET, "/v1.23/version").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(h["api-version"], "1.50");
        assert!(j["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("client version 1.23 is too old")));
        let (st, _, j, _) = call(fake.clone(), Method::GET, "/v1.51/version").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(
            j["message"],
            "client version 1.51 is too new. Maximum supported API version is 1.50"
        );
        let (st, _, j, _) = call(fake.clone(), Method::GET, "/v1.50/version").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(j["ApiVersion"], "1.50");
        assert_eq!(j["MinAPIVersion"], "1.24");
        assert_eq!(j["Version"], "9.9.9");
        assert_eq!(j["Components"][0]["Name"], "Engine");
        assert_eq!(j["Components"][1]["Name"], "runc");
    }

    #[tokio::test]
    async fn info_maps_counts() {
        let fake = Arc::new(Fake {
            info: v1::InfoResponse {
                version: "1.2.3".into(),
                runtime: "embedded".into(),
                root: "/r".into(),
                cgroup: "v2".into(),
                containers: 3,
                running: 1,
                paused: 1,
                stopped: 1,
                cpus: 2,
                memory: 1 << 30,
                storage_driver: "overlay".into(),
                images: 4,
                ..Default::default()
            },
            engine: crate::Engine {
                id: "0b6c5f1e-3d2a-4c8b-9e7f-1a2b3c4d5e6f".into(),
                security_options: vec!["name=seccomp,profile=builtin".into(), "name=userns".into()],
            },
            ..Default::default()
        });
        let (st, _, j, _) = call(fake, Method::GET, "/v1.41/info").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(j["Containers"], 3);
        assert_eq!(j["ContainersRunning"], 1);
        assert_eq!(j["Images"], 4);
        assert_eq!(j["Driver"], "overlay");
        assert_eq!(j["DockerRootDir"], "/r");
        assert_eq!(j["CgroupVersion"], "2");
        assert_eq!(j["NCPU"], 2);
        assert_eq!(j["MemTotal"], 1 << 30);
        assert_eq!(j["ServerVersion"], "1.2.3");
        assert_eq!(j["DefaultRuntime"], "embedded");
        assert_eq!(j["Swarm"]["LocalNodeState"], "inactive");
        assert_eq!(j["ID"], "0b6c5f1e-3d2a-4c8b-9e7f-1a2b3c4d5e6f");
        assert_eq!(
            j["SecurityOptions"],
            serde_json::json!(["name=seccomp,profile=builtin", "name=userns"])
        );
        assert_eq!(
            j["RegistryConfig"]["InsecureRegistryCIDRs"],
            serde_json::json!(["::1/128", "127.0.0.0/8"])
        );
        assert_eq!(
            j["RegistryConfig"]["IndexConfigs"]["docker.io"]["Secure"],
            true
        );
        assert_eq!(
            j["RegistryConfig"]["IndexConfigs"]["docker.io"]["Official"],
            true
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_docker_404s() {
        let fake = Arc::new(Fake::default());
        let (st, h, j, _) = call(fake.clone(), Method::GET, "/v1.41/nothing").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(j["message"], "page not found");
        assert_eq!(h["api-version"], "1.50");
        let (st, _, j, _) = call(fake, Method::DELETE, "/info").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(j["message"], "page not found");
    }
}
