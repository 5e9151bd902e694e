//! The pull pipeline: reference → manifest (the platform's, from an index)
//! → config → layers, into the content store, then the image record.
//!
//! - Manifests, the index and the config are small: fetched whole,
//!   verified by digest (and size, against the descriptor that named them)
//!   and stored with [`ContentStore::put`].
//! - Layers are downloaded concurrently ([`PullOptions::concurrency`], 3 by
//!   default, as Docker). Each goes into an [`Ingest`] of its expected digest
//!   and size: a download resumes from [`Ingest::offset`] (bytes already
//!   there and re-hashed, e.g. left by a berthd that was killed) with a
//!   `Range` request, and again after every transient network error, up to
//!   the client's retry count. The store verifies digest and size at commit
//!   and keeps nothing that does not match.
//! - The network side runs on tokio; hashing and writing run on a blocking
//!   thread per layer, fed through a bounded channel, so neither waits for
//!   the other and the runtime's threads never block on disk.
//! - Progress is reported through a callback ([`PullEvent`]), throttled to
//!   a few events a second per layer.
//!
//! Unpacking is not done here: a [`PullEvent::LayerReady`] is reported for
//! layer *i* as soon as it and every layer below it are in the store, with
//! its diff id and chain id, so a snapshotter can unpack layer *i* on top of
//! chain *i-1* while the layers above still download. The image record is
//! written once every blob is in; an interrupted pull leaves committed blobs
//! and resumable ingests, and no record.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::digest::Digest;
use crate::images::{ImageError, ImageRecord, Images};
use crate::model::{self, BlobRef, Document, ModelError, Platform};
use crate::reference::Reference;
use crate::registry::{Client, RegistryError};
use crate::store::{ContentStore, Ingest, StoreError};

/// How long a layer waits for another pull writing the same blob.
const SHARED_INGEST_WAIT: Duration = Duration::from_secs(3600);
/// Chunks in flight between a layer's download and its writer.
const CHANNEL_CHUNKS: usize = 32;
/// At most this often a Downloading event per layer.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The platform to choose from an index; None: this host's.
    pub platform: Option<Platform>,
    /// Layers downloaded at once.
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: None,
            concurrency: 3,
        }
    }
}

/// The state of one layer, as `docker pull` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerState {
    /// Queued behind other downloads, or behind another pull of the same
    /// blob.
    Waiting,
    /// Already in the store: nothing to fetch.
    AlreadyExists,
    /// `current` of the layer's bytes are in (including any resumed from an
    /// earlier, interrupted pull).
    Downloading { current: u64 },
    /// All bytes in; the digest and size are being checked.
    Verifying,
    /// Verified and stored.
    DownloadComplete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to this manifest (chosen from `index` if the
    /// reference named an index), with its config and its layers, base
    /// first. These are the blobs a garbage collection running meanwhile
    /// must keep (`Images::gc`'s `keep`).
    Resolved {
        manifest: Digest,
        index: Option<Digest>,
        config: Digest,
        layers: Vec<(Digest, u64)>,
    },
    /// A layer blob's progress. `total` is its size from the manifest.
    Layer {
        digest: Digest,
        total: u64,
        state: LayerState,
    },
    /// Layer `index` (0 = base) and all below it are in the store: it can be
    /// unpacked on top of chain `index - 1`.
    LayerReady {
        index: usize,
        digest: Digest,
        diff_id: Digest,
        chain_id: Digest,
    },
    /// The image is recorded. `digest` is what was resolved (the index's
    /// digest if there was one, else the manifest's): Docker's "Digest:".
    Done {
        image_id: Digest,
        digest: Digest,
        reference: Reference,
    },
}

/// Where events go. Called from several tasks; must not block for long.
pub type Progress = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// A progress callback that drops everything.
pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub reference: Reference,
    /// The config digest.
    pub image_id: Digest,
    /// The index's digest, or the manifest's if there was no index.
    pub digest: Digest,
    pub manifest: Digest,
    pub record: ImageRecord,
    /// Images whose tag this pull took (they may now be dangling).
    pub displaced: Vec<Digest>,
    /// Layer bytes fetched from the registry by this pull.
    pub downloaded: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Images(#[from] ImageError),
    #[error(
        "{what} {digest} is {actual} bytes but its descriptor says {expected}; nothing was stored"
    )]
    Size {
        what: &'static str,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{0} points at another index: nested indexes are not supported")]
    NestedIndex(Digest),
    #[error("writing {what} into the content store: {source}; nothing was stored")]
    Write {
        what: String,
        source: std::io::Error,
    },
    #[error("pull task failed: {0}")]
    Task(String),
}

