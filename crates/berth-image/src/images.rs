//! Image metadata: which names point at which image, kept durably in
//! `meta.redb` beside the content store (one redb transaction per change).
//!
//! An image is identified by its config digest (its *image id*, as in
//! Docker). Its record names the manifest (and the index it was chosen from,
//! if any) and carries what listing, running and garbage collection need
//! without reading blobs: platform, created time, size, layer digests, diff
//! ids and chain ids.
//!
//! Names are full normalized references with a tag
//! (`docker.io/library/busybox:latest`), stored as strings; a name points at
//! one image, an image may have many names or none (*dangling*, Docker's
//! `<none>:<none>`, e.g. after a newer pull took its tag). Digest
//! references (`name@sha256:…`, from a pull by digest or a registry) are kept
//! in the record as `repo_digests`.
//!
//! Garbage collection is by reachability: [`Images::gc`] deletes every blob
//! no image record reaches (nor the caller's `keep` set: blobs of pulls and
//! loads still running), and reports the chain ids of removed images that no
//! remaining image needs, for the snapshotter to remove.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::model::{self, BlobRef, ModelError, Platform};
use crate::reference::{Reference, ReferenceError};
use crate::store::{ContentStore, StoreError};

/// image id (`sha256:…`) → JSON [`ImageRecord`]
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// normalized `registry/repository:tag` → image id
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
/// chain ids of removed images, not yet reported by [`Images::gc`]
const RELEASED: TableDefinition<&str, ()> = TableDefinition::new("released_chains");

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image metadata database: {0}")]
    Db(String),
    #[error("image metadata record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image id prefix {0:?} is ambiguous: give more characters")]
    Ambiguous(String),
    #[error("conflict: unable to remove {what}: image {image} is used by a container (stop and remove the container, or use -f to remove the name only)")]
    InUse { what: String, image: String },
    #[error("conflict: unable to delete {image} (must be forced): it has several names ({names}); remove them one by one or use -f")]
    MultipleNames { image: String, names: String },
    #[error("cannot tag {0}: a target name needs a tag, not a digest")]
    DigestTarget(String),
    #[error("image {image} is incomplete: {what} {digest} is missing from the content store")]
    Incomplete {
        image: String,
        what: &'static str,
        digest: Digest,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub type Result<T> = std::result::Result<T, ImageError>;

fn db_err(e: impl std::fmt::Display) -> ImageError {
    ImageError::Db(e.to_string())
}

/// What berth knows of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest: the image id.
    pub id: Digest,
    /// The platform manifest.
    pub manifest: BlobRef,
    /// The index (or manifest list) the manifest was chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<BlobRef>,
    pub config_media_type: String,
    pub platform: Platform,
    /// The config's `created` (RFC 3339), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Bytes of content in the store: config plus layer blobs as stored
    /// (compressed). The unpacked size is the snapshotter's to report.
    pub size: u64,
    /// Layer blobs, base first, with their media types.
    pub layers: Vec<model::Layer>,
    pub diff_ids: Vec<Digest>,
    pub chain_ids: Vec<Digest>,
    /// `registry/repository@sha256:…` references to this image.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// When it was stored here (seconds since the epoch).
    pub added: u64,
}

