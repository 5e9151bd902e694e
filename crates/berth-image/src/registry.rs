//! An OCI distribution client: `GET /v2/`, manifests and blobs, with
//! anonymous, Basic and Bearer-token auth.
//!
//! berth's own on hyper (tonic builds it already) rather than `oci-client`
//! (whose TLS builds aws-lc-sys) or reqwest: blobs are streamed from any
//! offset (`Range: bytes=N-`, and a registry that ignores the range is
//! handled by skipping), every request carries the Accept list berth wants,
//! redirects to storage backends never carry the registry's Authorization
//! to another host, and a transfer that stops sending is an error after
//! [`ClientOptions::stall_timeout`], not a hang.
//!
//! Plain HTTP is used for loopback registries (`localhost`, 127.0.0.0/8,
//! `::1`) and, with [`ClientOptions::insecure`], for any; HTTPS otherwise,
//! verified against the system's roots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::auth::Credentials;
use crate::digest::{Digest, Hasher};
use crate::reference::{registry_endpoint, Reference};

/// The manifest media types berth understands, in the Accept header of
/// every manifest request (registries pick by it what to serve).
pub const MANIFEST_ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The largest manifest accepted (containerd's limit too): a manifest is
/// read into memory whole.
pub const MANIFEST_MAX: u64 = 4 << 20;

const MAX_REDIRECTS: usize = 10;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Plain HTTP to every registry, not only loopback ones.
    pub insecure: bool,
    /// Bound on establishing a TCP connection (and the TLS handshake).
    pub connect_timeout: Duration,
    /// A response that sends no header or body byte for this long fails.
    pub stall_timeout: Duration,
    /// Retries of a request after a transient error (connection refused or
    /// reset, timeout, 408/429/5xx), with exponential backoff.
    pub retries: u32,
    /// The first backoff, doubled at each retry.
    pub backoff: Duration,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(250),
            user_agent: format!("berth/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("{url}: {msg}")]
    Transport {
        url: String,
        msg: String,
        transient: bool,
    },
    #[error("{url}: no data for {}s: the transfer stalled", secs.as_secs())]
    Stalled { url: String, secs: Duration },
    #[error("{registry}: authentication required{}: log in with `berth login {registry}`", msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Unauthorized {
        registry: String,
        msg: Option<String>,
    },
    #[error("pull access denied for {registry}/{repository}: the repository does not exist or needs `berth login {registry}`{}", msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    PullAccessDenied {
        registry: String,
        repository: String,
        msg: Option<String>,
    },
    #[error("{registry}: access denied{}", msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Denied {
        registry: String,
        msg: Option<String>,
    },
    #[error("{what} not found in {registry}{}", msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    NotFound {
        registry: String,
        what: String,
        msg: Option<String>,
    },
    #[error("{url}: HTTP {status}{}", msg.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        msg: Option<String>,
    },
    #[error("{what}: digest mismatch: expected {expected}, the registry sent content of {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, the registry sent {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{url}: {msg}")]
    Protocol { url: String, msg: String },
}

impl RegistryError {
    /// Worth retrying: the network or the registry may do better next time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { transient, .. } => *transient,
            Self::Stalled { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

type HttpClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A registry client; cheap to clone (shared connection pool, tokens and
/// credentials).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    opts: ClientOptions,
    /// By registry (as references name it: `docker.io`, `127.0.0.1:5000`).
    creds: Mutex<HashMap<String, Credentials>>,
    /// The auth scheme each registry asked for, learned from its 401.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Bearer tokens by (registry, scope).
    tokens: Mutex<HashMap<(String, String), Token>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// A manifest (or index) as the registry sent it, verified against the
/// digest asked for or the one the registry announced.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// The Content-Type, without parameters; None if the registry sent none
    /// (the document's `mediaType` field then tells).
    pub media_type: Option<String>,
    pub digest: Digest,
}

/// A blob's bytes from some offset on, as they arrive.
pub struct BlobStream {
    body: Incoming,
    url: String,
    stall: Duration,
    /// Bytes still to drop: the registry ignored the range and sent from 0.
    skip: u64,
    offset: u64,
    total: Option<u64>,
}

impl BlobStream {
    /// The next chunk, None at the end. A stall longer than the client's
    /// stall timeout, or a connection lost midway, is an error (transient:
    /// fetch again from [`BlobStream::offset`]).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame = match tokio::time::timeout(self.stall, self.body.frame()).await {
                Err(_) => {
                    return Err(RegistryError::Stalled {
                        url: self.url.clone(),
                        secs: self.stall,
                    })
                }
                Ok(None) => {
                    if let Some(t) = self.total {
                        if self.offset < t {
                            return Err(RegistryError::Transport {
                                url: self.url.clone(),
                                msg: format!(
                                    "connection closed after {} of {t} bytes",
                                    self.offset
                                ),
                                transient: true,
                            });
                        }
                    }
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    return Err(RegistryError::Transport {
                        url: self.url.clone(),
                        msg: format!("reading the body: {e}"),
                        transient: true,
                    })
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers
            };
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = data.slice(n as usize..);
            }
            if data.is_empty() {
                continue;
            }
            self.offset += data.len() as u64;
            return Ok(Some(data));
        }
    }

    /// The position of the next byte [`BlobStream::next_chunk`] returns.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The blob's whole size, when the registry said it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }
}