/// Pulls `reference` into `store` and records it in `images` under its name.
pub async fn pull(
    client: &Client,
    store: &ContentStore,
    images: &Images,
    reference: &Reference,
    opts: &PullOptions,
    progress: Progress,
) -> Result<Pulled, PullError> {
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let top = client.manifest(reference).await?;
    let (manifest_bytes, manifest_type, manifest_digest, index) =
        match model::parse_document(&top.bytes, top.media_type.as_deref())? {
            Document::Manifest(_) => (top.bytes, top.media_type, top.digest.clone(), None),
            Document::Index(idx) => {
                let entry = idx.select(&platform)?;
                let want = entry.blob.clone();
                let m = client
                    .manifest(&reference.with_digest(want.digest.clone()))
                    .await?;
                check_size("manifest", &want, m.bytes.len() as u64)?;
                put_small(store, top.bytes.clone()).await?;
                (m.bytes, m.media_type, m.digest, Some(top.digest.clone()))
            }
        };
    let manifest = match model::parse_document(&manifest_bytes, manifest_type.as_deref())? {
        Document::Manifest(m) => *m,
        Document::Index(_) => return Err(PullError::NestedIndex(manifest_digest)),
    };
    progress(PullEvent::Resolved {
        manifest: manifest_digest.clone(),
        index: index.clone(),
        config: manifest.config.digest.clone(),
        layers: manifest
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect(),
    });

    // The config first: it names the diff ids, so each layer can be
    // announced ready (with its chain id) as soon as it is in.
    let cfg = &manifest.config;
    if !store.has(&cfg.digest) {
        let bytes = client
            .blob_bytes(
                reference,
                &cfg.digest,
                Some(cfg.size),
                model::MAX_CONFIG_SIZE,
            )
            .await?;
        put_small(store, bytes).await?;
    }
    let config_bytes = store.read_all(&cfg.digest, model::MAX_CONFIG_SIZE)?;
    let config = model::parse_config(&config_bytes)?;
    let diff_ids = model::check_config(&manifest, &config)?;
    let chain_ids = model::chain_ids(&diff_ids);
    let got = model::config_platform(&config);
    if index.is_none() && !platform.compatible().contains(&got) {
        tracing::warn!(image = %reference, %got, wanted = %platform, "the image's platform does not match the requested one");
    }
    put_small(store, manifest_bytes).await?;

    let downloaded = fetch_layers(
        client,
        store,
        reference,
        &manifest.layers,
        opts,
        &progress,
        |i| {
            progress(PullEvent::LayerReady {
                index: i,
                digest: manifest.layers[i].digest.clone(),
                diff_id: diff_ids[i].clone(),
                chain_id: chain_ids[i].clone(),
            })
        },
    )
    .await?;

    let record = ImageRecord::build(store, &manifest_digest, index.as_ref())?;
    let digest = index.clone().unwrap_or_else(|| manifest_digest.clone());
    let by_digest = reference.with_digest(digest.clone());
    // A digest reference is recorded as a repo digest only: a tag given
    // beside a digest may point elsewhere by now.
    let mut names =
        vec![Reference::parse(&format!("{}@{digest}", reference.name())).unwrap_or(by_digest)];
    if reference.digest().is_none() && reference.tag().is_some() {
        names.push(reference.clone());
    }
    let displaced = images.put(&record, &names)?;
    progress(PullEvent::Done {
        image_id: record.id.clone(),
        digest: digest.clone(),
        reference: reference.clone(),
    });
    Ok(Pulled {
        reference: reference.clone(),
        image_id: record.id.clone(),
        digest,
        manifest: manifest_digest,
        record,
        displaced,
        downloaded,
    })
}

fn check_size(what: &'static str, want: &BlobRef, actual: u64) -> Result<(), PullError> {
    if want.size != actual {
        return Err(PullError::Size {
            what,
            digest: want.digest.clone(),
            expected: want.size,
            actual,
        });
    }
    Ok(())
}

