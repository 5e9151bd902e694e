//! API version negotiation as Docker does it: `/v1.NN/...` paths from
//! [`MIN_API`] to [`MAX_API`], unversioned paths meaning the newest, and
//! `Api-Version`, `Ostype` and `Server` headers on every reply.

use axum::extract::Request;
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The oldest API version served (Docker's own floor).
pub const MIN_API: ApiVersion = ApiVersion(24);
/// The newest API version served: the one the docker CLI on the build
/// machine (28.2) speaks. docker-py and compose v1 adopt the daemon's
/// version verbatim, so this is also what they will use.
pub const MAX_API: ApiVersion = ApiVersion(50);

/// An API version `1.NN`, kept as NN (every Docker API version is 1.x).
/// Handlers read it from the request's extensions to gate behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

impl ApiVersion {
    /// Parse `1.NN`; None for anything else.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let minor = s.strip_prefix("1.")?;
        if minor.is_empty() || minor.len() > 3 || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        minor.parse().ok().map(ApiVersion)
    }
}

/// Split a `/vX.Y/rest` path into the version text and `/rest`; None for
/// an unversioned path.
fn split_version(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let slash = rest.find('/')?;
    let (v, tail) = rest.split_at(slash);
    // `/version` and `/volumes` are not versioned paths.
    if v.is_empty() || !v.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((v, tail))
}

/// Strip and check the version prefix, route the rest, and put the version
/// headers on the reply (errors included).
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let version = match split_version(&path) {
        None => MAX_API,
        Some((v, tail)) => {
            let Some(ver) = ApiVersion::parse(v) else {
                return with_headers(
                    ApiError::bad_request(format!(
                        "invalid API version {v:?} in the path: use /v1.{}/ to /v1.{}/ or no version",
                        MIN_API.0, MAX_API.0
                    ))
                    .into_response(),
                );
            };
            if ver < MIN_API {
                return with_headers(
                    ApiError::bad_request(format!(
                        "client version {ver} is too old. Minimum supported API version is {MIN_API}, please upgrade your client to a newer version"
                    ))
                    .into_response(),
                );
            }
            if ver > MAX_API {
                return with_headers(
                    ApiError::bad_request(format!(
                        "client version {ver} is too new. Maximum supported API version is {MAX_API}"
                    ))
                    .into_response(),
                );
            }
            let pq = match req.uri().query() {
                Some(q) => format!("{tail}?{q}"),
                None => tail.to_string(),
            };
            let mut parts = req.uri().clone().into_parts();
            match pq.parse() {
                Ok(p) => parts.path_and_query = Some(p),
                Err(_) => {
                    return with_headers(
                        ApiError::bad_request("invalid request path").into_response(),
                    )
                }
            }
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
            ver
        }
    };
    req.extensions_mut().insert(version);
    with_headers(next.run(req).await)
}

fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(MAX_API_TEXT));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

/// [`MAX_API`] as text, for a static header value (a test keeps the two
/// in step).
const MAX_API_TEXT: &str = "1.50";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_text_matches() {
        assert_eq!(MAX_API.to_string(), MAX_API_TEXT);
    }

    #[test]
    fn parses_versions() {
        assert_eq!(ApiVersion::parse("1.24"), Some(ApiVersion(24)));
        assert_eq!(ApiVersion::parse("1.50"), Some(ApiVersion(50)));
        assert_eq!(ApiVersion::parse("2.0"), None);
        assert_eq!(ApiVersion::parse("1."), None);
        assert_eq!(ApiVersion::parse("1.x"), None);
        assert!(ApiVersion(9) < ApiVersion(24));
    }

    #[test]
    fn splits_paths() {
        assert_eq!(split_version("/v1.41/info"), Some(("1.41", "/info")));
        assert_eq!(
            split_version("/v1.41/containers/x/json"),
            Some(("1.41", "/containers/x/json"))
        );
        assert_eq!(split_version("/version"), None);
        assert_eq!(split_version("/volumes/x"), None);
        assert_eq!(split_version("/_ping"), None);
    }
}
