//! Test images, made by the test itself: layers described entry by entry
//! (files with modes and owners, directories, symlinks, hard links,
//! whiteouts, opaque directories, xattrs), written as an OCI image layout —
//! a directory for `skopeo`/`umoci`, or a tar (`oci-archive`) for
//! `berth load` — and as a `docker save` archive.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
        /// PAX `SCHILY.xattr.<name>` records.
        xattrs: Vec<(String, Vec<u8>)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// `.wh.<name>` in the entry's directory: deletes `path` from below.
    Whiteout {
        path: String,
    },
    /// `.wh..wh..opq` in `dir`: hides everything below in that directory.
    Opaque {
        dir: String,
    },
}

impl Entry {
    pub fn file(path: &str, data: &[u8], mode: u32) -> Entry {
        Entry::File {
            path: path.into(),
            data: data.to_vec(),
            mode,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }

    pub fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }
}

/// How a layer is compressed in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// A layer: a tar of entries, or of a directory tree (the busybox rootfs).
#[derive(Debug, Clone)]
pub enum Layer {
    Entries(Vec<Entry>),
    Tree(PathBuf),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// The uncompressed tar of one layer.
pub fn layer_tar(layer: &Layer) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    match layer {
        Layer::Tree(dir) => {
            b.append_dir_all(".", dir).expect("tar the tree");
        }
        Layer::Entries(entries) => {
            for e in entries {
                match e {
                    Entry::Dir { path, mode } => {
                        let mut h = header(tar::EntryType::Directory, *mode, 0);
                        b.append_data(&mut h, path, &[][..]).expect("dir");
                    }
                    Entry::File {
                        path,
                        data,
                        mode,
                        uid,
                        gid,
                        xattrs,
                    } => {
                        if !xattrs.is_empty() {
                            let recs: Vec<(String, &[u8])> = xattrs
                                .iter()
                                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                                .collect();
                            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                                .expect("pax");
                        }
                        let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                        h.set_uid(*uid);
                        h.set_gid(*gid);
                        b.append_data(&mut h, path, data.as_slice()).expect("file");
                    }
                    Entry::Symlink { path, target } => {
                        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                        b.append_link(&mut h, path, target).expect("symlink");
                    }
                    Entry::Hardlink { path, target } => {
                        let mut h = header(tar::EntryType::Link, 0o644, 0);
                        b.append_link(&mut h, path, target).expect("hardlink");
                    }
                    Entry::Whiteout { path } => {
                        let (dir, name) = match path.rsplit_once('/') {
                            Some((d, n)) => (format!("{d}/"), n.to_string()),
                            None => (String::new(), path.clone()),
                        };
                        let mut h = header(tar::EntryType::Regular, 0o644, 0);
                        b.append_data(&mut h, format!("{dir}.wh.{name}"), &[][..])
                            .expect("whiteout");
                    }
                    Entry::Opaque { dir } => {
                        let mut h = header(tar::EntryType::Regular, 0o644, 0);
                        b.append_data(&mut h, format!("{dir}/.wh..wh..opq"), &[][..])
                            .expect("opaque");
                    }
                }
            }
        }
    }
    b.into_inner().expect("finish tar")
}

fn sha256(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    let out = h.finalize();
    out.iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// The config of a test image.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub labels: Vec<(String, String)>,
    pub stop_signal: Option<String>,
    /// Docker's `Healthcheck` object, as it stands in a config.
    pub healthcheck: Option<serde_json::Value>,
    /// `80/tcp`-style ports.
    pub exposed_ports: Vec<String>,
}

/// A test image: blobs by digest, its manifest and config.
pub struct Image {
    /// (hex digest, bytes)
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    /// Uncompressed layer tars, in order (for docker-save archives).
    pub layer_tars: Vec<Vec<u8>>,
}

