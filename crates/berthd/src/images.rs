//! berthd's image service: the one place that composes berth-image's
//! content store, image metadata, snapshots and registry client. The gRPC
//! `Images` service (`crate::images_api`) and container create both go
//! through it; nothing here knows about gRPC.
//!
//! Everything here is blocking file-system work (hashing, unpacking,
//! mounting): callers run it with `spawn_blocking`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use berth_api::v1;

use berth_core::container::{HealthConfig, ImageSource};
use berth_core::event::{EventType, ObjectKind};
use berth_core::spec::image::ImageDefaults;
use berth_image::archive;
use berth_image::digest::Digest;
use berth_image::images::{self as meta, Found, ImageSummary, Images as ImageDb};
use berth_image::model::{self, Platform};
use berth_image::reference::Reference;
use berth_image::snapshot::{SnapshotError, Snapshotter, SnapshotterChoice};
use berth_image::store::ContentStore;
use oci_spec::image::ImageConfiguration;
use tracing::{info, warn};

use crate::objevents::Recorder;
use crate::shim::RootfsProvider;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Docker's text, which clients match on ("No such image: …").
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Failed(String),
}

impl ImageError {
    pub fn failed(what: &str, e: impl std::fmt::Display) -> Self {
        ImageError::Failed(format!("{what}: {e}"))
    }

    /// The metadata database's errors, by what the client did wrong.
    pub fn meta(e: meta::ImageError) -> Self {
        use meta::ImageError as M;
        match e {
            M::NotFound(n) => ImageError::NotFound(n),
            M::InUse { .. } | M::MultipleNames { .. } => ImageError::InUse(e.to_string()),
            M::Ambiguous(_) | M::DigestTarget(_) | M::Reference(_) => {
                ImageError::Invalid(e.to_string())
            }
            other => ImageError::Failed(other.to_string()),
        }
    }
}

/// An image with its config.
pub struct Resolved {
    pub summary: ImageSummary,
    /// How the name given found it.
    pub found: Found,
    pub config: ImageConfiguration,
    /// The config's `Healthcheck`, which the OCI types leave out.
    pub healthcheck: Option<HealthConfig>,
}

/// Docker's `config.Healthcheck` in an image config (durations in ns).
#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(rename = "config", default)]
    config: Option<DockerRunConfig>,
}

#[derive(serde::Deserialize)]
struct DockerRunConfig {
    #[serde(rename = "Healthcheck", default)]
    healthcheck: Option<DockerHealth>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerHealth {
    #[serde(default)]
    test: Vec<String>,
    #[serde(default)]
    interval: u64,
    #[serde(default)]
    timeout: u64,
    #[serde(default)]
    start_period: u64,
    #[serde(default)]
    retries: u32,
}

fn image_healthcheck(config: &[u8]) -> Option<HealthConfig> {
    let h = serde_json::from_slice::<DockerConfig>(config)
        .ok()?
        .config?
        .healthcheck?;
    (!h.test.is_empty()).then_some(HealthConfig {
        test: h.test,
        interval: h.interval,
        timeout: h.timeout,
        start_period: h.start_period,
        retries: h.retries,
    })
}

/// What a container made from an image gets: its root and its defaults.
pub struct Prepared {
    pub source: ImageSource,
    pub defaults: ImageDefaults,
    /// The image config's `Volumes`: anonymous volumes of the container.
    pub volumes: Vec<String>,
    /// For a user namespace: how the root got its owners.
    pub userns_method: Option<berth_image::snapshot::MapMethod>,
}

pub struct Images {
    pub store: ContentStore,
    pub db: ImageDb,
    pub snaps: Snapshotter,
    /// Held for reading while a container's root is made from an image,
    /// for writing while images and their content are removed: a create
    /// never finds its layers deleted under it.
    gc_lock: Arc<tokio::sync::RwLock<()>>,
    /// Snapshots of removed containers whose unmount and delete still run
    /// (see [`RootfsProvider::release`]).
    removals: Arc<Removals>,
    /// Pulls, loads, saves, tags, untags and deletes.
    pub events: Recorder,
}

/// How long a garbage collection, or the daemon's exit, waits for the
/// snapshots of removed containers to be unmounted and deleted.
pub const REMOVALS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A count of snapshot removals still running, and a way to wait for none.
#[derive(Default)]
struct Removals {
    left: std::sync::Mutex<usize>,
    done: std::sync::Condvar,
}

impl Removals {
    fn begin(&self) {
        *self.left.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn end(&self) {
        let mut n = self.left.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.done.notify_all();
        }
    }