/// Is `registry` (`host[:port]`) on this machine? Plain HTTP is allowed to
/// these without `insecure`.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host[:port]` or `[v6]:port`, brackets removed.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ if authority.matches(':').count() > 1 => authority, // bare IPv6
        Some((h, _)) => h,
        None => authority,
    }
}

impl Client {
    /// A client with its own connection pool, credentials and tokens.
    /// Cheap (the system roots are loaded once per process): berthd makes
    /// one per pull request, so one user's credentials and tokens never
    /// serve another's request.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        let tls = tls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            inner: Arc::new(Inner {
                http: client,
                opts,
                creds: Mutex::default(),
                challenges: Mutex::default(),
                tokens: Mutex::default(),
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// Use `creds` for `registry` (as references name it: `docker.io`,
    /// `127.0.0.1:5000`); replaces earlier ones and forgets tokens got
    /// without them.
    pub fn set_credentials(&self, registry: &str, creds: Credentials) {
        lock(&self.inner.creds).insert(registry.to_string(), creds);
        lock(&self.inner.tokens).retain(|(r, _), _| r != registry);
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if self.inner.opts.insecure || is_loopback(registry) {
            "http"
        } else {
            "https"
        }
    }

    fn base_url(&self, registry: &str) -> String {
        format!(
            "{}://{}",
            self.scheme(registry),
            registry_endpoint(registry)
        )
    }

