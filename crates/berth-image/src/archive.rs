//! Image archives: `berth load` (OCI image layouts as `skopeo copy …
//! oci-archive:` writes them, and `docker save` archives, old and new,
//! gzip-compressed or not) and `berth save` (an OCI layout with a Docker
//! `manifest.json` beside `index.json`, so `docker load` takes it too).
//!
//! Loading streams the tar once, in whatever order its entries come: every
//! blob goes straight into the content store as it passes (verified against
//! the digest its name says, if it has one), and only the small JSON
//! documents are held in memory. Once the whole archive is read, they are
//! interpreted: every image is built and checked complete
//! ([`ImageRecord::build`]) before any is recorded, so a bad archive records
//! no image; blobs it added that no image references are deleted again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::images::{ImageError, ImageRecord, Images};
use crate::model::{self, media, Compression, Document, ModelError, Platform};
use crate::reference::Reference;
use crate::store::{ContentStore, StoreError};

/// Bound for the JSON files of an archive (`index.json`, `manifest.json`,
/// configs) held in memory.
const MAX_JSON: u64 = 8 << 20;

/// How long a load waits for a pull writing the same blob.
const INGEST_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("not an image archive: it has neither index.json (OCI layout) nor manifest.json (docker save)")]
    NotAnArchive,
    #[error("archive entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("archive entry {path}: content does not match its digest {expected} (got {actual}); nothing was loaded")]
    Corrupt {
        path: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {path} of the docker-save archive has diff id {actual}, but the image config says {expected}")]
    DiffId {
        path: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("the archive's {file} names {path:?}, which the archive does not contain")]
    Missing { file: &'static str, path: String },
    #[error("invalid {file} in the archive: {reason}")]
    Json { file: String, reason: String },
    #[error("invalid image name {name:?} in the archive: {reason}")]
    Name { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

pub type Result<T> = std::result::Result<T, ArchiveError>;

/// What a load reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadEvent {
    /// A blob was stored (or was already there).
    Blob {
        path: String,
        digest: Digest,
        size: u64,
        already_present: bool,
    },
    /// An image was recorded.
    Image { id: Digest, names: Vec<String> },
}

/// One image a load recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    pub manifest: Digest,
    /// Full normalized names (`docker.io/library/busybox:latest`); empty for
    /// an image loaded without a name (`Loaded image ID: sha256:…`).
    pub names: Vec<String>,
}

/// What is known of a regular file of the archive once it has passed.
#[derive(Debug, Clone)]
enum FileInfo {
    /// Stored in the content store.
    Blob {
        digest: Digest,
        size: u64,
        compression: Compression,
        /// The digest of the uncompressed content, when it could be
        /// computed in passing (plain tar: the blob digest; gzip).
        diff_id: Option<Digest>,
    },
    /// A small JSON document kept in memory.
    Json(Vec<u8>),
    /// Legacy per-layer metadata (`<id>/json`, `<id>/VERSION`), not needed.
    Skipped,
}

/// The archive's path, normalized: no `./`, no `..`, relative.
fn clean_path(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

/// A link target, relative to the link's directory, normalized.
fn resolve_link(link: &str, target: &Path, hard: bool) -> Option<String> {
    if hard {
        // Hard link names are archive paths.
        return clean_path(target);
    }
    let base = Path::new(link).parent().unwrap_or(Path::new(""));
    clean_path(&base.join(target))
}

/// What is at `path`, following links (bounded, so a loop cannot hang us).
fn lookup<'a>(
    files: &'a HashMap<String, FileInfo>,
    links: &HashMap<String, String>,
    path: &str,
) -> Option<&'a FileInfo> {
    let mut p = path.to_string();
    for _ in 0..16 {
        if let Some(f) = files.get(&p) {
            return Some(f);
        }
        p = links.get(&p)?.clone();
    }
    None
}

/// Load an image archive from `reader` into `store` and `images`.
pub fn load<R: Read>(
    reader: R,
    store: &ContentStore,
    images: &Images,
    progress: &mut dyn FnMut(&LoadEvent),
) -> Result<Vec<LoadedImage>> {
    let mut added: Vec<Digest> = Vec::new();
    let r = load_inner(reader, store, images, progress, &mut added);
    // Take back what this load stored that no image uses: everything, if it
    // failed; files an image does not reference (extra platforms, stray
    // files), if it succeeded. A blob an image uses stays, whoever stored it.
    let used: HashSet<Digest> = images
        .list()
        .map(|l| {
            l.iter()
                .flat_map(|s| s.record.blobs().cloned().collect::<Vec<_>>())
                .collect()
        })
        .unwrap_or_default();
    for d in added.iter().filter(|d| !used.contains(d)) {
        if let Err(e) = store.delete(d) {
            tracing::warn!(digest = %d, error = %e, "could not remove a blob a load left unused");
        }
    }
    r
}