    /// Block until none is left, or `timeout`; false when some still are.
    fn settle(&self, timeout: std::time::Duration) -> bool {
        let n = self.left.lock().unwrap_or_else(|p| p.into_inner());
        let (n, _) = self
            .done
            .wait_timeout_while(n, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *n == 0
    }
}

impl Images {
    /// Open the image store under `<root>/images`.
    pub fn open(root: &Path, kind: SnapshotterChoice) -> Result<Self, ImageError> {
        let dir = root.join("images");
        let store = ContentStore::open(&dir)
            .map_err(|e| ImageError::failed("cannot open the content store", e))?;
        let db = ImageDb::open(&dir)
            .map_err(|e| ImageError::failed("cannot open the image database", e))?;
        let snaps = Snapshotter::open(&dir.join("snapshots"), kind)
            .map_err(|e| ImageError::failed("cannot open the snapshots", e))?;
        Ok(Self {
            store,
            db,
            snaps,
            gc_lock: Arc::new(tokio::sync::RwLock::new(())),
            removals: Arc::default(),
            events: Recorder::default(),
        })
    }

    /// Find an image by reference, id or id prefix. A string that is
    /// neither a valid reference nor an id is an invalid reference.
    pub fn resolve(&self, name: &str) -> Result<Resolved, ImageError> {
        let hexish = name
            .strip_prefix("sha256:")
            .unwrap_or(name)
            .bytes()
            .all(|b| b.is_ascii_hexdigit());
        if !hexish {
            Reference::parse(name).map_err(|e| ImageError::Invalid(e.to_string()))?;
        }
        let (id, found) = self.db.resolve(name).map_err(ImageError::meta)?;
        let summary = self
            .db
            .get(&id)
            .map_err(ImageError::meta)?
            .ok_or_else(|| ImageError::NotFound(name.to_string()))?;
        let bytes = self
            .store
            .read_all(&summary.record.id, model::MAX_CONFIG_SIZE)
            .map_err(|e| ImageError::failed("cannot read the image's config", e))?;
        let config = model::parse_config(&bytes)
            .map_err(|e| ImageError::failed("the image's config is invalid", e))?;
        Ok(Resolved {
            summary,
            found,
            config,
            healthcheck: image_healthcheck(&bytes),
        })
    }

    /// Unpack every layer of an image that is not a snapshot yet; return
    /// the chain ids, bottom first.
    pub fn unpack(&self, img: &Resolved) -> Result<Vec<Digest>, ImageError> {
        let rec = &img.summary.record;
        for (i, layer) in rec.layers.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &rec.chain_ids[p]);
            self.unpack_layer(layer, &rec.diff_ids[i], &rec.chain_ids[i], parent)?;
        }
        Ok(rec.chain_ids.clone())
    }

    /// Unpack one layer as snapshot `chain` (nothing to do when that
    /// snapshot exists); its content must match `diff_id`. Layers are
    /// unpacked bottom first, so `parent` is there already.
    pub fn unpack_layer(
        &self,
        layer: &model::Layer,
        diff_id: &Digest,
        chain: &Digest,
        parent: Option<&Digest>,
    ) -> Result<(), ImageError> {
        let layer_err = |e: SnapshotError| {
            ImageError::failed(&format!("cannot unpack layer {}", layer.digest), e)
        };
        if self.snaps.layer(chain).map_err(layer_err)?.is_some() {
            return Ok(());
        }
        if let Some(p) = parent {
            if self.snaps.layer(p).map_err(layer_err)?.is_none() {
                return Err(ImageError::Failed(format!(
                    "cannot unpack layer {}: the layer below it ({p}) is not unpacked",
                    layer.digest
                )));
            }
        }
        let started = std::time::Instant::now();
        let blob = self
            .store
            .open_blob(&layer.digest)
            .map_err(|e| ImageError::failed(&format!("layer {} is missing", layer.digest), e))?;
        let info = self
            .snaps
            .unpack_layer(chain, diff_id, blob, layer.compression)
            .map_err(layer_err)?;
        info!(layer = %layer.digest, chain = %chain, bytes = info.size, ms = started.elapsed().as_millis() as u64, "layer unpacked");
        Ok(())
    }