impl Image {
    pub fn build(layers: &[Layer], compression: Compression, config: &Config) -> Image {
        let mut blobs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut descs = Vec::new();
        let mut layer_tars = Vec::new();
        for l in layers {
            let tar = layer_tar(l);
            diff_ids.push(format!("sha256:{}", sha256(&tar)));
            let (blob, media) = match compression {
                Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
                Compression::Gzip => (gzip(&tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
            };
            let d = sha256(&blob);
            descs.push(serde_json::json!({
                "mediaType": media,
                "digest": format!("sha256:{d}"),
                "size": blob.len(),
            }));
            blobs.push((d, blob));
            layer_tars.push(tar);
        }
        let labels: serde_json::Map<String, serde_json::Value> = config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut cfg = serde_json::json!({
            "Env": config.env,
            "Labels": labels,
        });
        if !config.entrypoint.is_empty() {
            cfg["Entrypoint"] = serde_json::json!(config.entrypoint);
        }
        if !config.cmd.is_empty() {
            cfg["Cmd"] = serde_json::json!(config.cmd);
        }
        if let Some(w) = &config.workdir {
            cfg["WorkingDir"] = serde_json::json!(w);
        }
        if let Some(u) = &config.user {
            cfg["User"] = serde_json::json!(u);
        }
        if let Some(s) = &config.stop_signal {
            cfg["StopSignal"] = serde_json::json!(s);
        }
        if let Some(h) = &config.healthcheck {
            cfg["Healthcheck"] = h.clone();
        }
        if !config.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = config
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), serde_json::json!({})))
                .collect();
            cfg["ExposedPorts"] = serde_json::Value::Object(ports);
        }
        let config_json = serde_json::to_vec(&serde_json::json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| serde_json::json!({
                "created": "2026-01-02T03:04:05Z",
                "created_by": "berth e2e test layer",
            })).collect::<Vec<_>>(),
        }))
        .expect("config json");
        let config_digest = sha256(&config_json);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config_json.len(),
            },
            "layers": descs,
        }))
        .expect("manifest json");
        let manifest_digest = sha256(&manifest);
        blobs.push((config_digest.clone(), config_json));
        blobs.push((manifest_digest.clone(), manifest.clone()));
        Image {
            blobs,
            manifest_digest,
            manifest,
            config_digest,
            layer_tars,
        }
    }

    fn index(&self, name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", self.manifest_digest),
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }],
        }))
        .expect("index json")
    }

    /// An OCI image layout directory (for skopeo `oci:DIR:TAG`); `tag` is
    /// the ref name annotation.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout dir");
        for (d, data) in &self.blobs {
            std::fs::write(blobs.join(d), data).expect("blob");
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        std::fs::write(dir.join("index.json"), self.index(tag)).expect("index");
    }

    /// An OCI layout as one tar (what `skopeo copy … oci-archive:` writes),
    /// the image named `name` (e.g. `docker.io/library/t:1`).
    pub fn oci_archive(&self, name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, path, data).expect("archive entry");
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &self.index(name));
        for (d, data) in &self.blobs {
            add(&format!("blobs/sha256/{d}"), data);
        }
        b.into_inner().expect("archive")
    }

    /// A `docker save` archive (legacy layout: `<id>.json`, `<n>/layer.tar`,
    /// `manifest.json` last), tagged `tag` (e.g. `t:1`).
    pub fn docker_archive(&self, tag: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, path, data).expect("archive entry");
        };
        let config = self
            .blobs
            .iter()
            .find(|(d, _)| *d == self.config_digest)
            .map(|(_, c)| c.clone())
            .expect("config blob");
        add(&format!("{}.json", self.config_digest), &config);
        let mut layers = Vec::new();
        for tar in &self.layer_tars {
            let name = format!("{}/layer.tar", sha256(tar));
            add(&name, tar);
            layers.push(name);
        }
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": format!("{}.json", self.config_digest),
            "RepoTags": [tag],
            "Layers": layers,
        }]))
        .expect("manifest.json");
        add("manifest.json", &manifest);
        b.into_inner().expect("archive")
    }
}

/// The busybox rootfs as a one-layer image layer.
pub fn busybox_layer() -> Layer {
    Layer::Tree(crate::rootfs())
}
