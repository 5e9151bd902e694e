//! The gRPC `Images` service: maps `berth.v1` image requests onto
//! [`Images`]. Streams go through bounded channels, so neither a load nor a
//! save ever holds an archive in memory.

use std::collections::HashMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::v1;
use berth_core::Supervisor;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::chunks::{ChunkReader, ChunkWriter, DEPTH};
use crate::images::{ImageError, Images};
use crate::service::image_status;

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct ImagesApi {
    images: Arc<Images>,
    sup: Supervisor,
}

impl ImagesApi {
    pub fn new(images: Arc<Images>, sup: Supervisor) -> Self {
        Self { images, sup }
    }

    /// How many containers (in any state) use each image id.
    fn users(&self) -> HashMap<String, u32> {
        let mut n = HashMap::new();
        for rec in self.sup.list(true) {
            if let Some(i) = rec.config.source.image() {
                *n.entry(i.id.clone()).or_default() += 1;
            }
        }
        n
    }

    /// Load an archive whose bytes come in as chunks, in order (the gRPC
    /// `Load`, and the Docker API's `POST /images/load`).
    pub async fn load_chunks(
        &self,
        input: BoxStream<v1::LoadChunk>,
    ) -> Result<Vec<v1::LoadProgress>, Status> {
        let reader = ChunkReader::from_stream(Vec::new(), input, |c| c.data, "the archive stream");
        self.blocking(move |i| i.load(reader)).await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Images) -> Result<T, ImageError> + Send + 'static,
    {
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || f(&images))
            .await
            .map_err(|e| Status::internal(format!("image operation failed: {e}")))?
            .map_err(image_status)
    }
}

#[tonic::async_trait]
impl berth_api::Images for ImagesApi {
    type PullStream = BoxStream<v1::PullProgress>;

    async fn pull(
        &self,
        req: Request<v1::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let r = req.into_inner();
        let rx = crate::pull::start(self.images.clone(), r).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list(
        &self,
        req: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let all = req.into_inner().all;
        let users = self.users();
        let mut images = self.blocking(|i| i.list()).await?;
        images.retain(|i| all || !i.repo_tags.is_empty());
        for i in &mut images {
            i.containers = users.get(&i.id).copied().unwrap_or(0);
        }
        Ok(Response::new(v1::ListImagesResponse { images }))
    }

    async fn inspect(
        &self,
        req: Request<v1::InspectImageRequest>,
    ) -> Result<Response<v1::InspectImageResponse>, Status> {
        let name = req.into_inner().image;
        let (mut image, json) = self.blocking(move |i| i.inspect(&name)).await?;
        image.containers = self.users().get(&image.id).copied().unwrap_or(0);
        Ok(Response::new(v1::InspectImageResponse {
            image: Some(image),
            json,
        }))
    }

    async fn remove(
        &self,
        req: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let r = req.into_inner();
        let users = self.users();
        let (untagged, deleted) = self
            .blocking(move |i| i.remove(&r.image, r.force, &users))
            .await?;
        Ok(Response::new(v1::RemoveImageResponse { untagged, deleted }))
    }

    async fn tag(
        &self,
        req: Request<v1::TagImageRequest>,
    ) -> Result<Response<v1::TagImageResponse>, Status> {
        let r = req.into_inner();
        let reference = self.blocking(move |i| i.tag(&r.source, &r.target)).await?;
        Ok(Response::new(v1::TagImageResponse { reference }))
    }

    type LoadStream = BoxStream<v1::LoadProgress>;

    async fn load(
        &self,
        req: Request<Streaming<v1::LoadChunk>>,
    ) -> Result<Response<Self::LoadStream>, Status> {
        let loaded = self.load_chunks(Box::pin(req.into_inner())).await?;
        let msgs: Vec<Result<v1::LoadProgress, Status>> = loaded.into_iter().map(Ok).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    type SaveStream = BoxStream<v1::SaveChunk>;

    async fn save(
        &self,
        req: Request<v1::SaveRequest>,
    ) -> Result<Response<Self::SaveStream>, Status> {
        let names = req.into_inner().images;
        if names.is_empty() {
            return Err(Status::invalid_argument(
                "no image to save: name at least one",
            ));
        }
        // Resolve every name first, so a typo is an error, not a truncated
        // archive.
        let check = names.clone();
        self.blocking(move |i| {
            for n in &check {
                i.resolve(n)?;
            }
            Ok(())
        })
        .await?;
        let (tx, rx) = mpsc::channel(DEPTH);
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter::new(tx.clone(), |data| v1::SaveChunk { data });
            let res = images.save(&names, &mut w).and_then(|()| {
                w.flush()
                    .map_err(|e| ImageError::Failed(format!("cannot send the archive: {e}")))
            });
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(image_status(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn prune(
        &self,
        req: Request<v1::PruneImagesRequest>,
    ) -> Result<Response<v1::PruneImagesResponse>, Status> {
        let all = req.into_inner().all;
        let users = self.users();
        let resp = self.blocking(move |i| i.prune(all, &users)).await?;
        Ok(Response::new(resp))
    }

    async fn history(
        &self,
        req: Request<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryResponse>, Status> {
        let name = req.into_inner().image;
        let entries = self.blocking(move |i| i.history(&name)).await?;
        Ok(Response::new(v1::HistoryResponse { entries }))
    }
}