async fn put_small(store: &ContentStore, bytes: Vec<u8>) -> Result<Digest, PullError> {
    let store = store.clone();
    Ok(blocking(move || store.put(&bytes)).await??)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PullError::Task(e.to_string()))
}

/// Downloads every layer not in the store, `opts.concurrency` at a time;
/// calls `ready(i)` in order as layer i and those below it are stored.
/// Returns the bytes fetched.
async fn fetch_layers(
    client: &Client,
    store: &ContentStore,
    reference: &Reference,
    layers: &[model::Layer],
    opts: &PullOptions,
    progress: &Progress,
    mut ready: impl FnMut(usize),
) -> Result<u64, PullError> {
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    // One download per distinct blob (a manifest may list one twice).
    let mut first: HashMap<Digest, usize> = HashMap::new();
    for (i, l) in layers.iter().enumerate() {
        if first.contains_key(&l.digest) {
            continue;
        }
        first.insert(l.digest.clone(), i);
        let blob = BlobRef {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
        };
        if store.has(&blob.digest) {
            progress(PullEvent::Layer {
                digest: blob.digest.clone(),
                total: blob.size,
                state: LayerState::AlreadyExists,
            });
            continue;
        }
        progress(PullEvent::Layer {
            digest: blob.digest.clone(),
            total: blob.size,
            state: LayerState::Waiting,
        });
        let (client, store, reference, progress, sem) = (
            client.clone(),
            store.clone(),
            reference.clone(),
            progress.clone(),
            sem.clone(),
        );
        tasks.spawn(async move {
            let _permit = sem
                .acquire_owned()
                .await
                .map_err(|e| PullError::Task(e.to_string()))?;
            let n = match fetch_layer(&client, &store, &reference, &blob, &progress).await? {
                Fetched::Stored(n) => n,
                // The bytes an earlier pull left were not a prefix of the
                // blob (the commit discarded them): once more from zero.
                Fetched::BadResume { from, fetched } => {
                    tracing::warn!(digest = %blob.digest, from, "the partial download left by an earlier pull did not verify: downloading it again from the start");
                    match fetch_layer(&client, &store, &reference, &blob, &progress).await? {
                        Fetched::Stored(n) => fetched + n,
                        Fetched::BadResume { .. } => {
                            return Err(PullError::Task(format!(
                                "{}: a fresh download resumed from leftovers",
                                blob.digest
                            )))
                        }
                    }
                }
            };
            Ok::<_, PullError>((blob.digest, n))
        });
    }
    let mut stored: HashSet<Digest> = layers
        .iter()
        .filter(|l| store.has(&l.digest))
        .map(|l| l.digest.clone())
        .collect();
    let mut announced = 0;
    let mut announce = |stored: &HashSet<Digest>, announced: &mut usize| {
        while *announced < layers.len() && stored.contains(&layers[*announced].digest) {
            ready(*announced);
            *announced += 1;
        }
    };
    announce(&stored, &mut announced);
    let mut downloaded = 0;
    while let Some(r) = tasks.join_next().await {
        // The first failure ends the pull; dropping the set aborts the other
        // downloads, whose ingests stay resumable.
        let (digest, n) = r.map_err(|e| PullError::Task(e.to_string()))??;
        downloaded += n;
        stored.insert(digest);
        announce(&stored, &mut announced);
    }
    Ok(downloaded)
}

/// Downloads one layer blob into the store, resuming from what an earlier
/// attempt left. Returns the bytes fetched over the network.
enum Fetched {
    /// Stored, after fetching this many bytes.
    Stored(u64),
    /// Resumed at `from`, and the whole did not verify: the leftovers were
    /// bad (the commit removed them).
    BadResume { from: u64, fetched: u64 },
}