impl ImageRecord {
    /// Build the record of the image whose manifest is `manifest` (already
    /// in `store`), checking that the manifest, its config and every layer
    /// are there and that the config fits the manifest. `index` is the
    /// index the manifest was chosen from, if any (must be stored too).
    pub fn build(store: &ContentStore, manifest: &Digest, index: Option<&Digest>) -> Result<Self> {
        let incomplete = |what, digest: &Digest| ImageError::Incomplete {
            image: manifest.to_string(),
            what,
            digest: digest.clone(),
        };
        let index = match index {
            Some(d) => {
                if !store.has(d) {
                    return Err(incomplete("index", d));
                }
                let bytes = store.read_all(d, model::MAX_MANIFEST_SIZE)?;
                let media_type = match model::parse_document(&bytes, None)? {
                    model::Document::Index(i) => i.media_type,
                    model::Document::Manifest(m) => {
                        return Err(ModelError::Invalid {
                            what: "index",
                            reason: format!("{d} is a manifest ({})", m.media_type),
                        }
                        .into())
                    }
                };
                Some(BlobRef {
                    digest: d.clone(),
                    size: bytes.len() as u64,
                    media_type,
                })
            }
            None => None,
        };
        if !store.has(manifest) {
            return Err(incomplete("manifest", manifest));
        }
        let mbytes = store.read_all(manifest, model::MAX_MANIFEST_SIZE)?;
        let m = model::parse_manifest(&mbytes, None)?;
        if !store.has(&m.config.digest) {
            return Err(incomplete("config", &m.config.digest));
        }
        let cbytes = store.read_all(&m.config.digest, model::MAX_CONFIG_SIZE)?;
        if cbytes.len() as u64 != m.config.size {
            return Err(StoreError::SizeMismatch {
                digest: m.config.digest.clone(),
                expected: m.config.size,
                actual: cbytes.len() as u64,
            }
            .into());
        }
        let config = model::parse_config(&cbytes)?;
        let diff_ids = model::check_config(&m, &config)?;
        let mut size = m.config.size;
        for l in &m.layers {
            match store.size(&l.digest) {
                Ok(s) if s == l.size => size += s,
                Ok(s) => {
                    return Err(StoreError::SizeMismatch {
                        digest: l.digest.clone(),
                        expected: l.size,
                        actual: s,
                    }
                    .into())
                }
                Err(StoreError::NotFound(_)) => return Err(incomplete("layer", &l.digest)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Self {
            id: m.config.digest.clone(),
            manifest: BlobRef {
                digest: manifest.clone(),
                size: mbytes.len() as u64,
                media_type: m.media_type.clone(),
            },
            index,
            config_media_type: m.config.media_type.clone(),
            platform: model::config_platform(&config),
            created: config.created().clone(),
            size,
            chain_ids: model::chain_ids(&diff_ids),
            diff_ids,
            layers: m.layers,
            repo_digests: Vec::new(),
            added: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }

    /// Every blob this image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.index
            .iter()
            .map(|b| &b.digest)
            .chain(std::iter::once(&self.manifest.digest))
            .chain(std::iter::once(&self.id))
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// An image with its names, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    #[serde(flatten)]
    pub record: ImageRecord,
    /// Full normalized names, sorted.
    pub names: Vec<String>,
}

/// How [`Images::resolve`] found an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// By a name (`registry/repository:tag`, normalized).
    Name(String),
    /// By a `registry/repository@sha256:…` reference.
    RepoDigest(String),
    /// By its id or an id prefix.
    Id,
}

/// What [`Images::remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Names (and repo digests) removed, full normalized form.
    pub untagged: Vec<String>,
    /// The image id, if the image itself was deleted.
    pub deleted: Option<Digest>,
}

/// What [`Images::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub freed_bytes: u64,
    /// Chain ids of removed images that no remaining image needs: their
    /// snapshots can go.
    pub released_chain_ids: Vec<Digest>,
    /// Every chain id a remaining image needs (a snapshotter may remove any
    /// other snapshot it has, e.g. left by a pull that never finished).
    pub needed_chain_ids: BTreeSet<Digest>,
}

/// History entry, for `berth history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub empty_layer: bool,
    /// The diff id of the layer this step made (non-empty entries).
    pub diff_id: Option<Digest>,
    /// That layer's blob size as stored (compressed), 0 for empty entries.
    pub size: u64,
}

/// The image metadata database.
pub struct Images {
    db: Database,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Images")
    }
}

