//! A real registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1 with a free port, a config file of the
//! test's own, storage in a private directory and its access log kept, so a
//! test can count the bytes served per blob. Images are made here
//! ([`TestImage`]: an OCI layout written with the tar crate) and pushed with
//! `skopeo`.
//!
//! [`Registry`] stops the registry by the pid it started and removes its
//! directory in `Drop`, even when the test fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::{poll, workspace};

/// A running `docker-registry`.
pub struct Registry {
    port: u16,
    dir: PathBuf,
    child: Child,
    creds: Option<(String, String)>,
}

impl Registry {
    /// An anonymous registry (push and pull without credentials).
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// A registry behind Basic auth (htpasswd, bcrypt) for `user`/`password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Self::launch(Some((user.to_string(), password.to_string())))
    }

    fn launch(creds: Option<(String, String)>) -> Registry {
        let bin = which("docker-registry");
        let dir = private_dir("registry");
        std::fs::create_dir_all(dir.join("storage")).expect("registry storage dir");
        let mut auth = String::new();
        if let Some((u, p)) = &creds {
            let htpasswd = dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .args([u, p])
                .output()
                .expect("run htpasswd (apt install apache2-utils)");
            assert!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        // The port is picked free and then handed over; another process may
        // take it in between, so a registry that exits at once is retried.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
                     maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n\
                     {auth}",
                    storage = dir.join("storage").display(),
                ),
            )
            .expect("write registry config");
            let stdout = std::fs::File::create(dir.join("access.log")).expect("access log");
            let stderr = std::fs::File::create(dir.join("registry.log")).expect("registry log");
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("start docker-registry");
            // Up once it says it listens on the port, and not before: the
            // port may have gone to another test's server meanwhile (which
            // would answer /v2/ for it and get a stray request), and then
            // this registry fails to bind and exits.
            let listening = format!("listening on 127.0.0.1:{port}\"");
            let log = dir.join("registry.log");
            let up = poll_until(Duration::from_secs(20), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                let bound = std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&listening));
                bound
                    .then(|| http_status(port, "/v2/"))
                    .flatten()
                    .map(|s| s == 200 || s == 401)
                    .filter(|ok| *ok)
            });
            if up {
                return Registry {
                    port,
                    dir,
                    child,
                    creds,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!("docker-registry did not start:\n{log}");
    }

    /// `127.0.0.1:PORT`, as a reference's registry part.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The (user, password) of a Basic-auth registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where the registry keeps blob `digest` (`sha256:…`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes the OCI layout at `layout` (tag `tag` in it) as
    /// `REGISTRY/name` with skopeo. `name` carries the tag: `app:1`.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) {
        self.skopeo(&[], layout, tag, name);
    }

    /// Writes `image` as an OCI layout in a temp dir, pushes it as
    /// `REGISTRY/name` (`name` with its tag), and removes the layout.
    pub fn push_image(&self, image: &TestImage, name: &str) {
        let layout = self.dir.join(format!("layout-{}", unique()));
        image.write_layout(&layout, "push");
        self.push(&layout, "push", name);
        let _ = std::fs::remove_dir_all(&layout);
    }

    /// Pushes `index` and all its images (`skopeo copy --all`) as
    /// `REGISTRY/name`.
    pub fn push_index(&self, index: &TestIndex, name: &str) {
        let layout = self.dir.join(format!("layout-{}", unique()));
        index.write_layout(&layout, "push");
        self.skopeo(&["--all"], &layout, "push", name);
        let _ = std::fs::remove_dir_all(&layout);
    }

    /// Pushes `image` converted to a Docker schema 2 manifest
    /// (`skopeo copy --format v2s2`): Docker media types, same layers.
    pub fn push_image_as_docker(&self, image: &TestImage, name: &str) {
        let layout = self.dir.join(format!("layout-{}", unique()));
        image.write_layout(&layout, "push");
        self.skopeo(&["--format", "v2s2"], &layout, "push", name);
        let _ = std::fs::remove_dir_all(&layout);
    }

    fn skopeo(&self, extra: &[&str], layout: &Path, tag: &str, name: &str) {
        let mut cmd = Command::new(which("skopeo"));
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}", self.addr()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's access log so far (combined log format, one request
    /// a line, written when the response ends).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The registry's own log (errors, auth failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// (GET requests, bytes sent) for blob `digest`, from the access log.
    pub fn blob_served(&self, digest: &str) -> (usize, u64) {
        let needle = format!("/blobs/{digest} ");
        let mut n = 0;
        let mut bytes = 0;
        for line in self.access_log().lines() {
            if !line.contains("\"GET ") || !line.contains(&needle) {
                continue;
            }
            // ... "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 1234 "referer" "agent"
            let Some((_, after)) = line.split_once("HTTP/1.1\" ") else {
                continue;
            };
            let mut f = after.split_whitespace();
            let status = f.next().unwrap_or("");
            let size: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if status.starts_with('2') {
                n += 1;
                bytes += size;
            }
        }
        (n, bytes)
    }

    /// Waits until the access log has `count` completed GETs of `digest`
    /// (lines are written when the response ends, slightly after the client
    /// has its last byte).
    pub fn wait_blob_gets(&self, digest: &str, count: usize) -> (usize, u64) {
        poll(
            &format!("{count} GETs of {digest} in the access log"),
            Duration::from_secs(10),
            || Some(self.blob_served(digest)).filter(|(n, _)| *n >= count),
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // By the pid we started; SIGTERM first so it closes its files.
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child, which we have not yet reaped,
        // so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let exited = poll_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_))).then_some(true)
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.dir.starts_with(std::env::temp_dir()) || self.dir.starts_with(workspace()) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A blob of a test image: bytes, digest (`sha256:…`), media type.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256(&bytes),
            bytes,
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OCI image made by the test: gzip'd tar layers, a config, a manifest.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Blob,
}

impl TestImage {
    /// An image of `layers` (gzip'd tars) for this host's platform running
    /// `cmd`.
    pub fn new(layers: Vec<Vec<u8>>, cmd: &[&str]) -> TestImage {
        Self::for_platform(layers, cmd, "linux", host_arch())
    }

    /// An image for `os`/`arch` (Go's names: linux/arm64).
    pub fn for_platform(layers: Vec<Vec<u8>>, cmd: &[&str], os: &str, arch: &str) -> TestImage {
        let layers: Vec<Blob> = layers
            .into_iter()
            .map(|b| Blob::new(OCI_LAYER_GZIP, b))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&gunzip(&l.bytes))).collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": os,
            "config": {
                "Cmd": cmd,
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "berth test"})).collect::<Vec<_>>(),
        });
        let config = Blob::new(
            OCI_CONFIG,
            serde_json::to_vec(&config).expect("config json"),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(
            OCI_MANIFEST,
            serde_json::to_vec(&manifest).expect("manifest json"),
        );
        TestImage {
            layers,
            config,
            manifest,
        }
    }

    /// The busybox rootfs of the e2e tests as a one-layer image running `sh`.
    pub fn busybox() -> TestImage {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        b.follow_symlinks(false);
        b.append_dir_all(".", crate::rootfs())
            .expect("tar the busybox rootfs");
        let gz = b.into_inner().and_then(|g| g.finish()).expect("gzip layer");
        TestImage::new(vec![gz], &["sh"])
    }

    /// Writes an OCI image layout at `dir` with this image tagged `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout dir");
        for b in self.layers.iter().chain([&self.config, &self.manifest]) {
            let hex = b.digest.strip_prefix("sha256:").expect("sha256 digest");
            std::fs::write(blobs.join(hex), &b.bytes).expect("write blob");
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        let mut desc = self.manifest.descriptor();
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]});
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("index"),
        )
        .expect("index.json");
    }
}

