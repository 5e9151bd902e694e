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

use crate::files_api::FilesApi;
use crate::images_api::ImagesApi;
use crate::networks_api::NetworksApi;
use crate::service::Service;
use crate::volumes_api::VolumesApi;
use berth_api::{Files, Images, NetworksService as Networks, VolumesService as Volumes};

/// The service layer as the Docker API sees it.
pub struct DockerBackend {
    pub containers: Arc<Service>,
    pub images: Arc<ImagesApi>,
    pub volumes: Arc<VolumesApi>,
    pub files: Arc<FilesApi>,
    pub networks: Arc<NetworksApi>,
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

    async fn engine(&self) -> Result<berth_docker::Engine, Status> {
        let root = self.containers.root().to_path_buf();
        let id = tokio::task::spawn_blocking(move || engine_id(&root))
            .await
            .map_err(|e| Status::internal(format!("reading the engine id: {e}")))?;
        // As berth runs containers that ask for nothing: its default
        // seccomp profile where the kernel filters (not with --privileged or
        // seccomp=unconfined), a user namespace of their own under
        // `--userns auto`. no-new-privileges is not a default (a container
        // asks for it), so it is not listed, as with Docker.
        let mut security_options = Vec::new();
        if seccomp_available() {
            security_options.push("name=seccomp,profile=builtin".to_string());
        }
        if self.containers.userns_by_default() {
            security_options.push("name=userns".to_string());
        }
        Ok(berth_docker::Engine {
            id,
            security_options,
        })
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
    async fn restart(&self, r: v1::RestartRequest) -> Result<v1::RestartResponse, Status> {
        unary!(self.containers, Containers::restart, r)
    }

    async fn rename(&self, r: v1::RenameRequest) -> Result<v1::RenameResponse, Status> {
        unary!(self.containers, Containers::rename, r)
    }

    async fn top(&self, r: v1::TopRequest) -> Result<v1::TopResponse, Status> {
        unary!(self.containers, Containers::top, r)
    }

    async fn update(&self, r: v1::UpdateRequest) -> Result<v1::UpdateResponse, Status> {
        unary!(self.containers, Containers::update, r)
    }

    async fn prune(
        &self,
        r: v1::PruneContainersRequest,
    ) -> Result<v1::PruneContainersResponse, Status> {
        unary!(self.containers, Containers::prune, r)
    }

    async fn stats(&self, r: v1::StatsRequest) -> Result<BoxStream<v1::StatsResponse>, Status> {
        unary!(self.containers, Containers::stats, r)
    }

    async fn events(&self, r: v1::EventsRequest) -> Result<BoxStream<v1::Event>, Status> {
        unary!(self.containers, Containers::events, r)
    }

    async fn disk_usage(&self, r: v1::DiskUsageRequest) -> Result<v1::DiskUsageResponse, Status> {
        unary!(self.containers, Containers::disk_usage, r)
    }

    async fn path_stat(&self, r: v1::StatPathRequest) -> Result<v1::PathStat, Status> {
        unary!(self.files, Files::stat, r)
    }

    async fn archive(&self, r: v1::ArchiveRequest) -> Result<BoxStream<v1::ArchiveChunk>, Status> {
        unary!(self.files, Files::archive, r)
    }

    async fn extract(
        &self,
        chunks: BoxStream<v1::ExtractChunk>,
    ) -> Result<v1::ExtractResponse, Status> {
        let entries = self.files.extract_chunks(chunks).await?;
        Ok(v1::ExtractResponse { entries })
    }

    async fn diff(&self, r: v1::DiffRequest) -> Result<v1::DiffResponse, Status> {
        unary!(self.files, Files::diff, r)
    }

    async fn export(&self, r: v1::ExportRequest) -> Result<BoxStream<v1::ArchiveChunk>, Status> {
        unary!(self.files, Files::export, r)
    }

    async fn pull(&self, r: v1::PullRequest) -> Result<BoxStream<v1::PullProgress>, Status> {
        unary!(self.images, Images::pull, r)
    }

    async fn login(&self, registry: String, auth: v1::RegistryAuth) -> Result<(), Status> {
        // As Docker's /auth: checked against the registry, kept by the
        // client (the CLI's config.json), not by the daemon.
        let creds = berth_image::auth::Credentials::new(auth.username, auth.password);
        let client = berth_image::registry::Client::new(Default::default())
            .map_err(|e| Status::internal(format!("cannot set up the registry client: {e}")))?;
        client.set_credentials(&registry, creds);
        client
            .ping(&registry)
            .await
            .map_err(|e| Status::unauthenticated(format!("login to {registry} failed: {e}")))?;
        Ok(())
    }

    async fn network_create(&self, r: v1::CreateNetworkRequest) -> Result<v1::Network, Status> {
        unary!(self.networks, Networks::create, r)
    }

    async fn network_list(
        &self,
        r: v1::ListNetworksRequest,
    ) -> Result<v1::ListNetworksResponse, Status> {
        unary!(self.networks, Networks::list, r)
    }

    async fn network_remove(
        &self,
        r: v1::RemoveNetworkRequest,
    ) -> Result<v1::RemoveNetworkResponse, Status> {
        unary!(self.networks, Networks::remove, r)
    }

    async fn network_connect(
        &self,
        r: v1::ConnectNetworkRequest,
    ) -> Result<v1::ConnectNetworkResponse, Status> {
        unary!(self.networks, Networks::connect_container, r)
    }

    async fn network_disconnect(
        &self,
        r: v1::DisconnectNetworkRequest,
    ) -> Result<v1::DisconnectNetworkResponse, Status> {
        unary!(self.networks, Networks::disconnect_container, r)
    }

    async fn network_prune(
        &self,
        r: v1::PruneNetworksRequest,
    ) -> Result<v1::PruneNetworksResponse, Status> {
        unary!(self.networks, Networks::prune, r)
    }
}

/// The engine's ID (`docker info`'s `ID`): a random UUID made once and kept
/// in the root's `engine-id`, so it lasts across restarts as Docker's does.
/// Read once per process; if it cannot be kept, this run's own (warned).
fn engine_id(root: &std::path::Path) -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let path = root.join("engine-id");
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = s.trim();
            if is_uuid(s) {
                return s.to_string();
            }
        }
        let id = match new_uuid() {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "cannot make an engine id");
                return String::new();
            }
        };
        // Written whole, then renamed: a crash leaves the old file or none.
        let tmp = root.join("engine-id.tmp");
        if let Err(e) = std::fs::write(&tmp, format!("{id}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the engine id; it changes at the next start");
        }
        id
    })
    .clone()
}

/// A version 4 (random) UUID, from /dev/urandom.
fn new_uuid() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Whether the kernel filters system calls (a `Seccomp:` line in
/// /proc/self/status: CONFIG_SECCOMP).
fn seccomp_available() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids() {
        let id = super::new_uuid().expect("urandom");
        assert!(super::is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert!(!super::is_uuid(""));
        assert!(!super::is_uuid("0b6c5f1e-3d2a-4c8b-9e7f-1a2b3c4d5e6"));
        assert!(!super::is_uuid("0b6c5f1e-3d2a-4c8b-9e7f+1a2b3c4d5e6f"));
    }
}