    /// `GET /v2/`: is there a registry, and do the credentials (if any)
    /// work? With credentials and a token service, a token is fetched, so a
    /// wrong password fails here (what `berth login` checks).
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let resp = self
            .get(registry, None, "/v2/", HeaderMap::new(), "the registry API")
            .await?;
        drain(resp).await;
        Ok(())
    }

    /// The manifest or index `reference` names (its digest if it has one,
    /// else its tag). The bytes are verified against the reference's digest,
    /// or against the `Docker-Content-Digest` the registry sent.
    pub async fn manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let what = match reference.digest() {
            Some(d) => format!("manifest {}@{d}", reference.repository()),
            None => format!(
                "manifest {}:{}",
                reference.repository(),
                reference.manifest_ref()
            ),
        };
        let path = format!(
            "/v2/{}/manifests/{}",
            reference.repository(),
            reference.manifest_ref()
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(&MANIFEST_ACCEPT.join(", ")).map_err(|e| {
                RegistryError::Protocol {
                    url: path.clone(),
                    msg: e.to_string(),
                }
            })?,
        );
        let mut attempt = 0;
        loop {
            let resp = self
                .get(
                    reference.registry(),
                    Some(reference.repository()),
                    &path,
                    headers.clone(),
                    &what,
                )
                .await?;
            match self.read_manifest(reference, &what, resp).await {
                Err(e) if e.is_transient() && attempt < self.inner.opts.retries => {
                    tracing::debug!("{e}: retrying");
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn read_manifest(
        &self,
        reference: &Reference,
        what: &str,
        resp: Response<Incoming>,
    ) -> Result<FetchedManifest> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base_url(reference.registry()),
            reference.repository(),
            reference.manifest_ref()
        );
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty());
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(resp, MANIFEST_MAX, &url, self.inner.opts.stall_timeout).await?;
        let actual = Digest::of(&bytes);
        let expected = match reference.digest() {
            Some(d) => Some(d.clone()),
            // Another algorithm than sha256 cannot be checked: the bytes are
            // still addressed by their sha256 from here on.
            None => announced.and_then(|a| a.parse::<Digest>().ok()),
        };
        if let Some(expected) = expected {
            if expected != actual {
                return Err(RegistryError::DigestMismatch {
                    what: what.to_string(),
                    expected,
                    actual,
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest: actual,
        })
    }

    /// The blob `digest` of `reference`'s repository, from byte `offset` on.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream> {
        let what = format!("blob {digest}");
        let path = format!("/v2/{}/blobs/{digest}", reference.repository());
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(
                header::RANGE,
                HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| {
                    RegistryError::Protocol {
                        url: path.clone(),
                        msg: e.to_string(),
                    }
                })?,
            );
        }
        let resp = self
            .get(
                reference.registry(),
                Some(reference.repository()),
                &path,
                headers,
                &what,
            )
            .await?;
        let url = format!("{}{path}", self.base_url(reference.registry()));
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (skip, total) = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == offset => {
                        (0, total.or(length.map(|l| l + offset)))
                    }
                    _ => {
                        return Err(RegistryError::Protocol {
                            url,
                            msg: format!(
                                "asked for bytes from {offset}, got Content-Range {:?}",
                                resp.headers().get(header::CONTENT_RANGE)
                            ),
                        })
                    }
                }
            }
            // A registry (or storage backend) that ignores Range sends the
            // whole blob: drop what we already have.
            _ => (offset, length),
        };
        if let Some(t) = total {
            if offset > t {
                return Err(RegistryError::Protocol {
                    url,
                    msg: format!("resuming at byte {offset} of a {t}-byte blob"),
                });
            }
        }
        Ok(BlobStream {
            body: resp.into_body(),
            url,
            stall: self.inner.opts.stall_timeout,
            skip,
            offset,
            total,
        })
    }

    /// A small blob (an image config) whole, verified against its digest
    /// and, when given, its size.
    pub async fn blob_bytes(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: Option<u64>,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let what = format!("blob {digest}");
        if let Some(s) = size {
            if s > limit {
                return Err(RegistryError::Protocol {
                    url: what,
                    msg: format!("{s} bytes is more than the {limit} accepted"),
                });
            }
        }
        let mut attempt = 0;
        let mut out = Vec::new();
        let mut hasher = Hasher::new();
        loop {
            let r: Result<()> = async {
                let mut s = self.blob(reference, digest, out.len() as u64).await?;
                while let Some(c) = s.next_chunk().await? {
                    if (out.len() + c.len()) as u64 > limit {
                        return Err(RegistryError::Protocol {
                            url: what.clone(),
                            msg: format!("more than the {limit} bytes accepted"),
                        });
                    }
                    hasher.update(&c);
                    out.extend_from_slice(&c);
                }
                Ok(())
            }
            .await;
            match r {
                Err(e) if e.is_transient() && attempt < self.inner.opts.retries => {
                    tracing::debug!("{e}: retrying from byte {}", out.len());
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => break,
            }
        }
        let actual = hasher.finish();
        if let Some(expected) = size {
            if out.len() as u64 != expected {
                return Err(RegistryError::SizeMismatch {
                    what,
                    expected,
                    actual: out.len() as u64,
                });
            }
        }
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(out)
    }

    /// Waits the `attempt`th backoff (0-based).
    pub async fn backoff(&self, attempt: u32) {
        let d = self.inner.opts.backoff.saturating_mul(1 << attempt.min(6));
        tokio::time::sleep(d).await;
    }

    /// A GET with auth (one retry after a 401 with fresh credentials or a
    /// token), redirects, and retries of transient failures. Returns a 2xx
    /// response; other statuses become errors.
    async fn get(
        &self,
        registry: &str,
        repository: Option<&str>,
        path: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<Response<Incoming>> {
        let url = format!("{}{path}", self.base_url(registry));
        let scope = repository.map(|r| format!("repository:{r}:pull"));
        let mut attempt = 0;
        let mut authed = false;
        loop {
            let authz = self.authorization(registry, scope.as_deref());
            let r = self
                .send_following(registry, &url, &headers, authz.as_ref())
                .await;
            let err = match r {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authed => {
                    authed = true;
                    let challenge = resp
                        .headers()
                        .get_all(header::WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find_map(parse_challenge);
                    let msg = error_message(resp, self.inner.opts.stall_timeout).await;
                    match challenge {
                        Some(c) => {
                            let has_creds = lock(&self.inner.creds).contains_key(registry);
                            if c == Challenge::Basic && !has_creds {
                                return Err(RegistryError::Unauthorized {
                                    registry: registry.to_string(),
                                    msg,
                                });
                            }
                            lock(&self.inner.challenges).insert(registry.to_string(), c.clone());
                            if let Challenge::Bearer { .. } = c {
                                self.fetch_token(registry, scope.as_deref(), &c).await?;
                            }
                            continue;
                        }
                        None => {
                            return Err(RegistryError::Unauthorized {
                                registry: registry.to_string(),
                                msg,
                            })
                        }
                    }
                }
                Ok(resp) => {
                    self.status_error(registry, repository, &url, what, resp)
                        .await
                }
                Err(e) => e,
            };
            if err.is_transient() && attempt < self.inner.opts.retries {
                tracing::debug!("{err}: retrying");
                self.backoff(attempt).await;
                attempt += 1;
                continue;
            }
            return Err(err);
        }
    }

    async fn status_error(
        &self,
        registry: &str,
        repository: Option<&str>,
        url: &str,
        what: &str,
        resp: Response<Incoming>,
    ) -> RegistryError {
        let status = resp.status();
        let msg = error_message(resp, self.inner.opts.stall_timeout).await;
        let registry = registry.to_string();
        match status {
            // Authenticated (or anonymous with a token) and still refused:
            // as Docker says, the repository is missing or private.
            StatusCode::UNAUTHORIZED => match repository {
                Some(r) => RegistryError::PullAccessDenied {
                    registry,
                    repository: r.to_string(),
                    msg,
                },
                None => RegistryError::Unauthorized { registry, msg },
            },
            StatusCode::FORBIDDEN => RegistryError::Denied { registry, msg },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry,
                what: what.to_string(),
                msg,
            },
            s => RegistryError::Status {
                url: url.to_string(),
                status: s.as_u16(),
                msg,
            },
        }
    }

    /// The Authorization header for a request to `registry` under `scope`,
    /// from what the registry asked for before.
    fn authorization(&self, registry: &str, scope: Option<&str>) -> Option<String> {
        let challenge = lock(&self.inner.challenges).get(registry).cloned()?;
        match challenge {
            Challenge::Basic => lock(&self.inner.creds)
                .get(registry)
                .map(|c| format!("Basic {}", c.encode())),
            Challenge::Bearer { .. } => {
                let key = (registry.to_string(), scope.unwrap_or("").to_string());
                let tokens = lock(&self.inner.tokens);
                tokens
                    .get(&key)
                    .filter(|t| t.expires > Instant::now())
                    .map(|t| format!("Bearer {}", t.value))
            }
        }
    }

    /// Gets a token from the challenge's realm (with the registry's
    /// credentials if there are some) and caches it for (registry, scope).
    async fn fetch_token(&self, registry: &str, scope: Option<&str>, c: &Challenge) -> Result<()> {
        let Challenge::Bearer {
            realm,
            service,
            scope: asked,
        } = c
        else {
            return Ok(());
        };
        let realm_uri: Uri = realm.parse().map_err(|_| RegistryError::Protocol {
            url: realm.clone(),
            msg: "the registry's token realm is not a URL".into(),
        })?;
        let realm_host = realm_uri.authority().map(|a| a.as_str()).unwrap_or("");
        if realm_uri.scheme_str() != Some("https")
            && !(realm_uri.scheme_str() == Some("http")
                && (self.inner.opts.insecure || is_loopback(realm_host)))
        {
            return Err(RegistryError::Protocol {
                url: realm.clone(),
                msg: "refusing a token realm over plain HTTP to a host that is not loopback (use --insecure to allow)".into(),
            });
        }
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY).to_string();
        let mut params = Vec::new();
        if let Some(s) = service {
            params.push(format!("service={}", enc(s)));
        }
        // The scope we need; the one the registry named if it named one.
        for s in scope
            .into_iter()
            .chain(asked.as_deref().filter(|a| Some(*a) != scope))
        {
            params.push(format!("scope={}", enc(s)));
        }
        let creds = lock(&self.inner.creds).get(registry).cloned();
        if let Some(c) = &creds {
            params.push(format!("account={}", enc(&c.username)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if params.is_empty() {
            realm.clone()
        } else {
            format!("{realm}{sep}{}", params.join("&"))
        };
        let authz = creds.map(|c| format!("Basic {}", c.encode()));
        let mut attempt = 0;
        let resp = loop {
            let r = self
                .send_following(realm_host, &url, &HeaderMap::new(), authz.as_ref())
                .await;
            let err = match r {
                Ok(resp) if resp.status().is_success() => break resp,
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                {
                    let msg = error_message(resp, self.inner.opts.stall_timeout).await;
                    return Err(RegistryError::Unauthorized {
                        registry: registry.to_string(),
                        msg: Some(format!(
                            "the token service refused the credentials{}",
                            msg.map(|m| format!(": {m}")).unwrap_or_default()
                        )),
                    });
                }
                Ok(resp) => self.status_error(registry, None, &url, "token", resp).await,
                Err(e) => e,
            };
            if err.is_transient() && attempt < self.inner.opts.retries {
                self.backoff(attempt).await;
                attempt += 1;
                continue;
            }
            return Err(err);
        };
        let body = read_limited(resp, 1 << 20, &url, self.inner.opts.stall_timeout).await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: realm.clone(),
                msg: format!("bad token response: {e}"),
            })?;
        let value = t
            .token
            .or(t.access_token)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                url: realm.clone(),
                msg: "the token response has no token".into(),
            })?;
        // Tokens without a lifetime last 60 s (the token spec's default);
        // renew a little early.
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).max(10));
        let expires = Instant::now() + life - Duration::from_secs(5);
        lock(&self.inner.tokens).insert(
            (registry.to_string(), scope.unwrap_or("").to_string()),
            Token { value, expires },
        );
        Ok(())
    }

    /// One GET and its redirects. The Authorization header goes only to
    /// `origin` (the registry or token service asked): a storage backend on
    /// another host gets none.
    async fn send_following(
        &self,
        origin: &str,
        url: &str,
        headers: &HeaderMap,
        authz: Option<&String>,
    ) -> Result<Response<Incoming>> {
        let origin_authority = registry_endpoint(origin).to_ascii_lowercase();
        let mut uri: Uri = url.parse().map_err(|_| RegistryError::Protocol {
            url: url.to_string(),
            msg: "not a valid URL".into(),
        })?;
        for _ in 0..=MAX_REDIRECTS {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
                .unwrap_or_default();
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(uri.clone())
                .header(header::USER_AGENT, &self.inner.opts.user_agent);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(a) = authz {
                if authority == origin_authority {
                    req = req.header(header::AUTHORIZATION, a);
                }
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| RegistryError::Protocol {
                    url: uri.to_string(),
                    msg: e.to_string(),
                })?;
            let fut = self.inner.http.request(req);
            let resp = match tokio::time::timeout(
                self.inner.opts.stall_timeout + self.inner.opts.connect_timeout,
                fut,
            )
            .await
            {
                Err(_) => {
                    return Err(RegistryError::Stalled {
                        url: uri.to_string(),
                        secs: self.inner.opts.stall_timeout,
                    })
                }
                Ok(Err(e)) => return Err(transport_error(&uri, &e)),
                Ok(Ok(r)) => r,
            };
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(loc) = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
            else {
                return Ok(resp);
            };
            drain(resp).await;
            let next = resolve(&uri, &loc).ok_or_else(|| RegistryError::Protocol {
                url: uri.to_string(),
                msg: format!("bad redirect location {loc:?}"),
            })?;
            let next_host = next.authority().map(|a| a.as_str()).unwrap_or("");
            if next.scheme_str() == Some("http")
                && uri.scheme_str() == Some("https")
                && !self.inner.opts.insecure
                && !is_loopback(next_host)
            {
                return Err(RegistryError::Protocol {
                    url: uri.to_string(),
                    msg: format!("refusing a redirect from HTTPS to plain HTTP ({next})"),
                });
            }
            tracing::debug!(from = %uri, to = %next, "redirect");
            uri = next;
        }
        Err(RegistryError::Protocol {
            url: url.to_string(),
            msg: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// The TLS configuration: the system's roots, ring, TLS 1.2 and 1.3. Built
/// once: reading and parsing `/etc/ssl/certs` takes milliseconds.
fn tls_config() -> Result<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<std::result::Result<rustls::ClientConfig, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("system certificates: {e}");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!("no system root certificates found: HTTPS registries will fail verification (install ca-certificates)");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    })
    .clone()
    .map_err(RegistryError::Tls)
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single
    // inserts and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn transport_error(uri: &Uri, e: &hyper_util::client::legacy::Error) -> RegistryError {
    // The chain of sources says why (refused, reset, TLS, DNS).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    let tls = msg.contains("certificate") || msg.contains("InvalidCertificate");
    RegistryError::Transport {
        url: uri.to_string(),
        msg,
        transient: !tls,
    }
}