fn load_inner<R: Read>(
    reader: R,
    store: &ContentStore,
    images: &Images,
    progress: &mut dyn FnMut(&LoadEvent),
    added: &mut Vec<Digest>,
) -> Result<Vec<LoadedImage>> {
    let mut buf = BufReader::with_capacity(1 << 16, reader);
    let magic = buf.fill_buf().map_err(ArchiveError::Read)?;
    let inner: Box<dyn Read> = match Compression::detect(magic) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(ArchiveError::Read)?)
        }
        Compression::None => Box::new(buf),
    };
    let mut ar = tar::Archive::new(inner);
    let mut files: HashMap<String, FileInfo> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for entry in ar.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let raw = entry.path().map_err(ArchiveError::Read)?.into_owned();
        let Some(path) = clean_path(&raw) else {
            continue; // "./" itself
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(ArchiveError::Read)? {
                if let Some(t) = resolve_link(&path, &target, kind.is_hard_link()) {
                    links.insert(path, t);
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let info = read_entry(&path, size, &mut entry, store, progress, added)?;
        files.insert(path, info);
    }

    let json = |name: &str| match lookup(&files, &links, name) {
        Some(FileInfo::Json(b)) => Some(b.clone()),
        _ => None,
    };
    let docker_manifest = match json("manifest.json") {
        Some(b) => Some(
            serde_json::from_slice::<Vec<DockerManifestEntry>>(&b).map_err(|e| {
                ArchiveError::Json {
                    file: "manifest.json".into(),
                    reason: e.to_string(),
                }
            })?,
        ),
        None => None,
    };
    // Build everything first: nothing is recorded unless all of it holds.
    let mut todo: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
    if let Some(index) = json("index.json") {
        if json("oci-layout").is_none() {
            tracing::warn!(
                "archive has index.json but no oci-layout file; reading it as an OCI layout anyway"
            );
        }
        // Names from docker's manifest.json (new docker save), by config.
        let mut tags_by_config: HashMap<Digest, Vec<String>> = HashMap::new();
        for e in docker_manifest.iter().flatten() {
            if let Some(FileInfo::Blob { digest, .. }) = lookup(&files, &links, &e.config) {
                tags_by_config
                    .entry(digest.clone())
                    .or_default()
                    .extend(e.repo_tags.iter().flatten().cloned());
            }
        }
        todo = oci_images(store, &index, &tags_by_config)?;
    } else if let Some(entries) = docker_manifest {
        for e in &entries {
            todo.push(docker_image(store, &files, &links, e, added)?);
        }
    } else {
        return Err(ArchiveError::NotAnArchive);
    }

    let mut out = Vec::new();
    for (rec, names) in todo {
        images.put(&rec, &names)?;
        let names: Vec<String> = names.iter().map(|r| r.to_string()).collect();
        progress(&LoadEvent::Image {
            id: rec.id.clone(),
            names: names.clone(),
        });
        out.push(LoadedImage {
            id: rec.id,
            manifest: rec.manifest.digest,
            names,
        });
    }
    Ok(out)
}

/// Take one regular file of the archive as it passes.
fn read_entry(
    path: &str,
    size: u64,
    entry: &mut dyn Read,
    store: &ContentStore,
    progress: &mut dyn FnMut(&LoadEvent),
    added: &mut Vec<Digest>,
) -> Result<FileInfo> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let top = !path.contains('/');
    if top
        && matches!(
            path,
            "oci-layout" | "index.json" | "manifest.json" | "repositories"
        )
    {
        return read_json(path, size, entry).map(FileInfo::Json);
    }
    if !top && (name == "json" || name == "VERSION") && path.matches('/').count() == 1 {
        return Ok(FileInfo::Skipped);
    }
    // The digest the name promises: blobs/sha256/<hex>, or <hex>.json (a
    // legacy docker-save config).
    let named: Option<Digest> = if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        Some(Digest::from_hex(hex).map_err(|_| ArchiveError::Entry {
            path: path.into(),
            reason: "not a sha256 digest".into(),
        })?)
    } else if let Some(alg) = path
        .strip_prefix("blobs/")
        .and_then(|r| r.split('/').next())
    {
        return Err(ArchiveError::Entry {
            path: path.into(),
            reason: format!("digest algorithm {alg} is not supported (sha256 only)"),
        });
    } else if top {
        path.strip_suffix(".json")
            .and_then(|h| Digest::from_hex(h).ok())
    } else {
        None
    };

    let mut first = [0u8; 4];
    let mut got = 0;
    while got < first.len() {
        let n = entry.read(&mut first[got..]).map_err(ArchiveError::Read)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let compression = Compression::detect(&first[..got]);
    // Only the layers of a legacy docker-save archive (files without a
    // digest in their name) need their diff id computed here, to check it
    // against the config; OCI layouts' layers are checked when unpacked.
    let mut diff =
        DiffHasher::new(named.is_none().then_some(compression)).map_err(ArchiveError::Read)?;
    let mut feed = |ing: &mut crate::store::Ingest, chunk: &[u8]| -> Result<()> {
        ing.write_all(chunk).map_err(|e| write_error(path, e))?;
        diff.update(chunk).map_err(|e| ArchiveError::Entry {
            path: path.into(),
            reason: format!("corrupt compressed data: {e}"),
        })?;
        Ok(())
    };

    let (digest, already) = match &named {
        Some(d) => match store.ingest_wait(d, None, INGEST_WAIT)? {
            None => {
                io::copy(entry, &mut io::sink()).map_err(ArchiveError::Read)?;
                (d.clone(), true)
            }
            Some(mut ing) => {
                ing.truncate()?;
                copy_into(&mut ing, &first[..got], entry, &mut feed)?;
                match ing.commit() {
                    Ok(d) => {
                        added.push(d.clone());
                        (d, false)
                    }
                    Err(StoreError::DigestMismatch { expected, actual }) => {
                        return Err(ArchiveError::Corrupt {
                            path: path.into(),
                            expected,
                            actual,
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        },
        None => {
            let mut w = store.writer()?;
            copy_into(&mut w, &first[..got], entry, &mut feed)?;
            let d = w.digest_so_far();
            let already = store.has(&d);
            let d = w.commit()?;
            if !already {
                added.push(d.clone());
            }
            (d, already)
        }
    };
    progress(&LoadEvent::Blob {
        path: path.into(),
        digest: digest.clone(),
        size,
        already_present: already,
    });
    let diff_id = match compression {
        Compression::None => Some(digest.clone()),
        Compression::Gzip | Compression::Zstd => diff.finish(),
    };
    Ok(FileInfo::Blob {
        digest,
        size,
        compression,
        diff_id,
    })
}

fn write_error(path: &str, e: io::Error) -> ArchiveError {
    if crate::store::is_enospc(&e) {
        return StoreError::NoSpace {
            what: path.into(),
            path: "the content store".into(),
        }
        .into();
    }
    ArchiveError::Entry {
        path: path.into(),
        reason: format!("storing it: {e}"),
    }
}

fn copy_into(
    ing: &mut crate::store::Ingest,
    first: &[u8],
    rest: &mut dyn Read,
    feed: &mut dyn FnMut(&mut crate::store::Ingest, &[u8]) -> Result<()>,
) -> Result<()> {
    feed(ing, first)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::Read(e)),
        };
        feed(ing, &buf[..n])?;
    }
}

fn read_json(path: &str, size: u64, entry: &mut dyn Read) -> Result<Vec<u8>> {
    if size > MAX_JSON {
        return Err(ArchiveError::Entry {
            path: path.into(),
            reason: format!("{size} bytes is too large for this file (at most {MAX_JSON})"),
        });
    }
    let mut b = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(MAX_JSON)
        .read_to_end(&mut b)
        .map_err(ArchiveError::Read)?;
    Ok(b)
}

/// The sha256 of a compressed stream's decompressed content, fed the
/// compressed bytes as they pass.
enum DiffHasher {
    Off,
    Gzip(Box<flate2::write::GzDecoder<HashSink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashSink>>),
}

struct HashSink(Hasher);

impl Write for HashSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DiffHasher {
    fn new(c: Option<Compression>) -> io::Result<Self> {
        Ok(match c {
            Some(Compression::Gzip) => Self::Gzip(Box::new(flate2::write::GzDecoder::new(
                HashSink(Hasher::new()),
            ))),
            Some(Compression::Zstd) => Self::Zstd(Box::new(zstd::stream::write::Decoder::new(
                HashSink(Hasher::new()),
            )?)),
            _ => Self::Off,
        })
    }

    fn update(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Self::Off => Ok(()),
            Self::Gzip(d) => d.write_all(b),
            Self::Zstd(d) => d.write_all(b),
        }
    }

    fn finish(self) -> Option<Digest> {
        match self {
            Self::Off => None,
            Self::Gzip(d) => d.finish().ok().map(|s| s.0.finish()),
            Self::Zstd(mut d) => {
                d.flush().ok()?;
                Some(d.into_inner().0.finish())
            }
        }
    }
}

/// An entry of Docker's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn parse_name(name: &str) -> Result<Reference> {
    Reference::parse(name).map_err(|e| ArchiveError::Name {
        name: name.into(),
        reason: e.to_string(),
    })
}

