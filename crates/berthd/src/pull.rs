//! `Pull` in berthd: the registry pull of berth-image, its progress turned
//! into `berth.v1` messages, and each layer unpacked as soon as it and the
//! layers below it are in the store (pipelined with the downloads above it).

use std::sync::Arc;

use berth_api::v1;
use berth_image::digest::Digest;
use berth_image::model::{self, Platform};
use berth_image::pull::{self, LayerState, PullEvent, PullOptions};
use berth_image::reference::Reference;
use berth_image::registry::{Client, ClientOptions};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use crate::images::{ImageError, Images};
use crate::service::image_status;

/// Progress messages buffered for a slow client before the pull waits.
const DEPTH: usize = 256;

pub type ProgressRx = mpsc::Receiver<Result<v1::PullProgress, Status>>;

fn msg(event: v1::pull_progress::Event) -> Result<v1::PullProgress, Status> {
    Ok(v1::PullProgress { event: Some(event) })
}

fn layer(
    digest: &Digest,
    status: &str,
    current: u64,
    total: u64,
) -> Result<v1::PullProgress, Status> {
    msg(v1::pull_progress::Event::Layer(v1::LayerProgress {
        digest: digest.to_string(),
        status: status.into(),
        current,
        total,
    }))
}

/// One layer to unpack, in order.
struct Ready {
    index: usize,
    digest: Digest,
    diff_id: Digest,
    chain_id: Digest,
    manifest: Digest,
}