async fn fetch_layer(
    client: &Client,
    store: &ContentStore,
    reference: &Reference,
    blob: &BlobRef,
    progress: &Progress,
) -> Result<Fetched, PullError> {
    let event = |state| {
        progress(PullEvent::Layer {
            digest: blob.digest.clone(),
            total: blob.size,
            state,
        })
    };
    let ingest = {
        let (store, digest, size) = (store.clone(), blob.digest.clone(), blob.size);
        blocking(move || match store.ingest(&digest, Some(size)) {
            // Another pull writes this blob: wait for it (bounded), it
            // usually commits and this one has nothing to do.
            Err(StoreError::InProgress(_)) => {
                store.ingest_wait(&digest, Some(size), SHARED_INGEST_WAIT)
            }
            r => r,
        })
        .await??
    };
    let Some(ingest) = ingest else {
        event(LayerState::AlreadyExists);
        return Ok(Fetched::Stored(0));
    };
    let from = ingest.offset();
    let mut offset = from;
    if offset > 0 {
        tracing::info!(digest = %blob.digest, offset, size = blob.size, "resuming a layer download");
    }
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let root = store.root().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || write_chunks(ingest, rx, root));
    let fetched = download(client, reference, blob, &mut offset, tx, &event).await;
    // The writer ends when the channel closes (tx dropped by download).
    let written = writer.await.map_err(|e| PullError::Task(e.to_string()))?;
    let (n, ingest) = match (fetched, written) {
        (_, Err(e)) => return Err(e),
        // The ingest is dropped, not aborted: the next pull resumes it.
        (Err(e), Ok(_ingest)) => return Err(e),
        (Ok(n), Ok(ingest)) => (n, ingest),
    };
    event(LayerState::Verifying);
    match blocking(move || ingest.commit()).await? {
        Ok(_) => {}
        Err(StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }) if from > 0 => {
            return Ok(Fetched::BadResume { from, fetched: n })
        }
        Err(e) => return Err(e.into()),
    }
    event(LayerState::DownloadComplete);
    Ok(Fetched::Stored(n))
}

/// Streams the blob from `offset` to its end into `tx`, reopening the
/// stream at the current offset after transient errors.
async fn download(
    client: &Client,
    reference: &Reference,
    blob: &BlobRef,
    offset: &mut u64,
    tx: mpsc::Sender<Bytes>,
    event: &impl Fn(LayerState),
) -> Result<u64, PullError> {
    let mut fetched = 0;
    let mut attempt = 0;
    let mut last = Instant::now() - PROGRESS_EVERY;
    event(LayerState::Downloading { current: *offset });
    while *offset < blob.size {
        let r: Result<(), RegistryError> = async {
            let mut s = client.blob(reference, &blob.digest, *offset).await?;
            while let Some(chunk) = s.next_chunk().await? {
                let n = chunk.len() as u64;
                if *offset + n > blob.size {
                    return Err(RegistryError::SizeMismatch {
                        what: format!("blob {}", blob.digest),
                        expected: blob.size,
                        actual: *offset + n,
                    });
                }
                if tx.send(chunk).await.is_err() {
                    // The writer stopped (its error is reported instead).
                    return Ok(());
                }
                *offset += n;
                fetched += n;
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    event(LayerState::Downloading { current: *offset });
                }
                // A chunk that arrives resets the retry budget: only
                // consecutive failures count.
                attempt = 0;
            }
            if *offset < blob.size {
                return Err(RegistryError::SizeMismatch {
                    what: format!("blob {}", blob.digest),
                    expected: blob.size,
                    actual: *offset,
                });
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) if tx.is_closed() => break,
            Ok(()) => {}
            Err(e) if e.is_transient() && attempt < client.options().retries => {
                tracing::info!(digest = %blob.digest, offset = *offset, "{e}: resuming");
                client.backoff(attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    event(LayerState::Downloading { current: *offset });
    Ok(fetched)
}

/// The blocking side of a layer: hash and write chunks until the channel
/// closes; hands the ingest back for commit. A failed write (a full disk)
/// removes the partial data: it frees the space, and bytes after a failed
/// write cannot be trusted as a prefix.
fn write_chunks(
    mut ingest: Ingest,
    mut rx: mpsc::Receiver<Bytes>,
    store_root: std::path::PathBuf,
) -> Result<Ingest, PullError> {
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = ingest.write_all(&chunk) {
            let digest = ingest.expected().cloned();
            let _ = ingest.abort();
            let what = digest.as_ref().map(|d| d.to_string()).unwrap_or_default();
            return Err(
                if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
                    StoreError::NoSpace {
                        what,
                        path: store_root,
                    }
                    .into()
                } else {
                    PullError::Write { what, source: e }
                },
            );
        }
    }
    Ok(ingest)
}