    /// The layers of a stored manifest.
    pub fn manifest_layers(&self, manifest: &Digest) -> Result<Vec<model::Layer>, ImageError> {
        let bytes = self
            .store
            .read_all(manifest, model::MAX_MANIFEST_SIZE)
            .map_err(|e| ImageError::failed("cannot read the manifest", e))?;
        Ok(model::parse_manifest(&bytes, None)
            .map_err(|e| ImageError::failed("the manifest is invalid", e))?
            .layers)
    }

    /// Held by a pull or a load while it writes content that no image
    /// record names yet: garbage collection waits for it.
    pub async fn gc_guard(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.gc_lock.clone().read_owned().await
    }

    /// Make the root of container `cid` from the image `name`: unpack what
    /// is not unpacked yet, then a snapshot (overlay or copy) of its layers.
    /// `shift`: the container's user namespace range (`--userns=auto`).
    pub fn prepare(
        &self,
        cid: &str,
        name: &str,
        platform: &str,
        shift: Option<berth_image::snapshot::IdShift>,
    ) -> Result<Prepared, ImageError> {
        let _gc = self.gc_lock.blocking_read();
        let img = self.resolve(name)?;
        if !platform.is_empty() {
            let want: Platform = platform.parse().map_err(|e| {
                ImageError::Invalid(format!("invalid --platform {platform:?}: {e}"))
            })?;
            let have = model::config_platform(&img.config);
            if !want.compatible().contains(&have) {
                return Err(ImageError::Invalid(format!(
                    "image {name} is for {have}, not {want}: pull it with --platform {want}"
                )));
            }
        }
        let chains = self.unpack(&img)?;
        let (rootfs, userns_method) = self
            .snaps
            .prepare_mapped(cid, &chains, shift)
            .map_err(|e| ImageError::failed("cannot make the container's root", e))?;
        if let Some(m) = userns_method {
            tracing::info!(
                container = cid,
                method = m.as_str(),
                "root given its owners for the user namespace"
            );
        }
        let id = img.summary.record.id.to_string();
        let reference = match &img.found {
            Found::Name(n) | Found::RepoDigest(n) => n.clone(),
            Found::Id => id.clone(),
        };
        Ok(Prepared {
            source: ImageSource {
                reference,
                id,
                rootfs,
            },
            defaults: ImageDefaults {
                healthcheck: img.healthcheck.clone(),
                ..defaults(&img.config)
            },
            volumes: img
                .config
                .config()
                .as_ref()
                .and_then(|c| c.volumes().clone())
                .unwrap_or_default(),
            userns_method,
        })
    }
}

/// What `commit` makes an image of.
pub struct CommitSpec {
    /// The container (its snapshot's upper directory is the new layer).
    pub container: String,
    /// The image id the container was made from.
    pub base: String,
    /// Names for the new image (none: untagged).
    pub names: Vec<Reference>,
    pub created_by: String,
    pub author: String,
    pub message: String,
    pub changes: Vec<crate::commit::ConfigChange>,
}