/// Check the request, then pull in a task of its own (a client that goes
/// away does not stop it: what was fetched is kept either way). Errors
/// found before anything was fetched are the call's error; later ones end
/// the stream.
pub async fn start(images: Arc<Images>, r: v1::PullRequest) -> Result<ProgressRx, Status> {
    let reference =
        Reference::parse(&r.reference).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let platform = if r.platform.is_empty() {
        None
    } else {
        Some(r.platform.parse::<Platform>().map_err(|e| {
            Status::invalid_argument(format!("invalid --platform {:?}: {e}", r.platform))
        })?)
    };
    let client = Client::new(ClientOptions {
        insecure: r.insecure,
        ..Default::default()
    })
    .map_err(|e| Status::internal(format!("cannot set up the registry client: {e}")))?;
    if let Some(a) = r
        .auth
        .filter(|a| !a.username.is_empty() || !a.password.is_empty())
    {
        client.set_credentials(
            reference.registry(),
            berth_image::auth::Credentials::new(a.username, a.password),
        );
    }
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::spawn(async move {
        if let Err(e) = run(images, client, reference, platform, tx.clone()).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(rx)
}

async fn run(
    images: Arc<Images>,
    client: Client,
    reference: Reference,
    platform: Option<Platform>,
    tx: mpsc::Sender<Result<v1::PullProgress, Status>>,
) -> Result<(), Status> {
    // Content that no record names yet must not be collected meanwhile.
    let _gc = images.gc_guard().await;
    let before = images
        .db
        .resolve(&reference.to_string())
        .ok()
        .map(|(id, _)| id);

    // Events come from several tasks and must not block them: an unbounded
    // hop, drained in order into the client's bounded stream (the pull's
    // own throttling bounds how many there are).
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<PullEvent>();
    let progress: pull::Progress = Arc::new(move |e| {
        let _ = ev_tx.send(e);
    });
    let (ready_tx, ready_rx) = mpsc::unbounded_channel::<Ready>();
    let unpacker = tokio::spawn(unpack_in_order(images.clone(), ready_rx, tx.clone()));

    let forward = {
        let tx = tx.clone();
        let reference = reference.clone();
        tokio::spawn(async move {
            let mut manifest = None;
            let mut sizes = std::collections::HashMap::new();
            while let Some(e) = ev_rx.recv().await {
                let out = match e {
                    PullEvent::Resolved {
                        manifest: m,
                        layers,
                        ..
                    } => {
                        manifest = Some(m.clone());
                        for (d, s) in &layers {
                            sizes.insert(d.clone(), *s);
                        }
                        msg(v1::pull_progress::Event::Resolved(v1::PullResolved {
                            reference: reference.to_string(),
                            digest: m.to_string(),
                            layers: layers.iter().map(|(d, _)| d.to_string()).collect(),
                            sizes: layers.iter().map(|(_, s)| *s).collect(),
                        }))
                    }
                    PullEvent::Layer {
                        digest,
                        total,
                        state,
                    } => match state {
                        LayerState::Waiting => layer(&digest, "waiting", 0, total),
                        LayerState::AlreadyExists => layer(&digest, "already-exists", total, total),
                        LayerState::Downloading { current } => {
                            layer(&digest, "downloading", current, total)
                        }
                        LayerState::Verifying => layer(&digest, "verifying", total, total),
                        LayerState::DownloadComplete => {
                            layer(&digest, "download-complete", total, total)
                        }
                    },
                    PullEvent::LayerReady {
                        index,
                        digest,
                        diff_id,
                        chain_id,
                    } => {
                        if let Some(m) = &manifest {
                            let _ = ready_tx.send(Ready {
                                index,
                                digest,
                                diff_id,
                                chain_id,
                                manifest: m.clone(),
                            });
                        }
                        continue;
                    }
                    // The caller reports the end, after the unpacking.
                    PullEvent::Done { .. } => continue,
                };
                if tx.send(out).await.is_err() {
                    // The client went away; the pull goes on.
                    continue;
                }
            }
        })
    };

    let opts = PullOptions {
        platform,
        ..Default::default()
    };
    let pulled = pull::pull(
        &client,
        &images.store,
        &images.db,
        &reference,
        &opts,
        progress,
    )
    .await;
    // The progress callback is dropped with the pull: the forwarder ends,
    // and with it the queue of layers to unpack.
    let _ = forward.await;
    let unpacked = unpacker
        .await
        .map_err(|e| Status::internal(format!("unpacking failed: {e}")))?;
    let pulled = pulled.map_err(|e| Status::unavailable(format!("pull {reference}: {e}")))?;
    unpacked.map_err(image_status)?;
    // Anything not unpacked on the way (all layers already present, or
    // an image recorded before) is unpacked now.
    let img = images.clone();
    let id = pulled.image_id.to_string();
    tokio::task::spawn_blocking(move || img.resolve(&id).and_then(|r| img.unpack(&r)))
        .await
        .map_err(|e| Status::internal(format!("unpacking failed: {e}")))?
        .map_err(image_status)?;
    info!(reference = %reference, image = %pulled.image_id, bytes = pulled.downloaded, "pulled");
    images.record(
        berth_core::event::EventType::Pull,
        &pulled.image_id.to_string(),
        &reference.to_string(),
    );
    let _ = tx
        .send(msg(v1::pull_progress::Event::Done(v1::PullDone {
            reference: reference.to_string(),
            digest: pulled.digest.to_string(),
            image_id: pulled.image_id.to_string(),
            downloaded: before.as_ref() != Some(&pulled.image_id),
        })))
        .await;
    Ok(())
}

/// Unpack the layers as they become ready, bottom first; report each.
async fn unpack_in_order(
    images: Arc<Images>,
    mut ready: mpsc::UnboundedReceiver<Ready>,
    tx: mpsc::Sender<Result<v1::PullProgress, Status>>,
) -> Result<(), ImageError> {
    let mut layers: Option<Vec<model::Layer>> = None;
    // Layers become ready bottom first: the last one is the next's parent.
    let mut below: Option<Digest> = None;
    while let Some(r) = ready.recv().await {
        if layers.is_none() {
            let img = images.clone();
            let m = r.manifest.clone();
            layers = Some(
                tokio::task::spawn_blocking(move || img.manifest_layers(&m))
                    .await
                    .map_err(|e| ImageError::failed("reading the manifest failed", e))??,
            );
        }
        let Some(layer) = layers.as_ref().and_then(|l| l.get(r.index)).cloned() else {
            warn!(index = r.index, "a ready layer the manifest does not list");
            continue;
        };
        let _ = tx
            .send(layer_msg(&r.digest, "extracting", layer.size))
            .await;
        let img = images.clone();
        let (chain, diff_id) = (r.chain_id.clone(), r.diff_id.clone());
        let parent = if r.index == 0 { None } else { below.clone() };
        tokio::task::spawn_blocking(move || {
            img.unpack_layer(&layer, &diff_id, &chain, parent.as_ref())
        })
        .await
        .map_err(|e| ImageError::failed("unpacking failed", e))??;
        below = Some(r.chain_id.clone());
        let _ = tx.send(layer_msg(&r.digest, "pull-complete", 0)).await;
    }
    Ok(())
}

fn layer_msg(digest: &Digest, status: &str, total: u64) -> Result<v1::PullProgress, Status> {
    layer(digest, status, total, total)
}