/// The target of `loc` seen from `base` (absolute, scheme-relative,
/// path-absolute or relative).
fn resolve(base: &Uri, loc: &str) -> Option<Uri> {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.parse().ok();
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = loc.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?.as_str();
    let path = if loc.starts_with('/') {
        loc.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{dir}/{loc}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// `bytes START-END/TOTAL` → (START, TOTAL if not `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, params) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let p = parse_params(params);
    Some(Challenge::Bearer {
        realm: p.get("realm")?.clone(),
        service: p.get("service").cloned(),
        scope: p.get("scope").cloned(),
    })
}

/// `k="v", k2=v2` (quoted strings may hold commas and `\"`).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(
    resp: Response<Incoming>,
    limit: u64,
    url: &str,
    stall: Duration,
) -> Result<Vec<u8>> {
    if let Some(len) = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(RegistryError::Protocol {
                url: url.to_string(),
                msg: format!("{len} bytes is more than the {limit} accepted"),
            });
        }
    }
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return Err(RegistryError::Stalled {
                    url: url.to_string(),
                    secs: stall,
                })
            }
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => {
                return Err(RegistryError::Transport {
                    url: url.to_string(),
                    msg: format!("reading the body: {e}"),
                    transient: true,
                })
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(d) = frame.into_data() {
            if (out.len() + d.len()) as u64 > limit {
                return Err(RegistryError::Protocol {
                    url: url.to_string(),
                    msg: format!("more than the {limit} bytes accepted"),
                });
            }
            out.extend_from_slice(&d);
        }
    }
}