impl Images {
    /// `commit`: the container's upper directory as a new gzip layer on
    /// its image, a new config and manifest in the content store, the image
    /// recorded and its layer unpacked (runnable at once). Returns the new
    /// image id.
    pub fn commit(&self, c: &CommitSpec) -> Result<String, ImageError> {
        let _gc = self.gc_lock.blocking_read();
        let (upper, _) = self
            .snaps
            .overlay_dirs(&c.container)
            .map_err(|e| ImageError::failed("cannot read the container's snapshot", e))?
            .ok_or_else(|| {
                ImageError::Invalid(
                    "the container is a full copy (--snapshotter copy): commit needs an overlay snapshot".into(),
                )
            })?;
        let base = self.resolve(&c.base).map_err(|e| match e {
            ImageError::NotFound(_) => ImageError::Invalid(format!(
                "the container's image {} is gone (removed with rmi -f): cannot commit onto it",
                c.base
            )),
            e => e,
        })?;
        let layer = berth_image::pack::write_layer(&self.store, &upper)
            .map_err(|e| ImageError::failed("cannot write the new layer", e))?;
        let base_config = self
            .store
            .read_all(&base.summary.record.id, model::MAX_CONFIG_SIZE)
            .map_err(|e| ImageError::failed("cannot read the image's config", e))?;
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let diff_id = layer.diff_id.to_string();
        let config = crate::commit::new_config(
            &base_config,
            &crate::commit::Commit {
                diff_id: &diff_id,
                created: &created,
                created_by: &c.created_by,
                author: &c.author,
                message: &c.message,
                changes: &c.changes,
            },
        )
        .map_err(ImageError::Failed)?;
        let config_digest = self
            .store
            .put(&config)
            .map_err(|e| ImageError::failed("cannot store the new config", e))?;
        let mut layers: Vec<serde_json::Value> = base
            .summary
            .record
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": l.media_type,
                    "digest": l.digest.to_string(),
                    "size": l.size,
                })
            })
            .collect();
        layers.push(serde_json::json!({
            "mediaType": model::media::OCI_LAYER_GZIP,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        }));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": model::media::OCI_MANIFEST,
            "config": {
                "mediaType": model::media::OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::failed("cannot write the new manifest", e))?;
        let manifest_digest = self
            .store
            .put(&manifest)
            .map_err(|e| ImageError::failed("cannot store the new manifest", e))?;
        let rec = meta::ImageRecord::build(&self.store, &manifest_digest, None)
            .map_err(ImageError::meta)?;
        self.db.put(&rec, &c.names).map_err(ImageError::meta)?;
        let id = rec.id.to_string();
        let img = self.resolve(&id)?;
        self.unpack(&img)?;
        info!(container = %c.container, image = %id, layer = %layer.digest, bytes = layer.size, "committed");
        Ok(id)
    }
}

/// The API's view of an image.
pub fn image_proto(s: &ImageSummary) -> v1::Image {
    let r = &s.record;
    v1::Image {
        id: r.id.to_string(),
        repo_tags: s.names.clone(),
        repo_digests: r.repo_digests.clone(),
        created: r.created.clone().unwrap_or_default(),
        size: r.size,
        platform: r.platform.to_string(),
        containers: 0,
    }
}

impl Images {
    pub fn list(&self) -> Result<Vec<v1::Image>, ImageError> {
        Ok(self
            .db
            .list()
            .map_err(ImageError::meta)?
            .iter()
            .map(image_proto)
            .collect())
    }

    /// The image and its JSON description (Docker's `image inspect` shape,
    /// with berth's names).
    pub fn inspect(&self, name: &str) -> Result<(v1::Image, String), ImageError> {
        let img = self.resolve(name)?;
        let s = &img.summary;
        let r = &s.record;
        let doc = serde_json::json!({
            "Id": r.id.to_string(),
            "RepoTags": s.names,
            "RepoDigests": r.repo_digests,
            "Created": r.created,
            "Size": r.size,
            "Architecture": r.platform.architecture,
            "Os": r.platform.os,
            "Variant": r.platform.variant,
            "Config": img.config.config(),
            "RootFS": {
                "Type": "layers",
                "Layers": r.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            },
            "Manifest": {
                "Digest": r.manifest.digest.to_string(),
                "MediaType": r.manifest.media_type,
            },
            "Layers": r.layers.iter().map(|l| serde_json::json!({
                "Digest": l.digest.to_string(),
                "Size": l.size,
                "MediaType": l.media_type,
            })).collect::<Vec<_>>(),
            "ChainIds": r.chain_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        });
        let json = serde_json::to_string(&doc)
            .map_err(|e| ImageError::failed("cannot describe the image", e))?;
        Ok((image_proto(s), json))
    }