/// The images of an OCI layout's `index.json`.
fn oci_images(
    store: &ContentStore,
    index_json: &[u8],
    tags_by_config: &HashMap<Digest, Vec<String>>,
) -> Result<Vec<(ImageRecord, Vec<Reference>)>> {
    let index = match model::parse_document(index_json, None).map_err(|e| ArchiveError::Json {
        file: "index.json".into(),
        reason: e.to_string(),
    })? {
        Document::Index(i) => i,
        Document::Manifest(_) => {
            return Err(ArchiveError::Json {
                file: "index.json".into(),
                reason: "it is a manifest, not an index".into(),
            })
        }
    };
    let host = Platform::host();
    let mut by_id: BTreeMap<Digest, (ImageRecord, Vec<Reference>)> = BTreeMap::new();
    for entry in &index.manifests {
        let d = &entry.blob.digest;
        if !store.has(d) {
            return Err(ArchiveError::Missing {
                file: "index.json",
                path: format!("blobs/sha256/{}", d.hex()),
            });
        }
        let bytes = store.read_all(d, model::MAX_MANIFEST_SIZE)?;
        if bytes.len() as u64 != entry.blob.size {
            return Err(StoreError::SizeMismatch {
                digest: d.clone(),
                expected: entry.blob.size,
                actual: bytes.len() as u64,
            }
            .into());
        }
        let doc = match model::parse_document(&bytes, Some(&entry.blob.media_type)) {
            Ok(doc) => doc,
            // An artifact beside the images (a signature, an SBOM): not ours.
            Err(ModelError::NotAnImage { digest, media_type }) => {
                tracing::info!(%digest, %media_type, "archive: skipping a non-image manifest");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let rec = match doc {
            Document::Manifest(_) => ImageRecord::build(store, d, None)?,
            Document::Index(nested) => {
                // A multi-platform image, of which an archive usually holds
                // one platform: the host's if it is there, else the only
                // one there.
                let m = pick_present(store, &nested, &host)?;
                ImageRecord::build(store, &m, Some(d))?
            }
        };
        let mut names = Vec::new();
        let ann = &entry.annotations;
        if let Some(n) = ann.get("io.containerd.image.name") {
            names.push(parse_name(n)?);
        } else if let Some(n) = ann.get("org.opencontainers.image.ref.name") {
            // A full reference (skopeo's `oci-archive:f:name:tag`); a bare
            // tag names no repository, so it gives no name.
            if n.contains('/') || n.contains(':') {
                names.push(parse_name(n)?);
            }
        }
        for t in tags_by_config.get(&rec.id).into_iter().flatten() {
            names.push(parse_name(t)?);
        }
        let slot = by_id
            .entry(rec.id.clone())
            .or_insert_with(|| (rec, Vec::new()));
        for n in names {
            if !slot.1.contains(&n) {
                slot.1.push(n);
            }
        }
    }
    if by_id.is_empty() {
        return Err(ArchiveError::Json {
            file: "index.json".into(),
            reason: "it lists no container image".into(),
        });
    }
    Ok(by_id.into_values().collect())
}

/// From a nested index, the manifest to load: the best match for `host`
/// among the manifests the archive holds, or the only one it holds.
fn pick_present(store: &ContentStore, index: &model::Index, host: &Platform) -> Result<Digest> {
    let present: Vec<&model::IndexEntry> = index
        .manifests
        .iter()
        .filter(|e| store.has(&e.blob.digest))
        .collect();
    for want in host.compatible() {
        if let Some(e) = present.iter().find(|e| e.platform.as_ref() == Some(&want)) {
            return Ok(e.blob.digest.clone());
        }
    }
    let images: Vec<&&model::IndexEntry> = present
        .iter()
        .filter(|e| e.platform.as_ref().is_none_or(|p| p.os != "unknown"))
        .collect();
    match images.as_slice() {
        [one] => Ok(one.blob.digest.clone()),
        _ => Err(index.select(host).map(|_| ()).err().map_or_else(
            || ArchiveError::Missing {
                file: "index.json",
                path: format!("the manifest for {host}"),
            },
            ArchiveError::from,
        )),
    }
}

/// A legacy `docker save` image: make it an OCI manifest, so every image in
/// the store has one.
fn docker_image(
    store: &ContentStore,
    files: &HashMap<String, FileInfo>,
    links: &HashMap<String, String>,
    e: &DockerManifestEntry,
    added: &mut Vec<Digest>,
) -> Result<(ImageRecord, Vec<Reference>)> {
    let missing = |p: &str| ArchiveError::Missing {
        file: "manifest.json",
        path: p.into(),
    };
    let config = match lookup(files, links, &e.config) {
        Some(FileInfo::Blob { digest, .. }) => digest.clone(),
        _ => return Err(missing(&e.config)),
    };
    let cbytes = store.read_all(&config, model::MAX_CONFIG_SIZE)?;
    let cfg = model::parse_config(&cbytes)?;
    let diff_ids = model::diff_ids(&cfg)?;
    if diff_ids.len() != e.layers.len() {
        return Err(ModelError::LayerCount {
            diff_ids: diff_ids.len(),
            layers: e.layers.len(),
        }
        .into());
    }
    let mut layers = Vec::new();
    for (p, want) in e.layers.iter().zip(&diff_ids) {
        let Some(FileInfo::Blob {
            digest,
            size,
            compression,
            diff_id,
        }) = lookup(files, links, p)
        else {
            return Err(missing(p));
        };
        let actual = match diff_id {
            Some(d) => d.clone(),
            // A compressed file under a digest name (not hashed in passing):
            // decompress it from the store now.
            None => {
                let f = store.open_blob(digest)?;
                let corrupt = |e: io::Error| ArchiveError::Entry {
                    path: p.clone(),
                    reason: format!("corrupt compressed data: {e}"),
                };
                let inner: Box<dyn Read> = match compression {
                    Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
                    Compression::Zstd => {
                        Box::new(zstd::stream::read::Decoder::new(f).map_err(corrupt)?)
                    }
                    Compression::None => Box::new(f),
                };
                let mut r = crate::digest::HashingReader::new(inner);
                io::copy(&mut r, &mut io::sink()).map_err(corrupt)?;
                r.finish().0
            }
        };
        if &actual != want {
            return Err(ArchiveError::DiffId {
                path: p.clone(),
                expected: want.clone(),
                actual,
            });
        }
        layers.push(serde_json::json!({
            "mediaType": compression.oci_media_type(),
            "digest": digest.to_string(),
            "size": size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": media::OCI_CONFIG,
            "digest": config.to_string(),
            "size": cbytes.len(),
        },
        "layers": layers,
    });
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| ArchiveError::Json {
        file: "manifest".into(),
        reason: e.to_string(),
    })?;
    let had = store.has(&Digest::of(&mbytes));
    let m = store.put(&mbytes)?;
    if !had {
        added.push(m.clone());
    }
    let rec = ImageRecord::build(store, &m, None)?;
    let names = e
        .repo_tags
        .iter()
        .flatten()
        .map(|t| parse_name(t))
        .collect::<Result<Vec<_>>>()?;
    Ok((rec, names))
}

/// Write the images `inputs` name (as [`Images::resolve`] takes them) as
/// an OCI image layout tar to `writer`, with a Docker `manifest.json`.
/// An input given by name is saved under that name; by id, without one.
pub fn save<W: Write>(
    inputs: &[&str],
    store: &ContentStore,
    images: &Images,
    writer: W,
) -> Result<W> {
    struct Item {
        rec: ImageRecord,
        name: Option<Reference>,
    }
    let mut items: Vec<Item> = Vec::new();
    for input in inputs {
        let (id, found) = images.resolve(input)?;
        let rec = images
            .get(&id)?
            .ok_or_else(|| ImageError::NotFound(input.to_string()))?
            .record;
        let name = match found {
            crate::images::Found::Name(n) => Some(parse_name(&n)?),
            _ => None,
        };
        items.push(Item { rec, name });
    }

    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Deterministic);
    let add_bytes = |tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, bytes)
            .map_err(ArchiveError::Write)
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Directory);
        tar.append_data(&mut h, dir, io::empty())
            .map_err(ArchiveError::Write)?;
    }
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    let mut written: HashSet<Digest> = HashSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries: Vec<DockerManifestEntry> = Vec::new();
    for it in &items {
        let rec = &it.rec;
        let blobs: Vec<&Digest> = std::iter::once(&rec.id)
            .chain(rec.layers.iter().map(|l| &l.digest))
            .chain(std::iter::once(&rec.manifest.digest))
            .collect();
        for d in blobs {
            if !written.insert(d.clone()) {
                continue;
            }
            let f = store.open_blob(d)?;
            let size = f.metadata().map_err(ArchiveError::Read)?.len();
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Hash what goes out: a blob damaged on disk must not leave
            // in an archive that claims its digest.
            let mut r = crate::digest::HashingReader::new(f.take(size));
            tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut r)
                .map_err(ArchiveError::Write)?;
            let (actual, _) = r.finish();
            if &actual != d {
                return Err(StoreError::DigestMismatch {
                    expected: d.clone(),
                    actual,
                }
                .into());
            }
        }
        let mut annotations = serde_json::Map::new();
        if let Some(n) = &it.name {
            annotations.insert("io.containerd.image.name".into(), n.to_string().into());
            if let Some(t) = n.tag() {
                annotations.insert("org.opencontainers.image.ref.name".into(), t.into());
            }
        }
        let mut desc = serde_json::json!({
            "mediaType": rec.manifest.media_type,
            "digest": rec.manifest.digest.to_string(),
            "size": rec.manifest.size,
            "platform": {
                "os": rec.platform.os,
                "architecture": rec.platform.architecture,
            },
        });
        if let Some(v) = &rec.platform.variant {
            desc["platform"]["variant"] = v.clone().into();
        }
        if !annotations.is_empty() {
            desc["annotations"] = annotations.into();
        }
        index_entries.push(desc);
        let tag = it.name.as_ref().map(|n| n.familiar());
        match docker_entries
            .iter_mut()
            .find(|e| e.config == format!("blobs/sha256/{}", rec.id.hex()))
        {
            Some(e) => {
                if let Some(t) = tag {
                    e.repo_tags.get_or_insert_with(Vec::new).push(t);
                }
            }
            None => docker_entries.push(DockerManifestEntry {
                config: format!("blobs/sha256/{}", rec.id.hex()),
                repo_tags: tag.map(|t| vec![t]),
                layers: rec
                    .layers
                    .iter()
                    .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                    .collect(),
            }),
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index_entries,
    });
    add_bytes(&mut tar, "index.json", &to_json("index.json", &index)?)?;
    add_bytes(
        &mut tar,
        "manifest.json",
        &to_json("manifest.json", &docker_entries)?,
    )?;
    tar.into_inner().map_err(ArchiveError::Write)
}