/// The registry's own words from an error body
/// (`{"errors":[{"code":…,"message":…}]}`), or a short plain-text body.
async fn error_message(resp: Response<Incoming>, stall: Duration) -> Option<String> {
    let body = read_limited(resp, 64 << 10, "", stall.min(Duration::from_secs(5)))
        .await
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        let parts: Vec<String> = e
            .errors
            .into_iter()
            .filter_map(|e| match (e.code, e.message) {
                (Some(c), Some(m)) => Some(format!("{c}: {m}")),
                (c, m) => c.or(m),
            })
            .collect();
        if !parts.is_empty() {
            return Some(parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().next().unwrap_or("").trim();
    (!line.is_empty() && line.len() < 200).then(|| line.to_string())
}

/// Reads and drops a (small) body so its connection can be reused.
async fn drain(resp: Response<Incoming>) {
    let _ = read_limited(resp, 1 << 20, "", Duration::from_secs(5)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for l in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback(l), "{l}");
        }
        for n in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(n), "{n}");
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://127.0.0.1:1/t, scope="a,b""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: Some("a,b".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn content_ranges_and_redirects() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        let base: Uri = "http://127.0.0.1:5000/v2/a/blobs/sha256:x".parse().unwrap();
        assert_eq!(
            resolve(&base, "/s/1").unwrap().to_string(),
            "http://127.0.0.1:5000/s/1"
        );
        assert_eq!(
            resolve(&base, "y?z=1").unwrap().to_string(),
            "http://127.0.0.1:5000/v2/a/blobs/y?z=1"
        );
        assert_eq!(
            resolve(&base, "//h:1/p").unwrap().to_string(),
            "http://h:1/p"
        );
        assert_eq!(
            resolve(&base, "https://s3.example/b?sig=1")
                .unwrap()
                .to_string(),
            "https://s3.example/b?sig=1"
        );
    }
}