    pub fn tag(&self, source: &str, target: &str) -> Result<String, ImageError> {
        Reference::parse(target).map_err(|e| ImageError::Invalid(e.to_string()))?;
        let img = self.resolve(source)?;
        self.db.tag(source, target).map_err(ImageError::meta)?;
        let reference = Reference::parse(target)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| target.to_string());
        self.record(
            EventType::Tag,
            &img.summary.record.id.to_string(),
            &reference,
        );
        Ok(reference)
    }

    /// An image event: `id` the image id, `reference` the name it is about
    /// (full normalized form; the Docker API shows it familiar).
    pub fn record(&self, kind: EventType, id: &str, reference: &str) {
        self.events
            .record(ObjectKind::Image, kind, id, reference, &[]);
    }

    /// The events of a removal: an untag per name, then the delete.
    fn record_removed(&self, id: &str, untagged: &[String], deleted: Option<&str>) {
        let id = deleted.unwrap_or(id);
        for r in untagged {
            self.record(EventType::Untag, id, r);
        }
        if let Some(d) = deleted {
            self.record(EventType::Delete, d, "");
        }
    }

    /// `rmi`: remove a name (or the image given by id); content no image
    /// needs goes at once.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        users: &HashMap<String, u32>,
    ) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let _gc = self.gc_lock.blocking_write();
        let in_use = in_use(users);
        // The id before the names go: an untag is about the image.
        let id = self
            .db
            .resolve(name)
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        let removed = self
            .db
            .remove(name, force, &in_use)
            .map_err(ImageError::meta)?;
        let deleted: Vec<String> = removed.deleted.iter().map(|d| d.to_string()).collect();
        self.record_removed(&id, &removed.untagged, deleted.first().map(String::as_str));
        if !deleted.is_empty() {
            self.collect_garbage()?;
        }
        Ok((removed.untagged, deleted))
    }

    /// `image prune`: dangling images (every unused one with `all`), then
    /// every blob and snapshot no image needs.
    pub fn prune(
        &self,
        all: bool,
        users: &HashMap<String, u32>,
    ) -> Result<v1::PruneImagesResponse, ImageError> {
        let _gc = self.gc_lock.blocking_write();
        let in_use = in_use(users);
        let removed = self.db.prune(all, &in_use).map_err(ImageError::meta)?;
        let reclaimed = self.collect_garbage()?;
        let mut resp = v1::PruneImagesResponse {
            reclaimed,
            ..Default::default()
        };
        for r in removed {
            let deleted = r.deleted.as_ref().map(|d| d.to_string());
            self.record_removed("", &r.untagged, deleted.as_deref());
            resp.untagged.extend(r.untagged);
            resp.deleted.extend(r.deleted.map(|d| d.to_string()));
        }
        Ok(resp)
    }

    /// Delete the blobs and snapshots no image needs; the bytes freed.
    /// Called with the gc lock held.
    fn collect_garbage(&self) -> Result<u64, ImageError> {
        // A container removed a moment ago may still have its snapshot
        // mounted on the layers: wait for that to end, so the layers of
        // an image removed right after its last container go now (not at
        // a later prune) and are never deleted under a mount.
        if !self.removals.settle(REMOVALS_WAIT) {
            warn!("snapshots of removed containers are still being deleted; their layers stay");
        }
        let report = self
            .db
            .gc(&self.store, &HashSet::new())
            .map_err(ImageError::meta)?;
        let mut freed = report.freed_bytes;
        let layers = self
            .snaps
            .layers()
            .map_err(|e| ImageError::failed("cannot list the layer snapshots", e))?;
        for l in layers {
            if report.needed_chain_ids.contains(&l.chain_id) {
                continue;
            }
            match self.snaps.remove_layer(&l.chain_id) {
                Ok(()) => freed += l.size,
                // A container still runs on it (its image was removed with
                // -f): it goes with a later prune.
                Err(SnapshotError::LayerInUse { .. }) => {}
                Err(e) => return Err(ImageError::failed("cannot remove a layer snapshot", e)),
            }
        }
        Ok(freed)
    }

    pub fn history(&self, name: &str) -> Result<Vec<v1::HistoryEntry>, ImageError> {
        let img = self.resolve(name)?;
        let entries = self
            .db
            .history(&self.store, &img.summary.record.id.to_string())
            .map_err(ImageError::meta)?;
        // Newest first, as Docker prints it; the top entry carries the id.
        Ok(entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| v1::HistoryEntry {
                id: if i == 0 {
                    img.summary.record.id.to_string()
                } else {
                    "<missing>".into()
                },
                created: e.created.unwrap_or_default(),
                created_by: e.created_by.unwrap_or_default(),
                size: e.size,
                comment: e.comment.unwrap_or_default(),
                empty_layer: e.empty_layer,
            })
            .collect())
    }

    /// `load`: an archive into the store, each image recorded and unpacked;
    /// what Docker prints for each name.
    pub fn load(&self, reader: impl std::io::Read) -> Result<Vec<v1::LoadProgress>, ImageError> {
        let _gc = self.gc_lock.blocking_read();
        let loaded = archive::load(reader, &self.store, &self.db, &mut |_| {})
            .map_err(|e| ImageError::Invalid(format!("cannot load the archive: {e}")))?;
        let mut out = Vec::new();
        for img in &loaded {
            let resolved = self.documents_of(&img.id)?;
            self.unpack(&resolved)?;
            let id = img.id.to_string();
            if img.names.is_empty() {
                self.record(EventType::Load, &id, "");
            }
            for n in &img.names {
                self.record(EventType::Load, &id, n);
            }
            if img.names.is_empty() {
                out.push(v1::LoadProgress {
                    message: format!("Loaded image ID: {}", img.id),
                    image_id: img.id.to_string(),
                    reference: String::new(),
                });
            }
            for n in &img.names {
                let familiar = Reference::parse(n)
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| n.clone());
                out.push(v1::LoadProgress {
                    message: format!("Loaded image: {familiar}"),
                    image_id: img.id.to_string(),
                    reference: n.clone(),
                });
            }
        }
        Ok(out)
    }

    /// `save`: the images as one OCI layout archive.
    pub fn save(&self, names: &[String], writer: impl std::io::Write) -> Result<(), ImageError> {
        let inputs: Vec<&str> = names.iter().map(String::as_str).collect();
        archive::save(&inputs, &self.store, &self.db, writer)
            .map_err(|e| ImageError::failed("cannot write the archive", e))?;
        for n in names {
            if let Ok(img) = self.resolve(n) {
                self.record(EventType::Save, &img.summary.record.id.to_string(), n);
            }
        }
        Ok(())
    }

    /// An image by id, with its config.
    fn documents_of(&self, id: &Digest) -> Result<Resolved, ImageError> {
        self.resolve(&id.to_string())
    }

    /// Wait (blocking, at most `timeout`) for the snapshots of removed
    /// containers to be deleted; false when some still are not.
    pub fn settle_removals(&self, timeout: std::time::Duration) -> bool {
        self.removals.settle(timeout)
    }

    /// At start: snapshots that no container of `known` owns go (a crash
    /// mid-create or mid-remove left them).
    pub fn cleanup(&self, known: &HashSet<String>) {
        if let Err(e) = self.snaps.cleanup(known) {
            warn!(error = %e, "cannot clean up stale snapshots");
        }
        if let Err(e) = self.store.cleanup_ingests(STALE_INGEST) {
            warn!(error = %e, "cannot clean up stale ingests");
        }
    }
}

