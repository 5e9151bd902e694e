//! berthd's side of the Docker Engine API (`berth-docker`): a [`Backend`]
//! over the same service functions the gRPC adapters call, so both
//! protocols share one service layer and neither calls the other over a
//! socket.

use std::sync::Arc;

use berth_api::v1;
use berth_api::Containers;
use berth_docker::{Backend, BoxStream, InputStream};
use tokio_stream::StreamExt;
use tonic::{Request, Status};

use crate::images_api::ImagesApi;
use crate::service::Service;
use crate::volumes_api::VolumesApi;
use berth_api::{Images, VolumesService as Volumes};

/// The service layer as the Docker API sees it.
pub struct DockerBackend {
    pub containers: Arc<Service>,
    pub images: Arc<ImagesApi>,
    pub volumes: Arc<VolumesApi>,
}

/// Call a unary service function and take its message out.
macro_rules! unary {
    ($svc:expr, $trait:ident :: $method:ident, $req:expr) => {
        $trait::$method(&*$svc, Request::new($req))
            .await
            .map(tonic::Response::into_inner)
    };
}

#[async_trait::async_trait]
impl Backend for DockerBackend {
    async fn version(&self, r: v1::VersionRequest) -> Result<v1::VersionResponse, Status> {
        unary!(self.containers, Containers::version, r)
    }

    async fn info(&self, r: v1::InfoRequest) -> Result<v1::InfoResponse, Status> {
        unary!(self.containers, Containers::info, r)
    }

    async fn create(&self, r: v1::CreateRequest) -> Result<v1::CreateResponse, Status> {
        unary!(self.containers, Containers::create, r)
    }

    async fn start(&self, r: v1::StartRequest) -> Result<v1::StartResponse, Status> {
        unary!(self.containers, Containers::start, r)
    }

    async fn list(&self, r: v1::ListRequest) -> Result<v1::ListResponse, Status> {
        unary!(self.containers, Containers::list, r)
    }

    async fn inspect(&self, r: v1::InspectRequest) -> Result<v1::InspectResponse, Status> {
        unary!(self.containers, Containers::inspect, r)
    }

    async fn wait(&self, r: v1::WaitRequest) -> Result<v1::WaitResponse, Status> {
        unary!(self.containers, Containers::wait, r)
    }

    async fn kill(&self, r: v1::KillRequest) -> Result<v1::KillResponse, Status> {
        unary!(self.containers, Containers::kill, r)
    }

    async fn stop(&self, r: v1::StopRequest) -> Result<v1::StopResponse, Status> {
        unary!(self.containers, Containers::stop, r)
    }

    async fn pause(&self, r: v1::PauseRequest) -> Result<v1::PauseResponse, Status> {
        unary!(self.containers, Containers::pause, r)
    }

    async fn resume(&self, r: v1::ResumeRequest) -> Result<v1::ResumeResponse, Status> {
        unary!(self.containers, Containers::resume, r)
    }

    async fn delete(&self, r: v1::DeleteRequest) -> Result<v1::DeleteResponse, Status> {
        unary!(self.containers, Containers::delete, r)
    }

    async fn logs(&self, r: v1::LogsRequest) -> Result<BoxStream<v1::LogEntry>, Status> {
        unary!(self.containers, Containers::logs, r)
    }

    async fn exec(&self, r: v1::ExecRequest) -> Result<v1::ExecResponse, Status> {
        unary!(self.containers, Containers::exec, r)
    }

    async fn attach(&self, input: InputStream) -> Result<BoxStream<v1::AttachResponse>, Status> {
        self.containers
            .attach_stream(input.map(Ok::<_, Status>))
            .await
    }

    async fn image_list(&self, r: v1::ListImagesRequest) -> Result<v1::ListImagesResponse, Status> {
        unary!(self.images, Images::list, r)
    }

    async fn image_inspect(
        &self,
        r: v1::InspectImageRequest,
    ) -> Result<v1::InspectImageResponse, Status> {
        unary!(self.images, Images::inspect, r)
    }

    async fn image_tag(&self, r: v1::TagImageRequest) -> Result<v1::TagImageResponse, Status> {
        unary!(self.images, Images::tag, r)
    }

    async fn image_remove(
        &self,
        r: v1::RemoveImageRequest,
    ) -> Result<v1::RemoveImageResponse, Status> {
        unary!(self.images, Images::remove, r)
    }

    async fn image_history(&self, r: v1::HistoryRequest) -> Result<v1::HistoryResponse, Status> {
        unary!(self.images, Images::history, r)
    }

    async fn image_prune(
        &self,
        r: v1::PruneImagesRequest,
    ) -> Result<v1::PruneImagesResponse, Status> {
        unary!(self.images, Images::prune, r)
    }

    async fn image_load(
        &self,
        chunks: BoxStream<v1::LoadChunk>,
    ) -> Result<Vec<v1::LoadProgress>, Status> {
        self.images.load_chunks(chunks).await
    }

    async fn image_save(&self, r: v1::SaveRequest) -> Result<BoxStream<v1::SaveChunk>, Status> {
        unary!(self.images, Images::save, r)
    }

    async fn volume_create(&self, r: v1::CreateVolumeRequest) -> Result<v1::Volume, Status> {
        unary!(self.volumes, Volumes::create, r)
    }

    async fn volume_list(
        &self,
        r: v1::ListVolumesRequest,
    ) -> Result<v1::ListVolumesResponse, Status> {
        unary!(self.volumes, Volumes::list, r)
    }

    async fn volume_inspect(&self, r: v1::InspectVolumeRequest) -> Result<v1::Volume, Status> {
        unary!(self.volumes, Volumes::inspect, r)
    }

    async fn volume_remove(
        &self,
        r: v1::RemoveVolumeRequest,
    ) -> Result<v1::RemoveVolumeResponse, Status> {
        unary!(self.volumes, Volumes::remove, r)
    }
}
