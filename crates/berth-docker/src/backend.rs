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

/// What `GET /info` says beyond berth's Info: the engine's lasting ID and
/// the security options containers get by default, in Docker's
/// `name=...[,key=value]` form.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub id: String,
    pub security_options: Vec<String>,
}

/// berthd's operations, one method per `berth.v1` call the Docker API maps
/// onto. Object-safe: the server holds an `Arc<dyn Backend>`.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    // --- System ---
    async fn version(&self, r: v1::VersionRequest) -> Result<v1::VersionResponse, Status>;
    async fn info(&self, r: v1::InfoRequest) -> Result<v1::InfoResponse, Status>;
    /// The engine's ID and default security options (`GET /info`).
    async fn engine(&self) -> Result<Engine, Status> {
        Ok(Engine::default())
    }

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
    // --- More containers (ops.rs), events and disk usage (system.rs),
    // files (cp, diff, export; ops.rs), pull and login (images.rs).
    async fn restart(&self, _r: v1::RestartRequest) -> Result<v1::RestartResponse, Status> {
        Err(unimplemented("restart"))
    }
    async fn rename(&self, _r: v1::RenameRequest) -> Result<v1::RenameResponse, Status> {
        Err(unimplemented("rename"))
    }
    async fn top(&self, _r: v1::TopRequest) -> Result<v1::TopResponse, Status> {
        Err(unimplemented("top"))
    }
    async fn update(&self, _r: v1::UpdateRequest) -> Result<v1::UpdateResponse, Status> {
        Err(unimplemented("update"))
    }
    async fn prune(
        &self,
        _r: v1::PruneContainersRequest,
    ) -> Result<v1::PruneContainersResponse, Status> {
        Err(unimplemented("container prune"))
    }
    async fn stats(&self, _r: v1::StatsRequest) -> Result<BoxStream<v1::StatsResponse>, Status> {
        Err(unimplemented("stats"))
    }
    async fn events(&self, _r: v1::EventsRequest) -> Result<BoxStream<v1::Event>, Status> {
        Err(unimplemented("events"))
    }
    async fn disk_usage(&self, _r: v1::DiskUsageRequest) -> Result<v1::DiskUsageResponse, Status> {
        Err(unimplemented("disk usage"))
    }
    async fn path_stat(&self, _r: v1::StatPathRequest) -> Result<v1::PathStat, Status> {
        Err(unimplemented("path stat"))
    }
    /// The first chunk carries the path's stat and no data.
    async fn archive(&self, _r: v1::ArchiveRequest) -> Result<BoxStream<v1::ArchiveChunk>, Status> {
        Err(unimplemented("archive"))
    }
    /// The first chunk carries the header.
    async fn extract(
        &self,
        _chunks: BoxStream<v1::ExtractChunk>,
    ) -> Result<v1::ExtractResponse, Status> {
        Err(unimplemented("extract"))
    }
    async fn diff(&self, _r: v1::DiffRequest) -> Result<v1::DiffResponse, Status> {
        Err(unimplemented("diff"))
    }
    async fn export(&self, _r: v1::ExportRequest) -> Result<BoxStream<v1::ArchiveChunk>, Status> {
        Err(unimplemented("export"))
    }
    async fn pull(&self, _r: v1::PullRequest) -> Result<BoxStream<v1::PullProgress>, Status> {
        Err(unimplemented("pull"))
    }
    /// Check credentials against a registry (`docker login`).
    async fn login(&self, _registry: String, _auth: v1::RegistryAuth) -> Result<(), Status> {
        Err(unimplemented("login"))
    }
    // --- Networks (networks.rs).
    async fn network_create(&self, _r: v1::CreateNetworkRequest) -> Result<v1::Network, Status> {
        Err(unimplemented("network create"))
    }
    async fn network_list(
        &self,
        _r: v1::ListNetworksRequest,
    ) -> Result<v1::ListNetworksResponse, Status> {
        Err(unimplemented("network list"))
    }
    async fn network_remove(
        &self,
        _r: v1::RemoveNetworkRequest,
    ) -> Result<v1::RemoveNetworkResponse, Status> {
        Err(unimplemented("network remove"))
    }
    async fn network_connect(
        &self,
        _r: v1::ConnectNetworkRequest,
    ) -> Result<v1::ConnectNetworkResponse, Status> {
        Err(unimplemented("network connect"))
    }
    async fn network_disconnect(
        &self,
        _r: v1::DisconnectNetworkRequest,
    ) -> Result<v1::DisconnectNetworkResponse, Status> {
        Err(unimplemented("network disconnect"))
    }
    async fn network_prune(
        &self,
        _r: v1::PruneNetworksRequest,
    ) -> Result<v1::PruneNetworksResponse, Status> {
        Err(unimplemented("network prune"))
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not served by this backend"))
}