fn to_json<T: Serialize>(file: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ArchiveError::Json {
        file: file.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn setup() -> (tempfile::TempDir, ContentStore, Images) {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path().join("images")).unwrap();
        let i = Images::open(&t.path().join("images")).unwrap();
        (t, s, i)
    }

    /// A layer tar with `files` (path, content).
    fn layer(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, c) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, c.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn config(diff_ids: &[Digest]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    /// Entries of an archive, written in the given order.
    fn archive(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, c) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, c.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    struct Oci {
        tar: Vec<u8>,
        config: Digest,
        blobs: Vec<Digest>,
    }

    /// An OCI layout: a gzip layer and a plain one, named by annotation.
    fn oci_layout(name: &str) -> Oci {
        let l0 = layer(&[("etc/hostname", "base\n"), ("bin/sh", "#!")]);
        let l1 = layer(&[("app/run", "top\n")]);
        let l0z = gzip(&l0);
        let cfg = config(&[Digest::of(&l0), Digest::of(&l1)]);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::of(&cfg).to_string(), "size": cfg.len()},
            "layers": [
                {"mediaType": media::OCI_LAYER_GZIP, "digest": Digest::of(&l0z).to_string(), "size": l0z.len()},
                {"mediaType": media::OCI_LAYER, "digest": Digest::of(&l1).to_string(), "size": l1.len()},
            ],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media::OCI_MANIFEST, "digest": Digest::of(&manifest).to_string(),
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }],
        }))
        .unwrap();
        let blob = |b: &[u8]| (format!("blobs/sha256/{}", Digest::of(b).hex()), b.to_vec());
        // Blobs after index.json: any order must do.
        let entries = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), index),
            blob(&l1),
            blob(&manifest),
            blob(&cfg),
            blob(&l0z),
        ];
        Oci {
            tar: archive(&entries),
            config: Digest::of(&cfg),
            blobs: [&l0z, &l1, &cfg, &manifest]
                .iter()
                .map(|b| Digest::of(b))
                .collect(),
        }
    }

    fn no_progress() -> impl FnMut(&LoadEvent) {
        |_| {}
    }

    #[test]
    fn loads_an_oci_layout_plain_and_gzipped() {
        for compress in [false, true] {
            let (_t, s, i) = setup();
            let oci = oci_layout("example.com/app:1.0");
            let input = if compress { gzip(&oci.tar) } else { oci.tar };
            let mut events = Vec::new();
            let loaded = load(&input[..], &s, &i, &mut |e| events.push(e.clone())).unwrap();
            assert_eq!(loaded.len(), 1);
            assert_eq!(loaded[0].id, oci.config);
            assert_eq!(loaded[0].names, vec!["example.com/app:1.0".to_string()]);
            assert_eq!(i.resolve("example.com/app:1.0").unwrap().0, oci.config);
            for b in &oci.blobs {
                assert!(s.has(b), "{b} stored");
            }
            assert_eq!(events.len(), 5, "{events:?}");
            // Loading again stores nothing new.
            let mut again = 0;
            let input = oci_layout("example.com/app:1.0").tar;
            load(&input[..], &s, &i, &mut |e| {
                if let LoadEvent::Blob {
                    already_present, ..
                } = e
                {
                    assert!(already_present);
                    again += 1;
                }
            })
            .unwrap();
            assert_eq!(again, 4);
        }
    }

    #[test]
    fn nested_index_picks_the_platform_present_and_strays_are_dropped() {
        let (_t, s, i) = setup();
        let l = layer(&[("f", "x")]);
        let cfg = config(&[Digest::of(&l)]);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::of(&cfg).to_string(), "size": cfg.len()},
            "layers": [{"mediaType": media::OCI_LAYER, "digest": Digest::of(&l).to_string(), "size": l.len()}],
        }))
        .unwrap();
        let plat = Platform::host();
        let nested = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_INDEX,
            "manifests": [
                {"mediaType": media::OCI_MANIFEST, "digest": Digest::of(b"absent").to_string(), "size": 6,
                 "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": media::OCI_MANIFEST, "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
                 "platform": {"os": plat.os, "architecture": plat.architecture}},
            ],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media::OCI_INDEX, "digest": Digest::of(&nested).to_string(), "size": nested.len(),
                "annotations": {"io.containerd.image.name": "docker.io/library/multi:1",
                                "org.opencontainers.image.ref.name": "1"},
            }],
        }))
        .unwrap();
        let blob = |b: &[u8]| (format!("blobs/sha256/{}", Digest::of(b).hex()), b.to_vec());
        let tar = archive(&[
            blob(&l),
            blob(&cfg),
            blob(&manifest),
            blob(&nested),
            ("extra/notes.txt".into(), b"not an image file".to_vec()),
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index),
        ]);
        let loaded = load(&tar[..], &s, &i, &mut no_progress()).unwrap();
        assert_eq!(
            loaded[0].names,
            vec!["docker.io/library/multi:1".to_string()]
        );
        let rec = i.inspect("multi:1").unwrap().record;
        assert_eq!(
            rec.index.as_ref().map(|b| &b.digest),
            Some(&Digest::of(&nested))
        );
        assert_eq!(rec.manifest.digest, Digest::of(&manifest));
        // The stray file went again; the image's four blobs stay.
        assert!(!s.has(&Digest::of(b"not an image file")));
        assert_eq!(s.list().unwrap().len(), 4);
        // By index digest under its name, too.
        assert_eq!(
            i.resolve(&format!("multi@{}", Digest::of(&nested)))
                .unwrap()
                .0,
            rec.id
        );
    }

    #[test]
    fn bare_tag_ref_name_loads_without_a_name() {
        let (_t, s, i) = setup();
        let oci = oci_layout("latest");
        let loaded = load(&oci.tar[..], &s, &i, &mut no_progress()).unwrap();
        assert!(loaded[0].names.is_empty());
        assert!(i.get(&oci.config).unwrap().unwrap().names.is_empty());
    }

    #[test]
    fn corrupt_blob_is_refused_and_nothing_stays() {
        let (_t, s, i) = setup();
        let oci = oci_layout("app:1");
        // Flip a byte of the uncompressed layer's content inside the tar.
        let mut bad = oci.tar.clone();
        let pos = bad
            .windows(4)
            .position(|w| w == b"top\n")
            .expect("layer content in the archive");
        bad[pos] = b'T';
        let e = load(&bad[..], &s, &i, &mut no_progress()).unwrap_err();
        assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("sha256:"), "{e}");
        assert!(s.list().unwrap().is_empty(), "{:?}", s.list().unwrap());
        assert!(i.list().unwrap().is_empty());

        // A missing blob: refused, nothing stays either.
        let (_t, s, i) = setup();
        let mut t = tar::Archive::new(&oci.tar[..]);
        let mut kept = Vec::new();
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut c = Vec::new();
            e.read_to_end(&mut c).unwrap();
            if p != format!("blobs/sha256/{}", oci.config.hex()) {
                kept.push((p, c));
            }
        }
        let e = load(&archive(&kept)[..], &s, &i, &mut no_progress()).unwrap_err();
        assert!(e.to_string().contains(&oci.config.to_string()), "{e}");
        assert!(s.list().unwrap().is_empty());
    }

    /// A legacy `docker save`: per-layer directories, a symlinked duplicate
    /// layer, one gzip layer, and manifest.json last.
    fn docker_save(diff_override: Option<Digest>) -> (Vec<u8>, Digest) {
        let l0 = layer(&[("etc/os-release", "x\n")]);
        let l1 = layer(&[("usr/bin/tool", "tool\n")]);
        let l1z = gzip(&l1);
        let l2 = layer(&[("usr/share/zstd", "z\n")]);
        let l2z = zstd::encode_all(&l2[..], 3).unwrap();
        let mut diffs = vec![
            Digest::of(&l0),
            Digest::of(&l1),
            Digest::of(&l0),
            Digest::of(&l2),
        ];
        if let Some(d) = diff_override {
            diffs[1] = d;
        }
        let cfg = config(&diffs);
        let c = Digest::of(&cfg);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": format!("{}.json", c.hex()),
            "RepoTags": ["busybox:latest", "localhost:5000/tools:1"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar", "ddd/layer.tar"],
        }]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |p: &str, c: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, c).unwrap();
        };
        add("aaa/VERSION", b"1.0");
        add("aaa/json", b"{}");
        add("aaa/layer.tar", &l0);
        add("bbb/layer.tar", &l1z);
        add("ddd/layer.tar", &l2z);
        add(&format!("{}.json", c.hex()), &cfg);
        add("repositories", br#"{"busybox":{"latest":"ccc"}}"#);
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "manifest.json", &manifest[..])
            .unwrap();
        (b.into_inner().unwrap(), c)
    }

    #[test]
    fn loads_a_docker_save_with_manifest_last() {
        let (_t, s, i) = setup();
        let (tar, c) = docker_save(None);
        let loaded = load(&gzip(&tar)[..], &s, &i, &mut no_progress()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, c);
        // A zstd-compressed archive is read too.
        let (_t2, s2, i2) = setup();
        let zarchive = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(
            load(&zarchive[..], &s2, &i2, &mut no_progress()).unwrap()[0].id,
            c
        );
        assert_eq!(
            loaded[0].names,
            vec![
                "docker.io/library/busybox:latest".to_string(),
                "localhost:5000/tools:1".to_string()
            ]
        );
        let rec = i.inspect("busybox").unwrap().record;
        assert_eq!(rec.layers.len(), 4);
        assert_eq!(rec.layers[1].compression, Compression::Gzip);
        assert_eq!(rec.layers[3].compression, Compression::Zstd);
        assert_eq!(rec.layers[3].media_type, media::OCI_LAYER_ZSTD);
        assert_eq!(rec.layers[0].digest, rec.layers[2].digest);
        assert_eq!(rec.manifest.media_type, media::OCI_MANIFEST);
        // The manifest made for it is in the store and parses.
        let m = model::parse_manifest(&s.read_all(&rec.manifest.digest, 1 << 20).unwrap(), None)
            .unwrap();
        assert_eq!(m.config.digest, c);
        // Only what the image needs was stored (no per-layer json/VERSION).
        assert_eq!(s.list().unwrap().len(), 5);
    }

    #[test]
    fn docker_save_with_wrong_diff_id_is_refused() {
        let (_t, s, i) = setup();
        let (tar, _) = docker_save(Some(Digest::of(b"something else")));
        let e = load(&tar[..], &s, &i, &mut no_progress()).unwrap_err();
        assert!(matches!(e, ArchiveError::DiffId { .. }), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert!(i.list().unwrap().is_empty());
    }

    #[test]
    fn not_an_archive() {
        let (_t, s, i) = setup();
        let tar = archive(&[("hello.txt".into(), b"hi".to_vec())]);
        assert!(matches!(
            load(&tar[..], &s, &i, &mut no_progress()),
            Err(ArchiveError::NotAnArchive)
        ));
        assert!(s.list().unwrap().is_empty());
        assert!(load(&b"not a tar at all"[..], &s, &i, &mut no_progress()).is_err());
    }

    #[test]
    fn save_then_load_round_trip() {
        let (_t, s, i) = setup();
        let (tar, c) = docker_save(None);
        load(&tar[..], &s, &i, &mut no_progress()).unwrap();
        let oci = oci_layout("example.com/app:1.0");
        load(&oci.tar[..], &s, &i, &mut no_progress()).unwrap();
        let out = save(&["busybox", "example.com/app:1.0"], &s, &i, Vec::new()).unwrap();

        // The archive has both index.json and a docker manifest.json.
        let mut names = Vec::new();
        let mut manifest_json = Vec::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "manifest.json" {
                e.read_to_end(&mut manifest_json).unwrap();
            }
            names.push(p);
        }
        assert!(names.contains(&"index.json".to_string()));
        assert!(names.contains(&"oci-layout".to_string()));
        let dm: Vec<DockerManifestEntry> = serde_json::from_slice(&manifest_json).unwrap();
        assert_eq!(dm.len(), 2);
        assert!(dm
            .iter()
            .any(|e| e.repo_tags == Some(vec!["busybox:latest".to_string()])));

        let (_t2, s2, i2) = setup();
        let loaded = load(&out[..], &s2, &i2, &mut no_progress()).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(i2.resolve("busybox").unwrap().0, c);
        assert_eq!(i2.resolve("example.com/app:1.0").unwrap().0, oci.config);
        assert_eq!(
            i2.inspect("busybox").unwrap().record.manifest,
            i.inspect("busybox").unwrap().record.manifest
        );
        // The same content, blob for blob (minus nothing).
        assert_eq!(s2.list().unwrap(), s.list().unwrap());
    }

    /// Peak resident memory of this process, in KiB.
    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Pseudo-random bytes, generated as they are read (incompressible, and
    /// never all in memory).
    struct Noise(u64, u64);

    impl Read for Noise {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(usize::try_from(self.1).unwrap_or(usize::MAX));
            for b in &mut buf[..n] {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = self.0 as u8;
            }
            self.1 -= n as u64;
            Ok(n)
        }
    }

    /// A 32 MiB layer passes through a load without the process growing by
    /// anything near its size: entries stream into the store.
    #[test]
    fn a_large_layer_streams_through_in_bounded_memory() {
        // Peak RSS is the whole process's: measured in a child that runs
        // this test alone, so other tests running beside it in this process
        // cannot count against the load.
        const CHILD: &str = "BERTH_ARCHIVE_MEMORY_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "archive::tests::a_large_layer_streams_through_in_bounded_memory",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the child ran nothing: {text}");
            return;
        }
        const SIZE: u64 = 32 << 20;
        let (t, s, i) = setup();
        // The layer blob's digest, without holding it.
        let mut h = crate::digest::HashingReader::new(Noise(0x9e3779b97f4a7c15, SIZE));
        io::copy(&mut h, &mut io::sink()).unwrap();
        let (ld, _) = h.finish();
        let cfg = config(std::slice::from_ref(&ld));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::of(&cfg).to_string(), "size": cfg.len()},
            "layers": [{"mediaType": media::OCI_LAYER, "digest": ld.to_string(), "size": SIZE}],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": media::OCI_MANIFEST, "digest": Digest::of(&manifest).to_string(),
                           "size": manifest.len(),
                           "annotations": {"io.containerd.image.name": "docker.io/library/big:1"}}],
        }))
        .unwrap();
        let path = t.path().join("big.tar");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
            let mut add = |p: String, size: u64, r: &mut dyn Read| {
                let mut hd = tar::Header::new_gnu();
                hd.set_size(size);
                hd.set_mode(0o644);
                hd.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut hd, p, r).unwrap();
            };
            add("index.json".into(), index.len() as u64, &mut &index[..]);
            add(
                format!("blobs/sha256/{}", ld.hex()),
                SIZE,
                &mut Noise(0x9e3779b97f4a7c15, SIZE),
            );
            add(
                format!("blobs/sha256/{}", Digest::of(&cfg).hex()),
                cfg.len() as u64,
                &mut &cfg[..],
            );
            add(
                format!("blobs/sha256/{}", Digest::of(&manifest).hex()),
                manifest.len() as u64,
                &mut &manifest[..],
            );
            b.into_inner().unwrap();
        }
        let before = peak_rss_kib();
        let started = std::time::Instant::now();
        let loaded = load(
            std::fs::File::open(&path).unwrap(),
            &s,
            &i,
            &mut no_progress(),
        )
        .unwrap();
        let took = started.elapsed();
        let grew = peak_rss_kib().saturating_sub(before);
        eprintln!("loaded 32 MiB in {took:?}; peak RSS grew by {grew} KiB");
        assert_eq!(loaded[0].names, vec!["docker.io/library/big:1".to_string()]);
        assert_eq!(s.size(&ld).unwrap(), SIZE);
        assert!(
            grew < 16 << 10,
            "peak RSS grew by {grew} KiB for a 32 MiB layer"
        );
    }

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// umoci builds an OCI layout, skopeo writes it as an oci-archive, berth
    /// loads it, saves it, and skopeo reads berth's archive back.
    #[test]
    fn skopeo_and_umoci_interoperate() {
        if !have("skopeo") || !have("umoci") {
            eprintln!("skipping: skopeo or umoci not installed (scripts/setup.sh)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let layout = t.path().join("layout");
        let rootfs_src = t.path().join("src");
        std::fs::create_dir_all(rootfs_src.join("etc")).unwrap();
        std::fs::write(rootfs_src.join("etc/greeting"), "hello\n").unwrap();
        let l = layout.to_str().unwrap();
        run(Command::new("umoci").args(["init", "--layout", l]));
        run(Command::new("umoci").args(["new", "--image", &format!("{l}:v1")]));
        run(Command::new("umoci").args([
            "insert",
            "--image",
            &format!("{l}:v1"),
            rootfs_src.join("etc/greeting").to_str().unwrap(),
            "/etc/greeting",
        ]));
        let archive_path = t.path().join("img.tar");
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &format!("oci:{l}:v1"),
            &format!(
                "oci-archive:{}:localhost/umoci-test:v1",
                archive_path.display()
            ),
        ]));
        let s = ContentStore::open(t.path().join("images")).unwrap();
        let i = Images::open(&t.path().join("images")).unwrap();
        let f = std::fs::File::open(&archive_path).unwrap();
        let loaded = load(f, &s, &i, &mut no_progress()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].names, vec!["localhost/umoci-test:v1".to_string()]);
        let rec = i.inspect("localhost/umoci-test:v1").unwrap().record;
        assert_eq!(rec.layers.len(), 1);

        let saved = t.path().join("saved.tar");
        let w = std::fs::File::create(&saved).unwrap();
        save(&["localhost/umoci-test:v1"], &s, &i, w).unwrap();
        let out_dir = t.path().join("copied");
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &format!("oci-archive:{}", saved.display()),
            &format!("dir:{}", out_dir.display()),
        ]));
        assert!(out_dir.join("manifest.json").is_file());
        assert!(out_dir.join(rec.layers[0].digest.hex()).is_file());
    }
}
