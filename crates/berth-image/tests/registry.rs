//! The registry client against Debian's real `docker-registry` on loopback
//! (anonymous and Basic auth), and against a small fake token service and
//! registry written here (Bearer tokens, redirects to a storage host, a
//! storage backend that ignores Range, a stalled transfer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_e2e::registry::{noise, tar_gz, Registry, TestImage, OCI_MANIFEST};
use berth_image::auth::Credentials;
use berth_image::digest::Digest;
use berth_image::reference::Reference;
use berth_image::registry::{BlobStream, Client, ClientOptions, RegistryError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn two_layer_image() -> TestImage {
    TestImage::new(
        vec![
            tar_gz(&[("big.bin", &noise(600_000, 7))]),
            tar_gz(&[("etc/hello", b"hello\n")]),
        ],
        &["cat", "/etc/hello"],
    )
}

fn client() -> Client {
    Client::new(ClientOptions::default()).unwrap()
}

async fn read_all(mut s: BlobStream) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(c) = s.next_chunk().await? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

#[tokio::test]
async fn manifest_and_blobs_from_a_real_registry() {
    let reg = Registry::start();
    let img = two_layer_image();
    reg.push_image(&img, "test/app:v1");
    let c = client();
    c.ping(&reg.addr()).await.unwrap();

    let r = Reference::parse(&format!("{}/test/app:v1", reg.addr())).unwrap();
    let m = c.manifest(&r).await.unwrap();
    assert_eq!(m.digest.to_string(), img.manifest.digest);
    assert_eq!(
        m.bytes, img.manifest.bytes,
        "skopeo pushed the manifest as written"
    );
    assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));

    // By digest too (verified against the digest asked for).
    let by_digest = c.manifest(&r.with_digest(m.digest.clone())).await.unwrap();
    assert_eq!(by_digest.bytes, m.bytes);

    let cfg: Digest = img.config.digest.parse().unwrap();
    let got = c
        .blob_bytes(&r, &cfg, Some(img.config.bytes.len() as u64), 1 << 20)
        .await
        .unwrap();
    assert_eq!(got, img.config.bytes);

    for layer in &img.layers {
        let d: Digest = layer.digest.parse().unwrap();
        let s = c.blob(&r, &d, 0).await.unwrap();
        assert_eq!(s.total(), Some(layer.bytes.len() as u64));
        assert_eq!(read_all(s).await.unwrap(), layer.bytes);
    }

    let missing = c.manifest(&r.with_tag("nope").unwrap()).await.unwrap_err();
    assert!(
        matches!(missing, RegistryError::NotFound { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("not found"), "{missing}");
}

#[tokio::test]
async fn blob_download_resumes_with_range() {
    let reg = Registry::start();
    let img = two_layer_image();
    reg.push_image(&img, "test/app:v1");
    let c = client();
    let r = Reference::parse(&format!("{}/test/app:v1", reg.addr())).unwrap();
    let layer = &img.layers[0];
    let d: Digest = layer.digest.parse().unwrap();
    let (gets_before, bytes_before) = reg.blob_served(&layer.digest);

    let offset = 250_000u64;
    let s = c.blob(&r, &d, offset).await.unwrap();
    assert_eq!(s.offset(), offset);
    assert_eq!(s.total(), Some(layer.bytes.len() as u64));
    let rest = read_all(s).await.unwrap();
    assert_eq!(rest, layer.bytes[offset as usize..]);

    // The registry sent the rest only, not the whole blob again.
    let (gets, bytes) = reg.wait_blob_gets(&layer.digest, gets_before + 1);
    assert_eq!(gets, gets_before + 1);
    assert_eq!(
        bytes - bytes_before,
        layer.bytes.len() as u64 - offset,
        "{}",
        reg.access_log()
    );
}

#[tokio::test]
async fn a_corrupted_blob_is_refused_naming_its_digest() {
    let reg = Registry::start();
    let img = two_layer_image();
    reg.push_image(&img, "test/app:v1");
    let path = reg.blob_path(&img.config.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let c = client();
    let r = Reference::parse(&format!("{}/test/app:v1", reg.addr())).unwrap();
    let d: Digest = img.config.digest.parse().unwrap();
    let e = c
        .blob_bytes(&r, &d, Some(bytes.len() as u64), 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&img.config.digest), "{e}");
}

#[tokio::test]
async fn basic_auth_against_a_real_registry() {
    let reg = Registry::start_with_basic_auth("alice", "wonder land");
    let img = two_layer_image();
    reg.push_image(&img, "private/app:1");
    let r = Reference::parse(&format!("{}/private/app:1", reg.addr())).unwrap();

    let anon = client();
    let e = anon.manifest(&r).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("berth login"), "{e}");

    let wrong = client();
    wrong.set_credentials(&reg.addr(), Credentials::new("alice", "nope"));
    let e = wrong.ping(&reg.addr()).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");

    let c = client();
    c.set_credentials(&reg.addr(), Credentials::new("alice", "wonder land"));
    c.ping(&reg.addr()).await.unwrap();
    let m = c.manifest(&r).await.unwrap();
    assert_eq!(m.digest.to_string(), img.manifest.digest);
    let d: Digest = img.layers[1].digest.parse().unwrap();
    let s = c.blob(&r, &d, 0).await.unwrap();
    assert_eq!(read_all(s).await.unwrap(), img.layers[1].bytes);
}

