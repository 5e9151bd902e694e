//! What the Docker API needs from berthd: `berth.v1` messages in and out,
//! `tonic::Status` errors, streams as boxed `Stream`s. berthd implements it
//! over its service functions (`crates/berthd/src/docker.rs`); tests use a
//! fake.

use std::pin::Pin;

use berth_api::v1;
use tokio_stream::Stream;
use tonic::Status;

/// A stream of results, as the service layer produces them.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The client's side of an attach: the `AttachSetup` first, then stdin,
/// stdin's end and resizes. When it ends the client sends nothing more (it
/// still reads).
pub type InputStream = Pin<Box<dyn Stream<Item = v1::AttachInput> + Send + 'static>>;

/// berthd's operations, one method per `berth.v1` call the Docker API maps
/// onto. Object-safe: the server holds an `Arc<dyn Backend>`.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    // --- System ---
    async fn version(&self, r: v1::VersionRequest) -> Result<v1::VersionResponse, Status>;
    async fn info(&self, r: v1::InfoRequest) -> Result<v1::InfoResponse, Status>;

    // --- Containers ---
    async fn create(&self, r: v1::CreateRequest) -> Result<v1::CreateResponse, Status>;
    async fn start(&self, r: v1::StartRequest) -> Result<v1::StartResponse, Status>;
    async fn list(&self, r: v1::ListRequest) -> Result<v1::ListResponse, Status>;
    async fn inspect(&self, r: v1::InspectRequest) -> Result<v1::InspectResponse, Status>;
    async fn wait(&self, r: v1::WaitRequest) -> Result<v1::WaitResponse, Status>;
    async fn kill(&self, r: v1::KillRequest) -> Result<v1::KillResponse, Status>;
    async fn stop(&self, r: v1::StopRequest) -> Result<v1::StopResponse, Status>;
    async fn pause(&self, r: v1::PauseRequest) -> Result<v1::PauseResponse, Status>;
    async fn resume(&self, r: v1::ResumeRequest) -> Result<v1::ResumeResponse, Status>;
    async fn delete(&self, r: v1::DeleteRequest) -> Result<v1::DeleteResponse, Status>;
    async fn logs(&self, r: v1::LogsRequest) -> Result<BoxStream<v1::LogEntry>, Status>;
    /// A detached exec (no stdio).
    async fn exec(&self, r: v1::ExecRequest) -> Result<v1::ExecResponse, Status>;
    /// berth's Attach: errors before the stream (no such container, not
    /// running) come back here; a setup that starts the container has
    /// started it when this returns.
    async fn attach(&self, input: InputStream) -> Result<BoxStream<v1::AttachResponse>, Status>;

    // --- Images (images.rs) and volumes (volumes.rs). Defaults answer
    // Unimplemented, so a backend (the tests' fake) implements only what
    // it serves.
    async fn image_list(
        &self,
        _r: v1::ListImagesRequest,
    ) -> Result<v1::ListImagesResponse, Status> {
        Err(unimplemented("image list"))
    }
    async fn image_inspect(
        &self,
        _r: v1::InspectImageRequest,
    ) -> Result<v1::InspectImageResponse, Status> {
        Err(unimplemented("image inspect"))
    }
    async fn image_tag(&self, _r: v1::TagImageRequest) -> Result<v1::TagImageResponse, Status> {
        Err(unimplemented("image tag"))
    }
    async fn image_remove(
        &self,
        _r: v1::RemoveImageRequest,
    ) -> Result<v1::RemoveImageResponse, Status> {
        Err(unimplemented("image remove"))
    }
    async fn image_history(&self, _r: v1::HistoryRequest) -> Result<v1::HistoryResponse, Status> {
        Err(unimplemented("image history"))
    }
    async fn image_prune(
        &self,
        _r: v1::PruneImagesRequest,
    ) -> Result<v1::PruneImagesResponse, Status> {
        Err(unimplemented("image prune"))
    }
    /// The archive's bytes in order; what was loaded.
    async fn image_load(
        &self,
        _chunks: BoxStream<v1::LoadChunk>,
    ) -> Result<Vec<v1::LoadProgress>, Status> {
        Err(unimplemented("image load"))
    }
    async fn image_save(&self, _r: v1::SaveRequest) -> Result<BoxStream<v1::SaveChunk>, Status> {
        Err(unimplemented("image save"))
    }
    async fn volume_create(&self, _r: v1::CreateVolumeRequest) -> Result<v1::Volume, Status> {
        Err(unimplemented("volume create"))
    }
    async fn volume_list(
        &self,
        _r: v1::ListVolumesRequest,
    ) -> Result<v1::ListVolumesResponse, Status> {
        Err(unimplemented("volume list"))
    }
    async fn volume_inspect(&self, _r: v1::InspectVolumeRequest) -> Result<v1::Volume, Status> {
        Err(unimplemented("volume inspect"))
    }
    async fn volume_remove(
        &self,
        _r: v1::RemoveVolumeRequest,
    ) -> Result<v1::RemoveVolumeResponse, Status> {
        Err(unimplemented("volume remove"))
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not served by this backend"))
}