/// A name as stored: normalized, with a tag and no digest.
fn tag_key(r: &Reference) -> Result<String> {
    match r.tag() {
        Some(t) => Ok(r.with_tag(t)?.to_string()),
        None => Err(ImageError::DigestTarget(r.to_string())),
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<ImageRecord> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn encode(rec: &ImageRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(rec).map_err(db_err)
}

/// Everything, read in one transaction (image counts are small).
struct State {
    images: BTreeMap<String, ImageRecord>,
    names: BTreeMap<String, String>,
}

impl State {
    fn names_of(&self, id: &str) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn resolve(&self, input: &str) -> Result<(String, Found)> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ImageError::NotFound(String::new()));
        }
        // `sha256:<hex or prefix>`: an id.
        if let Some(hex) = input.strip_prefix("sha256:") {
            return self.by_id_prefix(input, hex);
        }
        // Docker's order: a name first, then an id prefix.
        if let Ok(r) = Reference::parse(input) {
            if let Some(d) = r.digest() {
                let want = format!("{}@{d}", r.name());
                if let Some((id, _)) = self.images.iter().find(|(_, rec)| {
                    rec.repo_digests.contains(&want)
                        || ((&rec.manifest.digest == d
                            || rec.index.as_ref().map(|i| &i.digest) == Some(d))
                            && self.names_of(&rec.id.to_string()).iter().any(|n| {
                                Reference::parse(n).map(|n| n.name()).ok() == Some(r.name())
                            }))
                }) {
                    return Ok((id.clone(), Found::RepoDigest(want)));
                }
                return Err(ImageError::NotFound(input.to_string()));
            }
            let key = tag_key(&r)?;
            if let Some(id) = self.names.get(&key) {
                return Ok((id.clone(), Found::Name(key)));
            }
        }
        if input
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && input.len() <= 64
        {
            return self.by_id_prefix(input, input);
        }
        Err(ImageError::NotFound(input.to_string()))
    }

    fn by_id_prefix(&self, input: &str, hex: &str) -> Result<(String, Found)> {
        if hex.is_empty() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageError::NotFound(input.to_string()));
        }
        let mut hits = self.images.keys().filter(|k| {
            k.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hex))
        });
        match (hits.next(), hits.next()) {
            (Some(id), None) => Ok((id.clone(), Found::Id)),
            (Some(_), Some(_)) => Err(ImageError::Ambiguous(input.to_string())),
            (None, _) => Err(ImageError::NotFound(input.to_string())),
        }
    }
}