// ---- a fake token service, registry and storage host on loopback ----

struct Req {
    path: String,
    headers: HashMap<String, String>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send this many body bytes, then nothing (the connection stays open).
    stall_after: Option<usize>,
}

impl Resp {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: body.into(),
            stall_after: None,
        }
    }
    fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// A tiny HTTP/1.1 server on 127.0.0.1: one request per connection.
async fn serve(handler: Handler) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let h = handler.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut lines = head.split("\r\n");
                let path = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("/")
                    .to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let resp = h(&Req { path, headers });
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    resp.status,
                    resp.body.len()
                );
                for (k, v) in &resp.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = s.write_all(out.as_bytes()).await;
                match resp.stall_after {
                    Some(n) => {
                        let _ = s.write_all(&resp.body[..n]).await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    None => {
                        let _ = s.write_all(&resp.body).await;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn bearer_tokens_redirects_and_ranges_against_a_fake_registry() {
    let blob = noise(100_000, 3);
    let digest = Digest::of(&blob);
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let mdigest = Digest::of(&manifest);
    let token_fetches = Arc::new(AtomicUsize::new(0));
    let storage_auth: Arc<Mutex<Vec<Option<String>>>> = Arc::default();

    // The storage host ignores Range (always the whole blob, 200) and
    // records any Authorization it is sent.
    let storage = {
        let blob = blob.clone();
        let seen = storage_auth.clone();
        serve(Arc::new(move |req: &Req| {
            seen.lock()
                .unwrap()
                .push(req.headers.get("authorization").cloned());
            if req.path.starts_with("/stall") {
                let mut r = Resp::new(200, blob.clone());
                r.stall_after = Some(1000);
                return r;
            }
            Resp::new(200, blob.clone())
        }))
        .await
    };
    let token = {
        let n = token_fetches.clone();
        serve(Arc::new(move |req: &Req| {
            n.fetch_add(1, Ordering::SeqCst);
            // With credentials only alice/pw gets a token; anonymous too.
            match req.headers.get("authorization").map(String::as_str) {
                None => {}
                Some("Basic YWxpY2U6cHc=") => {}
                Some(_) => return Resp::new(401, r#"{"details":"bad creds"}"#),
            }
            // `ping` (what `berth login` checks) asks for no scope.
            assert!(
                !req.path.contains("scope=")
                    || req.path.contains("scope=repository%3Aorg%2Fapp%3Apull")
                    || req.path.contains("scope=repository%3Aorg%2Fsecret%3Apull"),
                "{}",
                req.path
            );
            assert!(req.path.contains("service=fake"), "{}", req.path);
            Resp::new(200, r#"{"token":"tok-1","expires_in":300}"#)
        }))
        .await
    };
    let registry = {
        let manifest = manifest.clone();
        let digest = digest.clone();
        serve(Arc::new(move |req: &Req| {
            if req.headers.get("authorization").map(String::as_str) != Some("Bearer tok-1") {
                return Resp::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#).header(
                    "WWW-Authenticate",
                    &format!(r#"Bearer realm="http://127.0.0.1:{token}/token",service="fake",scope="repository:org/app:pull""#),
                );
            }
            if req.path.starts_with("/v2/org/secret/") {
                return Resp::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"insufficient scope"}]}"#);
            }
            if req.path == "/v2/" {
                return Resp::new(200, "{}");
            }
            let accept = req.headers.get("accept").cloned().unwrap_or_default();
            if req.path == "/v2/org/app/manifests/latest" {
                assert!(accept.contains("application/vnd.oci.image.index.v1+json"), "{accept}");
                assert!(accept.contains("application/vnd.docker.distribution.manifest.v2+json"), "{accept}");
                return Resp::new(200, manifest.clone())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
                    .header("Docker-Content-Digest", &mdigest.to_string());
            }
            if req.path.starts_with("/v2/org/app/manifests/sha256:") {
                return Resp::new(200, manifest.clone());
            }
            if req.path == "/v2/org/app/manifests/lying" {
                return Resp::new(200, manifest.clone())
                    .header("Docker-Content-Digest", &Digest::of(b"other").to_string());
            }
            if req.path == format!("/v2/org/app/blobs/{digest}") {
                return Resp::new(307, "").header("Location", &format!("http://127.0.0.1:{storage}/data?sig=1"));
            }
            if req.path == "/v2/org/app/blobs/sha256:5555555555555555555555555555555555555555555555555555555555555555" {
                return Resp::new(307, "").header("Location", &format!("http://127.0.0.1:{storage}/stall"));
            }
            Resp::new(404, r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#)
        }))
        .await
    };

    let addr = format!("127.0.0.1:{registry}");
    let r = Reference::parse(&format!("{addr}/org/app")).unwrap();
    let c = client();
    c.set_credentials(&addr, Credentials::new("alice", "pw"));
    let m = c.manifest(&r).await.unwrap();
    assert_eq!(m.bytes, manifest);
    assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(token_fetches.load(Ordering::SeqCst), 1);

    // The token is cached for the repository's scope.
    let s = c.blob(&r, &digest, 0).await.unwrap();
    assert_eq!(read_all(s).await.unwrap(), blob);
    assert_eq!(token_fetches.load(Ordering::SeqCst), 1);
    // The storage host on another port got no Authorization header.
    assert_eq!(storage_auth.lock().unwrap().as_slice(), &[None]);

    // A resumed download from a backend that ignores Range skips what the
    // caller already has.
    let s = c.blob(&r, &digest, 60_000).await.unwrap();
    assert_eq!(s.offset(), 60_000);
    assert_eq!(read_all(s).await.unwrap(), blob[60_000..]);

    // A Docker-Content-Digest that does not match the bytes is refused.
    let e = c.manifest(&r.with_tag("lying").unwrap()).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    // So is a manifest asked for by digest that comes back different.
    let e = c
        .manifest(&r.with_digest(Digest::of(b"x")))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");

    // Wrong credentials: the token service refuses, one clear error.
    let bad = client();
    bad.set_credentials(&addr, Credentials::new("alice", "wrong"));
    let e = bad.manifest(&r).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("token service refused"), "{e}");

    // Refused even with a token: missing or private, as Docker says.
    let secret = Reference::parse(&format!("{addr}/org/secret")).unwrap();
    let e = c.manifest(&secret).await.unwrap_err();
    assert!(matches!(e, RegistryError::PullAccessDenied { .. }), "{e}");
    assert!(e.to_string().contains("pull access denied for"), "{e}");

    // `berth login`'s check: /v2/ with a token got with the credentials.
    let login = client();
    login.set_credentials(&addr, Credentials::new("alice", "pw"));
    login.ping(&addr).await.unwrap();
    let bad_login = client();
    bad_login.set_credentials(&addr, Credentials::new("alice", "bad"));
    let e = bad_login.ping(&addr).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");

    // Anonymous: a token without credentials.
    let anon = client();
    assert_eq!(anon.manifest(&r).await.unwrap().bytes, manifest);

    // A stalled transfer is an error after the stall timeout, not a hang.
    let quick = Client::new(ClientOptions {
        stall_timeout: Duration::from_millis(400),
        retries: 0,
        ..ClientOptions::default()
    })
    .unwrap();
    let stalled: Digest = "sha256:5555555555555555555555555555555555555555555555555555555555555555"
        .parse()
        .unwrap();
    let t = Instant::now();
    let mut s = quick.blob(&r, &stalled, 0).await.unwrap();
    let mut got = 0;
    let e = loop {
        match s.next_chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("stalled stream ended"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, 1000);
    assert!(matches!(e, RegistryError::Stalled { .. }), "{e}");
    assert!(e.is_transient());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn nothing_listening_is_a_clear_transient_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(ClientOptions {
        retries: 1,
        backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    })
    .unwrap();
    let e = c.ping(&format!("127.0.0.1:{port}")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}