/// An image index: one image per platform.
#[derive(Clone, Debug)]
pub struct TestIndex {
    pub images: Vec<TestImage>,
    pub index: Blob,
}

impl TestIndex {
    /// An index of `images`, each entry's platform taken from its config.
    pub fn new(images: Vec<TestImage>) -> TestIndex {
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|img| {
                let cfg: serde_json::Value =
                    serde_json::from_slice(&img.config.bytes).expect("config json");
                let mut d = img.manifest.descriptor();
                d["platform"] =
                    serde_json::json!({"os": cfg["os"], "architecture": cfg["architecture"]});
                d
            })
            .collect();
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        let index = Blob::new(OCI_INDEX, serde_json::to_vec(&index).expect("index json"));
        TestIndex { images, index }
    }

    /// Writes an OCI layout at `dir` whose `tag` names this index.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        for (i, img) in self.images.iter().enumerate() {
            img.write_layout(dir, &format!("{tag}-{i}"));
        }
        let blobs = dir.join("blobs/sha256");
        let hex = self
            .index
            .digest
            .strip_prefix("sha256:")
            .expect("sha256 digest");
        std::fs::write(blobs.join(hex), &self.index.bytes).expect("write index blob");
        let mut desc = self.index.descriptor();
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let top =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]});
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&top).expect("index"),
        )
        .expect("index.json");
    }
}

/// A gzip'd tar of regular files `(path, contents)`, mode 0644, owned by
/// root, dated 2020.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_577_836_800);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("tar entry");
    }
    b.into_inner().and_then(|g| g.finish()).expect("gzip layer")
}

/// `n` bytes that do not compress (xorshift from `seed`): layers of a known
/// size on the wire.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip layer");
    out
}

/// The OCI name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn which(bin: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{bin} not found: run scripts/setup.sh (apt install docker-registry skopeo apache2-utils)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn private_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-{what}-{}", unique()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("private dir");
    d
}

/// Like [`poll`] but returns false at the deadline instead of panicking.
fn poll_until(timeout: Duration, mut f: impl FnMut() -> Option<bool>) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match f() {
            Some(v) => return v,
            None if std::time::Instant::now() >= deadline => return false,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The status of `GET path` on 127.0.0.1:port, None if it does not answer.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