impl Images {
    /// Open (creating if needed) `dir/meta.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("meta.redb");
        let db = Database::create(&path).map_err(|e| db_err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            tx.open_table(IMAGES).map_err(db_err)?;
            tx.open_table(NAMES).map_err(db_err)?;
            tx.open_table(RELEASED).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    fn read_state(&self) -> Result<State> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let it = tx.open_table(IMAGES).map_err(db_err)?;
        let nt = tx.open_table(NAMES).map_err(db_err)?;
        let mut images = BTreeMap::new();
        for item in it.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            images.insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        let mut names = BTreeMap::new();
        for item in nt.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            names.insert(k.value().to_string(), v.value().to_string());
        }
        Ok(State { images, names })
    }

    /// Run `f` on the whole state in one write transaction, then write back
    /// what it changed.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let out = {
            let mut it = tx.open_table(IMAGES).map_err(db_err)?;
            let mut nt = tx.open_table(NAMES).map_err(db_err)?;
            let mut rt = tx.open_table(RELEASED).map_err(db_err)?;
            let mut images = BTreeMap::new();
            for item in it.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                images.insert(k.value().to_string(), decode(k.value(), v.value())?);
            }
            let mut names = BTreeMap::new();
            for item in nt.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                names.insert(k.value().to_string(), v.value().to_string());
            }
            let before_images = images.clone();
            let before_names = names.clone();
            let mut st = State { images, names };
            let out = f(&mut st)?;
            for (k, old) in &before_images {
                if !st.images.contains_key(k) {
                    it.remove(k.as_str()).map_err(db_err)?;
                    for c in &old.chain_ids {
                        rt.insert(c.to_string().as_str(), ()).map_err(db_err)?;
                    }
                }
            }
            for (k, rec) in &st.images {
                if before_images.get(k) != Some(rec) {
                    it.insert(k.as_str(), encode(rec)?.as_slice())
                        .map_err(db_err)?;
                }
            }
            for k in before_names.keys() {
                if !st.names.contains_key(k) {
                    nt.remove(k.as_str()).map_err(db_err)?;
                }
            }
            for (k, v) in &st.names {
                if before_names.get(k) != Some(v) {
                    nt.insert(k.as_str(), v.as_str()).map_err(db_err)?;
                }
            }
            out
        };
        tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Store `rec` (merging its repo digests with an existing record of the
    /// same id) and point `names` at it. Names with a tag become names;
    /// digest references become repo digests. Returns, for each tag name
    /// that pointed at another image before, that image's id (it may now be
    /// dangling).
    pub fn put(&self, rec: &ImageRecord, names: &[Reference]) -> Result<Vec<Digest>> {
        let mut rec = rec.clone();
        let mut tags = Vec::new();
        for r in names {
            if let Some(d) = r.digest() {
                let rd = format!("{}@{d}", r.name());
                if !rec.repo_digests.contains(&rd) {
                    rec.repo_digests.push(rd);
                }
            }
            if r.tag().is_some() {
                tags.push(tag_key(r)?);
            }
        }
        self.update(|st| {
            let id = rec.id.to_string();
            if let Some(old) = st.images.get(&id) {
                for rd in &old.repo_digests {
                    if !rec.repo_digests.contains(rd) {
                        rec.repo_digests.push(rd.clone());
                    }
                }
                rec.added = old.added;
            }
            rec.repo_digests.sort();
            st.images.insert(id.clone(), rec.clone());
            let mut displaced = Vec::new();
            for t in &tags {
                if let Some(prev) = st.names.insert(t.clone(), id.clone()) {
                    if prev != id {
                        if let Ok(d) = prev.parse() {
                            displaced.push(d);
                        }
                    }
                }
            }
            Ok(displaced)
        })
    }

    /// `berth tag SRC DST`: point the name `dst` at the image `src` names.
    pub fn tag(&self, src: &str, dst: &str) -> Result<Digest> {
        let dst = Reference::parse(dst)?;
        if dst.digest().is_some() {
            return Err(ImageError::DigestTarget(dst.to_string()));
        }
        let key = tag_key(&dst)?;
        self.update(|st| {
            let (id, _) = st.resolve(src)?;
            st.names.insert(key, id.clone());
            id.parse().map_err(db_err)
        })
    }

    /// Remove the name `name`; the image stays (dangling if it was its last).
    pub fn untag(&self, name: &str) -> Result<Digest> {
        let key = tag_key(&Reference::parse(name)?)?;
        self.update(|st| match st.names.remove(&key) {
            Some(id) => id.parse().map_err(db_err),
            None => Err(ImageError::NotFound(name.to_string())),
        })
    }

    /// The image id a user's string means: a name (`busybox`,
    /// `busybox:1.36`, `registry:5000/app:v1`), a `name@sha256:…`, an id
    /// (`sha256:<hex>`) or a unique prefix of one (`sha256:3f5a`, `3f5a`).
    pub fn resolve(&self, input: &str) -> Result<(Digest, Found)> {
        let (id, found) = self.read_state()?.resolve(input)?;
        Ok((id.parse().map_err(db_err)?, found))
    }

    pub fn get(&self, id: &Digest) -> Result<Option<ImageSummary>> {
        let st = self.read_state()?;
        let key = id.to_string();
        Ok(st.images.get(&key).map(|r| ImageSummary {
            record: r.clone(),
            names: st.names_of(&key),
        }))
    }

    /// Resolve and fetch in one go.
    pub fn inspect(&self, input: &str) -> Result<ImageSummary> {
        let st = self.read_state()?;
        let (id, _) = st.resolve(input)?;
        let record = st
            .images
            .get(&id)
            .cloned()
            .ok_or_else(|| ImageError::NotFound(input.to_string()))?;
        Ok(ImageSummary {
            names: st.names_of(&id),
            record,
        })
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let st = self.read_state()?;
        let mut out: Vec<ImageSummary> = st
            .images
            .iter()
            .map(|(id, r)| ImageSummary {
                record: r.clone(),
                names: st.names_of(id),
            })
            .collect();
        out.sort_by(|a, b| {
            b.record
                .created
                .cmp(&a.record.created)
                .then(b.record.added.cmp(&a.record.added))
                .then(a.record.id.cmp(&b.record.id))
        });
        Ok(out)
    }

    /// `berth rmi [-f] IMAGE`, Docker's rules. By name: the name goes, and
    /// the image with it if that was its last reference and no container
    /// uses it (in use and last: refused without `force`). By id: refused if
    /// it has several names or a container uses it, unless `force`, which
    /// removes every name and deletes the image unless it is in use (then
    /// it stays, dangling, until unused and pruned).
    pub fn remove(&self, input: &str, force: bool, in_use: &HashSet<Digest>) -> Result<Removed> {
        self.update(|st| {
            let (id, found) = st.resolve(input)?;
            let digest: Digest = id.parse().map_err(db_err)?;
            let used = in_use.contains(&digest);
            let names = st.names_of(&id);
            let mut out = Removed::default();
            match found {
                Found::Name(n) | Found::RepoDigest(n) => {
                    // Repo digests do not keep an image: without a name
                    // left, it goes (as in Docker).
                    let last = names.iter().all(|x| x == &n);
                    if last && used && !force {
                        return Err(ImageError::InUse {
                            what: n,
                            image: digest.short().to_string(),
                        });
                    }
                    if st.names.remove(&n).is_none() {
                        if let Some(r) = st.images.get_mut(&id) {
                            r.repo_digests.retain(|x| x != &n);
                        }
                    }
                    out.untagged.push(n);
                    if last && !used {
                        if let Some(r) = st.images.remove(&id) {
                            out.untagged.extend(r.repo_digests);
                        }
                        out.deleted = Some(digest);
                    }
                }
                Found::Id => {
                    if !force {
                        if names.len() > 1 {
                            return Err(ImageError::MultipleNames {
                                image: digest.short().to_string(),
                                names: names.join(", "),
                            });
                        }
                        if used {
                            return Err(ImageError::InUse {
                                what: digest.short().to_string(),
                                image: digest.short().to_string(),
                            });
                        }
                    }
                    for n in &names {
                        st.names.remove(n);
                    }
                    out.untagged.extend(names);
                    if used {
                        if let Some(r) = st.images.get_mut(&id) {
                            out.untagged.append(&mut r.repo_digests);
                        }
                    } else {
                        if let Some(r) = st.images.remove(&id) {
                            out.untagged.extend(r.repo_digests);
                        }
                        out.deleted = Some(digest);
                    }
                }
            }
            Ok(out)
        })
    }

    /// `berth image prune [-a]`: delete the images no container uses that
    /// have no name (or, with `all`, every image no container uses).
    /// Returns the deleted ids. Blobs go at the next [`Images::gc`].
    pub fn prune(&self, all: bool, in_use: &HashSet<Digest>) -> Result<Vec<Removed>> {
        self.update(|st| {
            let mut out = Vec::new();
            let ids: Vec<String> = st.images.keys().cloned().collect();
            for id in ids {
                let Ok(d) = id.parse::<Digest>() else {
                    continue;
                };
                if in_use.contains(&d) {
                    continue;
                }
                let names = st.names_of(&id);
                if !all && !names.is_empty() {
                    continue;
                }
                for n in &names {
                    st.names.remove(n);
                }
                let mut untagged = names;
                if let Some(r) = st.images.remove(&id) {
                    untagged.extend(r.repo_digests);
                }
                out.push(Removed {
                    untagged,
                    deleted: Some(d),
                });
            }
            Ok(out)
        })
    }

    /// Delete every blob of `store` that no image reaches and that is not in
    /// `keep` (the caller's in-flight pulls and loads: their blobs are
    /// stored before their image is). Reports the chain ids released since
    /// the last gc that no image needs any more.
    pub fn gc(&self, store: &ContentStore, keep: &HashSet<Digest>) -> Result<GcReport> {
        let st = self.read_state()?;
        let mut reachable: HashSet<Digest> = keep.clone();
        let mut needed = BTreeSet::new();
        for r in st.images.values() {
            reachable.extend(r.blobs().cloned());
            needed.extend(r.chain_ids.iter().cloned());
        }
        let mut report = GcReport::default();
        for b in store.list()? {
            if !reachable.contains(&b.digest) {
                store.delete(&b.digest)?;
                report.freed_bytes += b.size;
                report.removed_blobs.push(b.digest);
            }
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut rt = tx.open_table(RELEASED).map_err(db_err)?;
            let mut released = Vec::new();
            for item in rt.iter().map_err(db_err)? {
                let (k, _) = item.map_err(db_err)?;
                released.push(k.value().to_string());
            }
            for k in released {
                rt.remove(k.as_str()).map_err(db_err)?;
                if let Ok(d) = k.parse::<Digest>() {
                    if !needed.contains(&d) {
                        report.released_chain_ids.push(d);
                    }
                }
            }
        }
        tx.commit().map_err(db_err)?;
        report.needed_chain_ids = needed;
        if !report.removed_blobs.is_empty() {
            tracing::info!(
                blobs = report.removed_blobs.len(),
                bytes = report.freed_bytes,
                "image gc"
            );
        }
        Ok(report)
    }

    /// `berth history IMAGE`: the config's history, newest first, each
    /// non-empty step with the layer it made.
    pub fn history(&self, store: &ContentStore, input: &str) -> Result<Vec<HistoryEntry>> {
        let s = self.inspect(input)?;
        let rec = &s.record;
        let cbytes = store.read_all(&rec.id, model::MAX_CONFIG_SIZE)?;
        let config = model::parse_config(&cbytes)?;
        let mut layers = rec.diff_ids.iter().zip(rec.layers.iter());
        let mut out = Vec::new();
        for h in config.history().iter().flatten() {
            let empty = h.empty_layer().unwrap_or(false);
            let (diff_id, size) = if empty {
                (None, 0)
            } else {
                match layers.next() {
                    Some((d, l)) => (Some(d.clone()), l.size),
                    None => (None, 0),
                }
            };
            out.push(HistoryEntry {
                created: h.created().clone(),
                created_by: h.created_by().clone(),
                comment: h.comment().clone(),
                empty_layer: empty,
                diff_id,
                size,
            });
        }
        // Layers the history does not account for (images built without it).
        for (d, l) in layers {
            out.push(HistoryEntry {
                created: None,
                created_by: None,
                comment: None,
                empty_layer: false,
                diff_id: Some(d.clone()),
                size: l.size,
            });
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::media;

    pub(crate) struct TestImage {
        pub manifest: Digest,
        pub config: Digest,
        pub layers: Vec<Digest>,
    }

    /// A small image stored directly: layers are arbitrary bytes (the
    /// metadata never unpacks them), config and manifest are real JSON.
    pub(crate) fn store_image(store: &ContentStore, tag: &str, layers: &[&[u8]]) -> TestImage {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut digests = Vec::new();
        for l in layers {
            let d = store.put(l).unwrap();
            descs.push(serde_json::json!({
                "mediaType": media::OCI_LAYER, "digest": d.to_string(), "size": l.len()
            }));
            diff_ids.push(d.to_string());
            digests.push(d);
        }
        let history: Vec<_> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, _)| {
                [
                    serde_json::json!({"created_by": format!("RUN step {i} ({tag})")}),
                    serde_json::json!({"created_by": "ENV x=1", "empty_layer": true}),
                ]
            })
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"], "Labels": {"tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let cbytes = serde_json::to_vec(&config).unwrap();
        let c = store.put(&cbytes).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": c.to_string(), "size": cbytes.len()},
            "layers": descs,
        });
        let m = store.put(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        TestImage {
            manifest: m,
            config: c,
            layers: digests,
        }
    }

    fn setup() -> (tempfile::TempDir, ContentStore, Images) {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let i = Images::open(t.path()).unwrap();
        (t, s, i)
    }

    fn add(s: &ContentStore, i: &Images, name: &str, layers: &[&[u8]]) -> TestImage {
        let ti = store_image(s, name, layers);
        let rec = ImageRecord::build(s, &ti.manifest, None).unwrap();
        i.put(&rec, &[Reference::parse(name).unwrap()]).unwrap();
        ti
    }

    #[test]
    fn build_checks_completeness() {
        let (_t, s, _i) = setup();
        let ti = store_image(&s, "a", &[b"l0", b"l1"]);
        let rec = ImageRecord::build(&s, &ti.manifest, None).unwrap();
        assert_eq!(rec.id, ti.config);
        assert_eq!(rec.chain_ids.len(), 2);
        assert_eq!(rec.chain_ids[0], ti.layers[0]);
        assert_eq!(rec.platform.to_string(), "linux/amd64");
        assert_eq!(rec.created.as_deref(), Some("2026-01-01T00:00:00Z"));
        s.delete(&ti.layers[1]).unwrap();
        let e = ImageRecord::build(&s, &ti.manifest, None).unwrap_err();
        assert!(
            matches!(e, ImageError::Incomplete { what: "layer", .. }),
            "{e}"
        );
    }

    #[test]
    fn names_resolve_like_docker() {
        let (_t, s, i) = setup();
        let a = add(&s, &i, "busybox", &[b"a0"]);
        let b = add(&s, &i, "registry.local:5000/app:v1", &[b"b0"]);
        let id = |x: &str| i.resolve(x).map(|(d, _)| d);
        assert_eq!(id("busybox").unwrap(), a.config);
        assert_eq!(id("busybox:latest").unwrap(), a.config);
        assert_eq!(id("docker.io/library/busybox:latest").unwrap(), a.config);
        assert_eq!(id("registry.local:5000/app:v1").unwrap(), b.config);
        assert!(matches!(
            id("registry.local:5000/app"),
            Err(ImageError::NotFound(_))
        ));
        assert_eq!(id(&a.config.to_string()).unwrap(), a.config);
        assert_eq!(id(a.config.short()).unwrap(), a.config);
        assert_eq!(
            id(&format!("sha256:{}", &a.config.hex()[..6])).unwrap(),
            a.config
        );
        // By manifest digest under its name.
        assert_eq!(id(&format!("busybox@{}", a.manifest)).unwrap(), a.config);
        assert!(id(&format!("other@{}", a.manifest)).is_err());
        assert!(matches!(id("nothere"), Err(ImageError::NotFound(_))));
        // An ambiguous prefix: the empty-ish one-character prefix matching both, if any.
        let common = a
            .config
            .hex()
            .chars()
            .zip(b.config.hex().chars())
            .take_while(|(x, y)| x == y)
            .count();
        if common > 0 {
            let p = &a.config.hex()[..common];
            assert!(matches!(id(p), Err(ImageError::Ambiguous(_))));
        }
        let list = i.list().unwrap();
        assert_eq!(list.len(), 2);
        let names: Vec<_> = list.iter().flat_map(|s| s.names.clone()).collect();
        assert!(names.contains(&"docker.io/library/busybox:latest".to_string()));
    }

    #[test]
    fn tag_untag_and_dangling() {
        let (_t, s, i) = setup();
        let a = add(&s, &i, "app:1", &[b"x"]);
        assert_eq!(i.tag("app:1", "app:latest").unwrap(), a.config);
        assert_eq!(i.tag(a.config.short(), "other/app:2").unwrap(), a.config);
        assert!(matches!(
            i.tag("app:1", &format!("app@{}", a.manifest)),
            Err(ImageError::DigestTarget(_))
        ));
        assert_eq!(i.inspect("app").unwrap().names.len(), 3);
        i.untag("app:latest").unwrap();
        assert!(matches!(
            i.untag("app:latest"),
            Err(ImageError::NotFound(_))
        ));
        // A newer image takes the tag: the old one is dangling, still listed.
        let b = add(&s, &i, "app:1", &[b"y"]);
        assert_eq!(i.resolve("app:1").unwrap().0, b.config);
        i.untag("other/app:2").unwrap();
        let old = i.get(&a.config).unwrap().unwrap();
        assert!(old.names.is_empty());
        // prune removes the dangling one only; -a the rest unless in use.
        let none = HashSet::new();
        let pruned = i.prune(false, &none).unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0].deleted.as_ref(), Some(&a.config));
        let in_use: HashSet<_> = [b.config.clone()].into();
        assert!(i.prune(true, &in_use).unwrap().is_empty());
        assert_eq!(i.prune(true, &none).unwrap().len(), 1);
        assert!(i.list().unwrap().is_empty());
    }

    #[test]
    fn remove_follows_docker_rules() {
        let (_t, s, i) = setup();
        let a = add(&s, &i, "app:1", &[b"x"]);
        i.tag("app:1", "app:2").unwrap();
        let none = HashSet::new();
        let used: HashSet<_> = [a.config.clone()].into();
        // By id with two names: refused without -f.
        assert!(matches!(
            i.remove(a.config.short(), false, &none),
            Err(ImageError::MultipleNames { .. })
        ));
        // One of two names: just untagged, even in use.
        let r = i.remove("app:2", false, &used).unwrap();
        assert_eq!(r.untagged, vec!["docker.io/library/app:2".to_string()]);
        assert_eq!(r.deleted, None);
        // The last name of an image in use: refused; -f untags, keeps it.
        let e = i.remove("app:1", false, &used).unwrap_err();
        assert!(matches!(e, ImageError::InUse { .. }), "{e}");
        let r = i.remove("app:1", true, &used).unwrap();
        assert_eq!(r.deleted, None);
        assert!(i.get(&a.config).unwrap().is_some());
        // Unused now: remove by id deletes.
        let r = i.remove(&a.config.to_string(), false, &none).unwrap();
        assert_eq!(r.deleted, Some(a.config.clone()));
        assert!(i.list().unwrap().is_empty());
    }

    #[test]
    fn gc_keeps_shared_and_reports_released_chains() {
        let (_t, s, i) = setup();
        let a = add(&s, &i, "a", &[b"base", b"a-top"]);
        let b = add(&s, &i, "b", &[b"base", b"b-top"]);
        let stray = s.put(b"in flight").unwrap();
        let orphan = s.put(b"orphan").unwrap();
        let keep: HashSet<_> = [stray.clone()].into();
        let r = i.gc(&s, &keep).unwrap();
        assert_eq!(r.removed_blobs, vec![orphan]);
        assert!(s.has(&stray));
        assert!(r.released_chain_ids.is_empty());
        let none = HashSet::new();
        i.remove("a", false, &none).unwrap();
        let r = i.gc(&s, &none).unwrap();
        let rec_b = ImageRecord::build(&s, &b.manifest, None).unwrap();
        // The base chain id is shared with b: not released; a's top is.
        assert_eq!(r.released_chain_ids.len(), 1);
        assert!(!rec_b.chain_ids.contains(&r.released_chain_ids[0]));
        assert!(r.needed_chain_ids.contains(&rec_b.chain_ids[0]));
        assert!(!s.has(&a.manifest) && !s.has(&a.config) && !s.has(&a.layers[1]));
        assert!(s.has(&a.layers[0]), "shared layer kept");
        // Reported once.
        assert!(i.gc(&s, &none).unwrap().released_chain_ids.is_empty());
        i.remove("b", false, &none).unwrap();
        let r = i.gc(&s, &none).unwrap();
        assert_eq!(r.released_chain_ids.len(), 2);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn durable_across_reopen() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let a = {
            let i = Images::open(t.path()).unwrap();
            add(&s, &i, "persist:1", &[b"p"])
        };
        let i = Images::open(t.path()).unwrap();
        assert_eq!(i.resolve("persist:1").unwrap().0, a.config);
    }

    #[test]
    fn history_maps_layers() {
        let (_t, s, i) = setup();
        let a = add(&s, &i, "h", &[b"one", b"three"]);
        let h = i.history(&s, "h").unwrap();
        assert_eq!(h.len(), 4);
        assert!(h[0].empty_layer);
        assert_eq!(h[1].created_by.as_deref(), Some("RUN step 1 (h)"));
        assert_eq!(h[1].size, 5);
        assert_eq!(h[3].diff_id.as_ref(), Some(&a.layers[0]));
        assert_eq!(h[3].size, 3);
    }
}