/// An interrupted download is kept this long for a pull to resume it.
const STALE_INGEST: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn in_use(users: &HashMap<String, u32>) -> HashSet<Digest> {
    users.keys().filter_map(|k| k.parse().ok()).collect()
}

/// What an image config gives a container by default.
pub fn defaults(config: &ImageConfiguration) -> ImageDefaults {
    let Some(c) = config.config() else {
        return ImageDefaults::default();
    };
    let labels: BTreeMap<String, String> = c
        .labels()
        .clone()
        .map(|l| l.into_iter().collect())
        .unwrap_or_default();
    let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
    exposed_ports.sort();
    ImageDefaults {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        workdir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()),
        labels,
        exposed_ports,
        healthcheck: None,
    }
}

impl RootfsProvider for Images {
    fn ensure(&self, id: &str) -> Result<crate::shim::Prepared, String> {
        match self.snaps.mount(id) {
            Ok(_) | Err(SnapshotError::NoSnapshot(_)) => Ok(Default::default()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The snapshot goes out of sight here, on the removal's path (one
    /// rename); its unmount and delete (the overlay's unmount syncs the
    /// upper filesystem: ~30 ms of a `run --rm` that waited for them) run
    /// after the removal has answered. Nothing can collide with them: the
    /// record and the name are gone, no listing sees the snapshot, a
    /// garbage collection waits for them, and a crash before they end
    /// leaves a `tmp-` directory the next start's cleanup removes.
    fn release(&self, id: &str) {
        let rest = match self.snaps.take_away(id) {
            Ok(Some(rest)) => rest,
            Ok(None) => return,
            Err(e) => {
                warn!(id = %id, error = %e, "cannot remove the container's snapshot");
                return;
            }
        };
        self.removals.begin();
        let removals = self.removals.clone();
        let id = id.to_string();
        let finish = move || {
            if let Err(e) = rest.finish() {
                warn!(id = %id, error = %e, "cannot delete the removed container's snapshot; the next start will");
            }
            removals.end();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(finish)),
            Err(_) => finish(),
        }
    }
}
